'use strict';
// The shared lifecycle (issue 8): the five-step graceful shutdown, updateConfig (in place and by a
// zero-downtime restart), the terminus signal helper on the Koatty path, and reusePort across
// processes. Real sockets and node's own clients; HttpServer/HttpsServer/Http2Server used directly
// in-process, the Koatty fixture and the reusePort servers in child processes.
//
// "Continuous load" is __test__/load.js: a few workers sending one request after another (each on
// a new connection, agent:false; or streams on one h2 session) for a bounded time, each request
// aimed at server.server.address().port as it is when the request starts.
//
// Tests whose assertion message starts with "BUG:" document a server defect (see the report in
// the assertion message); they are expected to fail until the server is fixed.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const http2 = require('http2');
const net = require('net');
const path = require('path');
const tls = require('tls');
const { HttpServer, HttpsServer, Http2Server } = require('..');
const { getCerts } = require('./certs');
const {
  request, httpsRequest, keepAliveAgent, h2connect, h2request, startKoattyApp, pollUntil, occupyPort,
  withTimeout, sleep,
  failIfKeptAlive,
} = require('./helpers');
const { NO_POSIX_SIGNALS, NO_REUSEPORT_BALANCING } = require('./platform');
const { startLoad, failures, describeStats } = require('./load');

failIfKeptAlive(__filename);

const certs = getCerts();
const CA = certs.ca.certPem;
const SSL = { mode: 'manual', key: certs.server.key, cert: certs.server.cert };
const STEPS = [
  'stopAcceptingNewConnections',
  'waitDrainDelay',
  'waitForConnectionCompletion',
  'forceCloseRemainingConnections',
  'stopMonitoringAndCleanup',
];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The fake app: /hello answers at once, /slow?ms=N after N ms, /hang never. `state` counts what
 * the handler saw, so "every request the app received was answered" can be checked.
 */
function makeApp() {
  const state = { hello: 0, slowStarted: 0, slowDone: 0, hung: 0 };
  const handler = (req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/slow') {
      state.slowStarted++;
      setTimeout(() => {
        state.slowDone++;
        res.setHeader('Content-Type', 'text/plain');
        res.end('slow');
      }, Number(u.searchParams.get('ms') || 500));
      return;
    }
    if (u.pathname === '/hang') {
      state.hung++;
      return;
    }
    state.hello++;
    res.setHeader('Content-Type', 'text/plain');
    res.end('hello');
  };
  return { app: { callback: () => handler }, state };
}

const CLASSES = { http: HttpServer, https: HttpsServer, http2: Http2Server };

function options(protocol, extra = {}) {
  return { hostname: '127.0.0.1', port: 0, protocol, ...(protocol === 'http' ? {} : { ssl: SSL }), ...extra };
}

function start(server, timeout = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(() => {
      server.off('error', reject);
      resolve(server.server.address().port);
    });
  }), timeout, `${server.constructor.name}.Start`);
}

/** A new server of `protocol` with the fake app, started. */
async function serve(protocol, extra = {}) {
  const { app, state } = makeApp();
  const server = new CLASSES[protocol](app, options(protocol, extra));
  const port = await start(server);
  return { server, state, port };
}

/** Shut a test's server down quickly whatever state it is in (cleanup, not under test). */
function cleanup(server) {
  return withTimeout(server.gracefulShutdown({ drainDelay: 0, timeout: 1000 }), 5000, 'cleanup shutdown').catch(() => {});
}

/** A port that was free a moment ago (bound to 0 and closed). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Settles with `{ status, connection, … }` or `{ error: code }` (never rejects). */
function settle(promise) {
  return promise.then(
    (r) => ({ status: r.status, connection: r.headers.connection, body: r.body.toString() }),
    (err) => ({ error: err.code || err.message }),
  );
}

/** GET on a new connection with the client of `protocol` (http2 → an https/1.1 request). */
function get(protocol, port, p, extra = {}) {
  return protocol === 'http'
    ? request({ port, path: p, ...extra })
    : httpsRequest({ port, path: p, tls: { ca: CA }, ...extra });
}

/** Checks the report's shape: the five steps in order, a trace id, durations that add up. */
function assertReportShape(rep) {
  assert.match(rep.traceId, UUID, 'traceId is a uuid');
  assert.deepEqual(rep.steps.map((s) => s.name), STEPS, 'the five steps, in order');
  for (const s of rep.steps) {
    assert.ok(['completed', 'skipped', 'timeout'].includes(s.status), `${s.name}: status ${s.status}`);
    assert.ok(Number.isFinite(s.duration) && s.duration >= 0, `${s.name}: duration ${s.duration}`);
  }
  const sum = rep.steps.reduce((a, s) => a + s.duration, 0);
  assert.ok(Number.isFinite(rep.duration) && rep.duration >= 0, `duration ${rep.duration}`);
  assert.ok(sum <= rep.duration + 5, `step durations (${sum} ms) fit in the whole (${rep.duration} ms)`);
  assert.equal(typeof rep.drained, 'boolean');
  assert.ok(Number.isInteger(rep.forced) && rep.forced >= 0, `forced ${rep.forced}`);
  assert.ok(Number.isInteger(rep.connectionsAtStart) && rep.connectionsAtStart >= 0, `connectionsAtStart ${rep.connectionsAtStart}`);
}

const stepOf = (rep, name) => rep.steps.find((s) => s.name === name);

// ---------------------------------------------------------------------------------------------------

