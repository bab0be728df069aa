'use strict';
// HTTP/2 group baseline (decisions.md §19): node:http2 createSecureServer with
// allowHTTP1, the plain "hello" handler on the 'request' event (compat API).
const http2 = require('http2');
const { handler, port, tls, report, fail } = require('./_common');

const { key, cert } = tls();
const server = http2.createSecureServer({ key, cert, allowHTTP1: true }, handler);
server.on('error', (e) => fail('node:http2 listen failed: ' + e.message));
server.listen({ port: port(), host: '127.0.0.1' }, () => {
  report({ port: server.address().port, impl: 'node:http2 compat' });
});
