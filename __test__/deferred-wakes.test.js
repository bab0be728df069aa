'use strict';
// Answers held for the end of an event-loop turn (crates/core/src/bridge/wake.rs, js/wakes.js):
// whatever ends the turn — a graceful shutdown, a restart, fake timers — the answers given before
// it still go out, as with node and ws (each case failed before its fix).
const { describe, it, mock } = require('node:test');
const assert = require('node:assert');
const http = require('node:http');
const WebSocket = require('ws');
const { HttpServer, WsServer } = require('..');

const app = { callback: () => () => {}, config: () => undefined };
// Taken before any test fakes the timers.
const realSetTimeout = setTimeout;

function get(port, urlPath = '/') {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

function start(server) {
  return new Promise((resolve) => server.Start(() => resolve(server.server.address().port)));
}

describe('answers held for the end of the turn', () => {
  it('WebSocket messages sent in the turn that starts a graceful shutdown all arrive before its 1001 close (100 messages: past the 64 held at most)', async () => {
    const server = new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws' });
    server.on('connection', (client) => {
      for (let i = 0; i < 100; i++) client.send(`m${i}`);
      server.gracefulShutdown({ drainDelay: 0, timeout: 3000 });
    });
    const port = await start(server);
    const received = [];
    const closed = await new Promise((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
      socket.on('message', (d) => received.push(String(d)));
      socket.on('close', (code) => resolve(code));
      socket.on('error', reject);
    });
    assert.strictEqual(received.length, 100);
    assert.strictEqual(received[99], 'm99');
    assert.strictEqual(closed, 1001);
  });

  it('a WebSocket close code given in the same turn as the shutdown is the one the client gets', async () => {
    const server = new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws' });
    server.on('connection', (client) => {
      client.send('last words');
      client.close(4000, 'mine');
      server.gracefulShutdown({ drainDelay: 0, timeout: 3000 });
    });
    const port = await start(server);
    const got = await new Promise((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
      const messages = [];
      socket.on('message', (d) => messages.push(String(d)));
      socket.on('close', (code, reason) => resolve({ messages, code, reason: String(reason) }));
      socket.on('error', reject);
    });
    assert.deepStrictEqual(got, { messages: ['last words'], code: 4000, reason: 'mine' });
  });

  it('answers still go out when setImmediate is faked after the package loaded (jest/sinon/node:test fake timers)', async () => {
    const server = new HttpServer({ callback: () => (req, res) => res.end('hi') }, { hostname: '127.0.0.1', port: 0, protocol: 'http' });
    const port = await start(server);
    mock.timers.enable({ apis: ['setImmediate'] });
    try {
      const res = await Promise.race([
        get(port),
        new Promise((resolve) => realSetTimeout(() => resolve('no answer within 2 s'), 2000)),
      ]);
      assert.deepStrictEqual(res, { status: 200, body: 'hi' });
    } finally {
      mock.timers.reset();
      await server.gracefulShutdown({ drainDelay: 0, timeout: 2000 });
    }
  });
});
