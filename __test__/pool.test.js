'use strict';
// Connection pool, metrics, health, native endpoints and trace ids (issue 7), with real sockets and
// node's own clients. HttpServer is used directly with a tiny fake app; where the JavaScript thread
// has to be blocked (native endpoints answering meanwhile) or a request may crash the process, the
// server runs in a CHILD process so this runner's event loop and life are not affected.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const net = require('net');
const lib = require('..');

const { HttpServer } = lib;
const { REPO_ROOT, request, pollUntil, withTimeout, sleep, failIfKeptAlive } = require('./helpers');

// A server that keeps a handle alive after Stop would keep this process from exiting: fail loudly.
failIfKeptAlive(__filename);

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Health thresholds that never trip on this runner's own event-loop lag or on latency. */
const CALM = { degradedEventLoopLagMs: 1e9, overloadedEventLoopLagMs: 1e9, degradedLatencyMs: 1e9, overloadedLatencyMs: 1e9 };

function fakeApp(handler) {
  return { callback: () => handler };
}

function start(server, timeout = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(() => {
      server.off('error', reject);
      resolve(server.server.address().port);
    });
  }), timeout, 'HttpServer.Start');
}

function stop(server, timeout = 8000) {
  return withTimeout(new Promise((resolve) => server.Stop(() => resolve())), timeout, 'HttpServer.Stop');
}

async function startServer(handler, options = {}) {
  const server = new HttpServer(fakeApp(handler), { hostname: '127.0.0.1', port: 0, protocol: 'http', ...options });
  server.on('handlerError', () => {});
  const port = await start(server);
  return { server, port, pool: server.connectionPool };
}

/**
 * A raw keep-alive TCP client that parses HTTP/1.1 responses with Content-Length (all this server
 * sends for whole bodies). `closed` resolves with the time the peer closed the socket.
 */
