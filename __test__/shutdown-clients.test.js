'use strict';
// Shutdown under real clients (issue 15 §1, decisions.md §13): an unmodified Koatty 3.11.8 app
// (child process, NODE_ENV=production, default options) gets SIGTERM while clients hold connections
// open — idle HTTP/1.1 keep-alive sockets, an HTTP/2 session, WebSocket clients, a gRPC channel —
// and one request is in flight. Step 1 must stop new work on every connection at once: idle
// keep-alive sockets close, HTTP/2 and gRPC get GOAWAY, WebSockets close 1001, the request in
// flight is answered normally (HTTP/1.1: with `Connection: close`), work that still arrives is
// refused the retryable way (gRPC UNAVAILABLE, never INTERNAL), and the process exits within 1 s
// of its last in-flight response.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('http');
const net = require('net');
const tls = require('tls');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const WebSocket = require('ws');
const { getCerts } = require('./certs');
const { PREFACE, frame, onFrames } = require('./h2-frames');
const https = require('https');
const { Http2Server, GrpcServer, WsServer, HttpsServer } = require('..');
const { startKoattyApp, request, h2connect, h2request, withTimeout } = require('./helpers');
const { NO_POSIX_SIGNALS } = require('./platform');

const KOATTY_APP_DIR = path.join(__dirname, 'fixtures', 'koatty-app');
const certs = getCerts();
/** The target: exit within this many ms of the last in-flight response. */
const EXIT_AFTER_LAST_RESPONSE_MS = 1000;
/** Step 1's signals (close, GOAWAY, 1001) must reach idle clients at least this soon after SIGTERM. */
const RELEASED_WITHIN_MS = 600;

const apps = new Set();
after(() => {
  for (const app of apps) app.child.kill('SIGKILL');
});

async function start(env = {}) {
  const app = await startKoattyApp({ env });
  apps.add(app);
  return app;
}

/** SIGTERM; resolves with the exit and the time it happened. */
function terminate(app) {
  const t0 = Date.now();
  app.child.kill('SIGTERM');
  const exited = withTimeout(app.exited, 10000, 'exit after SIGTERM').then((exit) => ({ ...exit, at: Date.now() }));
  return { t0, exited };
}

