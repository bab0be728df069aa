'use strict';
// Koatty reads `logs_level` after start (koatty Loader.SetLogger): 'warning'
// writes no access line (decisions.md §21 main rows); 'info' writes one per request.
exports.default = {
  app_host: '127.0.0.1',
  app_port: Number(process.env.BENCH_PORT || 0),
  protocol: 'http',
  encoding: 'utf-8',
  logs_level: process.env.BENCH_LOGS_LEVEL || 'warning',
};