function rawClient(port) {
  const socket = net.connect({ port, host: '127.0.0.1' });
  let buf = Buffer.alloc(0);
  let waiter = null;
  let closedAt = null;
  const connected = new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(Date.now()));
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  const closed = new Promise((resolve) => {
    socket.once('close', () => {
      closedAt = Date.now();
      resolve(closedAt);
      if (waiter) waiter();
    });
  });
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (waiter) waiter();
  });
  const parse = () => {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    const headers = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    if (buf.length < end + 4 + length) return null;
    const body = buf.subarray(end + 4, end + 4 + length).toString('utf8');
    buf = buf.subarray(end + 4 + length);
    return { status: Number(m[1]), headers, body, at: Date.now() };
  };
  const read = (timeoutMs = 5000) => withTimeout(new Promise((resolve, reject) => {
    const check = () => {
      let r;
      try { r = parse(); } catch (err) { waiter = null; reject(err); return; }
      if (r) { waiter = null; resolve(r); } else if (closedAt !== null) {
        waiter = null;
        reject(new Error(`connection closed before a whole response (had ${JSON.stringify(buf.toString('latin1'))})`));
      }
    };
    waiter = check;
    check();
  }), timeoutMs, 'raw HTTP response');
  return {
    socket,
    connected,
    closed,
    read,
    get(path, extraHeaders = '') {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extraHeaders}\r\n`);
      return read();
    },
    isClosed: () => closedAt !== null,
    pending: () => buf,
    destroy: () => socket.destroy(),
  };
}

/** Opens `n` raw connections and waits until the server counts them all as active. */
async function holdConnections(port, pool, n, alreadyActive = 0) {
  const clients = [];
  for (let i = 0; i < n; i++) {
    const c = rawClient(port);
    await c.connected;
    clients.push(c);
  }
  const m = await pollUntil(() => pool.getMetrics(), (x) => x.activeConnections >= alreadyActive + n, { timeoutMs: 3000, intervalMs: 10 });
  assert.equal(m.activeConnections, alreadyActive + n, 'server counts the held connections as active');
  return clients;
}

// ---------------------------------------------------------------------------------------------------
// Prometheus text format (version 0.0.4)

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)(?: (-?\d+))?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"$/;
const FLOAT = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;

/** Parses and checks the exposition text; returns { families: Map(name → {type, help}), samples, get(name, labels) }. */
function parsePrometheus(text) {
  assert.equal(typeof text, 'string');
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const families = new Map();
  const samples = [];
  const seen = new Set();
  const familyOf = (name) => {
    for (const suffix of ['_sum', '_count', '_bucket']) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && ['summary', 'histogram'].includes(families.get(base)?.type)) return base;
    }
    return name;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    assert.notEqual(line, '', 'no empty lines');
    if (line.startsWith('# HELP ')) {
      const [, name, help] = /^# HELP (\S+) (.*)$/.exec(line) || [];
      assert.ok(name && METRIC_NAME.test(name), `HELP line names a metric: ${line}`);
      const f = families.get(name) ?? {};
      assert.equal(f.help, undefined, `one HELP for ${name}`);
      assert.equal(f.samples ?? 0, 0, `HELP for ${name} comes before its samples`);
      families.set(name, { ...f, help, samples: 0 });
    } else if (line.startsWith('# TYPE ')) {
      const [, name, type] = /^# TYPE (\S+) (counter|gauge|summary|histogram|untyped)$/.exec(line) || [];
      assert.ok(name && METRIC_NAME.test(name), `TYPE line names a metric and a known type: ${line}`);
      const f = families.get(name) ?? {};
      assert.equal(f.type, undefined, `one TYPE for ${name}`);
      assert.equal(f.samples ?? 0, 0, `TYPE for ${name} comes before its samples`);
      families.set(name, { ...f, type, samples: 0 });
    } else if (line.startsWith('#')) {
      // a plain comment
    } else {
      const m = SAMPLE_LINE.exec(line);
      assert.ok(m, `sample line is "name{labels} value": ${JSON.stringify(line)}`);
      const [, name, labelText, valueText] = m;
      assert.match(valueText, FLOAT, `value of ${JSON.stringify(line)} is a float`);
      const labels = {};
      if (labelText !== undefined && labelText !== '') {
        for (const pair of labelText.replace(/,$/, '').split(',')) {
          const lm = LABEL.exec(pair);
          assert.ok(lm, `label ${JSON.stringify(pair)} in ${JSON.stringify(line)}`);
          assert.equal(labels[lm[1]], undefined, `label ${lm[1]} once`);
          labels[lm[1]] = lm[2];
        }
      }
      const family = familyOf(name);
      const f = families.get(family);
      assert.ok(f && f.help !== undefined, `HELP present for ${family}`);
      assert.ok(f && f.type !== undefined, `TYPE present for ${family}`);
      f.samples++;
      const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      assert.ok(!seen.has(key), `sample ${key} appears once`);
      seen.add(key);
      samples.push({ name, family, labels, value: Number(valueText) });
    }
  }
  for (const [name, f] of families) {
    assert.ok(f.help !== undefined && f.type !== undefined, `${name} has both HELP and TYPE`);
    assert.ok(f.samples > 0, `${name} has samples`);
  }
  const get = (name, labels = {}) => {
    const s = samples.find((x) => x.name === name
      && Object.keys(x.labels).length === Object.keys(labels).length
      && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    assert.ok(s, `sample ${name}${JSON.stringify(labels)} present`);
    return s.value;
  };
  return { families, samples, get };
}

// ---------------------------------------------------------------------------------------------------
// A server in a child process (its JS thread can be blocked, or die, without touching this runner)

function childMain(root, options) {
  /* eslint-disable global-require */
  const { HttpServer: Server } = require(root);
  const app = {
    callback: () => (req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/block') {
        const until = Date.now() + Number(url.searchParams.get('ms') || 1000);
        while (Date.now() < until) { /* busy: the JS thread is blocked */ }
        res.end('unblocked');
        return;
      }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ js: true, path: url.pathname, traceId: req.traceId }));
    },
  };
  const server = new Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http', ...options });
  server.on('handlerError', () => {});
  process.on('message', (msg) => {
    if (msg.cmd === 'metrics') process.send({ id: msg.id, value: server.connectionPool.getMetrics() });
  });
  server.Start(() => process.send({ event: 'listening', port: server.server.address().port }));
}

const childProcesses = new Set();
process.on('exit', () => {
  for (const c of childProcesses) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
});

/** Starts `childMain` with these server options; resolves { child, port, ipc(cmd), output(), exited, kill() }. */
async function startChildServer(options) {
  const source = `(${childMain})(${JSON.stringify(REPO_ROOT)}, ${JSON.stringify(options)});`;
  const child = spawn(process.execPath, ['-e', source], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env: { ...process.env, NODE_ENV: 'test' } });
  childProcesses.add(child);
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { output += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { output += d; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => { childProcesses.delete(child); resolve({ code, signal }); }));
  const port = await withTimeout(new Promise((resolve, reject) => {
    child.on('message', (m) => { if (m && m.event === 'listening') resolve(m.port); });
    exited.then(({ code, signal }) => reject(new Error(`child server exited before listening (${code}/${signal}):\n${output}`)));
  }), 10000, 'child server listening');
  let nextId = 1;
  const ipc = (cmd) => {
    const id = nextId++;
    return withTimeout(new Promise((resolve) => {
      const onMessage = (m) => {
        if (m && m.id === id) { child.off('message', onMessage); resolve(m.value); }
      };
      child.on('message', onMessage);
      child.send({ cmd, id });
    }), 5000, `child IPC ${cmd}`);
  };
  return {
    child,
    port,
    ipc,
    exited,
    output: () => output,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------------

describe('connectionPool: class and shape', () => {
  it('is the per-protocol pool manager and reports the documented fields', async () => {
    const { server, pool } = await startServer((req, res) => res.end('x'));
    try {
      assert.equal(pool.constructor.name, 'HttpConnectionPoolManager');
      assert.ok(pool instanceof lib.HttpConnectionPoolManager);
      assert.ok(pool instanceof lib.ConnectionPoolManager);
      const m = pool.getMetrics();
      for (const key of ['activeConnections', 'totalConnections', 'connectionsPerSecond', 'averageLatency', 'p50Latency', 'p90Latency',
        'p99Latency', 'errorRate', 'pendingRequests', 'requestsTotal', 'requestsActive', 'requestsFailed', 'requestsTimedOut',
        'requestsAborted', 'responses5xx', 'rejectedConnections', 'bytesIn', 'bytesOut', 'uptime']) {
        assert.equal(typeof m[key], 'number', `getMetrics().${key} is a number (got ${m[key]})`);
        assert.ok(Number.isFinite(m[key]) && m[key] >= 0, `getMetrics().${key} = ${m[key]}`);
      }
      assert.equal(m.accepting, true);
      assert.deepEqual(pool.getMetricsHistory(10), [], 'no events yet, no history');
      const h = pool.getHealth();
      assert.ok(['healthy', 'degraded', 'overloaded'].includes(h.status));
      assert.ok(Array.isArray(h.reasons));
      for (const key of ['utilisation', 'errorRate', 'averageLatency', 'eventLoopLag', 'activeConnections']) {
        assert.equal(typeof h[key], 'number', `getHealth().${key}`);
      }
      assert.equal(typeof h.thresholds, 'object');
    } finally {
      await stop(server);
    }
    // One pool mechanism, a class per protocol (constructed only, never started).
    const h2c = new lib.Http2Server(fakeApp((req, res) => res.end('x')), { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true });
    assert.ok(h2c.connectionPool instanceof lib.Http2ConnectionPoolManager);
    assert.ok(h2c.connectionPool instanceof lib.ConnectionPoolManager);
  });
});

describe('maxConnections', () => {
  it('the N+1th connection gets 503 with Retry-After and is closed; counted; a released slot is reused', async () => {
    const { server, port, pool } = await startServer((req, res) => res.end(`ok ${req.url}`), {
      connectionPool: { maxConnections: 3, health: CALM },
    });
    const clients = [];
    try {
      clients.push(...await holdConnections(port, pool, 3));

      const extra = rawClient(port);
      await extra.connected;
      const rejected = await extra.read(3000);
      assert.equal(rejected.status, 503);
      assert.equal(rejected.headers['retry-after'], '1');
      assert.equal(rejected.headers.connection, 'close');
      await withTimeout(extra.closed, 2000, 'the rejected connection is closed by the server');

      let m = pool.getMetrics();
      assert.equal(m.rejectedConnections, 1, 'rejectedConnections counts the turned-away connection');
      assert.equal(m.activeConnections, 3, 'the rejected connection never counted as active');
      assert.equal(m.totalConnections, 3, 'only accepted-and-served connections count in totalConnections');

      // The held connections are untouched and still served.
      for (const c of clients) assert.equal(c.isClosed(), false, 'held connections stay open');
      const onHeld = await clients[0].get('/held');
      assert.equal(onHeld.status, 200);
      assert.equal(onHeld.body, 'ok /held');

      // A node client is turned away too while the pool is full.
      const viaNode = await request({ port, path: '/full' });
      assert.equal(viaNode.status, 503);
      assert.equal(viaNode.headers['retry-after'], '1');
      assert.equal(pool.getMetrics().rejectedConnections, 2);

      // Release one: a new connection is served.
      clients.shift().destroy();
      await pollUntil(() => pool.getMetrics(), (x) => x.activeConnections === 2, { timeoutMs: 3000, intervalMs: 10 });
      const after = await request({ port, path: '/after-release' });
      assert.equal(after.status, 200);
      assert.equal(after.text(), 'ok /after-release');
      m = pool.getMetrics();
      assert.equal(m.rejectedConnections, 2);
      assert.equal(m.requestsTotal, 2, 'rejected connections never became requests');
    } finally {
      for (const c of clients) c.destroy();
      await stop(server);
    }
  });

  it('maxConnections changes at run time through updateConfig', async () => {
    const { server, port, pool } = await startServer((req, res) => res.end('ok'), { connectionPool: { maxConnections: 2 } });
    const clients = [];
    try {
      clients.push(...await holdConnections(port, pool, 2));
      assert.equal((await request({ port })).status, 503, 'full at 2');

      const raised = await server.updateConfig({ connectionPool: { maxConnections: 4 } });
      assert.equal(raised.restarted, false, 'applied in place');
      assert.ok(raised.changedKeys.includes('connectionPool.maxConnections'), `changedKeys ${raised.changedKeys}`);
      clients.push(...await holdConnections(port, pool, 1, 2));
      const served = await request({ port });
      assert.equal(served.status, 200, 'a 4th connection is accepted once the limit is 4');

      await server.updateConfig({ connectionPool: { maxConnections: 1 } });
      const lowered = await request({ port });
      assert.equal(lowered.status, 503, 'over the lowered limit');
      for (const c of clients) assert.equal(c.isClosed(), false, 'lowering the limit does not cut open connections');
      assert.equal((await clients[0].get('/still')).status, 200);
      assert.equal(pool.getMetrics().rejectedConnections, 2);
    } finally {
      for (const c of clients) c.destroy();
      await stop(server);
    }
  });
});

describe("server.server takes node's http.Server properties (outside probe, session 16: they were dropped silently)", () => {
  it('keepAliveTimeout set on server.server applies to the next idle connection; setTimeout and getConnections are there, as on node', async () => {
    const { server, port } = await startServer((req, res) => res.end('ok'));
    try {
      const handle = server.server;
      assert.equal(handle.keepAliveTimeout, 5000, "node's default, read back");
      handle.keepAliveTimeout = 300;
      assert.equal(handle.keepAliveTimeout, 300);
      assert.equal(server.options.connectionPool.keepAliveTimeout, 300, 'it is connectionPool.keepAliveTimeout');
      assert.equal(handle.setTimeout(0), handle, 'setTimeout(0) returns the server, as node');
      assert.equal(handle.timeout, 0);
      // A raw client: node's Agent closes a socket itself on the Keep-Alive hint.
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      let answer = '';
      await new Promise((resolve) => {
        socket.on('data', (d) => { answer += d; if (answer.endsWith('ok')) resolve(); });
        socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      });
      const count = await new Promise((resolve) => handle.getConnections((err, n) => resolve(err ?? n)));
      assert.equal(count, 1, 'getConnections counts the open one');
      const t0 = Date.now();
      await withTimeout(new Promise((resolve) => socket.once('close', resolve)), 3000, 'the idle keep-alive connection is closed');
      const idle = Date.now() - t0;
      assert.ok(idle >= 200 && idle < 2000, `closed by the server after ${idle} ms (keepAliveTimeout 300; the default is 5000)`);
      // node reads maxConnections as `if (maxConnections && …)`: 0, NaN and a non-number limit
      // nothing (re-probe: 0 refused every connection here).
      for (const value of [0, NaN, 'abc', null]) {
        handle.maxConnections = value;
        assert.equal(handle.maxConnections, undefined, `${String(value)}: no limit`);
        const r = await request({ port, path: '/' });
        assert.equal(r.status, 200, `served with maxConnections = ${String(value)}`);
      }
      handle.maxConnections = '5000';
      assert.equal(handle.maxConnections, 5000);
      handle.maxConnections = 1.5;
      assert.equal(handle.maxConnections, 2, 'node admits two at 1.5 (it refuses once connections >= 1.5)');
    } finally {
      await stop(server);
    }
  });
});

describe('the Keep-Alive hint is the idle time a connection gets (re-probe, session 16)', () => {
  it('keepAliveTimeout 5000 with headersTimeout 2000: Keep-Alive: timeout=2 (one timer serves both), not 5', async () => {
    const { server, port } = await startServer((req, res) => res.end('ok'), { connectionPool: { keepAliveTimeout: 5000, headersTimeout: 2000 } });
    try {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      let head = '';
      await withTimeout(new Promise((resolve) => {
        socket.on('data', (d) => { head += d; if (head.includes('\r\n\r\n')) resolve(); });
        socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      }), 3000, 'the response head');
      socket.destroy();
      assert.match(head, /\r\nkeep-alive: timeout=2\r\n/i, head);
    } finally {
      await stop(server);
    }
  });
});

describe('maxInFlight', () => {
  it('long-lived responses leave the cap once their head is out: with maxInFlight 2, a plain GET is served beside 3 event streams (outside probe, session 16: it hung)', async () => {
    const timers = new Set();
    const { server, port } = await startServer((req, res) => {
      if (req.url !== '/events') return res.end('hello');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const timer = setInterval(() => res.write('data: tick\n\n'), 50);
      timers.add(timer);
      res.on('close', () => { clearInterval(timer); timers.delete(timer); });
    }, { connectionPool: { maxInFlight: 2 } });
    const http = require('http');
    const subscribers = [];
    try {
      const ticks = [0, 0, 0];
      for (let i = 0; i < 3; i++) {
        subscribers.push(http.get({ port, host: '127.0.0.1', path: '/events', agent: false }, (res) => res.on('data', () => { ticks[i]++; })).on('error', () => {}));
      }
      await pollUntil(() => Math.min(...ticks), (n) => n >= 2, { timeoutMs: 5000 });
      const r = await withTimeout(request({ port, path: '/' }), 2000, 'GET / beside three event streams (cap 2)');
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), 'hello');
    } finally {
      for (const s of subscribers) s.destroy();
      for (const t of timers) clearInterval(t);
      await stop(server);
    }
  });
});

describe('timeouts', () => {
  it('slowloris: a client sending header bytes every 100 ms is cut after headersTimeout; others are served meanwhile', async () => {
    const { server, port, pool } = await startServer((req, res) => res.end('fast'), { connectionPool: { headersTimeout: 300 } });
    try {
      const slow = rawClient(port);
      const t0 = await slow.connected;
      slow.socket.write('GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
      const drip = setInterval(() => { if (!slow.isClosed()) slow.socket.write('a'); }, 100);
      try {
        // Normal clients, on new connections and on one kept-alive connection, while the slow one drips.
        const served = [];
        const keepAlive = rawClient(port);
        await keepAlive.connected;
        for (let i = 0; i < 4; i++) {
          const t = Date.now();
          const r = await request({ port, path: `/n${i}`, timeout: 2000 });
          const k = await keepAlive.get(`/k${i}`);
          served.push({ status: r.status, ms: Date.now() - t, k: k.status });
          await sleep(50);
        }
        const closedAt = await withTimeout(slow.closed, 3000, 'slowloris connection closed');
        const ms = closedAt - t0;
        for (const s of served) {
          assert.equal(s.status, 200);
          assert.equal(s.k, 200);
          assert.ok(s.ms < 250, `a normal request took ${s.ms} ms while the slow client dripped`);
        }
        assert.ok(ms >= 250, `slow header sender cut after ${ms} ms; headersTimeout is 300 ms`);
        assert.ok(ms <= 1000, `slow header sender cut after ${ms} ms (bytes kept arriving every 100 ms); headersTimeout is 300 ms`);
        assert.doesNotMatch(slow.pending().toString('latin1'), /^HTTP\/1\.1 2/, 'the slow request was never answered 2xx');
        keepAlive.destroy();
      } finally {
        clearInterval(drip);
        slow.destroy();
      }
      const m = pool.getMetrics();
      assert.equal(m.requestsTotal, 8, 'the cut request never reached the handler');
    } finally {
      await stop(server);
    }
  });

  it('an idle keep-alive connection is closed after keepAliveTimeout, not before', async () => {
    const { server, port } = await startServer((req, res) => res.end('hi'), { connectionPool: { keepAliveTimeout: 400 } });
    try {
      const c = rawClient(port);
      await c.connected;
      const r1 = await c.get('/1');
      assert.equal(r1.status, 200);
      await sleep(250);
      assert.equal(c.isClosed(), false, 'still open 250 ms after the response (keepAliveTimeout 400)');
      const r2 = await c.get('/2');
      assert.equal(r2.status, 200, 'reused within keepAliveTimeout');
      const closedAt = await withTimeout(c.closed, 3000, 'idle keep-alive connection closed');
      const idle = closedAt - r2.at;
      assert.ok(idle >= 330, `closed after ${idle} ms idle; keepAliveTimeout is 400 ms`);
      assert.ok(idle <= 1200, `closed after ${idle} ms idle; keepAliveTimeout is 400 ms`);
    } finally {
      await stop(server);
    }
  });

  it('connectionTimeout: a keep-alive connection quiet that long is closed (before keepAliveTimeout); 0 = off', async () => {
    const { server, port } = await startServer((req, res) => res.end('hi'), { connectionPool: { keepAliveTimeout: 5000, connectionTimeout: 400 } });
    try {
      const c = rawClient(port);
      await c.connected;
      const r = await c.get('/1');
      assert.equal(r.status, 200);
      const closedAt = await withTimeout(c.closed, 3000, 'quiet connection closed at connectionTimeout');
      const quiet = closedAt - r.at;
      assert.ok(quiet >= 330 && quiet <= 1500, `closed after ${quiet} ms quiet; connectionTimeout 400, keepAliveTimeout 5000`);
    } finally {
      await stop(server);
    }
    const off = await startServer((req, res) => res.end('hi'), { connectionPool: { keepAliveTimeout: 5000, connectionTimeout: 0 } });
    try {
      const c = rawClient(off.port);
      await c.connected;
      assert.equal((await c.get('/1')).status, 200);
      await sleep(700);
      assert.equal(c.isClosed(), false, 'connectionTimeout 0 is off');
      c.socket.destroy();
    } finally {
      await stop(off.server);
    }
  });

  it('connectionTimeout on HTTP/2: a quiet session gets GOAWAY; a quiet request in flight completes first', async () => {
    const http2 = require('http2');
    const server = new lib.Http2Server(fakeApp((req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('slow'), 900);
      else res.end('ok');
    }), { hostname: '127.0.0.1', port: 0, h2c: true, connectionPool: { connectionTimeout: 300 } });
    const port = await start(server);
    try {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
      const goaway = new Promise((resolve) => session.once('goaway', () => resolve(Date.now())));
      const t0 = Date.now();
      const slow = new Promise((resolve, reject) => {
        const req = session.request({ ':path': '/slow' });
        let body = '';
        let status;
        req.on('response', (h) => { status = h[':status']; });
        req.setEncoding('utf8');
        req.on('data', (d) => { body += d; });
        req.on('end', () => resolve({ status, body, at: Date.now() }));
        req.on('error', reject);
        req.end();
      });
      const r = await withTimeout(slow, 5000, 'the slow request');
      assert.deepEqual([r.status, r.body], [200, 'slow'], 'completed although nothing moved for 900 ms');
      const at = await withTimeout(goaway, 3000, 'GOAWAY for the quiet session');
      assert.ok(at - t0 >= 250, `GOAWAY ${at - t0} ms after the start`);
      session.destroy();
    } finally {
      await stop(server);
    }
  });

  it('requestTimeout answers 503 and counts it in requestsTimedOut', async () => {
    const { server, port, pool } = await startServer((req, res) => {
      if (req.url === '/ok') res.end('ok');
      // anything else: never answered
    }, { connectionPool: { requestTimeout: 300 } });
    try {
      const t0 = Date.now();
      const r = await request({ port, path: '/never', timeout: 5000 });
      const elapsed = Date.now() - t0;
      assert.equal(r.status, 503);
      assert.ok(elapsed >= 250 && elapsed < 3000, `answered after ${elapsed} ms; requestTimeout is 300 ms`);
      assert.equal((await request({ port, path: '/ok' })).status, 200);
      const m = pool.getMetrics();
      assert.equal(m.requestsTimedOut, 1);
      assert.equal(m.requestsTotal, 2);
      assert.equal(m.pendingRequests, 0);
      assert.equal(m.requestsActive, 0);
      assert.ok(Math.abs(m.errorRate - 0.5) < 1e-9, `errorRate ${m.errorRate} (1 timeout of 2 requests)`);
      const prom = parsePrometheus(pool.getPrometheusMetrics());
      assert.equal(prom.get('koatty_serve_request_errors_total', { kind: 'timeout' }), 1);
      const history = pool.getMetricsHistory(60);
      assert.equal(history.reduce((a, s) => a + s.errors, 0), 1, 'the timeout is an error in the history');
    } finally {
      await stop(server);
    }
  });
});

describe('metrics against a known load', () => {
  let server;
  let port;
  let pool;
  let startedAt;
  const load = { sent: 0, received: 0 };

  before(async () => {
    ({ server, port, pool } = await startServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const got = Buffer.concat(chunks).length;
        if (req.url.startsWith('/err')) {
          res.statusCode = 500;
          res.end(`error after ${got}`);
        } else if (req.url.startsWith('/slow')) {
          setTimeout(() => res.end(`slow ${got}`), 100);
        } else {
          res.end(`fast ${got} ${'y'.repeat(got % 7)}`);
        }
      });
    }, { nativeEndpoints: true, connectionPool: { health: CALM } }));
    startedAt = Date.now();
  });

  after(async () => {
    if (server) await stop(server);
  });

  it('50 requests (5 answer 500, 5 take ~100 ms): counts, error rate, percentiles, bytes and history', async () => {
    const jobs = [];
    for (let i = 0; i < 50; i++) {
      const path = i % 10 === 3 ? `/err/${i}` : i % 10 === 7 ? `/slow/${i}` : `/fast/${i}`;
      jobs.push({ path, body: 'x'.repeat(i + 1) });
    }
    const statuses = [];
    let next = 0;
    const worker = async () => {
      while (next < jobs.length) {
        const job = jobs[next++];
        load.sent += Buffer.byteLength(job.body);
        const r = await request({ port, method: 'POST', path: job.path, body: job.body });
        load.received += r.body.length;
        statuses.push(r.status);
      }
    };
    await Promise.all(Array.from({ length: 5 }, worker));
    assert.equal(statuses.filter((s) => s === 500).length, 5);
    assert.equal(statuses.filter((s) => s === 200).length, 45);

    await pollUntil(() => pool.getMetrics(), (x) => x.activeConnections === 0, { timeoutMs: 3000, intervalMs: 10 });
    const m = pool.getMetrics();
    assert.equal(m.requestsTotal, 50);
    assert.equal(m.responses5xx, 5);
    assert.ok(Math.abs(m.errorRate - 0.1) < 1e-9, `errorRate ${m.errorRate}`);
    assert.equal(m.requestsFailed, 0);
    assert.equal(m.requestsTimedOut, 0);
    assert.equal(m.requestsAborted, 0);
    assert.equal(m.requestsActive, 0);
    assert.equal(m.pendingRequests, 0);
    assert.equal(m.totalConnections, 50, 'one connection per request (no agent)');
    assert.equal(m.activeConnections, 0);
    assert.equal(m.rejectedConnections, 0);
    assert.equal(m.bytesIn, load.sent, `bytesIn ${m.bytesIn}: request body bytes sent = ${load.sent}`);
    assert.equal(m.bytesOut, load.received, `bytesOut ${m.bytesOut}: response body bytes received = ${load.received}`);
    assert.ok(m.p99Latency >= 90, `p99 ${m.p99Latency} ms; 10% of the requests took ~100 ms`);
    assert.ok(m.p99Latency < 1000, `p99 ${m.p99Latency} ms`);
    assert.ok(m.p50Latency < 25, `p50 ${m.p50Latency} ms; 90% of the requests are immediate`);
    assert.ok(m.p90Latency < 90, `p90 ${m.p90Latency} ms; the 45th of 50 is an immediate one`);
    assert.ok(m.p50Latency <= m.p90Latency && m.p90Latency <= m.p99Latency, 'percentiles ordered');
    assert.ok(m.averageLatency >= 9.5 && m.averageLatency < 40, `average ${m.averageLatency} ms ≈ (5×100 + 45×small)/50`);
    assert.ok(m.uptime >= Date.now() - startedAt - 50, `uptime ${m.uptime} ms`);
    assert.ok(m.connectionsPerSecond > 0);
    assert.equal(m.accepting, true);

    const history = pool.getMetricsHistory(60);
    assert.ok(history.length >= 1 && history.length <= 60);
    const sum = (k) => history.reduce((a, s) => a + s[k], 0);
    assert.equal(sum('requests'), 50, 'history sums to the 50 requests');
    assert.equal(sum('errors'), 5);
    assert.equal(sum('connections'), 50);
    const now = Date.now();
    let previous = 0;
    for (const s of history) {
      assert.equal(s.timestamp % 1000, 0, `timestamp ${s.timestamp} is a whole second in ms`);
      assert.ok(s.timestamp > previous, 'oldest first, one sample per second');
      assert.ok(s.timestamp >= Math.floor(startedAt / 1000) * 1000 - 1000 && s.timestamp <= now, `timestamp ${s.timestamp} within the run`);
      assert.ok(s.averageLatency >= 0);
      previous = s.timestamp;
    }
    const weighted = history.reduce((a, s) => a + s.averageLatency * s.requests, 0) / 50;
    assert.ok(Math.abs(weighted - m.averageLatency) < 1, `history latency ${weighted} ≈ averageLatency ${m.averageLatency}`);
    assert.ok(pool.getMetricsHistory(1).length <= 1);
  });

  it('Prometheus text parses, matches getMetrics(), equals the native /metrics, and counters are monotonic', async () => {
    const m = pool.getMetrics();
    const first = parsePrometheus(pool.getPrometheusMetrics());
    for (const [name, f] of first.families) {
      assert.match(name, /^koatty_serve_/, 'namespaced');
      if (f.type === 'counter') assert.match(name, /_total$/, `counter ${name} ends in _total`);
    }
    assert.equal(first.families.get('koatty_serve_requests_total').type, 'counter');
    assert.equal(first.families.get('koatty_serve_connections_active').type, 'gauge');
    assert.equal(first.get('koatty_serve_up'), 1);
    assert.equal(first.get('koatty_serve_requests_total'), m.requestsTotal);
    assert.equal(first.get('koatty_serve_connections_total'), m.totalConnections);
    assert.equal(first.get('koatty_serve_connections_rejected_total'), m.rejectedConnections);
    assert.equal(first.get('koatty_serve_request_errors_total', { kind: 'status_5xx' }), 5);
    assert.equal(first.get('koatty_serve_request_errors_total', { kind: 'timeout' }), 0);
    assert.equal(first.get('koatty_serve_received_bytes_total'), m.bytesIn);
    assert.equal(first.get('koatty_serve_sent_bytes_total'), m.bytesOut);
    assert.ok(Math.abs(first.get('koatty_serve_request_duration_milliseconds', { quantile: '0.99' }) - m.p99Latency) < 1e-6);

    // The native endpoint serves the same text (apart from the clock and its own connection).
    const viaHttp = await request({ port, path: '/metrics' });
    assert.equal(viaHttp.status, 200);
    assert.match(viaHttp.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    const scraped = parsePrometheus(viaHttp.text());
    const volatile = new Set(['koatty_serve_uptime_seconds', 'koatty_serve_connections_total', 'koatty_serve_connections_active']);
    const stable = (p) => p.samples.filter((s) => !volatile.has(s.family)).map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`);
    assert.deepEqual(stable(scraped), stable(first));
    assert.deepEqual([...scraped.families.keys()], [...first.families.keys()]);

    // More load, then a second scrape: every counter and summary count is monotonic.
    for (let i = 0; i < 3; i++) assert.equal((await request({ port, method: 'POST', path: '/fast/more', body: 'abc' })).status, 200);
    assert.equal((await request({ port, path: '/err/more' })).status, 500);
    const second = parsePrometheus((await request({ port, path: '/metrics' })).text());
    for (const s of first.samples) {
      const type = first.families.get(s.family).type;
      if (type !== 'counter' && !(type === 'summary' && /_(count|sum)$/.test(s.name))) continue;
      const later = second.get(s.name, s.labels);
      assert.ok(later >= s.value, `counter ${s.name}${JSON.stringify(s.labels)} went from ${s.value} to ${later}`);
    }
    assert.equal(second.get('koatty_serve_requests_total') - first.get('koatty_serve_requests_total'), 4);
    assert.equal(second.get('koatty_serve_request_errors_total', { kind: 'status_5xx' }), 6);
    assert.equal(second.get('koatty_serve_received_bytes_total') - first.get('koatty_serve_received_bytes_total'), 9);
    assert.ok(second.get('koatty_serve_uptime_seconds') >= first.get('koatty_serve_uptime_seconds'));
  });
});