describe('shutdown releases every client at once (Koatty app, SIGTERM, default options)', { skip: NO_POSIX_SIGNALS }, () => {
  it('HTTP/1.1: idle keep-alive sockets close at once, the request in flight gets its answer with Connection: close, exit within 1 s of it', async (t) => {
    const app = await start();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const idleClosed = [];
    try {
      // Three idle keep-alive connections, each having served one request.
      const warm = await Promise.all([1, 2, 3].map(() => request({ port: app.port, path: '/api/json', agent })));
      for (const r of warm) assert.equal(r.status, 200);
      const sockets = Object.values(agent.freeSockets).flat();
      assert.equal(sockets.length, 3, 'three idle keep-alive sockets in the agent');
      for (const s of sockets) idleClosed.push(new Promise((resolve) => s.once('close', () => resolve(Date.now()))));

      let answeredAt = 0;
      const slow = request({ port: app.port, path: '/api/slow?ms=700' }).then((r) => { answeredAt = Date.now(); return r; });
      await new Promise((resolve) => setTimeout(resolve, 150));
      const { t0, exited } = terminate(app);
      const closedAt = await withTimeout(Promise.all(idleClosed), 5000, 'idle keep-alive sockets closed');
      const latest = Math.max(...closedAt) - t0;
      assert.ok(latest < RELEASED_WITHIN_MS, `idle keep-alive sockets closed ${latest} ms after SIGTERM (node's close() closes idle sockets at once)`);
      const r = await slow;
      assert.equal(r.status, 200, `the request in flight is answered normally: ${JSON.stringify(r)}\n${app.output()}`);
      assert.deepEqual(r.json(), { slept: 700 });
      assert.equal(r.headers.connection, 'close', 'the response in flight says the connection closes');
      const exit = await exited;
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, app.output());
      const after = exit.at - answeredAt;
      t.diagnostic(`http1: idle sockets closed ${latest} ms after SIGTERM, in-flight answered ${answeredAt - t0} ms after it, exit ${after} ms after that`);
      assert.ok(after < EXIT_AFTER_LAST_RESPONSE_MS, `exited ${after} ms after the last in-flight response (${exit.at - t0} ms after SIGTERM)`);
    } finally {
      agent.destroy();
    }
  });

  it('HTTP/2: GOAWAY at once, the stream in flight completes, exit within 1 s of it', async (t) => {
    const app = await start({ KOATTY_TEST_PROTOCOL: 'http2', KOATTY_TEST_KEY_FILE: certs.server.key, KOATTY_TEST_CRT_FILE: certs.server.cert });
    const idle = await h2connect(`https://127.0.0.1:${app.port}`, { ca: certs.ca.certPem });
    const busy = await h2connect(`https://127.0.0.1:${app.port}`, { ca: certs.ca.certPem });
    try {
      assert.equal((await h2request(idle, { path: '/api/json' })).status, 200);
      const goaway = new Promise((resolve) => idle.once('goaway', () => resolve(Date.now())));
      let answeredAt = 0;
      const slow = h2request(busy, { path: '/api/slow?ms=700' }).then((r) => { answeredAt = Date.now(); return r; });
      await new Promise((resolve) => setTimeout(resolve, 150));
      const { t0, exited } = terminate(app);
      const gotGoaway = await withTimeout(goaway, 5000, 'GOAWAY on the idle session');
      assert.ok(gotGoaway - t0 < RELEASED_WITHIN_MS, `GOAWAY ${gotGoaway - t0} ms after SIGTERM`);
      const r = await slow;
      assert.equal(r.status, 200, `the stream in flight completes: ${JSON.stringify(r)}\n${app.output()}`);
      const exit = await exited;
      assert.equal(exit.code, 0, app.output());
      const after = exit.at - answeredAt;
      t.diagnostic(`http2: GOAWAY ${gotGoaway - t0} ms after SIGTERM, in-flight answered ${answeredAt - t0} ms after it, exit ${after} ms after that`);
      assert.ok(after < EXIT_AFTER_LAST_RESPONSE_MS, `exited ${after} ms after the last in-flight response (${exit.at - t0} ms after SIGTERM)`);
    } finally {
      idle.destroy();
      busy.destroy();
    }
  });

  it('WebSocket: every client gets close 1001 at once and the process exits within 1 s', async (t) => {
    const app = await start({ KOATTY_TEST_PROTOCOL: 'ws' });
    const clients = await Promise.all([1, 2, 3].map(() => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${app.port}/ws/echo`);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    })));
    const closes = clients.map((ws) => new Promise((resolve) => ws.once('close', (code) => resolve({ code, at: Date.now() }))));
    const { t0, exited } = terminate(app);
    const closed = await withTimeout(Promise.all(closes), 5000, 'close frames');
    for (const c of closed) {
      assert.equal(c.code, 1001, 'going away');
      assert.ok(c.at - t0 < RELEASED_WITHIN_MS, `close 1001 ${c.at - t0} ms after SIGTERM`);
    }
    const exit = await exited;
    assert.equal(exit.code, 0, app.output());
    t.diagnostic(`ws: close 1001 ${Math.max(...closed.map((c) => c.at)) - t0} ms after SIGTERM, exit ${exit.at - t0} ms after it`);
    assert.ok(exit.at - t0 < EXIT_AFTER_LAST_RESPONSE_MS, `exited ${exit.at - t0} ms after SIGTERM`);
  });

  it('gRPC: the call in flight completes, a call made after the signal on the open channel fails UNAVAILABLE (never INTERNAL), exit within 1 s', async (t) => {
    const protoFile = path.join(KOATTY_APP_DIR, 'src', 'proto', 'greeter.proto');
    const app = await start({
      KOATTY_TEST_PROTOCOL: 'grpc',
      router_router__protocol: 'grpc',
      router_router__ext__protoFile: protoFile,
    });
    const { Greeter } = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile, { keepCase: true })).koattytest;
    const client = new Greeter(`127.0.0.1:${app.port}`, grpc.credentials.createInsecure());
    const idleClient = new Greeter(`127.0.0.1:${app.port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    const call = (c, name) => new Promise((resolve) => {
      c.SayHello({ name }, { deadline: Date.now() + 5000 }, (err, reply) => resolve({ err, reply, at: Date.now() }));
    });
    try {
      assert.equal((await call(client, 'a')).reply.message, 'Hello a');
      assert.equal((await call(idleClient, 'b')).reply.message, 'Hello b');
      const slow = call(client, 'slow:700');
      await new Promise((resolve) => setTimeout(resolve, 150));
      const { t0, exited } = terminate(app);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const late = await call(idleClient, 'late');
      assert.ok(late.err, `a call after the signal is refused: ${JSON.stringify(late.reply)}`);
      assert.equal(late.err.code, grpc.status.UNAVAILABLE, `refused as UNAVAILABLE (clients retry it), got ${late.err.code} ${late.err.details}`);
      const inFlight = await slow;
      assert.equal(inFlight.err, null, `the call in flight completes: ${inFlight.err && inFlight.err.details}\n${app.output()}`);
      assert.equal(inFlight.reply.message, 'Hello slow:700');
      const exit = await exited;
      assert.equal(exit.code, 0, app.output());
      const after = exit.at - inFlight.at;
      t.diagnostic(`grpc: late call ${late.err.code} ${late.at - t0} ms after SIGTERM, in-flight answered ${inFlight.at - t0} ms after it, exit ${after} ms after that`);
      assert.ok(after < EXIT_AFTER_LAST_RESPONSE_MS, `exited ${after} ms after the last in-flight call (${exit.at - t0} ms after SIGTERM)`);
    } finally {
      client.close();
      idleClient.close();
    }
  });
});

// A peer that went away without a word (a dead host, a dropped NAT entry) keeps its TCP connection
// open and never answers again. HTTP/2's graceful shutdown waits for an answer to its PING; grpc-js's
// tryShutdown and node's http2 close() do not wait for such a peer, nor must this server.
describe('shutdown is not held by a peer that went silent', () => {
  const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
  const app = { callback: () => (req, res) => res.end('ok') };

  async function started(server) {
    server.on('error', () => {});
    await new Promise((resolve) => server.Start(resolve));
    return server.server.address().port;
  }

  /** Opens a connection that says `hello` (then, for TLS, completes the handshake) and goes silent. */
  function silentPeer(port, { hello, secure = false } = {}) {
    return new Promise((resolve, reject) => {
      const socket = secure
        ? tls.connect({ port, host: '127.0.0.1', ca: certs.ca.certPem, ALPNProtocols: ['h2'] }, () => { socket.pause(); resolve(socket); })
        : net.connect(port, '127.0.0.1', () => {
          if (hello) socket.write(hello);
          socket.pause(); // never reads again: the server's PING / close frame goes unanswered
          resolve(socket);
        });
      socket.on('error', () => {});
      socket.once('error', reject);
    });
  }

  const cases = [
    ['h2c session (preface + SETTINGS, then silent)', () => new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true }), { hello: Buffer.concat([PREFACE, EMPTY_SETTINGS]) }],
    ['gRPC connection (preface + SETTINGS, then silent)', () => new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' }), { hello: Buffer.concat([PREFACE, EMPTY_SETTINGS]) }],
    ['HTTP/2 over TLS (handshake, then silent)', () => new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: { mode: 'manual', key: certs.server.key, cert: certs.server.cert } }), { secure: true }],
    ['WebSocket (upgraded, then never reads)', () => new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws' }), {
      hello: 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    }],
  ];
  for (const [name, make, peer] of cases) {
    it(name, async () => {
      const server = make();
      const port = await started(server);
      const socket = await silentPeer(port, peer);
      try {
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.ok(server.connectionPool.getMetrics().activeConnections >= 1, 'the silent peer is connected');
        const report = await withTimeout(server.gracefulShutdown({ drainDelay: 5000, timeout: 10000 }), 15000, 'gracefulShutdown');
        // At most: the 1 s a fresh connection gets for a first request, then 1 s of quiet after the
        // GOAWAY / close frame (crates/core/src/conn/drive.rs). Before: the whole `timeout`.
        assert.ok(report.duration < 2600, `shutdown took ${report.duration} ms with a silent peer (grpc-js / node: at once) ${JSON.stringify(report.steps)}`);
        assert.equal(report.forced, 0, 'closed by the drain, not forced');
      } finally {
        socket.destroy();
      }
    });
  }
});

