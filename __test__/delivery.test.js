'use strict';
// What crosses from the native side to handlers (src/napi/delivery.rs, js/bridge.js): small
// bodies and WebSocket messages cross through one staging buffer and are copied out at once. Each
// must end up in memory of its own, as with node and ws: a Buffer from node's shared pool would
// carry other clients' bytes in its `.buffer`, where a handler that reads `.buffer` (without
// `byteOffset`) would see them.
const { test } = require('node:test');
const assert = require('node:assert');
const http = require('node:http');
const WebSocket = require('ws');
const { createServer } = require('..');

const SECRET = 'SECRET-of-client-a';
const holdsSecret = (chunk) => Buffer.from(chunk.buffer).includes(SECRET);

test('WebSocket messages: no other connection\'s bytes behind a message\'s .buffer', async () => {
  const server = createServer({ webSocket: true }, (req, res) => res.end());
  const seen = { b: 0, leaked: 0 };
  server.on('websocket', (socket, req) => {
    socket.on('message', (data) => {
      if (req.url === '/b') {
        seen.b++;
        if (holdsSecret(data)) seen.leaked++;
      }
      socket.send('k');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  // Each client sends its next message on the answer to the last, so the two interleave.
  const COUNT = 300;
  await Promise.all(['a', 'b'].map((who) => new Promise((resolve, reject) => {
    const client = new WebSocket(`ws://127.0.0.1:${port}/${who}`);
    let answers = 0;
    const next = () => client.send(who === 'a' ? `${SECRET}-${answers}` : 'b'.repeat(40));
    client.on('error', reject);
    client.on('open', next);
    client.on('message', () => {
      if (++answers === COUNT) {
        client.close();
        resolve();
      } else {
        next();
      }
    });
  })));
  await new Promise((resolve) => server.close(resolve));
  assert.strictEqual(seen.b, COUNT);
  assert.strictEqual(seen.leaked, 0, `${seen.leaked} of client b's messages share memory with client a's`);
});

test('request bodies: no other request\'s bytes behind a chunk\'s .buffer', async () => {
  const seen = { b: 0, leaked: 0 };
  const server = createServer((req, res) => {
    req.on('data', (chunk) => {
      if (req.url === '/b') {
        seen.b++;
        if (holdsSecret(chunk)) seen.leaked++;
      }
    });
    req.on('end', () => res.end('k'));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const REQUESTS = 200;
  await Promise.all(Array.from({ length: REQUESTS }, (_, i) => new Promise((resolve, reject) => {
    const who = i % 2 ? 'a' : 'b';
    const req = http.request({ port, host: '127.0.0.1', method: 'POST', path: `/${who}`, agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end(who === 'a' ? `${SECRET}-${i}` : 'b'.repeat(60));
  })));
  await new Promise((resolve) => server.close(resolve));
  assert.strictEqual(seen.b, REQUESTS / 2);
  assert.strictEqual(seen.leaked, 0, `${seen.leaked} of the b bodies share memory with a's`);
});