describe('health', () => {
  it('utilisation: healthy → degraded → overloaded → healthy as idle connections are held and released', async () => {
    const { server, port, pool } = await startServer((req, res) => res.end('ok'), {
      connectionPool: { maxConnections: 5, health: CALM },
    });
    const clients = [];
    try {
      let h = pool.getHealth();
      assert.equal(h.status, 'healthy', JSON.stringify(h));
      assert.deepEqual(h.reasons, []);
      assert.equal(h.utilisation, 0);

      clients.push(...await holdConnections(port, pool, 4));
      h = pool.getHealth();
      assert.equal(h.utilisation, 0.8);
      assert.equal(h.status, 'degraded', JSON.stringify(h));
      assert.ok(h.reasons.some((r) => /utilisation/.test(r)), `reasons ${JSON.stringify(h.reasons)}`);

      clients.push(...await holdConnections(port, pool, 1, 4));
      h = pool.getHealth();
      assert.equal(h.utilisation, 1);
      assert.equal(h.activeConnections, 5);
      assert.equal(h.status, 'overloaded', JSON.stringify(h));
      assert.ok(h.reasons.some((r) => /utilisation/.test(r)), `reasons ${JSON.stringify(h.reasons)}`);

      // A run-time limit change is what utilisation is measured against.
      await server.updateConfig({ connectionPool: { maxConnections: 10 } });
      h = pool.getHealth();
      assert.equal(h.utilisation, 0.5);
      assert.equal(h.status, 'healthy', JSON.stringify(h));
      await server.updateConfig({ connectionPool: { maxConnections: 5 } });
      assert.equal(pool.getHealth().status, 'overloaded');

      for (const c of clients.splice(0)) c.destroy();
      await pollUntil(() => pool.getMetrics(), (x) => x.activeConnections === 0, { timeoutMs: 3000, intervalMs: 10 });
      h = pool.getHealth();
      assert.equal(h.status, 'healthy', JSON.stringify(h));
      assert.equal(h.utilisation, 0);
    } finally {
      for (const c of clients) c.destroy();
      await stop(server);
    }
  });

  it('error rate over a short window: healthy → overloaded → healthy once the window has passed', async () => {
    const { server, port, pool } = await startServer((req, res) => {
      res.statusCode = req.url === '/fail' ? 500 : 200;
      res.end();
    }, { connectionPool: { health: { ...CALM, windowSeconds: 2 } } });
    try {
      assert.equal(pool.getHealth().status, 'healthy');
      assert.equal(pool.getHealth().thresholds.windowSeconds, 2);
      for (let i = 0; i < 10; i++) assert.equal((await request({ port, path: '/fail' })).status, 500);
      let h = pool.getHealth();
      assert.equal(h.status, 'overloaded', JSON.stringify(h));
      assert.equal(h.errorRate, 1);
      assert.ok(h.reasons.some((r) => /errorRate/.test(r)), `reasons ${JSON.stringify(h.reasons)}`);
      assert.ok(!h.reasons.some((r) => /utilisation/.test(r)), 'no maxConnections, no utilisation reason');

      h = await pollUntil(() => pool.getHealth(), (x) => x.status === 'healthy', { timeoutMs: 4000, intervalMs: 100 });
      assert.equal(h.status, 'healthy', `still ${JSON.stringify(h)} after the 2 s window`);
      assert.equal(h.errorRate, 0);
      // Lifetime counters keep the failures; only the window forgot them.
      assert.equal(pool.getMetrics().responses5xx, 10);
      for (let i = 0; i < 10; i++) await request({ port, path: i === 0 ? '/fail' : '/ok' });
      h = pool.getHealth();
      assert.equal(h.status, 'degraded', `1 error in 10 (≥ 0.05, < 0.25): ${JSON.stringify(h)}`);
    } finally {
      await stop(server);
    }
  });
});

