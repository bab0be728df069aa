'use strict';
// The Koatty 3.11.8 fixture app (child process, decisions.md §3) served over https and http2 by this
// package's NewServe: config `protocol` plus `key_file`/`crt_file` (set through KOATTY_TEST_* env, see
// fixtures/koatty-app/src/config/config.js). node's https and http2 clients with the test CA.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const { getCerts } = require('./certs');
const {
  startKoattyApp, httpsRequest, h2connect, h2close, h2request, pollUntil,
} = require('./helpers');
const { NO_POSIX_SIGNALS } = require('./platform');

const certs = getCerts();
const CA = certs.ca.certPem;
const tlsEnv = (protocol) => ({
  KOATTY_TEST_PROTOCOL: protocol,
  KOATTY_TEST_KEY_FILE: certs.server.key,
  KOATTY_TEST_CRT_FILE: certs.server.cert,
});
const PAYLOAD = { name: 'koatty', nested: { list: [1, 2, 3], ok: true }, text: 'héllo wörld ✓ 你好' };

describe('Koatty app over https (NewServe → HttpsServer)', () => {
  let app;
  let port;
  const get = (p, extra = {}) => httpsRequest({ port, path: p, tls: { ca: CA }, ...extra });

  before(async () => {
    app = await startKoattyApp({ env: tlsEnv('https') });
    port = app.port;
  });

  after(async () => {
    if (app) await app.stop();
  });

  it('is answered by the native HttpsServer', () => {
    assert.equal(app.info.serverClass, 'HttpsServer', `app.server.constructor.name\n${app.output()}`);
    assert.equal(app.info.native, true, "require('koatty_serve').runtimeInfo().native");
  });

  it('GET returns JSON from a controller over TLS', async () => {
    const r = await get('/api/json?x=1');
    assert.equal(r.status, 200);
    assert.equal(r.tls.authorized, true, 'served with the configured crt_file (verified with the test CA)');
    assert.equal(r.tls.peerCertificate.serialNumber, certs.server.serial);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(r.json(), { hello: 'world', n: 42, method: 'GET', path: '/api/json', query: { x: '1' } });
    assert.equal(r.headers['x-powered-by'], 'Koatty');
  });

  it('POST JSON body is parsed by Koatty and echoed', async () => {
    const r = await httpsRequest({
      port, method: 'POST', path: '/api/echo-json', tls: { ca: CA },
      headers: { 'Content-Type': 'application/json; charset=utf-8' }, body: JSON.stringify(PAYLOAD),
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { received: PAYLOAD, contentType: 'application/json; charset=utf-8' });
  });

  it('ctx.request.protocol is "https" and ctx.secure is true', async () => {
    const r = await get('/api/tls');
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.requestProtocol, 'https');
    assert.equal(b.secure, true);
    assert.equal(b.encrypted, true);
    assert.equal(b.httpVersion, '1.1');
    assert.equal(b.host, `127.0.0.1:${port}`);
  });

  it('pendingRequests is back to 0', async () => {
    const m = await pollUntil(() => app.metrics(), (x) => x.metrics.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(m.metrics.pendingRequests, 0);
  });

  it('SIGTERM stops the app and it exits 0', { skip: NO_POSIX_SIGNALS }, async () => {
    const result = await app.stop();
    assert.equal(result.forced, false, `exited by itself\n${app.output()}`);
    assert.equal(result.code, 0, `exit code\n${app.output()}`);
  });
});

describe('Koatty app over http2 (NewServe → Http2Server)', () => {
  let app;
  let port;
  let session;

  before(async () => {
    app = await startKoattyApp({ env: tlsEnv('http2') });
    port = app.port;
    session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
  });

  after(async () => {
    await h2close(session);
    if (app) await app.stop();
  });

  it('is answered by the native Http2Server over h2', () => {
    assert.equal(app.info.serverClass, 'Http2Server', `app.server.constructor.name\n${app.output()}`);
    assert.equal(app.info.native, true);
    assert.equal(session.alpnProtocol, 'h2');
  });

  it('GET returns JSON from a controller', async () => {
    const r = await h2request(session, { path: '/api/json?x=1&y=two' });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.deepEqual(r.json(), { hello: 'world', n: 42, method: 'GET', path: '/api/json', query: { x: '1', y: 'two' } });
    assert.equal(r.headers['x-powered-by'], 'Koatty');
    assert.ok(r.headers['x-request-id'], 'koatty_trace ran');
  });

  it('POST JSON body (with content-length) is parsed by Koatty and echoed', async () => {
    const r = await h2request(session, {
      method: 'POST', path: '/api/echo-json',
      headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(PAYLOAD),
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { received: PAYLOAD, contentType: 'application/json; charset=utf-8' });
  });

  it('ctx.request.protocol is "https", the request is HTTP/2 and the host comes from :authority', async () => {
    const r = await h2request(session, { path: '/api/tls' });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.requestProtocol, 'https');
    assert.equal(b.secure, true);
    assert.equal(b.httpVersion, '2.0');
    assert.equal(b.alpnProtocol, 'h2');
    assert.equal(b.authority, `127.0.0.1:${port}`);
    assert.equal(b.host, `127.0.0.1:${port}`, 'Koa reads the host from :authority');
  });

  it('20 concurrent streams get their own answers', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => h2request(session, { path: `/api/json?i=${i}` })));
    results.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal(r.json().query.i, String(i));
    });
  });

  it('an upload of 256 KiB is echoed byte for byte', async () => {
    const data = crypto.randomBytes(256 * 1024);
    const r = await h2request(session, {
      method: 'POST', path: '/api/upload', headers: { 'content-type': 'application/octet-stream' }, body: data,
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upload-length'], String(data.length));
    assert.ok(r.body.equals(data));
  });

  it('an http/1.1 client falls back on the same port', async () => {
    const r = await httpsRequest({ port, path: '/api/tls', tls: { ca: CA, ALPNProtocols: ['http/1.1'] } });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.httpVersion, '1.1');
    assert.equal(b.requestProtocol, 'https');
  });

  it('pendingRequests is back to 0', async () => {
    const m = await pollUntil(() => app.metrics(), (x) => x.metrics.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(m.metrics.pendingRequests, 0);
  });

  it('SIGTERM (sessions closed) stops the app and it exits 0', { skip: NO_POSIX_SIGNALS }, async () => {
    await h2close(session);
    const result = await app.stop();
    assert.equal(result.forced, false, `exited by itself\n${app.output()}`);
    assert.equal(result.code, 0, `exit code\n${app.output()}`);
  });
});