describe('gracefulShutdown under continuous load', () => {
  for (const protocol of ['http', 'https']) {
    it(`${protocol}: slow requests in flight finish with 200, new connections are refused after step 1, every request the app saw is answered`, async (t) => {
      const { server, state, port } = await serve(protocol);
      let load;
      try {
        load = startLoad({ send: () => get(protocol, port, '/hello'), concurrency: 4, durationMs: 4000 });
        await pollUntil(() => state.hello, (n) => n >= 20, { timeoutMs: 3000, intervalMs: 10 });
        // Five slow requests, each on its own keep-alive connection (so Connection: close comes from
        // the server, not from the client), all received by the app before the shutdown starts.
        const agents = Array.from({ length: 5 }, () => keepAliveAgent());
        const slow = agents.map((agent) => settle(get(protocol, port, '/slow?ms=700', protocol === 'http' ? { agent } : {})));
        await pollUntil(() => state.slowStarted, (n) => n === 5, { timeoutMs: 3000, intervalMs: 5 });

        let stopped = null;
        server.once('stopped', (r) => { stopped = r; });
        const shutdown = server.gracefulShutdown({ drainDelay: 100, timeout: 5000 });
        assert.equal(server.status, 503, 'status is 503 as soon as the shutdown begins');
        assert.equal(server.gracefulShutdown(), shutdown, 'a second call returns the same promise');

        // Step 1 closes the listener: a new connection is refused while the slow ones are in flight.
        // A probe sent before step 1 has closed it is served (and seen by the app): count those.
        let probesServed = 0;
        const refused = await pollUntil(async () => {
          const r = await settle(get(protocol, port, '/hello', { timeout: 2000 }));
          if (r.status === 200) probesServed++;
          return r;
        }, (r) => r.error === 'ECONNREFUSED', { timeoutMs: 1000, intervalMs: 5 });
        assert.equal(refused.error, 'ECONNREFUSED', `a new connection after step 1: ${JSON.stringify(refused)}`);
        assert.equal(state.slowDone, 0, 'the refusal came while the slow requests were still in flight');

        const results = await Promise.all(slow);
        const rep = await shutdown;
        const stats = await load.stop();
        for (const a of agents) a.destroy();

        for (const r of results) {
          assert.equal(r.status, 200, `slow request in flight at shutdown: ${JSON.stringify(r)}`);
          assert.equal(r.body, 'slow');
          if (protocol === 'http') assert.equal(r.connection, 'close', 'the in-flight response carries Connection: close');
        }
        assert.equal(stats.ok + probesServed, state.hello, `every /hello the app received was answered with 200 (${describeStats(stats)}; probes served ${probesServed})`);
        assert.ok(stats.ok > 0 && (stats.errors.ECONNREFUSED ?? 0) > 0, `load ran before and after step 1 (${describeStats(stats)})`);
        // 'HTTP 503' (+ Connection: close): a request that arrived once shutdown began, on a
        // connection accepted from the backlog, is refused the retryable way (decisions.md §13).
        const other = Object.keys(failures(stats).byKind).filter((k) => k !== 'ECONNREFUSED' && k !== 'ECONNRESET' && k !== 'HTTP 503');
        assert.deepEqual(other, [], `load requests fail only by being refused (${describeStats(stats)})`);
        // ECONNRESET here would be a connection the kernel had queued on the listening socket when
        // step 1 closed it (the handler never saw it; see the report): rare, tolerated, shown.
        if (stats.errors.ECONNRESET) t.diagnostic(`${protocol} shutdown under load: ${describeStats(stats)}`);

        assertReportShape(rep);
        assert.ok(rep.steps.every((s) => s.status === 'completed'), `all steps completed: ${JSON.stringify(rep.steps)}`);
        assert.ok(rep.connectionsAtStart >= 5, `connectionsAtStart ${rep.connectionsAtStart} counts the slow requests' connections`);
        assert.equal(rep.drained, true);
        assert.equal(rep.forced, 0);
        const waited = stepOf(rep, 'waitDrainDelay').duration + stepOf(rep, 'waitForConnectionCompletion').duration;
        assert.ok(waited >= 400, `steps 2+3 waited for the slow requests (${waited} ms)`);
        assert.ok(rep.duration < 3000, `shutdown took ${rep.duration} ms`);
        assert.equal(server.server.listening, false);
        assert.deepEqual(stopped, rep, "'stopped' is emitted with the report");
      } finally {
        if (load) await load.stop();
        await cleanup(server);
      }
    });
  }

  it('http2: one session with many streams: the client gets GOAWAY (NO_ERROR), open streams finish, no stream the app saw is lost', async () => {
    const { server, state, port } = await serve('http2');
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
    let load;
    try {
      let goaway = null;
      session.on('goaway', (code, lastStreamID) => { goaway = { code, lastStreamID, at: Date.now() }; });
      // Client-side refusals after GOAWAY and REFUSED_STREAM resets (streams the server never
      // started) are named apart from other failures.
      const send = () => h2request(session, { path: '/hello' }).catch((err) => {
        if (/REFUSED_STREAM|reset with code 7\b/.test(err.message)) err.code = 'REFUSED_STREAM';
        throw err;
      });
      load = startLoad({ send, concurrency: 16, durationMs: 4000 });
      await pollUntil(() => state.hello, (n) => n >= 50, { timeoutMs: 3000, intervalMs: 10 });
      const slow = [];
      const slowEnded = [];
      for (let i = 0; i < 5; i++) {
        slow.push(h2request(session, { path: '/slow?ms=600' }).then((r) => {
          slowEnded.push(Date.now());
          return { status: r.status, body: r.text() };
        }, (err) => ({ error: err.message })));
      }
      await pollUntil(() => state.slowStarted, (n) => n === 5, { timeoutMs: 3000, intervalMs: 5 });

      const shutdown = server.gracefulShutdown({ drainDelay: 100, timeout: 5000 });
      assert.equal(server.status, 503);
      const refused = await pollUntil(() => h2connect(`https://127.0.0.1:${port}`, { ca: CA }, 2000).then(
        (s) => { s.destroy(); return 'connected'; }, (err) => err.code), (c) => c === 'ECONNREFUSED', { timeoutMs: 1000, intervalMs: 5 });
      assert.equal(refused, 'ECONNREFUSED', 'a new h2 connection after step 1 is refused');

      const results = await Promise.all(slow);
      const rep = await shutdown;
      const stats = await load.stop();

      assert.ok(goaway, "the client's session got 'goaway'");
      assert.equal(goaway.code, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY with NO_ERROR');
      for (const r of results) assert.deepEqual(r, { status: 200, body: 'slow' }, 'an open stream finishes after GOAWAY');
      assert.ok(slowEnded.every((t) => t >= goaway.at), 'the slow streams ended after the GOAWAY arrived');
      assert.equal(stats.ok, state.hello, `every stream the app received was answered (${describeStats(stats)})`);
      // REFUSED_STREAM: a stream opened before the client saw the GOAWAY, refused the retryable way.
      const allowed = new Set(['ERR_HTTP2_GOAWAY_SESSION', 'ERR_HTTP2_INVALID_SESSION', 'REFUSED_STREAM']);
      const other = Object.keys(failures(stats).byKind).filter((k) => !allowed.has(k));
      assert.deepEqual(other, [], `streams fail only as refused (${describeStats(stats)})`);

      assertReportShape(rep);
      assert.equal(rep.drained, true);
      assert.equal(rep.forced, 0);
      assert.ok(rep.connectionsAtStart >= 1);
    } finally {
      if (load) await load.stop();
      session.destroy();
      await cleanup(server);
    }
  });
});

describe('gracefulShutdown: options, steps and report', () => {
  it('drainDelay ends at once when no connection is open', async () => {
    const { server } = await serve('http');
    const rep = await server.gracefulShutdown({ drainDelay: 3000 });
    assertReportShape(rep);
    assert.equal(stepOf(rep, 'waitDrainDelay').status, 'completed');
    assert.ok(stepOf(rep, 'waitDrainDelay').duration < 200, `waitDrainDelay ${stepOf(rep, 'waitDrainDelay').duration} ms`);
    assert.ok(rep.duration < 500, `whole shutdown ${rep.duration} ms`);
    assert.deepEqual([rep.connectionsAtStart, rep.drained, rep.forced], [0, true, 0]);
    // Stop after the shutdown calls its callback once (same promise underneath).
    let calls = 0;
    await withTimeout(new Promise((resolve) => server.Stop(() => { calls++; resolve(); })), 2000, 'Stop after shutdown');
    await sleep(20);
    assert.equal(calls, 1);
  });

  it('step 1 closes an idle keep-alive connection at once; drainDelay then ends as soon as no connection is open', async () => {
    const { server, port } = await serve('http');
    const agent = keepAliveAgent();
    try {
      const r = await request({ port, path: '/hello', agent });
      assert.equal(r.status, 200);
      const [socket] = Object.values(agent.freeSockets).flat();
      assert.ok(socket, 'the agent keeps one idle socket');
      let closedAt = 0;
      socket.once('close', () => { closedAt = Date.now(); });
      const t0 = Date.now();
      const rep = await server.gracefulShutdown({ drainDelay: 2000, timeout: 5000 });
      assertReportShape(rep);
      const delay = stepOf(rep, 'waitDrainDelay');
      assert.equal(delay.status, 'completed');
      assert.ok(delay.duration < 500, `waitDrainDelay lasted ${delay.duration} ms (drainDelay 2000, but no connection left open)`);
      await pollUntil(() => closedAt, (t) => t > 0, { timeoutMs: 1000, intervalMs: 5 });
      assert.ok(closedAt - t0 < 500, `the client saw its idle socket closed by step 1 (${closedAt - t0} ms), as node's close() does`);
      assert.deepEqual([rep.connectionsAtStart, rep.drained, rep.forced], [1, true, 0]);
    } finally {
      agent.destroy();
      await cleanup(server);
    }
  });

  it('drainDelay waits while a request is in flight; it is answered and the shutdown ends with it', async () => {
    const { server, port } = await serve('http');
    try {
      const slow = settle(request({ port, path: '/slow?ms=600' }));
      await sleep(50);
      const rep = await server.gracefulShutdown({ drainDelay: 300, timeout: 5000 });
      const r = await slow;
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(r.connection, 'close', 'the response in flight closes its connection');
      const delay = stepOf(rep, 'waitDrainDelay');
      assert.ok(delay.duration >= 290 && delay.duration < 600, `waitDrainDelay lasted ${delay.duration} ms (drainDelay 300, a request in flight)`);
      assert.ok(rep.duration >= 500 && rep.duration < 1500, `the shutdown ended with the request (${rep.duration} ms)`);
      assert.deepEqual([rep.drained, rep.forced], [true, 0]);
    } finally {
      await cleanup(server);
    }
  });

  it('force-close after timeout: a never-answering request is reset, the shutdown ends on time', async () => {
    const { server, state, port } = await serve('http');
    try {
      const hung = settle(request({ port, path: '/hang', timeout: 10000 }));
      await pollUntil(() => state.hung, (n) => n === 1, { timeoutMs: 2000, intervalMs: 5 });
      const rep = await server.gracefulShutdown({ timeout: 300, drainDelay: 0, stepTimeout: 2000 });
      const client = await hung;
      assert.ok(['ECONNRESET', 'ECONNABORTED'].includes(client.error), `the client sees its connection reset: ${JSON.stringify(client)}`);
      assertReportShape(rep);
      assert.ok(rep.duration >= 290 && rep.duration < 1500, `shutdown took ${rep.duration} ms (timeout 300)`);
      assert.equal(server.server.listening, false);
    } finally {
      await cleanup(server);
    }
  });

  it('force-close after timeout: the report counts the connections it forced (20 hanging requests, 3 rounds)', async () => {
    // BUG (js/lifecycle.js runShutdown): every step is raced against a JS timer of
    // min(bound, left() + 1) ms. Step 3's native drain is given left() ms, so its callback and the
    // JS timer fire together; step 4 starts when `timeout` is used up, so its JS bound is ~1 ms while
    // the native forceClose waits up to min(stepTimeout, 1000) ms for the connection tasks to end.
    // Whichever timer wins decides the report: when the JS one does, the step is 'timeout' and its
    // counts are dropped, giving connectionsAtStart 0, forced 0 and even drained true although
    // every connection was reset.
    const rounds = [];
    for (let round = 0; round < 3; round++) {
      const { server, state, port } = await serve('http');
      try {
        const hung = Array.from({ length: 20 }, () => settle(request({ port, path: '/hang', timeout: 10000 })));
        await pollUntil(() => state.hung, (n) => n === 20, { timeoutMs: 3000, intervalMs: 5 });
        const rep = await server.gracefulShutdown({ timeout: 300, drainDelay: 0, stepTimeout: 2000 });
        const clients = await Promise.all(hung);
        assert.ok(clients.every((c) => c.error), 'all 20 clients saw their connection closed');
        rounds.push({
          steps: rep.steps.map((s) => `${s.name}:${s.status}`).join(' '),
          connectionsAtStart: rep.connectionsAtStart,
          forced: rep.forced,
          drained: rep.drained,
        });
      } finally {
        await cleanup(server);
      }
    }
    const wrong = rounds.filter((r) => r.forced !== 20 || r.drained !== false || r.connectionsAtStart !== 20);
    assert.deepEqual(wrong, [], 'BUG: the shutdown report must say drained:false, forced:20, connectionsAtStart:20 when 20 '
      + 'hanging connections were reset at the timeout; steps 3/4 race a JS timer of left()+1 ms (≈1 ms for step 4) '
      + `and drop the native counts when it wins. Rounds: ${JSON.stringify(rounds)}`);
  });

  it('skipSteps: skipped steps are reported; skipping waitForConnectionCompletion forces at once', async () => {
    const { server, state, port } = await serve('http');
    try {
      const hung = settle(request({ port, path: '/hang', timeout: 10000 }));
      await pollUntil(() => state.hung, (n) => n === 1, { timeoutMs: 2000, intervalMs: 5 });
      const rep = await server.gracefulShutdown({ timeout: 10000, drainDelay: 5000, skipSteps: ['waitDrainDelay', 'waitForConnectionCompletion'] });
      assertReportShape(rep);
      assert.deepEqual(rep.steps.map((s) => s.status), ['completed', 'skipped', 'skipped', 'completed', 'completed']);
      for (const name of ['waitDrainDelay', 'waitForConnectionCompletion']) assert.equal(stepOf(rep, name).duration, 0);
      assert.ok(rep.duration < 1500, `forced at once, not after drainDelay/timeout (${rep.duration} ms)`);
      assert.equal(rep.forced, 1, 'the hanging connection was forced');
      assert.equal(rep.drained, false);
      const client = await hung;
      assert.ok(client.error, `the hanging request is reset: ${JSON.stringify(client)}`);
    } finally {
      await cleanup(server);
    }
  });

  it('skipSteps: skipping only waitDrainDelay lets in-flight work finish without the delay', async () => {
    const { server, state, port } = await serve('http');
    try {
      const slow = settle(request({ port, path: '/slow?ms=300' }));
      await pollUntil(() => state.slowStarted, (n) => n === 1, { timeoutMs: 2000, intervalMs: 5 });
      const rep = await server.gracefulShutdown({ drainDelay: 5000, skipSteps: ['waitDrainDelay'] });
      assert.deepEqual(rep.steps.map((s) => s.status), ['completed', 'skipped', 'completed', 'completed', 'completed']);
      assert.deepEqual(await slow, { status: 200, connection: 'close', body: 'slow' });
      assert.ok(rep.duration < 1500, `no drain delay (${rep.duration} ms)`);
      assert.deepEqual([rep.drained, rep.forced], [true, 0]);
    } finally {
      await cleanup(server);
    }
  });

  it('invalid options reject with ERR_INVALID_CONFIG and leave the server serving', async () => {
    const { server, port } = await serve('http');
    try {
      const bad = [
        { timeout: -1 },
        { drainDelay: -5 },
        { stepTimeout: Number.NaN },
        { timeout: '100' },
        { skipSteps: ['waitForEverything'] },
        { skipSteps: 'waitDrainDelay' },
      ];
      for (const opts of bad) {
        await assert.rejects(server.gracefulShutdown(opts), (err) => {
          assert.equal(err.code, 'ERR_INVALID_CONFIG', `${JSON.stringify(opts)}: code ${err.code}`);
          assert.match(err.message, /ERR_INVALID_CONFIG/);
          return true;
        }, JSON.stringify(opts));
        assert.equal(server.status, undefined, `${JSON.stringify(opts)}: status untouched`);
        assert.equal(server.server.listening, true);
      }
      assert.equal((await request({ port, path: '/hello' })).status, 200, 'still serving after the rejected calls');
      const rep = await server.gracefulShutdown({ drainDelay: 0 });
      assertReportShape(rep);
    } finally {
      await cleanup(server);
    }
  });
});

// ---------------------------------------------------------------------------------------------------

describe('Start() again after a shutdown (outside probe, session 15)', () => {
  it('Stop → Start → Stop on one server, same port: it serves again with status reset, and the second Stop is a shutdown of its own', async () => {
    const port = await freePort();
    const { app } = makeApp();
    const server = new HttpServer(app, options('http', { port }));
    let stopped = 0;
    server.on('stopped', () => stopped++);
    await start(server);
    const first = server.gracefulShutdown({ drainDelay: 0 });
    await first;
    assert.equal(server.status, 503);
    assert.equal((await settle(request({ port, path: '/hello', timeout: 1000 }))).error, 'ECONNREFUSED');
    await start(server);
    assert.equal(server.status, undefined, 'status back to serving');
    assert.equal((await settle(request({ port, path: '/hello' }))).status, 200);
    const second = server.gracefulShutdown({ drainDelay: 0 });
    assert.notEqual(second, first, 'a new shutdown');
    await withTimeout(second, 5000, 'second shutdown');
    assert.equal(stopped, 2);
    assert.equal(server.server.listening, false);
    assert.equal((await settle(request({ port, path: '/hello', timeout: 1000 }))).error, 'ECONNREFUSED', 'the port is closed again');
  });

  it('Start() while the shutdown is still draining throws ERR_SERVER_STATE; the request in flight completes', async () => {
    const { server, port } = await serve('http');
    const inFlight = settle(request({ port, path: '/slow?ms=400' }));
    await sleep(50);
    const shutdown = server.gracefulShutdown({ drainDelay: 0, timeout: 5000 });
    await sleep(20);
    assert.throws(() => server.Start(), { code: 'ERR_SERVER_STATE' });
    assert.equal((await inFlight).status, 200);
    await withTimeout(shutdown, 5000, 'shutdown');
    await start(server);
    assert.equal((await settle(request({ port: server.server.address().port, path: '/hello' }))).status, 200, 'serves once the shutdown ended');
    await cleanup(server);
  });

  it('Start() twice throws ERR_SERVER_ALREADY_LISTEN (as node\'s listen()), and the first listener keeps serving', async () => {
    const { server, port } = await serve('http');
    try {
      assert.throws(() => server.Start(), { code: 'ERR_SERVER_ALREADY_LISTEN' });
      await sleep(50);
      assert.equal((await settle(request({ port, path: '/hello' }))).status, 200);
      assert.equal(server.server.address().port, port);
    } finally {
      await cleanup(server);
    }
  });

  it('Stop() in the turn of Start(): it binds, then shuts down ("listening" before "stopped"); the port is not left bound', async () => {
    const port = await freePort();
    const { app } = makeApp();
    const server = new HttpServer(app, { hostname: 'localhost', port, protocol: 'http' });
    const events = [];
    server.on('listening', () => events.push('listening'));
    server.on('stopped', () => events.push('stopped'));
    server.Start();
    assert.throws(() => server.Start(), { code: 'ERR_SERVER_ALREADY_LISTEN' }, 'a second Start() while binding');
    await withTimeout(server.gracefulShutdown({ drainDelay: 0, skipSteps: ['waitDrainDelay', 'waitForConnectionCompletion'] }), 5000, 'shutdown');
    assert.deepEqual(events, ['listening', 'stopped']);
    assert.equal(server.server.listening, false);
    assert.equal((await settle(request({ port, path: '/hello', timeout: 1000 }))).error, 'ECONNREFUSED');
  });

  it('a shutdown with invalid options before Start() rejects and changes nothing: Start() and a real shutdown still work', async () => {
    const { app } = makeApp();
    const server = new HttpServer(app, options('http'));
    await assert.rejects(server.gracefulShutdown({ timeout: -1 }), { code: 'ERR_INVALID_CONFIG' });
    const port = await start(server);
    assert.equal((await settle(request({ port, path: '/hello' }))).status, 200);
    await withTimeout(server.gracefulShutdown({ drainDelay: 0 }), 5000, 'shutdown');
    assert.equal(server.server.listening, false);
  });

  it('updateConfig({ port }) during a shutdown throws ERR_SERVER_STATE (it bound a new listener that served through the shutdown)', async () => {
    const { server, port } = await serve('http');
    const agent = keepAliveAgent();
    try {
      assert.equal((await request({ port, path: '/hello', agent })).status, 200); // keeps the drain delay running
      const shutdown = server.gracefulShutdown({ drainDelay: 1000, timeout: 3000 });
      const other = await freePort();
      await assert.rejects(server.updateConfig({ port: other }), { code: 'ERR_SERVER_STATE' });
      assert.equal((await settle(request({ port: other, path: '/hello', timeout: 1000 }))).error, 'ECONNREFUSED');
      agent.destroy();
      await withTimeout(shutdown, 5000, 'shutdown');
    } finally {
      agent.destroy();
    }
  });

  it('CreateTerminus: the signal handlers leave with the first stop and come back with the next Start', async () => {
    const { CreateTerminus } = require('..');
    const before = process.listenerCount('SIGTERM');
    const { server } = await serve('http');
    const dispose = CreateTerminus(server);
    assert.equal(process.listenerCount('SIGTERM'), before + 1);
    await server.gracefulShutdown({ drainDelay: 0 });
    assert.equal(process.listenerCount('SIGTERM'), before, 'removed once stopped');
    await start(server);
    assert.equal(process.listenerCount('SIGTERM'), before + 1, 'installed again when listening again');
    dispose();
    assert.equal(process.listenerCount('SIGTERM'), before);
    await start(server).catch(() => {});
    await cleanup(server);
    assert.equal(process.listenerCount('SIGTERM'), before, 'not again once disposed');
  });
});

describe('updateConfig', () => {
  it('maxConnections lowered at run time: existing keep-alive connections keep working, the next new one gets 503', async () => {
    const { server, port } = await serve('http');
    const agents = [0, 1, 2].map(() => keepAliveAgent());
    try {
      for (const agent of agents) assert.equal((await request({ port, path: '/hello', agent })).status, 200);
      const r = await server.updateConfig({ connectionPool: { maxConnections: 3 } });
      assert.deepEqual([r.requiresRestart, r.restarted], [false, false], `applied in place: ${JSON.stringify(r)}`);
      // The server was built without a connectionPool group, so the diff names the whole group;
      // the consequence for restart-only keys is the 'option group the server was built without' test.
      assert.ok(['connectionPool.maxConnections', 'connectionPool'].includes(r.changedKeys.join()), `changedKeys ${r.changedKeys}`);
      for (const agent of agents) {
        const again = await request({ port, path: '/hello', agent });
        assert.equal(again.status, 200, 'an existing connection keeps working');
        assert.equal(again.reusedSocket, true, 'on the same socket');
      }
      const fourth = await request({ port, path: '/hello' });
      assert.equal(fourth.status, 503, 'the 4th connection is over maxConnections');
      assert.equal(fourth.headers['retry-after'], '1');
      assert.equal(server.connectionPool.getMetrics().rejectedConnections, 1);
      assert.equal(server.status, undefined, 'updateConfig never sets status');
      agents[0].destroy();
      const afterFree = await pollUntil(() => settle(request({ port, path: '/hello' })), (x) => x.status === 200, { timeoutMs: 2000, intervalMs: 20 });
      assert.equal(afterFree.status, 200, 'a slot freed by a closed connection is used again');
    } finally {
      for (const a of agents) a.destroy();
      await cleanup(server);
    }
  });

  it('requestTimeout changed at run time applies to new requests; one in flight keeps its deadline', async () => {
    const { server, state, port } = await serve('http', { connectionPool: { requestTimeout: 5000 } });
    try {
      const inFlight = settle(request({ port, path: '/slow?ms=700' }));
      await pollUntil(() => state.slowStarted, (n) => n === 1, { timeoutMs: 2000, intervalMs: 5 });
      const r = await server.updateConfig({ connectionPool: { requestTimeout: 300 } });
      assert.deepEqual(r, { changedKeys: ['connectionPool.requestTimeout'], requiresRestart: false, restarted: false });
      assert.equal(server.options.connectionPool.requestTimeout, 300);
      const t0 = Date.now();
      const late = await settle(request({ port, path: '/slow?ms=700' }));
      const ms = Date.now() - t0;
      assert.equal(late.status, 503, `a new request the handler does not answer within 300 ms: ${JSON.stringify(late)}`);
      assert.ok(ms >= 250 && ms < 650, `answered at the new deadline (${ms} ms)`);
      assert.equal((await inFlight).status, 200, 'the request in flight during the change kept the old 5000 ms deadline');
    } finally {
      await cleanup(server);
    }
  });

  it('maxInFlight changed by updateConfig applies in place and the new cap holds', async () => {
    const { server, state, port } = await serve('http', { connectionPool: { maxInFlight: 100 } });
    try {
      const r = await server.updateConfig({ connectionPool: { maxInFlight: 1 } });
      assert.deepEqual(r, { changedKeys: ['connectionPool.maxInFlight'], requiresRestart: false, restarted: false });
      assert.equal(server.server.address().port, port, 'an in-place change keeps the listener');
      const slow = [0, 1, 2].map(() => settle(request({ port, path: '/slow?ms=300' })));
      await sleep(150);
      const started = state.slowStarted;
      for (const x of await Promise.all(slow)) assert.equal(x.status, 200);
      assert.equal(started, 1, `after lowering maxInFlight to 1, ${started} handlers ran at once (expected 1)`);
    } finally {
      await cleanup(server);
    }
  });

  it('a shutdown right after a restart waits for the requests in flight on the replaced listener (probe: they were reset, the report said drained in 1 ms)', async () => {
    const { server, state, port } = await serve('http');
    try {
      const slow = settle(request({ port, path: '/slow?ms=800' }));
      await pollUntil(() => state.slowStarted, (n) => n === 1, { timeoutMs: 3000, intervalMs: 10 });
      const r = await server.updateConfig({ nativeEndpoints: true });
      assert.equal(r.restarted, true);
      const t0 = Date.now();
      const rep = await server.gracefulShutdown({ drainDelay: 0, timeout: 5000 });
      const took = Date.now() - t0;
      assert.equal(state.slowDone, 1, `the shutdown ended only after the request in flight was answered (${took} ms)`);
      const answer = await slow;
      assert.equal(answer.status, 200, `the slow request on the old listener was answered: ${JSON.stringify(answer)}`);
      assert.equal(answer.body, 'slow');
      assert.equal(rep.drained, true);
      assert.ok(rep.connectionsAtStart >= 1, 'the old listener\'s connection is counted');
    } finally {
      await cleanup(server);
    }
  });

  it('keys in an option group the server was built without are reported by path and classified one by one', async () => {
    // NewServe (the Koatty path) builds servers without a connectionPool group.
    const { server, state, port } = await serve('http');
    try {
      const r = await server.updateConfig({ connectionPool: { maxInFlight: 1 } });
      assert.deepEqual(r, { changedKeys: ['connectionPool.maxInFlight'], requiresRestart: false, restarted: false });
      const slow = [0, 1].map(() => settle(request({ port, path: '/slow?ms=300' })));
      await sleep(150);
      assert.equal(state.slowStarted, 1, 'the cap from a group absent before applies');
      await Promise.all(slow);
      const r2 = await server.updateConfig({ nativeEndpoints: { healthz: '/hz' } });
      assert.deepEqual(r2, { changedKeys: ['nativeEndpoints.healthz'], requiresRestart: true, restarted: true });
      const res = await request({ port: server.server.address().port, path: '/hz' });
      assert.equal(res.status, 200);
      assert.equal(res.body.toString(), 'ok');
    } finally {
      await cleanup(server);
    }
  });

  // Once, under heavy machine load, 4 of ~4,700 requests got ECONNRESET at one instant here: the old
  // listener was retired on another thread while requests that had read the old port were still
  // connecting. It is now retired on the JS thread's next turn (setImmediate in gracefulRestart).
  it('port change with keep-alive clients on the old port: their idle connections are not closed under them (no ECONNRESET)', async () => {
    const { server, port } = await serve('http', { port: await freePort() });
    const agent = new (require('http').Agent)({ keepAlive: true, maxSockets: 6 });
    const seen = { ok: 0, close: 0, errors: {} };
    let stop = false;
    const one = () => new Promise((resolve) => {
      const q = require('http').get({ port, host: '127.0.0.1', path: '/hello', agent }, (res) => {
        res.resume();
        res.on('end', () => { seen.ok++; if (res.headers.connection === 'close') seen.close++; resolve(); });
      });
      q.on('error', (e) => { seen.errors[e.code] = (seen.errors[e.code] || 0) + 1; resolve(); });
    });
    const workers = Array.from({ length: 6 }, async () => { while (!stop) await one(); });
    try {
      await sleep(300);
      const change = await server.updateConfig({ port: 0 });
      assert.equal(change.restarted, true, JSON.stringify(change));
      await sleep(600);
      stop = true;
      await Promise.all(workers);
      // The old port refuses new connections (decisions §14); a request on a connection opened before
      // the change completes (with Connection: close) — none is reset by an idle close racing its reuse.
      assert.deepEqual(Object.keys(seen.errors).filter((k) => k !== 'ECONNREFUSED'), [], `errors: ${JSON.stringify(seen)}`);
      assert.ok(seen.ok > 0 && seen.close > 0, `requests on the old connections completed, told to close: ${JSON.stringify(seen)}`);
    } finally {
      stop = true;
      agent.destroy();
      await cleanup(server);
    }
  });

  it('port change under continuous load: zero failed requests; requests in flight on the old port complete', async () => {
    const { server, state, port: firstPort } = await serve('http');
    const target = () => server.server.address().port;
    const load = startLoad({ send: () => request({ port: target(), path: '/hello' }), concurrency: 4, durationMs: 1800, label: target });
    const ports = [firstPort];
    const slow = [];
    try {
      await sleep(150);
      for (let k = 0; k < 5; k++) {
        // A slow request the app has received on the current (soon old) port.
        const before = state.slowStarted;
        slow.push(settle(request({ port: target(), path: '/slow?ms=300' })));
        await pollUntil(() => state.slowStarted, (n) => n > before, { timeoutMs: 2000, intervalMs: 2 });
        const next = await freePort();
        const r = await server.updateConfig({ port: next });
        assert.deepEqual(r, { changedKeys: ['port'], requiresRestart: true, restarted: true });
        assert.equal(server.server.address().port, next, 'address() reports the new port');
        assert.equal(server.options.port, next);
        ports.push(next);
        await sleep(200);
      }
      const stats = await load.done;
      const slowResults = await Promise.all(slow);
      assert.equal(server.status, undefined, 'a restart never sets status');
      for (const r of slowResults) assert.equal(r.status, 200, `a request in flight on the old port: ${JSON.stringify(r)}`);
      const old = await settle(request({ port: ports[0], path: '/hello', timeout: 1000 }));
      assert.equal(old.error, 'ECONNREFUSED', 'the first port refuses once its listener has closed');
      assert.ok(stats.ok > 100, `load ran (${describeStats(stats)})`);
      const failed = stats.samples.filter((s) => s.status !== 200);
      assert.equal(failed.length, 0, `BUG: port change under load must fail no request; ${describeStats(stats)}. `
        + 'ECONNRESET = a connection the old listener had accepted whose first request (or TLS handshake) had not '
        + 'arrived yet: draining closes it at once (hyper closes an HTTP/1 connection in its initial state on '
        + 'graceful_shutdown; the TLS handshake is abandoned at Phase::Draining). ECONNREFUSED to an old port = the old '
        + 'listener closed before address() reported the new port. Failed samples (ms since start, port, error): '
        + JSON.stringify(failed.slice(0, 12).map((s) => [s.start, s.label, s.error])) + ` ports: ${ports.join(' → ')}`);
    } finally {
      await load.stop();
      await Promise.all(slow);
      await cleanup(server);
    }
  });

  it('same-address restart (reusePort toggled on a fixed port) while clients keep connections: no connection refused', async (t) => {
    const port = await freePort();
    const { server, state } = await serve('http', { port });
    const agent = keepAliveAgent();
    const load = startLoad({ send: () => request({ port, path: '/hello' }), concurrency: 3, durationMs: 1500 });
    const keeper = startLoad({ send: () => request({ port, path: '/hello', agent }), concurrency: 1, durationMs: 1500, pauseMs: 20 });
    const slow = [];
    try {
      await sleep(150);
      for (let k = 0; k < 4; k++) {
        const held = keepAliveAgent();
        const before = state.slowStarted;
        slow.push(settle(request({ port, path: '/slow?ms=300', agent: held })).finally(() => held.destroy()));
        await pollUntil(() => state.slowStarted, (n) => n > before, { timeoutMs: 2000, intervalMs: 2 });
        const r = await server.updateConfig({ reusePort: k % 2 === 0 });
        assert.deepEqual(r, { changedKeys: ['reusePort'], requiresRestart: true, restarted: true });
        assert.equal(server.server.address().port, port, 'the same port');
        await sleep(250);
      }
      const [stats, kept] = await Promise.all([load.done, keeper.done]);
      for (const r of await Promise.all(slow)) {
        assert.deepEqual(r, { status: 200, connection: 'close', body: 'slow' }, 'the request in flight on a kept connection completes');
      }
      assert.equal(stats.errors.ECONNREFUSED ?? 0, 0, `no new connection refused (${describeStats(stats)})`);
      assert.equal(kept.errors.ECONNREFUSED ?? 0, 0, `no keep-alive client request refused (${describeStats(kept)})`);
      assert.ok(stats.ok > 50 && kept.ok > 10, `load ran: new connections ${describeStats(stats)}; keep-alive ${describeStats(kept)}`);
      // Resets of connections the old listener accepted just before the switch are the defect the
      // port-change test and the 'accepted just before a restart' test below report.
      if (failures(stats).count || failures(kept).count) {
        t.diagnostic(`same-address restart: new connections ${describeStats(stats)}; keep-alive ${describeStats(kept)}`);
      }
    } finally {
      await Promise.all([load.stop(), keeper.stop()]);
      agent.destroy();
      await cleanup(server);
    }
  });

  it('a restart that changes neither hostname nor port keeps the bound port (server started on port 0)', async () => {
    const { server, port } = await serve('http');
    try {
      const r = await server.updateConfig({ reusePort: true });
      assert.equal(r.restarted, true);
      const now = server.server.address().port;
      assert.equal(now, port, `BUG: a reusePort-only restart moved an ephemeral-port server from ${port} to ${now}, so `
        + "clients of the bound port are cut off: src/napi/server.rs restart() takes the socket over only when the configured "
        + 'port is non-zero (`next.config.port != 0`), otherwise it binds a new ephemeral port.');
    } finally {
      await cleanup(server);
    }
  });

  for (const protocol of ['http', 'https']) {
    it(`${protocol}: a connection accepted just before a restart has its request answered`, async () => {
      // BUG reproduction: the restart drains the old listener at once; a connection it accepted whose
      // request (or TLS ClientHello) has not arrived yet is closed instead of being served.
      const port = await freePort();
      const { server } = await serve(protocol, { port });
      const raw = net.connect({ port, host: '127.0.0.1' });
      raw.on('error', () => {});
      try {
        await new Promise((resolve, reject) => { raw.once('connect', resolve); raw.once('error', reject); });
        await pollUntil(() => server.connectionPool.getMetrics().activeConnections, (n) => n === 1, { timeoutMs: 2000, intervalMs: 5 });
        await server.updateConfig({ reusePort: true }); // same address: the socket is handed over
        const answer = await withTimeout(new Promise((resolve) => {
          const sock = protocol === 'http' ? raw : tls.connect({ socket: raw, ca: CA, servername: 'localhost' });
          let data = '';
          sock.on('data', (d) => { data += d; });
          sock.on('error', (err) => resolve(`error ${err.code}: ${data.split('\r\n')[0]}`));
          sock.on('close', () => resolve(data.split('\r\n')[0] || 'closed without a response'));
          const send = () => sock.write('GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
          if (protocol === 'http') send();
          else sock.once('secureConnect', send);
        }), 5000, 'response on the early connection');
        assert.equal(answer, 'HTTP/1.1 200 OK', `BUG: a ${protocol} connection the old listener accepted before the restart `
          + `must be served (with Connection: close), got: ${answer}`);
      } finally {
        raw.destroy();
        await cleanup(server);
      }
    });
  }

  it('bind failure (port held by another socket) rejects with EADDRINUSE; the old server keeps serving', async () => {
    const { server, port } = await serve('http');
    const busy = await occupyPort();
    try {
      await assert.rejects(server.updateConfig({ port: busy.port }), (err) => {
        assert.equal(err.code, 'EADDRINUSE');
        assert.match(err.message, /EADDRINUSE/);
        return true;
      });
      assert.equal(server.server.address().port, port, 'address() unchanged');
      assert.equal(server.options.port, 0, 'options unchanged');
      assert.equal(server.server.listening, true);
      assert.equal(server.status, undefined);
      const r = await request({ port, path: '/hello' });
      assert.equal(r.status, 200, 'the old server still serves');
      // And a later valid change still works.
      const next = await freePort();
      assert.equal((await server.updateConfig({ port: next })).restarted, true);
      assert.equal((await request({ port: next, path: '/hello' })).status, 200);
    } finally {
      await busy.close();
      await cleanup(server);
    }
  });

  it('protocol change http → https restarts; an https client with the test CA is served on the new listener', async () => {
    const { server, port } = await serve('http');
    try {
      assert.equal((await request({ port, path: '/hello' })).status, 200);
      const r = await server.updateConfig({ protocol: 'https', ssl: SSL });
      assert.equal(r.requiresRestart, true);
      assert.equal(r.restarted, true);
      assert.deepEqual([...r.changedKeys].sort(), ['protocol', 'ssl.cert', 'ssl.key', 'ssl.mode']);
      assert.equal(server.protocol, 'https');
      const next = server.server.address().port;
      const s = await httpsRequest({ port: next, path: '/hello', tls: { ca: CA } });
      assert.equal(s.status, 200);
      assert.equal(s.text(), 'hello');
      assert.equal(s.tls.authorized, true, 'the client verified the certificate with the test CA');
      assert.equal(server.status, undefined);
      if (next !== port) {
        const old = await pollUntil(() => settle(request({ port, path: '/hello', timeout: 1000 })), (x) => x.error === 'ECONNREFUSED', { timeoutMs: 2000, intervalMs: 20 });
        assert.equal(old.error, 'ECONNREFUSED', 'the old plain-HTTP listener is gone');
      }
    } finally {
      await cleanup(server);
    }
  });
});

// ---------------------------------------------------------------------------------------------------

describe('signals: the Koatty fixture with NODE_ENV=production (terminus)', { skip: NO_POSIX_SIGNALS }, () => {
  it('SIGTERM while a slow request is in flight: it completes with 200, new connections are refused, exit code 0', async () => {
    const app = await startKoattyApp();
    try {
      const slow = settle(request({ port: app.port, path: '/api/slow?ms=800' }));
      await pollUntil(() => app.metrics(), (m) => m.counters.slowStarted >= 1, { timeoutMs: 3000, intervalMs: 10 });
      const t0 = Date.now();
      app.child.kill('SIGTERM');
      const status = await pollUntil(() => app.ipc('status'), (m) => m.status === 503, { timeoutMs: 2000, intervalMs: 10 });
      assert.equal(status.status, 503, 'app.server.status is 503 after the signal');
      const refused = await pollUntil(() => settle(request({ port: app.port, path: '/api/json', timeout: 1000 })),
        (r) => r.error === 'ECONNREFUSED', { timeoutMs: 1000, intervalMs: 10 });
      assert.equal(refused.error, 'ECONNREFUSED', `a new connection during the drain: ${JSON.stringify(refused)}`);
      const r = await slow;
      assert.equal(r.status, 200, `the slow request: ${JSON.stringify(r)}\n${app.output()}`);
      assert.deepEqual(JSON.parse(r.body), { slept: 800 });
      const exit = await withTimeout(app.exited, 8000, 'exit after SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, `exit code 0 when drained\n${app.output()}`);
      const took = Date.now() - t0;
      assert.ok(took < 3000, `exited ${took} ms after SIGTERM (drain ends when the last connection closes, not after drainDelay)`);
    } finally {
      app.child.kill('SIGKILL');
    }
  });

  it('a second SIGTERM during a drain that cannot finish exits 1 at once', async () => {
    const app = await startKoattyApp();
    try {
      const hung = settle(request({ port: app.port, path: '/api/hang', timeout: 10000 }));
      await pollUntil(() => app.metrics(), (m) => m.counters.hangStarted >= 1, { timeoutMs: 3000, intervalMs: 10 });
      app.child.kill('SIGTERM');
      await pollUntil(() => app.ipc('status'), (m) => m.status === 503, { timeoutMs: 2000, intervalMs: 10 });
      await sleep(200);
      assert.equal(app.child.exitCode, null, 'still draining after the first signal');
      const t0 = Date.now();
      app.child.kill('SIGTERM');
      const exit = await withTimeout(app.exited, 3000, 'exit after the second SIGTERM');
      const took = Date.now() - t0;
      assert.deepEqual(exit, { code: 1, signal: null }, `exit code 1 on the second signal\n${app.output()}`);
      assert.ok(took < 1000, `exited ${took} ms after the second signal`);
      assert.ok((await hung).error, 'the hanging request is cut off with the process');
    } finally {
      app.child.kill('SIGKILL');
    }
  });
});

// ---------------------------------------------------------------------------------------------------

describe('reusePort: several processes on one port', () => {
  const SCRIPT = path.join(__dirname, 'fixtures', 'reuse-port-server.js');
  const procs = new Set();
  process.on('exit', () => { for (const p of procs) p.kill('SIGKILL'); });

  /** Starts fixtures/reuse-port-server.js; resolves with its first JSON line and the process. */
  function spawnServer(port, reusePort = true) {
    const child = spawn(process.execPath, [SCRIPT, String(port), String(reusePort)], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.add(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => { procs.delete(child); resolve({ code, signal }); }));
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const line = new Promise((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)));
      });
      exited.then(({ code }) => reject(new Error(`reuse-port-server exited (${code}) before reporting\n${stderr}`)));
    });
    return { child, exited, line: withTimeout(line, 10000, 'reuse-port-server start') };
  }

  it('two processes with reusePort:true bind the same port and both serve new connections', { skip: NO_REUSEPORT_BALANCING }, async () => {
    const port = await freePort();
    const a = spawnServer(port);
    const b = spawnServer(port);
    try {
      const [la, lb] = await Promise.all([a.line, b.line]);
      assert.deepEqual([la.event, lb.event], ['listening', 'listening'], `both bound: ${JSON.stringify([la, lb])}`);
      assert.equal(la.port, port);
      assert.equal(lb.port, port);
      const pids = new Map();
      for (let i = 0; i < 60; i++) {
        const r = await request({ port, path: '/' });
        assert.equal(r.status, 200);
        pids.set(r.headers['x-pid'], (pids.get(r.headers['x-pid']) ?? 0) + 1);
        if (pids.size === 2 && i >= 20) break;
      }
      assert.deepEqual([...pids.keys()].sort(), [String(la.pid), String(lb.pid)].sort(),
        `new connections were spread over both processes: ${JSON.stringify([...pids])}`);

      // Without reusePort a third process cannot join.
      const c = spawnServer(port, false);
      const lc = await c.line;
      assert.deepEqual([lc.event, lc.code], ['error', 'EADDRINUSE'], `a process without reusePort: ${JSON.stringify(lc)}`);

      // One process leaves (SIGTERM → Stop); the other keeps serving the port alone.
      a.child.kill('SIGTERM');
      assert.deepEqual(await withTimeout(a.exited, 8000, 'first process exit'), { code: 0, signal: null });
      for (let i = 0; i < 10; i++) {
        const r = await request({ port, path: '/' });
        assert.equal(r.status, 200);
        assert.equal(r.headers['x-pid'], String(lb.pid));
      }
    } finally {
      for (const p of [a, b]) p.child.kill('SIGKILL');
    }
  });

  it('two unmodified Koatty apps share one port with KOATTY_SERVE_OPTIONS={"reusePort":true} (PM2/cluster)', { skip: NO_REUSEPORT_BALANCING }, async () => {
    const port = await freePort();
    const env = { KOATTY_SERVE_OPTIONS: JSON.stringify({ reusePort: true, nativeEndpoints: { readyz: '/readyz' } }) };
    const apps = await Promise.all([startKoattyApp({ port, env }), startKoattyApp({ port, env })]);
    try {
      for (const app of apps) assert.equal(app.port, port);
      for (let i = 0; i < 40; i++) {
        const r = await request({ port, path: '/api/json', headers: { Connection: 'close' } });
        assert.equal(r.status, 200);
      }
      const ready = await request({ port, path: '/readyz' });
      assert.equal(ready.status, 200, 'the native readiness endpoint from the same options');
      const served = await Promise.all(apps.map(async (app) => (await app.metrics()).metrics.totalConnections));
      assert.ok(served.every((n) => n > 0), `both processes accepted connections: ${served}`);
    } finally {
      await Promise.all(apps.map((app) => app.stop()));
    }
  });

  it('KOATTY_SERVE_OPTIONS that is not a JSON object is a clear ERR_INVALID_CONFIG error', () => {
    const { extraOptions } = require('../js/serve');
    const saved = process.env.KOATTY_SERVE_OPTIONS;
    try {
      for (const bad of ['{reusePort:true}', '[1]', '"x"']) {
        process.env.KOATTY_SERVE_OPTIONS = bad;
        assert.throws(() => extraOptions(undefined), (e) => e.code === 'ERR_INVALID_CONFIG' && /KOATTY_SERVE_OPTIONS/.test(e.message), bad);
      }
      process.env.KOATTY_SERVE_OPTIONS = '{"reusePort":true}';
      assert.deepEqual(extraOptions({ config: (k) => (k === 'koatty_serve' ? { reusePort: false, h2c: true } : undefined) }), { reusePort: true, h2c: true });
    } finally {
      if (saved === undefined) delete process.env.KOATTY_SERVE_OPTIONS;
      else process.env.KOATTY_SERVE_OPTIONS = saved;
    }
  });
});

