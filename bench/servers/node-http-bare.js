'use strict';
// a. node:http with the plain "hello" handler: the baseline of the bare rows.
const http = require('http');
const { handler, port, report, fail } = require('./_common');

const server = http.createServer(handler);
server.on('error', (e) => fail('node:http listen failed: ' + e.message));
server.listen({ port: port(), host: '127.0.0.1' }, () => {
  report({ port: server.address().port, impl: 'node:http' });
});
