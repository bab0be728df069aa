'use strict';
// HTTP/2 group, second baseline: the same node:http2 secure server, answering
// on the 'stream' event (core API) without the compat request/response objects.
// No 'request' listener, so an HTTP/1.1 client (allowHTTP1) would get no answer;
// the benchmark only speaks h2 to it.
const http2 = require('http2');
const { port, tls, report, fail } = require('./_common');

const { key, cert } = tls();
const server = http2.createSecureServer({ key, cert, allowHTTP1: true });
server.on('stream', (stream) => {
  stream.respond({ ':status': 200, 'content-type': 'text/plain' });
  stream.end('hello');
});
server.on('error', (e) => fail('node:http2 listen failed: ' + e.message));
server.listen({ port: port(), host: '127.0.0.1' }, () => {
  report({ port: server.address().port, impl: 'node:http2 stream' });
});
