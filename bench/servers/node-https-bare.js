'use strict';
// HTTPS group baseline: node:https with the plain "hello" handler.
const https = require('https');
const { handler, port, tls, report, fail } = require('./_common');

const { key, cert } = tls();
const server = https.createServer({ key, cert }, handler);
server.on('error', (e) => fail('node:https listen failed: ' + e.message));
server.listen({ port: port(), host: '127.0.0.1' }, () => {
  report({ port: server.address().port, impl: 'node:https' });
});
