'use strict';
// The answers given during one turn of the event loop wake the I/O thread once, at the turn's end
// (crates/core/src/bridge/wake.rs): the native calls that answer hold their wake-up, and this
// makes the held ones from `setImmediate`, which runs after every request the turn delivered.
const { flushDeferredWakesNow } = require('./binding');

let scheduled = false;

function flush() {
  scheduled = false;
  flushDeferredWakesNow();
}

/** After a native call that may have held its wake-up: make it at the end of this turn. */
function flushWakesSoon() {
  if (scheduled) return;
  scheduled = true;
  setImmediate(flush);
}

module.exports = { flushWakesSoon };
