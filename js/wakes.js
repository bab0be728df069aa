'use strict';
// The answers given during one turn of the event loop wake the I/O thread once, at the turn's end
// (crates/core/src/bridge/wake.rs): the native calls that answer hold their wake-up, and this
// makes the held ones from `setImmediate`, which runs after every request the turn delivered.
// Anything that must see every answer already sent — the lifecycle's native steps, the process's
// exit — flushes first (`flushWakesNow`).
const { flushDeferredWakesNow } = require('./binding');
// Taken when this module loads: fake timers installed later (jest, sinon, node:test's
// mock.timers) must not hold the answers back.
const { setImmediate: scheduleAfterTurn } = require('node:timers');

let scheduled = false;

function flush() {
  scheduled = false;
  flushDeferredWakesNow();
}

/** After a native call that may have held its wake-up: make it at the end of this turn. */
function flushWakesSoon() {
  if (scheduled) return;
  scheduled = true;
  scheduleAfterTurn(flush);
}

/** Makes the held wake-ups now (before a shutdown or restart step, or at exit). */
function flushWakesNow() {
  flushDeferredWakesNow();
}

// An answer given in the turn that exits the process (`res.end(); process.exit()`, or a crash
// after answering) still goes out, as node writes it at once.
process.on('exit', flushWakesNow);

module.exports = { flushWakesSoon, flushWakesNow };