describe('health: requests ended by requestTimeout', () => {
  it('count as requests and errors in the window (history and getHealth().errorRate)', async () => {
    const { server, port, pool } = await startServer(() => { /* never answers */ }, {
      connectionPool: { requestTimeout: 200, health: CALM },
    });
    try {
      const answers = await Promise.all([1, 2, 3, 4].map(() => request({ port, timeout: 5000 })));
      assert.deepEqual(answers.map((r) => r.status), [503, 503, 503, 503]);
      const m = pool.getMetrics();
      assert.equal(m.requestsTimedOut, 4);
      assert.equal(m.errorRate, 1, 'lifetime error rate: every request timed out');
      const history = pool.getMetricsHistory(60);
      const sum = (k) => history.reduce((a, x) => a + x[k], 0);
      assert.equal(sum('errors'), 4);
      assert.equal(sum('requests'), 4, `history ${JSON.stringify(history)}: the timed-out requests are requests too`);
      for (const x of history) assert.ok(x.errors <= x.requests, `a second with more errors than requests: ${JSON.stringify(x)}`);
      const h = pool.getHealth();
      assert.equal(h.errorRate, 1, `getHealth() ${JSON.stringify(h)}`);
      assert.equal(h.status, 'overloaded');
    } finally {
      await stop(server);
    }
  });
});

