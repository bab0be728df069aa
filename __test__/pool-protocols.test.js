'use strict';
// Per-protocol connection pools (issue 20): each pool's own figures in getMetrics(), the history,
// the health and the Prometheus text, and getConnections()/closeConnection(), with real clients
// nobody here wrote — node's http and http2 clients, `ws`, @grpc/grpc-js.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const http2 = require('http2');
const https = require('https');
const path = require('path');
const WebSocket = require('ws');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const {
  HttpServer, HttpsServer, Http2Server, WsServer, GrpcServer,
  HttpConnectionPoolManager, Http2ConnectionPoolManager, WebSocketConnectionPoolManager, GrpcConnectionPoolManager,
} = require('..');
const { getCerts } = require('./certs');
const { request, httpsRequest, keepAliveAgent, pollUntil, withTimeout, sleep, failIfKeptAlive } = require('./helpers');

failIfKeptAlive(__filename);

const certs = getCerts();
const CA = certs.ca.certPem;
const SSL = { mode: 'manual', key: certs.server.key, cert: certs.server.cert };
/** Health thresholds that never trip on this runner's own lag, latency or errors. */
const CALM = {
  degradedEventLoopLagMs: 1e9, overloadedEventLoopLagMs: 1e9, degradedLatencyMs: 1e9, overloadedLatencyMs: 1e9,
  degradedErrorRate: 1e9, overloadedErrorRate: 1e9,
};

async function start(server) {
  server.on('handlerError', () => {});
  await withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(() => {
      server.off('error', reject);
      resolve();
    });
  }), 5000, `${server.constructor.name}.Start`);
  return server.server.address().port;
}

function stop(server) {
  return withTimeout(server.gracefulShutdown({ drainDelay: 0, timeout: 3000 }), 8000, 'shutdown');
}

/** The value of one Prometheus sample with exactly these labels (undefined when absent). */
function promSample(text, name, labels = {}) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',');
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? '').split(',').filter(Boolean).sort().join(',');
    if (got === want) return Number(m[3]);
  }
  return undefined;
}

const poll = (fn, predicate, timeoutMs = 3000) => pollUntil(fn, predicate, { timeoutMs, intervalMs: 10 });

// ---------------------------------------------------------------------------------------------------
// HTTP/1.1

