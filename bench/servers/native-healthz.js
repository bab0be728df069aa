'use strict';
// The native HttpServer with its native endpoints on: bench/run.js loads GET /healthz, which Rust
// answers without entering JavaScript (issue 7: its CPU per request against node:http's hello).
const { startNative } = require('./_native');

startNative('HttpServer', { protocol: 'http', nativeEndpoints: true });