describe('health: event-loop lag of the JS thread', () => {
  // The monitor measures this (the runner's) thread, so these block it on purpose. Latency and
  // utilisation cannot trip: no request is made and there is no maxConnections.
  const blockFor = (ms) => {
    const until = Date.now() + ms;
    while (Date.now() < until) { /* busy */ }
  };

  it('a 1 s block right after a getHealth() call is reported by the next one (then healthy again)', async () => {
    const { server, pool } = await startServer((req, res) => res.end(), { connectionPool: { health: { windowSeconds: 1 } } });
    try {
      await sleep(100);
      assert.equal(pool.getHealth().status, 'healthy');
      blockFor(1000);
      await sleep(100);
      const h = pool.getHealth();
      assert.ok(h.eventLoopLag >= 500, `eventLoopLag ${h.eventLoopLag} ms after a 1 s block`);
      assert.equal(h.status, 'overloaded', JSON.stringify(h));
      assert.ok(h.reasons.some((r) => /eventLoopLag/.test(r)), `reasons ${JSON.stringify(h.reasons)}`);
      const later = await pollUntil(() => pool.getHealth(), (x) => x.status === 'healthy', { timeoutMs: 3000, intervalMs: 200 });
      assert.equal(later.status, 'healthy', `still ${JSON.stringify(later)} 3 s after the block (windowSeconds 1)`);
    } finally {
      await stop(server);
    }
  });

  it('a 1 s block 2.5 s after the previous getHealth() call is reported too', async () => {
    const { server, pool } = await startServer((req, res) => res.end());
    try {
      assert.equal(pool.getHealth().status, 'healthy'); // a probe
      await sleep(2500); // a quiet stretch, shorter than a typical probe period
      blockFor(1000);
      await sleep(100);
      const h = pool.getHealth(); // the next probe
      assert.ok(h.eventLoopLag >= 500, `eventLoopLag ${h.eventLoopLag} ms after a 1 s block`);
      assert.equal(h.status, 'overloaded', JSON.stringify(h));
    } finally {
      await stop(server);
    }
  });
});

