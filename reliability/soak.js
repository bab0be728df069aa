#!/usr/bin/env node
'use strict';
// Soak test (issue 9, part 7): a bounded mixed-protocol load with steady connection churn against
// HttpServer, HttpsServer, Http2Server (TLS) and WsServer running together in one child process.
// Samples the child's RSS, heap and open file descriptors (/proc/PID/fd) and every server's
// pendingRequests / activeConnections; at the end the load stops and the clients close. Checks:
// pendingRequests and activeConnections back to 0 and open fds back to the idle baseline, RSS
// growth after warm-up bounded, no unexpected client error, no request released only by
// requestTimeout. Prints a markdown summary (and writes it to SOAK_OUT if set); exits 1 when a
// check fails. The load mixes in deliberate faults: handlers that throw or reject (500), clients
// that abort a large response after its first bytes, and clients that abandon an upload halfway.
//
//   node reliability/soak.js                      # 5 minutes
//   SOAK_SECONDS=150 node reliability/soak.js     # 2.5 minutes
//
// Environment:
//   SOAK_SECONDS      load duration in seconds (default 300)
//   SOAK_SAMPLE_MS    sampling period (default 5000)
//   SOAK_OUT          also write the markdown summary to this file
//   SOAK_RATE         requests + WebSocket messages per second across all clients (default 1500;
//                     0 = as fast as the closed-loop clients go, which saturates a 2-core machine)
//   SOAK_SCALE        multiply every client's concurrency (default 1)
//   SOAK_UPLOAD_ABORTS=0  leave out the clients that abandon an upload halfway (1 % of HTTP/1.1
//                     steps; they are what the requestTimeout check below catches today)
//
// Needs the built addon, openssl (test certificates, as __test__/certs.js) and the `ws` dev
// dependency. Traffic goes to 127.0.0.1 only.

const path = require('path');
const fs = require('fs');
const { spawn } = require('child_process');

const REPO = path.join(__dirname, '..');

if (process.argv[2] === '--server') {
  serverMain();
} else {
  main().catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
}

// =====================================================================================================
// Child process: the four servers