describe('HTTP/1.1 pool (HttpServer, HttpsServer)', () => {
  it('counts keep-alive reuses, requests per connection and idle connections; lists and closes connections', async () => {
    let release;
    const held = new Promise((r) => { release = r; });
    const server = new HttpServer({ callback: () => async (req, res) => {
      if (req.url === '/hold') await held;
      res.end(`ok ${req.url}`);
    } }, { hostname: '127.0.0.1', port: 0, protocol: 'http' });
    const port = await start(server);
    const pool = server.connectionPool;
    assert.ok(pool instanceof HttpConnectionPoolManager);
    const agent = keepAliveAgent();
    try {
      // Three requests on one kept-alive connection, one on a connection of its own.
      await request({ port, path: '/a', agent });
      for (const p of ['/b', '/c']) assert.equal((await request({ port, path: p, agent })).reusedSocket, true);
      await request({ port, path: '/alone' });
      const m = await poll(() => pool.getMetrics(), (x) => x.http1.idleConnections === 1);
      assert.deepEqual(m.http1, { keepAliveReuses: 2, requestsPerConnection: 2, idleConnections: 1 });
      assert.equal(m.http2, undefined, 'no HTTP/2 figures on an HTTP/1.1 server');

      const [kept] = pool.getConnections();
      assert.equal(pool.getConnections().length, 1, 'the closed one is gone');
      assert.equal(kept.protocol, 'http1');
      assert.equal(kept.remoteAddress, '127.0.0.1');
      assert.ok(kept.remotePort > 0 && kept.remotePort !== port, `remotePort ${kept.remotePort}`);
      assert.equal(kept.requests, 3);
      assert.equal(kept.streams, 0);
      assert.equal(kept.tls, null);
      assert.ok(kept.bytesIn > 3 * 30 && kept.bytesOut > 3 * 60, `bytes ${kept.bytesIn}/${kept.bytesOut}`);
      assert.ok(Math.abs(kept.since - Date.now()) < 10000, `since ${kept.since}`);

      const prom = pool.getPrometheusMetrics();
      assert.equal(promSample(prom, 'koatty_serve_keep_alive_reuses_total', { protocol: 'http1' }), 2);
      assert.equal(promSample(prom, 'koatty_serve_idle_connections', { protocol: 'http1' }), 1);

      // A request in flight: the connection is busy, and closing it waits for the response.
      const inFlight = request({ port, path: '/hold', agent });
      await poll(() => pool.getConnections(), (c) => c[0]?.streams === 1);
      assert.equal(pool.getMetrics().http1.idleConnections, 0);
      assert.equal(pool.closeConnection(kept.id), true);
      await sleep(50);
      release();
      const answered = await inFlight;
      assert.equal(answered.status, 200, 'the response in flight completes');
      // What the connection does, as node says it (hyper alone would append its close to a
      // keep-alive: `keep-alive, close`, found by session 12's outside probe).
      assert.equal(answered.headers.connection, 'close');
      await poll(() => pool.getConnections(), (c) => c.length === 0);
      assert.deepEqual(pool.getConnections(), [], 'closed after its response');
      assert.equal(pool.getMetrics().http1.idleConnections, 0);

      // An idle one closes at once.
      await request({ port, path: '/d', agent });
      const [idle] = await poll(() => pool.getConnections(), (c) => c.length === 1);
      assert.equal(pool.closeConnection(idle.id), true);
      await poll(() => pool.getConnections(), (c) => c.length === 0);
      assert.deepEqual(pool.getConnections(), []);
      assert.equal(pool.closeConnection(idle.id), false, 'no longer open');
      assert.equal(pool.closeConnection(987654), false);
      assert.throws(() => pool.closeConnection('1'), { code: 'ERR_INVALID_ARG_VALUE' });
      assert.throws(() => pool.closeConnection(1.5), { code: 'ERR_INVALID_ARG_VALUE' });
      assert.throws(() => pool.getConnections(-1), { code: 'ERR_OUT_OF_RANGE' });
      assert.deepEqual(pool.getConnections(0), []);
    } finally {
      agent.destroy();
      await stop(server);
    }
  });

  it('HTTPS connections carry their TLS details', async () => {
    const server = new HttpsServer({ callback: () => (req, res) => res.end('tls') },
      { hostname: '127.0.0.1', port: 0, protocol: 'https', ssl: SSL });
    const port = await start(server);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = await httpsRequest({ port, path: '/', agent, tls: { ca: CA } });
      assert.equal(r.status, 200);
      const [conn] = await poll(() => server.connectionPool.getConnections(), (c) => c.length === 1);
      assert.equal(conn.protocol, 'http1');
      assert.deepEqual(conn.tls, { protocol: r.tls.protocol, cipher: r.tls.cipher.name, authorized: false });
      assert.equal(server.connectionPool.getMetrics().http1.keepAliveReuses, 0);
    } finally {
      agent.destroy();
      await stop(server);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// HTTP/2

for (const variant of ['tls', 'h2c']) {
  describe(`HTTP/2 pool (Http2Server, ${variant})`, () => {
    it('counts sessions, streams, their peak, refused and reset streams and GOAWAYs; closes a session with GOAWAY', async () => {
      const holding = [];
      const server = new Http2Server({ callback: () => (req, res) => {
        if (req.url === '/hold') holding.push(res);
        else res.end('ok');
      } }, {
        hostname: '127.0.0.1', port: 0, protocol: 'http2',
        ...(variant === 'tls' ? { ssl: SSL } : { h2c: true }),
        connectionPool: { health: CALM, protocolSpecific: { maxConcurrentStreams: 2 } },
      });
      const port = await start(server);
      const pool = server.connectionPool;
      assert.ok(pool instanceof Http2ConnectionPoolManager);
      const session = http2.connect(`${variant === 'tls' ? 'https' : 'http'}://127.0.0.1:${port}`, { ca: CA });
      session.on('error', () => {});
      try {
        // Five streams sent before the server's SETTINGS arrive: two are served (held), three
        // refused with REFUSED_STREAM.
        const outcomes = [];
        const streams = [];
        for (let i = 0; i < 5; i++) {
          const s = session.request({ ':path': '/hold' });
          streams.push(s);
          outcomes.push(new Promise((resolve) => {
            s.on('response', () => resolve('served'));
            s.on('error', () => resolve(`rst ${s.rstCode}`));
            s.on('close', () => resolve(`closed ${s.rstCode}`));
          }));
        }
        await poll(() => holding.length, (n) => n === 2);
        const m = await poll(() => pool.getMetrics(), (x) => x.http2.refusedStreams === 3);
        assert.deepEqual(m.http2, {
          sessions: 1, activeStreams: 2, maxStreamsPerSession: 2, refusedStreams: 3, resetStreams: 0, goawaysSent: 0,
        });
        const refusedByClient = (await Promise.all(outcomes.slice(2))).filter((o) => o.endsWith(` ${http2.constants.NGHTTP2_REFUSED_STREAM}`));
        assert.equal(refusedByClient.length, 3, 'the client saw three refusals');

        const [conn] = pool.getConnections();
        assert.equal(conn.protocol, 'http2');
        assert.equal(conn.streams, 2);
        assert.equal(conn.requests, 2);
        if (variant === 'tls') {
          assert.equal(conn.tls.protocol, session.socket.getProtocol());
          assert.equal(conn.tls.authorized, false);
        } else {
          assert.equal(conn.tls, null);
        }

        // The client resets one held stream; the other is answered.
        streams[0].close(http2.constants.NGHTTP2_CANCEL);
        const afterReset = await poll(() => pool.getMetrics().http2, (f) => f.resetStreams === 1 && f.activeStreams === 1);
        assert.deepEqual([afterReset.resetStreams, afterReset.activeStreams], [1, 1]);
        // (Which handler got which stream is not known: both are answered, the reset one in vain.)
        for (const res of holding) try { res.end('done'); } catch { /* the reset one */ }
        assert.equal(await withTimeout(outcomes[1], 3000, 'response'), 'served');
        await poll(() => pool.getMetrics().http2.activeStreams, (n) => n === 0);

        // An operator closes the session: GOAWAY, the client sees it and the session ends.
        const goaway = new Promise((resolve) => session.once('goaway', (code) => resolve(code)));
        assert.equal(pool.closeConnection(conn.id), true);
        assert.equal(await withTimeout(goaway, 3000, 'GOAWAY'), http2.constants.NGHTTP2_NO_ERROR);
        const after = await poll(() => pool.getMetrics().http2, (f) => f.sessions === 0);
        assert.equal(after.goawaysSent, 1, 'one per session, though a graceful GOAWAY is two frames');
        assert.equal(after.maxStreamsPerSession, 2);

        const history = pool.getMetricsHistory(60);
        assert.equal(history.reduce((a, s) => a + s.refusedStreams, 0), 3);
        assert.equal(history.reduce((a, s) => a + s.resetStreams, 0), 1);
        const health = pool.getHealth();
        assert.ok(health.refusedStreamRate > 0.1, `refusedStreamRate ${health.refusedStreamRate}`);
        assert.equal(health.status, 'overloaded');
        assert.ok(health.reasons.some((r) => r.startsWith('refusedStreamRate')), health.reasons.join('; '));

        const prom = pool.getPrometheusMetrics();
        assert.equal(promSample(prom, 'koatty_serve_streams_refused_total', { protocol: 'http2' }), 3);
        assert.equal(promSample(prom, 'koatty_serve_goaways_sent_total', { protocol: 'http2' }), 1);
        assert.equal(promSample(prom, 'koatty_serve_sessions', { protocol: 'http2' }), 0);
        assert.equal(promSample(prom, 'koatty_serve_idle_connections', { protocol: 'http1' }), 0);
      } finally {
        for (const res of holding) if (!res.writableEnded) try { res.end(); } catch { /* reset */ }
        session.destroy();
        await stop(server);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// WebSocket

function wsConnect(port, options = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, options);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }), 5000, 'ws open');
}

function wsClosed(ws) {
  return withTimeout(new Promise((resolve) => ws.once('close', (code) => resolve(code))), 5000, 'ws close');
}

describe('WebSocket pool (WsServer)', () => {
  it('counts messages and their bytes each way, pings, pong timeouts and close codes; closes with 1001', async () => {
    // Koatty's per-message handler does nothing here; the 'connection' listener echoes.
    const app = { callback: (protocol) => (protocol === undefined ? (req, res) => res.end('plain') : () => {}), config: () => undefined };
    const server = new WsServer(app, {
      hostname: '127.0.0.1', port: 0, protocol: 'ws',
      connectionPool: { health: CALM, protocolSpecific: { pingInterval: 100, pongTimeout: 150 } },
    });
    server.on('connection', (client) => client.on('message', (data, binary) => client.send(data, { binary })));
    const port = await start(server);
    const pool = server.connectionPool;
    assert.ok(pool instanceof WebSocketConnectionPoolManager);
    try {
      const a = await wsConnect(port);
      const echoed = [];
      a.on('message', (d) => echoed.push(d.toString()));
      for (const text of ['one', 'two', 'three!']) a.send(text);
      a.send(Buffer.alloc(10, 1));
      await poll(() => echoed.length, (n) => n === 4);
      const m = pool.getMetrics();
      assert.deepEqual(
        { messagesIn: m.websocket.messagesIn, messagesOut: m.websocket.messagesOut, bytesIn: m.websocket.bytesIn, bytesOut: m.websocket.bytesOut },
        { messagesIn: 4, messagesOut: 4, bytesIn: 22, bytesOut: 22 },
      );
      assert.equal(m.websocket.connections, 1);
      assert.equal(m.http1.keepAliveReuses, 0);

      const [conn] = pool.getConnections();
      assert.equal(conn.protocol, 'websocket', 'an upgraded connection is listed as a WebSocket');
      assert.equal(conn.requests, 1);

      // Normal close, an application code, an operator's close (1001), and a peer that never pongs.
      const b = await wsConnect(port);
      const c = await wsConnect(port);
      const mute = await wsConnect(port, { autoPong: false });
      const muteClosed = wsClosed(mute);
      await poll(() => pool.getMetrics().websocket.pingsSent, (n) => n >= 4);
      const aClosed = wsClosed(a);
      a.close(1000);
      const bClosed = wsClosed(b);
      b.close(4001, 'app');
      assert.equal(await aClosed, 1000);
      assert.equal(await bClosed, 4001);
      const cPort = c._socket.localPort;
      const cEntry = (await poll(() => pool.getConnections(), (l) => l.some((x) => x.remotePort === cPort))).find((x) => x.remotePort === cPort);
      assert.equal(cEntry.protocol, 'websocket');
      const cClosed = wsClosed(c);
      assert.equal(pool.closeConnection(cEntry.id), true);
      assert.equal(await cClosed, 1001);
      assert.equal(await muteClosed, 1006, 'terminated for a missing pong');

      const f = (await poll(() => pool.getMetrics(), (x) => x.websocket.connections === 0)).websocket;
      assert.deepEqual(f.closeCodes, { 1000: 1, 1001: 1, 1006: 1, other: 1 });
      assert.equal(f.pongTimeouts, 1);
      assert.equal(pool.getMetrics().wsDeadPeers, 1);

      const history = pool.getMetricsHistory(60);
      assert.equal(history.reduce((x, s) => x + s.messagesIn, 0), 4);
      assert.equal(history.reduce((x, s) => x + s.messagesOut, 0), 4);
      assert.equal(history.reduce((x, s) => x + s.pongTimeouts, 0), 1);
      const health = pool.getHealth();
      assert.equal(health.pongTimeoutRate, 0.25, 'one of four connections ended for a missing pong');
      assert.equal(health.status, 'degraded');
      assert.ok(health.reasons.some((r) => r.startsWith('pongTimeoutRate')), health.reasons.join('; '));

      const prom = pool.getPrometheusMetrics();
      assert.equal(promSample(prom, 'koatty_serve_messages_received_total', { protocol: 'websocket' }), 4);
      assert.equal(promSample(prom, 'koatty_serve_closes_total', { protocol: 'websocket', code: '1001' }), 1);
      assert.equal(promSample(prom, 'koatty_serve_pong_timeouts_total', { protocol: 'websocket' }), 1);
    } finally {
      await stop(server);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// gRPC

const PROTO_DIR = path.join(__dirname, 'protos');
const { Echo } = grpc.loadPackageDefinition(protoLoader.loadSync('echo.proto', {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR],
})).koatty.test;

describe('gRPC pool (GrpcServer)', () => {
  it('counts calls by status, by method with latency, and in progress by kind; HTTP/2 figures of its sessions', async () => {
    const server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', connectionPool: { health: CALM } });
    let releaseStream;
    const streamHeld = new Promise((r) => { releaseStream = r; });
    server.RegisterService({
      service: Echo.service,
      implementation: {
        Unary(call, callback) {
          const { code, details, delay_ms: delay } = call.request;
          setTimeout(() => (code ? callback({ code, details }) : callback(null, { message: call.request.message })), delay);
        },
        async ServerStream(call) {
          call.write({ message: 'first' });
          await streamHeld;
          call.end();
        },
        ClientStream(call, callback) { call.on('data', () => {}); call.on('end', () => callback(null, {})); },
        Bidi(call) { call.on('end', () => call.end()); },
      },
    });
    const port = await start(server);
    const pool = server.connectionPool;
    assert.ok(pool instanceof GrpcConnectionPoolManager);
    const client = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const unary = (req) => new Promise((resolve) => client.Unary(req, { deadline: Date.now() + 5000 }, (err) => resolve(err ? err.code : 0)));
    try {
      assert.deepEqual(await Promise.all([
        unary({ message: 'a', delay_ms: 20 }), unary({ message: 'b' }), unary({ message: 'c' }),
        unary({ code: grpc.status.UNAVAILABLE, details: 'try later' }),
      ]), [0, 0, 0, grpc.status.UNAVAILABLE]);

      // A server-streaming call in progress, then one the client cancels.
      const stream = client.ServerStream({ message: 's' });
      stream.on('error', () => {});
      await new Promise((r) => stream.once('data', r));
      let m = pool.getMetrics();
      assert.deepEqual(m.grpc.activeStreams, { unary: 0, clientStreaming: 0, serverStreaming: 1, bidiStreaming: 0 });
      assert.equal(m.http2.activeStreams, 1);
      assert.equal(m.http2.sessions, 1);
      // Released only once the server saw the reset, so the handler's end cannot beat it.
      stream.cancel();
      m = await poll(() => pool.getMetrics(), (x) => x.grpc.activeStreams.serverStreaming === 0 && x.http2.activeStreams === 0);
      releaseStream();

      // A method nobody registered.
      const other = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      const unimplemented = await new Promise((resolve) => other.makeUnaryRequest('/koatty.test.Nope/Call', (x) => x, (x) => x, Buffer.alloc(0), (err) => resolve(err.code)));
      other.close();
      assert.equal(unimplemented, grpc.status.UNIMPLEMENTED);

      m = await poll(() => pool.getMetrics(), (x) => x.grpc.callsStarted === 6 && Object.values(x.grpc.callsByStatus).reduce((a, n) => a + n, 0) === 6);
      assert.deepEqual(m.grpc.callsByStatus, { 0: 3, 1: 1, 12: 1, 14: 1 });
      assert.equal(m.grpc.callsByMethod['/koatty.test.Echo/Unary'].calls, 4);
      assert.ok(m.grpc.callsByMethod['/koatty.test.Echo/Unary'].averageLatency >= 20 / 4, 'one call took 20 ms');
      assert.equal(m.grpc.callsByMethod['/koatty.test.Echo/ServerStream'].calls, 1);
      assert.deepEqual(m.grpc.callsByMethod['/koatty.test.Echo/Bidi'], { calls: 0, averageLatency: 0 });
      assert.equal(m.grpc.callsByMethod['/koatty.test.Nope/Call'], undefined, 'only registered methods');
      assert.equal(m.http1, undefined);

      // The client's connection: its calls, and a GOAWAY when an operator closes it.
      const conn = pool.getConnections().sort((x, y) => y.requests - x.requests)[0];
      assert.ok(conn && conn.requests >= 5, JSON.stringify(pool.getConnections()));
      assert.equal(conn.protocol, 'grpc');
      assert.equal(pool.closeConnection(conn.id), true);
      await poll(() => pool.getMetrics().http2, (f) => f.goawaysSent >= 1);
      assert.equal(await unary({ message: 'after GOAWAY' }), 0, 'grpc-js reconnects');

      const prom = pool.getPrometheusMetrics();
      assert.equal(promSample(prom, 'koatty_serve_calls_ended_total', { protocol: 'grpc', code: '0' }), 4);
      assert.equal(promSample(prom, 'koatty_serve_method_duration_milliseconds_count', { protocol: 'grpc', method: '/koatty.test.Echo/Unary' }), 5);
      assert.equal(promSample(prom, 'koatty_serve_calls_active', { protocol: 'grpc', kind: 'unary' }), 0);
      assert.equal(promSample(prom, 'koatty_serve_goaways_sent_total', { protocol: 'http2' }) >= 1, true);
    } finally {
      client.close();
      await stop(server);
    }
  });
});
