'use strict';
// App config read by Koatty (koatty_config). Koatty hands protocol/app_host/app_port to koatty_serve's
// NewServe, which here is the native server (this repository, through package.json's `overrides`).
exports.default = {
  encoding: 'utf-8',
  protocol: 'http',
  app_host: '127.0.0.1',
  app_port: Number(process.env.PORT || 3000),
  // 'info' shows Koatty's startup log and one access-log line per request; set LOGS_LEVEL=warning to quieten.
  logs_level: process.env.LOGS_LEVEL || 'info',
};
