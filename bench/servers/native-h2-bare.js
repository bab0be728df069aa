'use strict';
// HTTP/2 group: this package's Http2Server (h2 via ALPN, http/1.1 fallback)
// with the plain "hello" handler (compat style: setHeader + end) through the
// fake app; key and cert passed as file paths.
const { tls } = require('./_common');
const { startNative } = require('./_native');

const { keyPath, certPath } = tls();
startNative('Http2Server', { protocol: 'http2', ssl: { mode: 'manual', key: keyPath, cert: certPath } });