// RFC 9113 §6.8: a server shutting down gracefully sends GOAWAY(2^31-1), then the final GOAWAY once
// its PING comes back; a stream the client opened before it saw the first one is not for the app.
// It is reset with REFUSED_STREAM, which clients retry (grpc-js transparently, on another server
// when it has one). A 503 or UNAVAILABLE told them it was processed: grpc-js gave it to the caller.
describe('a stream opened after shutdown began is refused (REFUSED_STREAM), not answered 503 / UNAVAILABLE (outside probe, session 15)', () => {
  const str = (v) => Buffer.concat([Buffer.from([Buffer.byteLength(v)]), Buffer.from(v)]);
  /** A request head (HPACK literals without indexing, names from the static table or new). */
  const requestHead = (method, requestPath, extra = []) => Buffer.concat([
    Buffer.from([method === 'POST' ? 0x83 : 0x82, 0x86]), // :method, :scheme http
    Buffer.from([0x04]), str(requestPath), // :path
    Buffer.from([0x01]), str('localhost'), // :authority
    ...extra.map(([name, value]) => Buffer.concat([Buffer.from([0x00]), str(name), str(value)])),
  ]);
  const { Echo } = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'protos', 'echo.proto'), { keepCase: true })).koatty.test;
  const cases = [
    ['HTTP/2 (h2c)', () => new Http2Server({ callback: () => (req, res) => res.end('ok') }, { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true }),
      requestHead('GET', '/')],
    ['gRPC', () => {
      const server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' });
      server.RegisterService({ service: Echo.service, implementation: { Unary: (call, cb) => cb(null, call.request) } });
      return server;
    }, requestHead('POST', '/koatty.test.Echo/Unary', [['content-type', 'application/grpc'], ['te', 'trailers']])],
  ];
  for (const [name, make, head] of cases) {
    it(name, async () => {
      const server = make();
      server.on('error', () => {});
      await new Promise((resolve) => server.Start(resolve));
      const port = server.server.address().port;
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      const seen = { goaways: [], resets: {}, heads: [] };
      onFrames(socket, (type, flags, stream, payload) => {
        if (type === 4 && !(flags & 1)) socket.write(frame(4, 1, 0)); // SETTINGS ack; PINGs go unanswered
        if (type === 7) seen.goaways.push(payload.readUInt32BE(0) & 0x7fffffff);
        if (type === 3) seen.resets[stream] = payload.readUInt32BE(0);
        if (type === 1) seen.heads.push(stream);
      });
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(Buffer.concat([PREFACE, frame(4, 0, 0)]));
      try {
        const shutdown = server.gracefulShutdown({ drainDelay: 2000, timeout: 3000 });
        await withTimeout((async () => { while (seen.goaways.length === 0) await new Promise((resolve) => setTimeout(resolve, 5)); })(), 3000, 'first GOAWAY');
        assert.equal(seen.goaways[0], 2 ** 31 - 1, 'the first GOAWAY admits streams still on their way');
        socket.write(frame(1, 0x4 | 0x1, 1, head)); // HEADERS, END_HEADERS | END_STREAM, stream 1
        await withTimeout((async () => { while (!(1 in seen.resets) && !seen.heads.includes(1)) await new Promise((resolve) => setTimeout(resolve, 5)); })(), 3000, 'an answer to stream 1');
        assert.deepEqual(seen.heads, [], 'no response head (a 503 / UNAVAILABLE)');
        assert.equal(seen.resets[1], 7, 'RST_STREAM REFUSED_STREAM');
        socket.destroy();
        await withTimeout(shutdown, 5000, 'shutdown');
        // Counted as refused, but not as overload: health after the shutdown (and after a restart)
        // is not `overloaded` for the window's minute (third probe, session 15).
        assert.ok(server.connectionPool.getMetrics().http2.refusedStreams >= 1, 'the refusal is counted');
        const health = server.connectionPool.getHealth();
        assert.equal(health.refusedStreamRate, 0, JSON.stringify(health));
        assert.equal(health.status, 'healthy', JSON.stringify(health.reasons));
      } finally {
        socket.destroy();
      }
    });
  }
});