function serverMain() {
  const crypto = require('crypto');
  const { HttpServer, HttpsServer, Http2Server, WsServer } = require(REPO);
  const ssl = { mode: 'manual', key: process.env.SOAK_KEY, cert: process.env.SOAK_CERT };
  const faults = { handlerErrors: 0 };
  const chunk = Buffer.alloc(64 * 1024, 0x73);

  const handler = (req, res) => {
    const q = req.url.indexOf('?');
    const p = q < 0 ? req.url : req.url.slice(0, q);
    const params = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
    switch (p) {
      case '/hello':
        res.setHeader('Content-Type', 'text/plain');
        res.end('hello');
        return undefined;
      case '/echo': {
        const hash = crypto.createHash('sha1');
        let n = 0;
        req.on('data', (c) => { n += c.length; hash.update(c); });
        req.on('end', () => {
          res.setHeader('Content-Type', 'application/json');
          res.end(JSON.stringify({ bytes: n, sha1: hash.digest('hex') }));
        });
        req.on('error', () => {});
        return undefined;
      }
      case '/stream': {
        const size = Number(params.get('size') || 256 * 1024);
        let sent = 0;
        res.setHeader('Content-Type', 'application/octet-stream');
        const pump = () => {
          while (sent < size && !res.destroyed) {
            const n = Math.min(chunk.length, size - sent);
            sent += n;
            if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return; }
          }
          if (!res.destroyed) res.end();
        };
        pump();
        return undefined;
      }
      case '/throw':
        throw new Error('soak: deliberate handler fault');
      case '/reject':
        return Promise.reject(new Error('soak: deliberate async fault'));
      default:
        res.statusCode = 404;
        res.end('no route');
        return undefined;
    }
  };
  const app = {
    callback: (protocol) => (protocol
      ? (req, client) => client.send(req.data)
      : handler),
  };
  const pool = { requestTimeout: 15000, maxConnections: 2000 };
  const servers = {
    http: new HttpServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: pool }),
    https: new HttpsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'https', ssl, connectionPool: pool }),
    h2: new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl, connectionPool: pool }),
    ws: new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws', connectionPool: pool }),
  };
  for (const s of Object.values(servers)) s.on('handlerError', () => { faults.handlerErrors++; });

  const ports = {};
  let started = 0;
  for (const [name, s] of Object.entries(servers)) {
    s.on('error', (err) => {
      console.error(`soak server ${name}: ${err.code} ${err.message}`);
      process.exit(2);
    });
    s.Start(() => {
      ports[name] = s.server.address().port;
      if (++started === Object.keys(servers).length) process.send({ event: 'listening', ports, pid: process.pid });
    });
  }

  process.on('message', (msg) => {
    if (!msg || typeof msg !== 'object') return;
    if (msg.cmd === 'stats') {
      if (msg.gc && typeof global.gc === 'function') global.gc();
      const mem = process.memoryUsage();
      const out = { id: msg.id, rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, handlerErrors: faults.handlerErrors, servers: {} };
      for (const [name, s] of Object.entries(servers)) {
        const m = s.connectionPool.getMetrics();
        out.servers[name] = {
          pendingRequests: m.pendingRequests,
          activeConnections: m.activeConnections,
          totalConnections: m.totalConnections,
          requestsTotal: m.requestsTotal,
          responses5xx: m.responses5xx,
          requestsAborted: m.requestsAborted,
          requestsTimedOut: m.requestsTimedOut,
        };
      }
      process.send(out);
    } else if (msg.cmd === 'stop') {
      Promise.all(Object.values(servers).map((s) => s.gracefulShutdown({ drainDelay: 0, timeout: 3000 })))
        .then(() => process.exit(0), () => process.exit(3));
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// =====================================================================================================
// Parent: load generator, sampler, report

async function main() {
  const http = require('http');
  const https = require('https');
  const http2 = require('http2');
  const crypto = require('crypto');
  const WebSocket = require(require.resolve('ws', { paths: [REPO] }));
  const { getCerts } = require(path.join(REPO, '__test__', 'certs'));

  const SECONDS = Number(process.env.SOAK_SECONDS || 300);
  const SAMPLE_MS = Number(process.env.SOAK_SAMPLE_MS || 5000);
  const SCALE = Math.max(1, Number(process.env.SOAK_SCALE || 1));
  const RATE = Number(process.env.SOAK_RATE ?? 1500);
  const UPLOAD_ABORTS = process.env.SOAK_UPLOAD_ABORTS !== '0';
  if (!(SECONDS > 0)) throw new Error('SOAK_SECONDS must be a positive number');
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const MiB = 1024 * 1024;

  const certs = getCerts();
  const CA = certs.ca.certPem;

  // ---- child -------------------------------------------------------------------------------------
  const env = { ...process.env, SOAK_KEY: certs.server.keyPem, SOAK_CERT: certs.server.certPem };
  const child = spawn(process.execPath, ['--expose-gc', __filename, '--server'], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let childExit = null;
  child.on('exit', (code, signal) => { childExit = { code, signal }; });
  process.on('exit', () => { if (child.exitCode === null) child.kill('SIGKILL'); });
  const { ports, pid } = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('soak server did not start within 15 s')), 15000);
    child.on('message', (m) => { if (m && m.event === 'listening') { clearTimeout(t); resolve(m); } });
    child.once('exit', (code) => reject(new Error(`soak server exited (${code}) before listening`)));
  });

  let nextId = 1;
  function stats(gc = false) {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      const t = setTimeout(() => { child.off('message', onMsg); reject(new Error('stats: no answer within 10 s')); }, 10000);
      const onMsg = (m) => {
        if (!m || m.id !== id) return;
        clearTimeout(t);
        child.off('message', onMsg);
        let fds = -1;
        try { fds = fs.readdirSync(`/proc/${pid}/fd`).length; } catch { /* not Linux */ }
        resolve({ ...m, fds, t: Date.now() });
      };
      child.on('message', onMsg);
      child.send({ cmd: 'stats', id, gc });
    });
  }

  // ---- bookkeeping ------------------------------------------------------------------------------
  const counters = {};
  function counter(name) {
    if (!counters[name]) counters[name] = { ok: 0, expectedFaults: 0, errors: 0, errorSamples: [], connections: 0, bytes: 0 };
    return counters[name];
  }
  function fail(c, err) {
    c.errors++;
    if (c.errorSamples.length < 5) c.errorSamples.push(String(err && (err.code || err.message) || err).slice(0, 120));
  }

  const t0 = Date.now();
  const deadline = t0 + SECONDS * 1000;
  let stopping = false;
  const running = () => !stopping && Date.now() < deadline;
  const rnd = (n) => Math.floor(Math.random() * n);

  // ---- HTTP/1.1 request helper (node's http/https client) ----------------------------------------
  function req1(mod, { port, method = 'GET', path: p, body, agent, headers = {}, tlsOpts = {}, abortAfterFirstChunk = false }) {
    return new Promise((resolve, reject) => {
      const h = { ...headers };
      if (body) h['Content-Length'] = body.length;
      const r = mod.request({ host: '127.0.0.1', port, method, path: p, agent, headers: h, ...tlsOpts }, (res) => {
        const chunks = [];
        res.on('data', (c) => {
          if (abortAfterFirstChunk) { r.destroy(); resolve({ status: res.statusCode, aborted: true }); return; }
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on('error', (e) => (abortAfterFirstChunk ? resolve({ aborted: true }) : reject(e)));
      });
      r.setTimeout(20000, () => r.destroy(new Error('client timeout 20 s')));
      r.on('error', (e) => (abortAfterFirstChunk && r.destroyed ? resolve({ aborted: true }) : reject(e)));
      r.end(body);
    });
  }

  /** One HTTP/1.1 mixed-request step; returns after it completed. */
  async function mixedStep(mod, c, port, agent, tlsOpts) {
    await pace();
    const roll = rnd(100);
    try {
      if (roll < 55) {
        const r = await req1(mod, { port, path: '/hello', agent, tlsOpts });
        if (r.status === 200 && r.body.toString() === 'hello') c.ok++; else fail(c, `GET /hello → ${r.status}`);
      } else if (roll < 85) {
        const body = crypto.randomBytes(1 + rnd(16 * 1024));
        const r = await req1(mod, { port, method: 'POST', path: '/echo', body, agent, tlsOpts });
        const want = crypto.createHash('sha1').update(body).digest('hex');
        const got = r.status === 200 ? JSON.parse(r.body.toString()) : null;
        if (got && got.bytes === body.length && got.sha1 === want) { c.ok++; c.bytes += body.length; } else fail(c, `POST /echo → ${r.status}`);
      } else if (roll < 95) {
        const r = await req1(mod, { port, path: '/stream?size=262144', agent, tlsOpts });
        if (r.status === 200 && r.body.length === 262144) { c.ok++; c.bytes += r.body.length; } else fail(c, `GET /stream → ${r.status} ${r.body && r.body.length}`);
      } else if (roll < 98) {
        const r = await req1(mod, { port, path: rnd(2) ? '/throw' : '/reject', agent, tlsOpts });
        if (r.status === 500) c.expectedFaults++; else fail(c, `fault route → ${r.status}`);
      } else if (roll < 99 || !UPLOAD_ABORTS) {
        // client aborts a large response after its first chunk (its own connection)
        await req1(mod, { port, path: '/stream?size=8388608', agent: false, tlsOpts, abortAfterFirstChunk: true });
        c.expectedFaults++;
      } else {
        // client sends 64 KiB of a 256 KiB upload, then goes away (its own connection)
        await new Promise((resolve) => {
          const r = mod.request({ host: '127.0.0.1', port, method: 'POST', path: '/echo', agent: false, headers: { 'Content-Length': 262144 }, ...tlsOpts });
          r.on('error', () => {});
          r.on('response', (res) => res.resume());
          const done = () => { r.destroy(); resolve(); };
          const guard = setTimeout(done, 2000);
          r.write(Buffer.alloc(65536, 0x75), () => setTimeout(() => { clearTimeout(guard); done(); }, 20));
        });
        c.expectedFaults++;
        c.uploadAborts = (c.uploadAborts || 0) + 1;
      }
    } catch (err) {
      fail(c, err);
    }
  }

  const starters = [];
  const closers = [];

  // Pacing: every request / message takes a slot of a shared schedule at SOAK_RATE per second.
  let nextSlot = Date.now();
  const interval = RATE > 0 ? 1000 / RATE : 0;
  async function pace() {
    if (!interval) return;
    const now = Date.now();
    const at = Math.max(nextSlot, now - 20);
    nextSlot = at + interval;
    if (at > now) await sleep(at - now);
  }

  // HTTP keep-alive (6 sockets), with an agent replaced every 500 requests (churn).
  starters.push(async () => {
    const c = counter('http keep-alive');
    let agent = new http.Agent({ keepAlive: true, maxSockets: 6 * SCALE });
    closers.push(() => agent.destroy());
    let n = 0;
    await Promise.all(Array.from({ length: 6 * SCALE }, async () => {
      while (running()) {
        await mixedStep(http, c, ports.http, agent);
        if (++n % 500 === 0) { const old = agent; agent = new http.Agent({ keepAlive: true, maxSockets: 6 * SCALE }); c.connections++; setTimeout(() => old.destroy(), 1000); }
      }
    }));
  });

  // HTTP, a new connection per request.
  starters.push(async () => {
    const c = counter('http new connection per request');
    await Promise.all(Array.from({ length: 2 * SCALE }, async () => {
      while (running()) {
        await pace();
        try {
          const r = await req1(http, { port: ports.http, path: '/hello', agent: false, headers: { Connection: 'close' } });
          if (r.status === 200) { c.ok++; c.connections++; } else fail(c, `→ ${r.status}`);
        } catch (err) { fail(c, err); }
      }
    }));
  });

  // HTTPS keep-alive (2 sockets), agent replaced every 200 requests (TLS handshakes keep happening).
  starters.push(async () => {
    const c = counter('https keep-alive + churn');
    const tlsOpts = { ca: CA, servername: 'localhost' };
    const mk = () => new https.Agent({ keepAlive: true, maxSockets: 2 * SCALE, ca: CA });
    let agent = mk();
    closers.push(() => agent.destroy());
    let n = 0;
    await Promise.all(Array.from({ length: 2 * SCALE }, async () => {
      while (running()) {
        await mixedStep(https, c, ports.https, agent, tlsOpts);
        if (++n % 200 === 0) { const old = agent; agent = mk(); c.connections++; setTimeout(() => old.destroy(), 1000); }
      }
    }));
  });

  // HTTP/2 over TLS: 8 concurrent stream loops on one session, the session replaced every 10 s.
  starters.push(async () => {
    const c = counter('h2 streams (TLS)');
    const connect = () => {
      const s = http2.connect(`https://127.0.0.1:${ports.h2}`, { ca: CA, servername: 'localhost' });
      s.on('error', (e) => fail(c, e));
      c.connections++;
      return s;
    };
    let session = connect();
    closers.push(() => session.close());
    const rotate = setInterval(() => { const old = session; session = connect(); old.close(); }, 10000);
    const stream = (s, headers, body) => new Promise((resolve, reject) => {
      let st;
      try { st = s.request(headers, { endStream: !body }); } catch (e) { reject(e); return; }
      let status = 0;
      const chunks = [];
      st.setTimeout(20000, () => st.close(http2.constants.NGHTTP2_CANCEL));
      st.on('response', (h) => { status = h[':status']; });
      st.on('data', (d) => chunks.push(d));
      st.on('end', () => resolve({ status, body: Buffer.concat(chunks) }));
      st.on('error', reject);
      if (body) st.end(body);
    });
    await Promise.all(Array.from({ length: 8 * SCALE }, async () => {
      while (running()) {
        await pace();
        const roll = rnd(100);
        try {
          if (roll < 60) {
            const r = await stream(session, { ':path': '/hello' });
            if (r.status === 200 && r.body.toString() === 'hello') c.ok++; else fail(c, `h2 /hello → ${r.status}`);
          } else if (roll < 90) {
            const body = crypto.randomBytes(1 + rnd(16 * 1024));
            const r = await stream(session, { ':method': 'POST', ':path': '/echo', 'content-length': String(body.length) }, body);
            const got = r.status === 200 ? JSON.parse(r.body.toString()) : null;
            if (got && got.bytes === body.length && got.sha1 === crypto.createHash('sha1').update(body).digest('hex')) { c.ok++; c.bytes += body.length; } else fail(c, `h2 /echo → ${r.status}`);
          } else if (roll < 97) {
            const r = await stream(session, { ':path': '/stream?size=262144' });
            if (r.status === 200 && r.body.length === 262144) { c.ok++; c.bytes += r.body.length; } else fail(c, `h2 /stream → ${r.status}`);
          } else {
            const r = await stream(session, { ':path': '/throw' });
            if (r.status === 500) c.expectedFaults++; else fail(c, `h2 /throw → ${r.status}`);
          }
        } catch (err) {
          // A stream caught by the session rotation (GOAWAY) is retried on the next loop.
          if (err && err.code === 'ERR_HTTP2_GOAWAY_SESSION') c.expectedFaults++;
          else if (err && /ERR_HTTP2_INVALID_SESSION|ERR_HTTP2_STREAM_CANCEL/.test(err.code || '')) c.expectedFaults++;
          else fail(c, err);
        }
      }
    }));
    clearInterval(rotate);
  });

  // WebSocket: 4 clients, echo round trips, each client reconnecting every 300 messages.
  starters.push(async () => {
    const c = counter('ws messages');
    await Promise.all(Array.from({ length: 4 * SCALE }, async () => {
      while (running()) {
        let ws;
        try {
          ws = new WebSocket(`ws://127.0.0.1:${ports.ws}/ws`);
          await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
          c.connections++;
          for (let i = 0; i < 300 && running(); i++) {
            await pace();
            const msg = crypto.randomBytes(16 + rnd(8 * 1024));
            const echo = await new Promise((resolve, reject) => {
              const t = setTimeout(() => reject(new Error('ws echo timeout 10 s')), 10000);
              ws.once('message', (d) => { clearTimeout(t); resolve(d); });
              ws.once('close', () => { clearTimeout(t); reject(new Error('ws closed')); });
              ws.send(msg);
            });
            ws.removeAllListeners('close');
            if (Buffer.compare(Buffer.from(echo), msg) === 0) { c.ok++; c.bytes += msg.length; } else fail(c, 'ws echo mismatch');
          }
          await new Promise((resolve) => { ws.once('close', resolve); ws.close(1000); setTimeout(resolve, 3000); });
        } catch (err) {
          fail(c, err);
          if (ws) ws.terminate();
          await sleep(100);
        }
      }
    }));
  });

  // ---- sampling ---------------------------------------------------------------------------------
  const baseline = await stats(true);
  const samples = [];
  const loops = starters.map((start) => start());
  console.error(`soak: ${SECONDS} s of mixed load against pid ${pid} (ports ${JSON.stringify(ports)})`);
  const sampler = setInterval(async () => {
    try {
      const s = await stats(false);
      samples.push(s);
      const total = Object.values(counters).reduce((a, c) => a + c.ok, 0);
      const errs = Object.values(counters).reduce((a, c) => a + c.errors, 0);
      console.error(`  t=${((s.t - t0) / 1000).toFixed(0)}s rss=${(s.rss / MiB).toFixed(1)}MiB heap=${(s.heapUsed / MiB).toFixed(1)}MiB fds=${s.fds} ok=${total} errors=${errs} pending=${Object.values(s.servers).map((x) => x.pendingRequests).join('/')} active=${Object.values(s.servers).map((x) => x.activeConnections).join('/')}`);
    } catch (err) {
      console.error(`  sample failed: ${err.message}`);
    }
  }, SAMPLE_MS);

  await Promise.all(loops);
  stopping = true;
  clearInterval(sampler);
  const loadEnd = Date.now();
  for (const close of closers) { try { close(); } catch { /* already closed */ } }

  // Quiesce: every client connection closed, nothing pending.
  let after = await stats(true);
  const quiesceStart = Date.now();
  while (Date.now() - quiesceStart < 20000) {
    const busy = Object.values(after.servers).some((x) => x.pendingRequests !== 0 || x.activeConnections !== 0);
    if (!busy) break;
    await sleep(500);
    after = await stats(true);
  }
  await sleep(1000);
  after = await stats(true);
  const quiesceMs = Date.now() - quiesceStart;

  child.send({ cmd: 'stop' });
  await Promise.race([new Promise((r) => child.once('exit', r)), sleep(10000)]);
  const cleanExit = childExit !== null ? childExit.code === 0 : child.exitCode === 0;

  // ---- report -----------------------------------------------------------------------------------
  const loadSeconds = (loadEnd - t0) / 1000;
  const warmIdx = samples.findIndex((s) => s.t - t0 >= Math.min(60000, loadSeconds * 250));
  const warm = warmIdx >= 0 ? samples[warmIdx] : samples[0] || baseline;
  const lastLoad = samples[samples.length - 1] || after;
  const peak = samples.reduce((m, s) => (s.rss > m.rss ? s : m), baseline);
  const peakFds = samples.reduce((m, s) => Math.max(m, s.fds), baseline.fds);
  // RSS slope after warm-up (least squares), MiB per minute.
  const tail = warmIdx >= 0 ? samples.slice(warmIdx) : samples;
  let slope = 0;
  if (tail.length >= 3) {
    const xs = tail.map((s) => (s.t - t0) / 60000);
    const ys = tail.map((s) => s.rss / MiB);
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    const num = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0);
    const den = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
    slope = den ? num / den : 0;
  }
  const serverTotals = (s) => Object.values(s.servers).reduce((a, x) => ({ pending: a.pending + x.pendingRequests, active: a.active + x.activeConnections }), { pending: 0, active: 0 });
  const endTotals = serverTotals(after);
  const totalErrors = Object.values(counters).reduce((a, c) => a + c.errors, 0);
  const totalOk = Object.values(counters).reduce((a, c) => a + c.ok, 0);
  const timedOut = Object.values(after.servers).reduce((a, x) => a + x.requestsTimedOut, 0);
  const uploadAborts = Object.values(counters).reduce((a, c) => a + (c.uploadAborts || 0), 0);

  const checks = [
    ['server process stayed up and exited cleanly on shutdown', cleanExit && samples.length > 0],
    ['pendingRequests back to 0 on every server after the load', endTotals.pending === 0],
    ['activeConnections back to 0 on every server after the load', endTotals.active === 0],
    [`open fds back to baseline (±2): ${baseline.fds} → ${after.fds}`, after.fds <= baseline.fds + 2],
    [`RSS after warm-up to end of load grew < 32 MiB (${((lastLoad.rss - warm.rss) / MiB).toFixed(1)} MiB)`, lastLoad.rss - warm.rss < 32 * MiB],
    [`no unexpected client errors (${totalErrors})`, totalErrors === 0],
    // Every handler here answers within milliseconds, so a request released by requestTimeout is one
    // the server failed to release when its client went away (see docs/RELIABILITY.md, finding F1).
    [`no request held until requestTimeout (timed out: ${timedOut}; client-aborted uploads sent: ${uploadAborts})`, timedOut === 0],
  ];
  const ok = checks.every(([, v]) => v);

  const f = (b) => (b / MiB).toFixed(1);
  const lines = [];
  lines.push(`## Soak run — ${new Date(t0).toISOString()}`);
  lines.push('');
  const envShown = ['SOAK_SECONDS', 'SOAK_RATE', 'SOAK_SCALE', 'SOAK_SAMPLE_MS', 'SOAK_UPLOAD_ABORTS']
    .filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]} `).join('');
  lines.push(`Command: \`${envShown}node reliability/soak.js\` (load ${loadSeconds.toFixed(0)} s, quiesce ${(quiesceMs / 1000).toFixed(1)} s, sample every ${SAMPLE_MS / 1000} s, rate cap ${RATE || 'none'}/s, scale ${SCALE}); node ${process.version}, ${require('os').cpus().length} CPUs.`);
  lines.push('');
  lines.push('| load | ok | per second | expected faults | unexpected errors | connections opened (approx.) | payload MiB |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const [name, c] of Object.entries(counters)) {
    lines.push(`| ${name} | ${c.ok} | ${(c.ok / loadSeconds).toFixed(0)} | ${c.expectedFaults} | ${c.errors}${c.errorSamples.length ? ` (${c.errorSamples.join('; ')})` : ''} | ${c.connections || '—'} | ${f(c.bytes)} |`);
  }
  lines.push(`| **total** | **${totalOk}** | **${(totalOk / loadSeconds).toFixed(0)}** | | **${totalErrors}** | | |`);
  lines.push('');
  lines.push('| server process | RSS MiB | heap MiB | open fds | pending (http/https/h2/ws) | active connections (http/https/h2/ws) |');
  lines.push('|---|---:|---:|---:|---|---|');
  const row = (label, s) => `| ${label} | ${f(s.rss)} | ${f(s.heapUsed)} | ${s.fds} | ${Object.values(s.servers).map((x) => x.pendingRequests).join(' / ')} | ${Object.values(s.servers).map((x) => x.activeConnections).join(' / ')} |`;
  lines.push(row('idle, before load', baseline));
  lines.push(row(`after warm-up (t=${((warm.t - t0) / 1000).toFixed(0)} s)`, warm));
  lines.push(row(`peak RSS (t=${((peak.t - t0) / 1000).toFixed(0)} s)`, peak));
  lines.push(row(`last sample under load (t=${((lastLoad.t - t0) / 1000).toFixed(0)} s)`, lastLoad));
  lines.push(row('after load, clients closed', after));
  lines.push('');
  lines.push(`RSS slope after warm-up: ${slope.toFixed(2)} MiB/min over ${tail.length} samples; peak open fds under load: ${peakFds}.`);
  const totalsAfter = Object.entries(after.servers).map(([n, x]) => `${n} ${x.requestsTotal} requests / ${x.totalConnections} connections / ${x.responses5xx} 5xx / ${x.requestsAborted} aborted / ${x.requestsTimedOut} timed out`).join('; ');
  lines.push(`Server counters: ${totalsAfter}; handler faults seen by the servers: ${after.handlerErrors}.`);
  lines.push('');
  for (const [label, v] of checks) lines.push(`- ${v ? 'PASS' : 'FAIL'}: ${label}`);
  lines.push('');
  const report = lines.join('\n');
  console.log(report);
  if (process.env.SOAK_OUT) fs.writeFileSync(process.env.SOAK_OUT, report + '\n');
  process.exit(ok ? 0 : 1);
}
