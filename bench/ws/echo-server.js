'use strict';
// The WebSocket echo server the WS benchmarks drive, in one of two implementations:
//
//   node bench/ws/echo-server.js native [port]   this package's WsServer (release build required
//                                                 unless BENCH_ALLOW_DEBUG=1), Koatty contract path
//   node bench/ws/echo-server.js ws [port]       the `ws` package's WebSocketServer (repo root node_modules)
//
// Both echo every message back with its kind kept: `client.on('message', (d, isBinary) =>
// client.send(d, { binary: isBinary }))`. The native server also runs what it does for Koatty per
// message (upgradeReq.data = message; app.callback('ws')(upgradeReq, client)) with a fake app whose
// ws handler does nothing, so its figures include the contract's cost. Plain HTTP answers "ok".
//
// When ready it prints ONE JSON line to stdout: {"pid","port","impl","buildProfile"?, ...}.
const path = require('path');

const impl = process.argv[2];
const port = Number(process.argv[3] || process.env.BENCH_PORT || 0);
const ROOT = path.join(__dirname, '..', '..');

function ready(obj) {
  process.stdout.write(JSON.stringify({ pid: process.pid, impl, ...obj }) + '\n');
}

function fail(message) {
  process.stdout.write(JSON.stringify({ pid: process.pid, impl, error: message }) + '\n');
  process.exit(3);
}

function echo(client) {
  client.on('message', (data, isBinary) => client.send(data, { binary: isBinary }));
  // ws emits protocol errors (e.g. an oversized control frame) as 'error': without a listener the
  // process would die; the native WsServer handles them in Rust and logs.
  client.on('error', () => {});
}

if (impl === 'native') {
  let native;
  try {
    native = require(ROOT);
  } catch (e) {
    fail(`cannot load the native koatty_serve from ${ROOT} (build it: npm run build): ${e.message}`);
  }
  const runtimeInfo = native.runtimeInfo();
  if (runtimeInfo.buildProfile !== 'release' && process.env.BENCH_ALLOW_DEBUG !== '1') {
    fail(`the addon is a '${runtimeInfo.buildProfile}' build; benchmarks need release (npm run build) or BENCH_ALLOW_DEBUG=1`);
  }
  const noop = () => {};
  const httpOk = (req, res) => res.end('ok');
  const app = { callback: (protocol) => (protocol ? noop : httpOk), config: () => undefined };
  const server = new native.WsServer(app, { hostname: '127.0.0.1', port, protocol: 'ws' });
  server.on('connection', echo);
  server.on('error', (e) => fail(`listen failed: ${e.message}`));
  server.Start(() => ready({ port: server.server.address().port, serverClass: server.constructor.name, buildProfile: runtimeInfo.buildProfile, runtimeInfo }));
  process.on('SIGTERM', () => server.gracefulShutdown({ drainDelay: 0, timeout: 2000 }).finally(() => process.exit(0)));
} else if (impl === 'ws') {
  const { WebSocketServer } = require(path.join(ROOT, 'node_modules', 'ws'));
  const http = require('http');
  const version = require(path.join(ROOT, 'node_modules', 'ws', 'package.json')).version;
  const server = http.createServer((req, res) => res.end('ok'));
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', echo);
  server.on('error', (e) => fail(`listen failed: ${e.message}`));
  server.listen(port, '127.0.0.1', () => ready({ port: server.address().port, serverClass: 'ws.WebSocketServer', wsVersion: version }));
  process.on('SIGTERM', () => process.exit(0));
} else {
  fail(`usage: node bench/ws/echo-server.js native|ws [port]`);
}