describe('shutdown does not cut a response still on its way to a slow reader', () => {
  // The handler ends long before the reader has read everything: the rest waits in socket and TLS
  // buffers while nothing moves for stretches, which must not count as a dead peer.
  it('HTTPS: a 4 MiB streamed response read slowly (20 ms per chunk) during the drain arrives whole', async () => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const total = 64; // × 64 KiB = 4 MiB
    let finishedAt = 0;
    const server = new HttpsServer({
      callback: () => (req, res) => {
        res.setHeader('Content-Length', String(chunk.length * total));
        res.on('finish', () => { finishedAt = Date.now(); });
        let sent = 0;
        const pump = () => {
          while (sent < total) {
            sent++;
            if (!res.write(chunk)) return res.once('drain', pump);
          }
          res.end();
        };
        pump();
      },
    }, { hostname: '127.0.0.1', port: 0, protocol: 'https', ssl: { mode: 'manual', key: certs.server.key, cert: certs.server.cert } });
    server.on('error', () => {});
    await new Promise((resolve) => server.Start(resolve));
    const port = server.server.address().port;
    let shutdown;
    const done = await withTimeout(new Promise((resolve) => {
      const req = https.get({ port, host: '127.0.0.1', path: '/', ca: certs.ca.certPem, agent: false }, (res) => {
        let n = 0;
        setTimeout(() => { shutdown = server.gracefulShutdown({ drainDelay: 0, timeout: 20000 }); }, 200);
        res.on('data', (d) => {
          n += d.length;
          res.pause();
          setTimeout(() => res.resume(), 20);
        });
        res.on('end', () => resolve({ n, at: Date.now() }));
        res.on('error', (err) => resolve({ n, error: err.code }));
        res.on('aborted', () => resolve({ n, error: 'aborted' }));
      });
      req.on('error', (err) => resolve({ n: -1, error: err.code }));
    }), 30000, 'the whole response');
    assert.equal(done.n, chunk.length * total, `every byte arrived (the handler had finished ${done.at - finishedAt} ms before the reader did): ${JSON.stringify(done)}`);
    const report = await shutdown;
    assert.equal(report.forced, 0);
  });
});