describe('native endpoints', () => {
  it('/healthz and /metrics answer in < 200 ms while the JS thread is blocked (server in a child process)', async () => {
    const child = await startChildServer({ nativeEndpoints: true });
    try {
      const warm = await request({ port: child.port, path: '/healthz' });
      assert.equal(warm.status, 200);
      assert.equal((await request({ port: child.port, path: '/warm' })).json().js, true);

      const tBlock = Date.now();
      const blocked = request({ port: child.port, path: '/block?ms=1000', timeout: 10000 }).then((r) => ({ r, at: Date.now() }));
      await sleep(150); // the handler is now spinning
      const viaJs = request({ port: child.port, path: '/js-while-blocked', timeout: 10000 }).then((r) => ({ r, at: Date.now() }));

      const t1 = Date.now();
      const live = await request({ port: child.port, path: '/healthz', timeout: 2000 });
      const liveMs = Date.now() - t1;
      const t2 = Date.now();
      const metrics = await request({ port: child.port, path: '/metrics', timeout: 2000 });
      const metricsMs = Date.now() - t2;
      const ready = await request({ port: child.port, path: '/readyz', timeout: 2000 });
      const answeredAt = Date.now();

      const { r: blockRes, at: unblockedAt } = await blocked;
      const { r: jsRes, at: jsAt } = await viaJs;
      assert.equal(blockRes.text(), 'unblocked');
      assert.ok(unblockedAt - tBlock >= 950, `the JS thread was blocked ~1 s (${unblockedAt - tBlock} ms)`);
      assert.ok(answeredAt < unblockedAt, 'native answers came while the JS thread was still blocked');
      assert.ok(jsAt - tBlock >= 900, `a JS-handled request waited for the block (${jsAt - tBlock} ms)`);
      assert.equal(jsRes.json().path, '/js-while-blocked');

      assert.equal(live.status, 200);
      assert.equal(live.text(), 'ok');
      assert.ok(liveMs < 200, `/healthz took ${liveMs} ms while JS was blocked`);
      assert.equal(metrics.status, 200);
      assert.ok(metricsMs < 200, `/metrics took ${metricsMs} ms while JS was blocked`);
      const prom = parsePrometheus(metrics.text());
      assert.ok(prom.get('koatty_serve_requests_active') >= 1, 'the blocked request is active');
      assert.ok(prom.get('koatty_serve_requests_pending') >= 1, 'the blocked request is pending');
      assert.equal(ready.status, 200);
      assert.equal(ready.text(), 'ready');

      // Native answers never entered JS: only /warm, /block and /js-while-blocked were requests.
      const m = await child.ipc('metrics');
      assert.equal(m.requestsTotal, 3, `requestsTotal ${m.requestsTotal}`);
    } finally {
      await child.kill();
    }
  });

  it('/readyz turns 503 once shutdown begins (on a connection opened before it); /healthz stays 200; idle keep-alive connections are closed', async () => {
    const { server, port, pool } = await startServer((req, res) => res.end('js'), { nativeEndpoints: true });
    const c = rawClient(port);
    // Connected before the shutdown, their first request sent during it (within the grace a fresh
    // connection gets): how a probe on a pre-opened connection sees the drain.
    const ready = rawClient(port);
    const live = rawClient(port);
    const metricsClient = rawClient(port);
    try {
      await Promise.all([c.connected, ready.connected, live.connected, metricsClient.connected]);
      const before = await c.get('/readyz');
      assert.equal(before.status, 200);
      assert.equal(before.body, 'ready');
      assert.equal(before.headers['cache-control'], 'no-store');
      const idleClosed = new Promise((resolve) => c.socket.once('close', resolve));

      const shutdown = server.gracefulShutdown({ drainDelay: 1500, timeout: 5000 });
      assert.equal(server.status, 503);
      await pollUntil(() => pool.getMetrics(), (x) => x.accepting === false, { timeoutMs: 2000, intervalMs: 5 });
      assert.equal(pool.getMetrics().accepting, false);
      await withTimeout(idleClosed, 1000, 'the idle keep-alive connection closed by step 1');

      const during = await ready.get('/readyz');
      assert.equal(during.status, 503, 'readiness fails once shutdown has begun');
      const liveness = await live.get('/healthz');
      assert.equal(liveness.status, 200, 'liveness still answers during the drain');
      const metrics = await metricsClient.get('/metrics');
      assert.equal(parsePrometheus(metrics.body).get('koatty_serve_up'), 0);
      assert.equal(pool.getHealth().accepting, false);
      await assert.rejects(request({ port, path: '/readyz', timeout: 2000 }), (e) => e.code === 'ECONNREFUSED', 'no new connections');

      const report = await withTimeout(shutdown, 8000, 'gracefulShutdown');
      assert.ok(report.steps.length === 5, JSON.stringify(report));
    } finally {
      for (const x of [c, ready, live, metricsClient]) x.destroy();
      if (server.server.listening) await stop(server);
    }
  });

  it('custom paths, per-key false, and off by default', async () => {
    const calls = [];
    const handler = (req, res) => {
      calls.push(req.url);
      res.statusCode = 404;
      res.end('js');
    };

    const custom = await startServer(handler, { nativeEndpoints: { healthz: '/hz', readyz: '/rz', metrics: '/prom' } });
    try {
      const hz = await request({ port: custom.port, path: '/hz' });
      assert.equal(hz.status, 200);
      assert.equal(hz.text(), 'ok');
      assert.equal((await request({ port: custom.port, path: '/rz' })).text(), 'ready');
      const prom = await request({ port: custom.port, path: '/prom' });
      assert.equal(prom.status, 200);
      parsePrometheus(prom.text());
      const headHz = await request({ port: custom.port, method: 'HEAD', path: '/hz' });
      assert.equal(headHz.status, 200);
      assert.equal(headHz.body.length, 0);
      assert.deepEqual(calls, [], 'native paths never reach the handler');
      for (const p of ['/healthz', '/readyz', '/metrics', '/hz/', '/prom/x']) {
        const r = await request({ port: custom.port, path: p });
        assert.equal(r.status, 404, `${p} goes to JS with custom paths`);
        assert.equal(r.text(), 'js');
      }
      // The query string does not change the path match.
      assert.equal((await request({ port: custom.port, path: '/hz?probe=1' })).text(), 'ok');
    } finally {
      await stop(custom.server);
    }

    calls.length = 0;
    const noMetrics = await startServer(handler, { nativeEndpoints: { metrics: false } });
    try {
      assert.equal((await request({ port: noMetrics.port, path: '/healthz' })).text(), 'ok', 'defaults for the other keys');
      assert.equal((await request({ port: noMetrics.port, path: '/readyz' })).text(), 'ready');
      const m = await request({ port: noMetrics.port, path: '/metrics' });
      assert.equal(m.status, 404);
      assert.equal(m.text(), 'js');
      assert.deepEqual(calls, ['/metrics']);
    } finally {
      await stop(noMetrics.server);
    }

    calls.length = 0;
    const onlyMetrics = await startServer(handler, { nativeEndpoints: { healthz: false, readyz: false, metrics: '/m' } });
    try {
      assert.equal((await request({ port: onlyMetrics.port, path: '/healthz' })).text(), 'js');
      assert.equal((await request({ port: onlyMetrics.port, path: '/readyz' })).text(), 'js');
      assert.equal((await request({ port: onlyMetrics.port, path: '/m' })).status, 200);
      assert.deepEqual(calls, ['/healthz', '/readyz']);
    } finally {
      await stop(onlyMetrics.server);
    }

    calls.length = 0;
    const off = await startServer(handler, {});
    try {
      for (const p of ['/healthz', '/readyz', '/metrics']) assert.equal((await request({ port: off.port, path: p })).text(), 'js', `${p} off by default`);
      assert.deepEqual(calls, ['/healthz', '/readyz', '/metrics']);
    } finally {
      await stop(off.server);
    }

    for (const bad of [{ healthz: 'no-slash' }, { unknown: '/x' }, 'yes']) {
      assert.throws(() => new HttpServer(fakeApp(handler), { hostname: '127.0.0.1', port: 0, nativeEndpoints: bad }),
        (e) => e.code === 'ERR_INVALID_CONFIG' && /nativeEndpoints/.test(e.message), `nativeEndpoints ${JSON.stringify(bad)} rejected`);
    }
  });
});

