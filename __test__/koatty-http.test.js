'use strict';
// An unmodified Koatty 3.11.8 app (fixtures/koatty-app, run in a child process) served by this
// package through npm `overrides`; real sockets and node's http client.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const http = require('http');
const path = require('path');
const {
  KOATTY_APP_DIR, startKoattyApp, runKoattyAppToExit, keepAliveAgent, request, pollUntil, occupyPort,
} = require('./helpers');
const { NO_POSIX_SIGNALS } = require('./platform');

const { pattern } = require(path.join(KOATTY_APP_DIR, 'lib', 'pattern'));
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
const FIVE_MB = 5 * 1024 * 1024;
const ONE_MB = 1024 * 1024;

describe('Koatty 3.11.8 app served by the native koatty_serve', () => {
  let app;
  let port;
  const get = (p, opts = {}) => request({ port, path: p, ...opts });

  before(async () => {
    app = await startKoattyApp();
    port = app.port;
  });

  after(async () => {
    if (app) await app.stop();
  });

  it('is answered by the native HttpServer', async () => {
    assert.equal(app.info.serverClass, 'HttpServer', 'app.server.constructor.name');
    assert.equal(app.info.native, true, "require('koatty_serve').runtimeInfo().native");
    assert.ok(app.info.port > 0);
    const { metrics } = await app.metrics();
    assert.equal(typeof metrics.pendingRequests, 'number', 'getMetrics().pendingRequests is a number');
  });

  it('GET returns JSON from a controller', async () => {
    const r = await get('/api/json?x=1&y=two');
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.equal(Number(r.headers['content-length']), r.body.length);
    assert.deepEqual(r.json(), { hello: 'world', n: 42, method: 'GET', path: '/api/json', query: { x: '1', y: 'two' } });
    // koatty_trace's headers prove the request went through Koatty's middleware chain.
    assert.equal(r.headers['x-powered-by'], 'Koatty');
    assert.ok(r.headers['x-request-id'], 'X-Request-Id is set');
  });

  it('POST JSON body is parsed by Koatty and echoed', async () => {
    const payload = { name: 'koatty', nested: { list: [1, 2, 3], ok: true }, text: 'héllo wörld ✓ 你好' };
    const r = await request({
      port, method: 'POST', path: '/api/echo-json',
      headers: { 'Content-Type': 'application/json; charset=utf-8' },
      body: JSON.stringify(payload),
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { received: payload, contentType: 'application/json; charset=utf-8' });
  });

  it('POST urlencoded form is parsed by Koatty and echoed', async () => {
    const r = await request({
      port, method: 'POST', path: '/api/echo-form',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'a=1&b=hello+world&c=%E4%BD%A0%E5%A5%BD&arr=x&arr=y',
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { form: { a: '1', b: 'hello world', c: '你好', arr: ['x', 'y'] } });
  });

  it('POST 1 MB text/plain goes through koatty_router raw-body intact', async () => {
    const text = crypto.randomBytes(ONE_MB / 2).toString('hex'); // 1 MiB of ASCII
    const r = await request({
      port, method: 'POST', path: '/api/echo-text', headers: { 'Content-Type': 'text/plain' }, body: text,
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { length: ONE_MB, sha256: sha256(text) });
  });

  it('streams a 5 MB ctx.body Readable whole and in order', async () => {
    const r = await get('/api/stream');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.equal(r.headers['x-stream-size'], String(FIVE_MB));
    assert.equal(r.headers['content-length'], undefined, 'stream body has no Content-Length');
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.equal(r.body.length, FIVE_MB);
    assert.equal(sha256(r.body), sha256(pattern(0, FIVE_MB)));
  });

  it('echoes a 1 MB upload (Content-Length) byte for byte', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const r = await request({
      port, method: 'POST', path: '/api/upload', headers: { 'Content-Type': 'application/octet-stream' }, body: data,
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upload-length'], String(ONE_MB));
    assert.equal(r.headers['x-upload-sha256'], sha256(data));
    assert.equal(r.body.length, ONE_MB);
    assert.ok(r.body.equals(data), 'echoed body equals the upload');
  });

  it('echoes a 1 MB chunked upload byte for byte', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const chunks = [];
    for (let o = 0; o < data.length; o += 50000) chunks.push(data.subarray(o, o + 50000));
    const r = await request({
      port, method: 'POST', path: '/api/upload', headers: { 'Content-Type': 'application/octet-stream' }, body: chunks,
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upload-length'], String(ONE_MB));
    assert.equal(r.headers['x-upload-sha256'], sha256(data));
    assert.ok(r.body.equals(data), 'echoed body equals the upload');
  });

  it('sets and reads headers and cookies', async () => {
    const r = await get('/api/headers', {
      headers: { Cookie: 'incoming=hello; other=x', 'X-Test-Header': 'abc', 'X-Request-Id': 'my-trace-id-1' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-custom'], 'custom-value');
    assert.equal(r.headers['x-multi'], 'a, b');
    assert.equal(r.headers['x-request-id'], 'my-trace-id-1', 'koatty_trace echoes X-Request-Id');
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    const cookies = r.headers['set-cookie'];
    assert.ok(Array.isArray(cookies), 'set-cookie is an array');
    assert.deepEqual(cookies, ['session=abc123; path=/; httponly', 'theme=dark; path=/api']);
    const body = r.json();
    assert.equal(body.incomingCookie, 'hello');
    assert.equal(body.testHeader, 'abc');
    assert.equal(body.host, `127.0.0.1:${port}`);
    assert.equal(body.protocol, 'http');
    assert.equal(body.httpVersion, '1.1');
    assert.match(body.ip, /127\.0\.0\.1$/);
  });

  it('201 with a body and a Location header', async () => {
    const r = await get('/api/created');
    assert.equal(r.status, 201);
    assert.equal(r.headers.location, '/api/json');
    assert.deepEqual(r.json(), { created: true });
  });

  it('204 has no body', async () => {
    const r = await get('/api/nocontent');
    assert.equal(r.status, 204);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers['content-type'], undefined);
  });

  it('302 redirect', async () => {
    const r = await get('/api/redirect');
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, '/api/json');
    // Koa answers with HTML when the client accepts it (node's client sends no Accept header)
    assert.equal(r.text(), 'Redirecting to <a href="/api/json">/api/json</a>.');
  });

  // Koatty 3.11.8 (koatty_trace) turns a 4xx left by the router into an Exception, and without a tracing
  // span its catcher answers 500 with the message as JSON (measured on node:http with koatty_serve 2.3.0).
  it('unknown route gets Koatty\'s default answer (500, "Not Found")', async () => {
    const r = await get('/api/does-not-exist');
    assert.equal(r.status, 500);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(r.json(), { code: 1, message: 'Not Found', data: '' });
    assert.equal(r.headers['x-powered-by'], 'Koatty');
  });

  it('wrong method on a known route: Koatty\'s "Method Not Allowed" with Allow', async () => {
    const r = await request({ port, method: 'DELETE', path: '/api/json' });
    assert.equal(r.status, 500);
    assert.equal(r.headers.allow, 'HEAD, GET');
    assert.deepEqual(r.json(), { code: 1, message: 'Method Not Allowed', data: '' });
  });

  it('a throwing handler gives 500 and the server keeps serving', async () => {
    const r = await get('/api/throw');
    assert.equal(r.status, 500);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(r.json(), { code: 1, message: 'boom from controller', data: '' });
    const again = await get('/api/json');
    assert.equal(again.status, 200);
    assert.equal(again.json().hello, 'world');
  });

  it('keep-alive: two sequential requests reuse one socket', async () => {
    const agent = keepAliveAgent({ maxSockets: 1 });
    try {
      const r1 = await get('/api/json?i=1', { agent });
      const r2 = await get('/api/json?i=2', { agent });
      assert.equal(r1.status, 200);
      assert.equal(r2.status, 200);
      assert.equal(r1.json().query.i, '1');
      assert.equal(r2.json().query.i, '2');
      assert.notEqual(r1.headers.connection, 'close');
      assert.equal(r1.reusedSocket, false);
      assert.equal(r2.reusedSocket, true, 'second request went over the kept-alive socket');
      assert.equal(r2.localPort, r1.localPort, 'same client socket (local port)');
    } finally {
      agent.destroy();
    }
  });

  it('200 concurrent requests are all answered correctly', async () => {
    const N = 200;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    try {
      const results = await Promise.all(Array.from({ length: N }, (_, i) => (i % 2 === 0
        ? get(`/api/json?i=${i}`, { agent })
        : request({
          port, agent, method: 'POST', path: '/api/echo-json',
          headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ i, pad: 'x'.repeat(i * 10) }),
        }))));
      results.forEach((r, i) => {
        assert.equal(r.status, 200, `request ${i}`);
        const body = r.json();
        if (i % 2 === 0) assert.equal(body.query.i, String(i), `request ${i} got its own answer`);
        else assert.deepEqual(body.received, { i, pad: 'x'.repeat(i * 10) }, `request ${i} got its own answer`);
      });
    } finally {
      agent.destroy();
    }
  });

  it('pendingRequests counts an in-flight request and returns to 0', async () => {
    const start = (await app.metrics()).counters.slowStarted;
    const slow = get('/api/slow?ms=600');
    const during = await pollUntil(() => app.metrics(), (m) => m.counters.slowStarted > start, { timeoutMs: 3000 });
    assert.ok(during.counters.slowStarted > start, 'slow handler started');
    assert.ok(during.metrics.pendingRequests >= 1, `pendingRequests during a slow request: ${during.metrics.pendingRequests}`);
    const r = await slow;
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { slept: 600 });
    const m = await pollUntil(() => app.metrics(), (x) => x.metrics.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(m.metrics.pendingRequests, 0);
  });

  it('client aborting mid-response (5 MB stream) leaks nothing', async () => {
    const before = await app.metrics();
    await new Promise((resolve, reject) => {
      // delay between 64 KiB chunks keeps the response in flight when the client goes away
      const req = http.get({ port, host: '127.0.0.1', path: '/api/stream?delay=10', agent: false }, (res) => {
        assert.equal(res.statusCode, 200);
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err) => { if (err.code !== 'ECONNRESET' && err.message !== 'aborted') reject(err); });
    });
    const m = await pollUntil(
      () => app.metrics(),
      (x) => x.metrics.pendingRequests === 0 && x.counters.streamsOpen === 0,
      { timeoutMs: 6000, intervalMs: 100 },
    );
    assert.ok(m.counters.streamsStarted > before.counters.streamsStarted, 'the stream handler ran');
    assert.equal(m.metrics.pendingRequests, 0, 'pendingRequests back to 0 after the abort');
    assert.equal(m.counters.streamsOpen, 0, 'the ctx.body stream was destroyed (res/socket close reached Koa)');
    const again = await get('/api/json');
    assert.equal(again.status, 200);
  });

  it('client aborting before a slow handler answers leaks nothing', async () => {
    const before = await app.metrics();
    await new Promise((resolve) => {
      const req = http.get({ port, host: '127.0.0.1', path: '/api/slow?ms=500', agent: false });
      req.on('error', () => {});
      setTimeout(() => { req.destroy(); resolve(); }, 100);
    });
    const m = await pollUntil(
      () => app.metrics(),
      (x) => x.metrics.pendingRequests === 0 && x.counters.slowFinished > before.counters.slowFinished,
      { timeoutMs: 5000, intervalMs: 100 },
    );
    assert.ok(m.counters.slowFinished > before.counters.slowFinished, 'the handler finished');
    assert.equal(m.metrics.pendingRequests, 0, 'pendingRequests back to 0 after the abort');
    const again = await get('/api/json');
    assert.equal(again.status, 200);
  });

  it('SIGTERM (Koatty terminus, NODE_ENV=production) stops and exits 0', { skip: NO_POSIX_SIGNALS }, async () => {
    const result = await app.stop();
    assert.equal(result.forced, false, `exited by itself\n${app.output()}`);
    assert.equal(result.code, 0, `exit code\n${app.output()}`);
    await assert.rejects(get('/api/json', { timeout: 2000 }), /ECONNREFUSED/);
  });
});

describe('Koatty app on a port already in use', () => {
  it('exits with status 255 (Koatty sees EADDRINUSE as an uncaught error)', async () => {
    const busy = await occupyPort();
    try {
      const r = await runKoattyAppToExit({ port: busy.port, timeoutMs: 30000 });
      assert.notEqual(r.timedOut, true, `the app kept running\n${r.output}`);
      assert.equal(r.code, 255, `exit status\n${r.output}`);
      assert.doesNotMatch(r.stdout, /"event":"listening"/, 'never reported listening');
      assert.match(r.stdout + r.stderr, /EADDRINUSE/);
      // the port is still ours
      assert.ok(busy.port > 0);
    } finally {
      await busy.close();
    }
  });
});
