'use strict';
// Koatty reads `logs_level` after start (koatty Loader.SetLogger): 'warning'
// writes no access line (decisions.md §21 main rows); 'info' writes one per request.
// BENCH_PROTOCOL (bench/koatty-protocols.js; unset = 'http', as bench/run.js runs it) selects the
// server: http2 reads the key and certificate named by key_file/crt_file (BENCH_TLS_KEY/CERT).
const config = {
  app_host: '127.0.0.1',
  app_port: Number(process.env.BENCH_PORT || 0),
  protocol: process.env.BENCH_PROTOCOL || 'http',
  encoding: 'utf-8',
  logs_level: process.env.BENCH_LOGS_LEVEL || 'warning',
};
if (process.env.BENCH_TLS_KEY) config.key_file = process.env.BENCH_TLS_KEY;
if (process.env.BENCH_TLS_CERT) config.crt_file = process.env.BENCH_TLS_CERT;
exports.default = config;