describe('trace ids', () => {
  let server;
  let port;

  before(async () => {
    ({ server, port } = await startServer((req, res) => {
      if (req.url.startsWith('/throw')) throw new Error('handler failed');
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ traceId: req.traceId, again: req.traceId, traceparent: req.traceparent ?? null }));
    }, { trace: true }));
  });

  after(async () => {
    if (server) await stop(server);
  });

  it('from the X-Request-Id header, echoed as the handler saw it', async () => {
    const r = await request({ port, path: '/a', headers: { 'X-Request-Id': 'abc-123' } });
    assert.equal(r.headers['x-request-id'], 'abc-123');
    assert.equal(r.json().traceId, 'abc-123');
    assert.equal(r.json().again, 'abc-123', 'stable on the request');
  });

  it('from ?requestId= when there is no header; the header wins over the query', async () => {
    const q = await request({ port, path: '/b?x=1&requestId=q-42' });
    assert.equal(q.headers['x-request-id'], 'q-42');
    assert.equal(q.json().traceId, 'q-42');
    const both = await request({ port, path: '/b?requestId=from-query', headers: { 'x-request-id': 'from-header' } });
    assert.equal(both.headers['x-request-id'], 'from-header');
    assert.equal(both.json().traceId, 'from-header');
  });

  it('otherwise a fresh UUID per request, echoed', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++) {
      const r = await request({ port, path: '/c' });
      const id = r.headers['x-request-id'];
      assert.match(id, UUID_V4);
      assert.equal(r.json().traceId, id, 'echoed header equals what the handler saw');
      ids.push(id);
    }
    assert.equal(new Set(ids).size, 3, 'distinct ids');
  });

  it('traceparent is visible to the handler', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const r = await request({ port, path: '/d', headers: { traceparent: tp } });
    assert.equal(r.json().traceparent, tp);
    assert.equal(r.headers['x-request-id'], r.json().traceId);
  });

  it('a 500 from a throwing handler still carries X-Request-Id', async () => {
    const r = await request({ port, path: '/throw', headers: { 'X-Request-Id': 'rid-throw' } });
    assert.equal(r.status, 500);
    assert.equal(r.headers['x-request-id'], 'rid-throw', `headers ${JSON.stringify(r.headers)}`);
  });

  it('no X-Request-Id header when trace is off; req.traceId is still readable', async () => {
    const off = await startServer((req, res) => res.end(JSON.stringify({ traceId: req.traceId })));
    try {
      const withHeader = await request({ port: off.port, path: '/', headers: { 'X-Request-Id': 'given' } });
      assert.equal(withHeader.headers['x-request-id'], undefined);
      assert.equal(withHeader.json().traceId, 'given');
      const generated = await request({ port: off.port, path: '/' });
      assert.equal(generated.headers['x-request-id'], undefined);
      assert.match(generated.json().traceId, UUID_V4);
    } finally {
      await stop(off.server);
    }
  });

  it('an X-Request-Id with latin1 bytes (0xE9 0xFF) is read as node:http reads it (aéÿ) and echoed', async () => {
    const child = await startChildServer({ trace: true, connectionPool: { requestTimeout: 2000 } });
    try {
      const c = rawClient(child.port);
      await c.connected;
      c.socket.write(Buffer.concat([Buffer.from('GET /t HTTP/1.1\r\nHost: x\r\nX-Request-Id: a'), Buffer.from([0xe9, 0xff]), Buffer.from('\r\n\r\n')]));
      const answer = await c.read(1500);
      c.destroy();
      assert.equal(answer.status, 200);
      // node:http writes a head that goes out with a string body as UTF-8 (as here), else latin1.
      assert.equal(answer.headers['x-request-id'], Buffer.from('a\u00e9\u00ff', 'utf8').toString('latin1'), 'echoed as node:http would write it');
      assert.equal(JSON.parse(answer.body).traceId, 'a\u00e9\u00ff', 'the handler saw req.headers as node:http shows them');
    } finally {
      await child.kill();
    }
  });

  // A client controls the id; one that is no valid header value must not take the process down
  // (in a child process, so a crash cannot take this runner with it).
  for (const [what, send] of [
    ['?requestId=a%0Ab (a newline)', (c) => c.socket.write('GET /t?requestId=a%0Ab HTTP/1.1\r\nHost: x\r\n\r\n')],
  ]) {
    it(`a trace id that is not a valid header value (${what}) is answered and does not crash the server`, async () => {
      const child = await startChildServer({ trace: true, connectionPool: { requestTimeout: 2000 } });
      try {
        const c = rawClient(child.port);
        await c.connected;
        send(c);
        let answer = null;
        let failure = null;
        try { answer = await c.read(1500); } catch (err) { failure = err; }
        c.destroy();
        await sleep(100);
        assert.ok(child.alive(), `the server process died:\n${child.output().slice(-1500)}`);
        assert.ok(answer, `no answer within 1.5 s (${failure && failure.message})`);
        assert.equal(answer.status, 200);
        assert.match(answer.headers['x-request-id'] ?? '', UUID_V4, 'an unusable id is replaced by a fresh UUID');
        assert.equal(JSON.parse(answer.body).traceId, answer.headers['x-request-id'], 'the handler saw the replacement');
        const next = await request({ port: child.port, path: '/after', headers: { 'X-Request-Id': 'fine' } });
        assert.equal(next.status, 200);
        assert.equal(next.headers['x-request-id'], 'fine');
      } finally {
        await child.kill();
      }
    });
  }
});
