'use strict';
// Native trace mode (docs/TRACE.md): the server is Koatty's tracer. What the rest of js/ uses:
// ./koatty.js finds koatty_trace in a Koatty app and puts ./emulation.js's middleware in its place.
const { installTracer, isKoattyApp, koattyDefaultLogger } = require('./koatty');
const { createLeanTrace, respond, stats } = require('./emulation');

module.exports = { installTracer, isKoattyApp, createLeanTrace, respond, koattyDefaultLogger, stats };
