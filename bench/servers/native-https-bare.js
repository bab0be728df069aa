'use strict';
// HTTPS group: this package's HttpsServer (HTTP/1.1 over rustls) with the plain
// "hello" handler through the fake app; key and cert passed as file paths.
const { tls } = require('./_common');
const { startNative } = require('./_native');

const { keyPath, certPath } = tls();
startNative('HttpsServer', { protocol: 'https', ssl: { mode: 'manual', key: keyPath, cert: certPath } });