// ---------------------------------------------------------------------------------------------------

describe('updateConfig: protocol settings at run time, TLS switched on by a restart', () => {
  it('HTTP/2 maxConcurrentStreams changes in place: new sessions are told the new limit', async () => {
    const http2 = require('http2');
    const { server, port } = await serve('http2', { h2c: true, ssl: undefined, connectionPool: { protocolSpecific: { maxConcurrentStreams: 50 } } });
    const settingsOf = async () => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
      try {
        const remote = await withTimeout(new Promise((resolve) => session.once('remoteSettings', resolve)), 3000, 'SETTINGS');
        return remote.maxConcurrentStreams;
      } finally {
        session.destroy();
      }
    };
    try {
      assert.equal(await settingsOf(), 50);
      const r = await server.updateConfig({ connectionPool: { protocolSpecific: { maxConcurrentStreams: 7 } } });
      assert.deepEqual(r, { changedKeys: ['connectionPool.protocolSpecific.maxConcurrentStreams'], requiresRestart: false, restarted: false });
      assert.equal(await settingsOf(), 7, 'a session opened after the change');
      assert.equal(server.server.address().port, port, 'no restart');
    } finally {
      await cleanup(server);
    }
  });

  it('WebSocket pingInterval changes in place: a connection opened afterwards is pinged at the new interval', async () => {
    const WebSocket = require('ws');
    const { WsServer } = require('..');
    const app = { callback: () => () => {} };
    const server = new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws', connectionPool: { protocolSpecific: { pingInterval: 60000 } } });
    const port = await start(server);
    try {
      const r = await server.updateConfig({ connectionPool: { protocolSpecific: { pingInterval: 150 } } });
      assert.equal(r.restarted, false);
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
      const pings = [];
      ws.on('ping', () => pings.push(Date.now()));
      await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 3000, 'ws open');
      await sleep(700);
      ws.terminate();
      assert.ok(pings.length >= 2, `pinged ${pings.length} times in 700 ms (pingInterval 150, was 60000)`);
    } finally {
      await cleanup(server);
    }
  });

  it('ssl key/cert given to a plaintext gRPC server restart it with TLS (not a silent no-op)', async () => {
    const grpc = require('@grpc/grpc-js');
    const protoLoader = require('@grpc/proto-loader');
    const { GrpcServer } = require('..');
    const server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' });
    const port = await start(server);
    try {
      const r = await server.updateConfig({ ssl: { enabled: true, key: certs.server.key, cert: certs.server.cert } });
      assert.deepEqual(r.requiresRestart, true);
      assert.deepEqual(r.restarted, true);
      const { Health } = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'protos', 'grpc', 'health', 'v1', 'health.proto'), { enums: String })).grpc.health.v1;
      const now = server.server.address().port;
      const c = new Health(`127.0.0.1:${now}`, grpc.credentials.createSsl(Buffer.from(certs.ca.certPem)), { 'grpc.ssl_target_name_override': 'localhost' });
      try {
        const reply = await withTimeout(new Promise((resolve, reject) => c.Check({ service: '' }, (e, v) => (e ? reject(e) : resolve(v)))), 5000, 'Check over TLS');
        assert.equal(reply.status, 'SERVING');
      } finally {
        c.close();
      }
      assert.equal(now, port, 'the same address (socket handed over)');
    } finally {
      await cleanup(server);
    }
  });
});
