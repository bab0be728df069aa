'use strict';
// The numbers both sides of the bridge read, declared once in Rust (src/napi/wire.rs) and read
// here from the binding; module-level constants keep the hot path free of property lookups.
const { RequestFlag, EventKind, SendResult, FramingFlag } = require('./binding');

module.exports = { RequestFlag, EventKind, SendResult, FramingFlag };
