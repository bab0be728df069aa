'use strict';
// Http2Server used directly (no Koatty), in-process, with the fake app of tls-app.js: h2 over TLS
// (ALPN) with http/1.1 fallback, h2c with prior knowledge, h2load. Real sockets, node's http2/https
// clients; the test PKI comes from certs.js.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const path = require('path');
const { Http2Server } = require('..');
const { getCerts } = require('./certs');
const {
  httpsRequest, h2connect, h2close, h2request, rawConnection, runProgram, probeProgram, pollUntil, withTimeout,
  failIfKeptAlive,
} = require('./helpers');
const { makeApp, start, stop, pattern, sha256 } = require('./tls-app');

failIfKeptAlive(__filename);

const certs = getCerts();
const CA = certs.ca.certPem;
const SSL = { mode: 'manual', key: certs.server.key, cert: certs.server.cert };
const ONE_MB = 1024 * 1024;
const TWO_MB = 2 * ONE_MB;

function h2Options(extra = {}) {
  return { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: SSL, ...extra };
}

function chunksOf(buf, size) {
  const out = [];
  for (let o = 0; o < buf.length; o += size) out.push(buf.subarray(o, o + size));
  return out;
}

/**
 * `exercise(port, made)` against node's http2 compatibility server, then against an Http2Server,
 * each serving the `handler` of its own `make()` (`made`); resolves [onNode, onNative].
 */
async function onNodeAndNative(make, exercise) {
  const forNode = make();
  const ref = http2.createSecureServer({ key: fs.readFileSync(certs.server.key), cert: fs.readFileSync(certs.server.cert) }, forNode.handler);
  await new Promise((resolve) => ref.listen(0, '127.0.0.1', resolve));
  let onNode;
  try {
    onNode = await exercise(ref.address().port, forNode);
  } finally {
    await new Promise((resolve) => ref.close(resolve));
  }
  const forNative = make();
  const server = new Http2Server({ callback: () => forNative.handler, config: () => undefined }, h2Options());
  const port = await start(server);
  try {
    return [onNode, await exercise(port, forNative)];
  } finally {
    await stop(server);
  }
}

async function expectFailure(promise, what) {
  let res;
  try {
    res = await promise;
  } catch (err) {
    return err;
  }
  assert.fail(`${what}: expected the connection to fail, got HTTP ${res.status}`);
  return null;
}

describe('Http2Server: h2 over TLS (ALPN)', () => {
  let server;
  let port;
  let state;
  let session;

  before(async () => {
    const made = makeApp();
    state = made.state;
    server = new Http2Server(made.app, h2Options());
    assert.equal(server.protocol, 'http2');
    port = await start(server);
    session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
  });

  after(async () => {
    await h2close(session);
    if (server) await stop(server).catch(() => {});
  });

  it('GET over h2; ALPN chose h2; only :status is a pseudo-header in the response', async () => {
    assert.equal(session.alpnProtocol, 'h2');
    assert.equal(session.encrypted, true);
    const r = await h2request(session, { path: '/hello' });
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'hello');
    assert.equal(r.headers['content-type'], 'text/plain');
    const pseudo = Object.keys(r.headers).filter((k) => k.startsWith(':'));
    assert.deepEqual(pseudo, [':status'], 'no request pseudo-headers leak into the response');
    for (const k of ['connection', 'keep-alive', 'transfer-encoding']) {
      assert.equal(r.headers[k], undefined, `no connection-specific header ${k} over h2`);
    }
  });

  it('a reason phrase with control characters is ignored over h2, as node\'s http2 ignores it', async () => {
    const r = await h2request(session, { path: '/bad-reason' });
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'refused:no');
  });

  it('fields whose value starts or ends with whitespace are left out, as node\'s http2 leaves them out', async () => {
    const r = await h2request(session, { path: '/inspect', headers: { 'x-t': '\tv\t', 'x-s': '  v  ', 'x-inner': 'a\tb', 'x-plain': 'p' } });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.headers['x-t'], undefined);
    assert.equal(b.headers['x-s'], undefined);
    assert.equal(b.headers['x-inner'], 'a\tb');
    assert.equal(b.headers['x-plain'], 'p');
  });

  it('the handler sees the request as node\'s http2 compatibility API shows it', async () => {
    const r = await h2request(session, { path: '/inspect?x=1&y=%20', headers: { 'x-custom': 'abc', cookie: 'a=1' } });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.httpVersion, '2.0');
    assert.equal(b.httpVersionMajor, 2);
    assert.equal(b.method, 'GET');
    assert.equal(b.url, '/inspect?x=1&y=%20', 'req.url is the :path');
    assert.equal(b.headers[':method'], 'GET');
    assert.equal(b.headers[':path'], '/inspect?x=1&y=%20');
    assert.equal(b.headers[':scheme'], 'https');
    assert.equal(b.headers[':authority'], `127.0.0.1:${port}`);
    assert.equal(b.authority, `127.0.0.1:${port}`, 'req.authority, as Http2ServerRequest');
    assert.equal(b.scheme, 'https', 'req.scheme, as Http2ServerRequest');
    assert.equal(b.headers['x-custom'], 'abc');
    assert.equal(b.headers.cookie, 'a=1');
    assert.equal(b.encrypted, true, 'req.socket.encrypted');
    assert.equal(b.alpnProtocol, 'h2', 'req.socket.alpnProtocol');
    assert.equal(b.authorized, false, 'no client certificate requested');
    assert.equal(b.peer.empty, true, 'getPeerCertificate() is {}');
  });

  it('POST 1 MB with content-length is echoed', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const r = await h2request(session, { method: 'POST', path: '/echo', body: data });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-had-content-length'], String(ONE_MB));
    assert.equal(r.body.length, ONE_MB);
    assert.ok(r.body.equals(data), 'echo equals the upload');
  });

  it('POST 1 MB without content-length (DATA frames until END_STREAM) is echoed', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const r = await h2request(session, { method: 'POST', path: '/echo', body: chunksOf(data, 40000) });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-had-content-length'], 'none');
    assert.ok(r.body.equals(data), 'echo equals the upload');
    const counted = await h2request(session, { method: 'POST', path: '/count', body: chunksOf(data, 40000) });
    const b = counted.json();
    assert.equal(b.bytes, ONE_MB);
    assert.equal(b.sha256, sha256(data));
    assert.ok(b.chunks > 1, `arrived in ${b.chunks} chunks`);
  });

  it('a small POST body and an empty one', async () => {
    const r = await h2request(session, { method: 'POST', path: '/echo', body: 'hi there' });
    assert.equal(r.text(), 'hi there');
    const empty = await h2request(session, { method: 'POST', path: '/count', body: '' });
    assert.deepEqual(empty.json(), { bytes: 0, chunks: 0, sha256: sha256(Buffer.alloc(0)) });
  });

  it('streams a 2 MB response (flow control)', async () => {
    const r = await h2request(session, { path: `/download?size=${TWO_MB}` });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, TWO_MB);
    assert.equal(sha256(r.body), sha256(pattern(0, TWO_MB)));
  });

  it('HEAD gets the headers and no body', async () => {
    const r = await withTimeout(h2request(session, { method: 'HEAD', path: '/head' }), 5000, 'HEAD over h2');
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-head'], 'yes');
    assert.equal(r.body.length, 0);
  });

  it('HEAD to handlers that write a body anyway (whole and streamed): headers only, no stream error, as node drops the body', async () => {
    const whole = await withTimeout(h2request(session, { method: 'HEAD', path: '/hello' }), 5000, 'HEAD /hello over h2');
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['content-length'], '5', 'the length a GET would have');
    assert.equal(whole.body.length, 0);
    const streamed = await withTimeout(h2request(session, { method: 'HEAD', path: '/download?size=262144' }), 5000, 'HEAD /download over h2');
    assert.equal(streamed.status, 200);
    assert.equal(streamed.body.length, 0);
    const after = await withTimeout(h2request(session, { path: '/hello' }), 5000, 'GET after the HEADs');
    assert.equal(after.body.toString(), 'hello', 'the session is still usable');
  });

  it('200 concurrent streams on one session are all answered correctly', async () => {
    const N = 200;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => (i % 4 === 3
      ? h2request(session, { method: 'POST', path: '/echo', body: `body-${i}-${'x'.repeat(i)}` })
      : h2request(session, { path: `/id?i=${i}` }))));
    results.forEach((r, i) => {
      assert.equal(r.status, 200, `stream ${i}`);
      assert.equal(r.text(), i % 4 === 3 ? `body-${i}-${'x'.repeat(i)}` : `id:${i}`, `stream ${i} got its own answer`);
    });
  });

  it('unknown route: 404 from the app', async () => {
    const r = await h2request(session, { path: '/nope' });
    assert.equal(r.status, 404);
    assert.equal(r.text(), 'no route');
  });

  it('a stream cancelled by the client mid-response reaches the handler as "close" and leaks nothing', async () => {
    const startedBefore = state.dripStarted;
    const closedBefore = state.dripClosed;
    await withTimeout(new Promise((resolve) => {
      const stream = session.request({ ':path': '/drip' });
      stream.on('error', () => {});
      stream.once('data', () => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve();
      });
      stream.on('close', () => resolve());
    }), 5000, 'first data from /drip');
    await pollUntil(() => state.dripClosed, (n) => n > closedBefore, { timeoutMs: 5000 });
    assert.ok(state.dripStarted > startedBefore, 'handler started');
    assert.equal(state.dripClosed, closedBefore + 1, 'res emitted "close" after RST_STREAM');
    const m = await pollUntil(() => server.connectionPool.getMetrics(), (x) => x.pendingRequests === 0, { timeoutMs: 5000 });
    assert.equal(m.pendingRequests, 0);
    const again = await h2request(session, { path: '/hello' });
    assert.equal(again.text(), 'hello', 'the session keeps working');
  });

  it('a second session works alongside the first', async () => {
    const s2 = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
    try {
      const [a, b] = await Promise.all([
        h2request(session, { path: '/id?i=a' }),
        h2request(s2, { path: '/id?i=b' }),
      ]);
      assert.equal(a.text(), 'id:a');
      assert.equal(b.text(), 'id:b');
    } finally {
      await h2close(s2);
    }
  });

  it('a client sending the h2c preface in clear text to the TLS port is closed', async () => {
    const c = rawConnection({ port, send: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' });
    await c.connected;
    await withTimeout(c.closed, 5000, 'cleartext h2 preface on the TLS port closed').finally(() => c.destroy());
    assert.equal((await h2request(session, { path: '/hello' })).status, 200);
  });

  it('pendingRequests returns to 0', async () => {
    const m = await pollUntil(() => server.connectionPool.getMetrics(), (x) => x.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(m.pendingRequests, 0);
  });
});

describe('Http2Server: http/1.1 fallback', () => {
  let server;
  let port;

  before(async () => {
    const { app } = makeApp();
    server = new Http2Server(app, h2Options()); // allowHTTP1 defaults to true
    port = await start(server);
  });

  after(async () => {
    if (server) await stop(server).catch(() => {});
  });

  it('a client offering only http/1.1 in ALPN is served over HTTP/1.1', async () => {
    const r = await httpsRequest({ port, path: '/inspect?a=1', tls: { ca: CA, ALPNProtocols: ['http/1.1'] } });
    assert.equal(r.status, 200);
    assert.equal(r.httpVersion, '1.1');
    assert.equal(r.tls.alpnProtocol, 'http/1.1');
    const b = r.json();
    assert.equal(b.httpVersion, '1.1');
    assert.equal(b.url, '/inspect?a=1');
    assert.equal(b.alpnProtocol, 'http/1.1');
    assert.equal(b.encrypted, true);
    assert.equal(b.headers[':method'], undefined, 'no pseudo-headers over HTTP/1.1');
    assert.equal(b.headers.host, `127.0.0.1:${port}`);
    for (const k of Object.keys(r.headers)) assert.ok(!k.startsWith(':'), `response header ${k}`);
  });

  it('a client without ALPN is served over HTTP/1.1', async () => {
    const r = await httpsRequest({ port, path: '/hello', tls: { ca: CA } });
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'hello');
    assert.equal(r.httpVersion, '1.1');
  });

  it('POST over the fallback (Content-Length and chunked)', async () => {
    const data = crypto.randomBytes(256 * 1024);
    const r = await httpsRequest({ port, method: 'POST', path: '/echo', body: data, tls: { ca: CA, ALPNProtocols: ['http/1.1'] } });
    assert.ok(r.body.equals(data));
    const c = await httpsRequest({ port, method: 'POST', path: '/echo', body: chunksOf(data, 30000), tls: { ca: CA, ALPNProtocols: ['http/1.1'] } });
    assert.ok(c.body.equals(data));
    assert.equal(c.headers['x-had-content-length'], 'none');
  });

  it('h2 and http/1.1 clients at the same time', async () => {
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
    try {
      const [a, b] = await Promise.all([
        h2request(session, { path: '/inspect' }),
        httpsRequest({ port, path: '/inspect', tls: { ca: CA, ALPNProtocols: ['http/1.1'] } }),
      ]);
      assert.equal(a.json().httpVersion, '2.0');
      assert.equal(b.json().httpVersion, '1.1');
    } finally {
      await h2close(session);
    }
  });

  it('allowHTTP1: false refuses http/1.1-only clients; h2 still works', async () => {
    const { app, state } = makeApp();
    const strict = new Http2Server(app, h2Options({ ssl: { ...SSL, allowHTTP1: false } }));
    const p = await start(strict);
    try {
      await withTimeout(expectFailure(
        httpsRequest({ port: p, path: '/hello', tls: { ca: CA, ALPNProtocols: ['http/1.1'] }, timeout: 8000 }),
        'ALPN http/1.1 only',
      ), 6000, 'refusal of an http/1.1-only client');
      assert.equal(state.calls, 0, 'the handler did not run for an http/1.1-only client');
      // Without ALPN the client cannot say it speaks h2: the connection fails, or it gets an error status
      // (node's http2 server answers 403) that no handler produced.
      const callsBefore = state.calls;
      const noAlpn = await withTimeout(
        httpsRequest({ port: p, path: '/hello', tls: { ca: CA }, timeout: 8000 }).catch((err) => ({ err })),
        6000, 'refusal of a client without ALPN',
      );
      if (!noAlpn.err) {
        assert.ok(noAlpn.status >= 400, `client without ALPN got HTTP ${noAlpn.status}`);
        assert.notEqual(noAlpn.text(), 'hello');
      }
      assert.equal(state.calls, callsBefore, 'the handler did not run for refused clients');
      const session = await h2connect(`https://127.0.0.1:${p}`, { ca: CA });
      try {
        assert.equal((await h2request(session, { path: '/hello' })).text(), 'hello');
      } finally {
        await h2close(session);
      }
    } finally {
      await stop(strict).catch(() => {});
    }
  });
});

describe('Http2Server: client certificates and certificate reload', () => {
  it('mutual_tls over h2: refused without a valid cert; the handler sees authorized and the subject', async () => {
    const { app, state } = makeApp();
    const ssl = { mode: 'mutual_tls', key: certs.server.key, cert: certs.server.cert, ca: certs.ca.cert };
    const server = new Http2Server(app, h2Options({ ssl }));
    const port = await start(server);
    const tryH2 = async (opts) => {
      const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA, ...opts });
      try {
        return await h2request(session, { path: '/inspect', timeout: 5000 });
      } finally {
        await h2close(session);
      }
    };
    try {
      await expectFailure(tryH2({}), 'h2 client without a certificate');
      await expectFailure(tryH2({ cert: certs.otherClient.certPem, key: certs.otherClient.keyPem }), 'h2 client with another CA\'s cert');
      assert.equal(state.calls, 0, 'the handler never ran for refused clients');
      const r = await tryH2({ cert: certs.client.certPem, key: certs.client.keyPem });
      assert.equal(r.status, 200);
      const b = r.json();
      assert.equal(b.httpVersion, '2.0');
      assert.equal(b.authorized, true);
      assert.equal(b.peer.subjectCN, 'test-client');
      assert.equal(b.peer.issuerCN, 'koatty_serve Test CA');
    } finally {
      await stop(server).catch(() => {});
    }
  });

  it('reloadCertificates: new sessions see the new cert, an open session keeps working', async () => {
    const dir = certs.scratchDir('h2-reload');
    const keyPath = path.join(dir, 'server.key');
    const certPath = path.join(dir, 'server.crt');
    fs.copyFileSync(certs.server.key, keyPath);
    fs.copyFileSync(certs.server.cert, certPath);
    const { app } = makeApp();
    const server = new Http2Server(app, h2Options({ ssl: { mode: 'manual', key: keyPath, cert: certPath } }));
    const port = await start(server);
    const serialOf = (session) => session.socket.getPeerCertificate().serialNumber;
    const old = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
    let fresh = null;
    try {
      assert.equal(serialOf(old), certs.server.serial);
      fs.writeFileSync(`${certPath}.tmp`, certs.reload.cert2Pem);
      fs.renameSync(`${certPath}.tmp`, certPath);
      await server.reloadCertificates();
      fresh = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
      assert.equal(serialOf(fresh), certs.reload.serial2, 'a new session sees the new cert');
      assert.equal((await h2request(fresh, { path: '/id?i=new' })).text(), 'id:new');
      assert.equal((await h2request(old, { path: '/id?i=old' })).text(), 'id:old', 'the old session still works');
    } finally {
      await h2close(old);
      await h2close(fresh);
      await stop(server).catch(() => {});
    }
  });
});

describe('Http2Server: h2c (cleartext, prior knowledge)', () => {
  let server;
  let port;
  let session;

  before(async () => {
    const { app } = makeApp();
    server = new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true });
    port = await start(server);
    session = await h2connect(`http://127.0.0.1:${port}`);
  });

  after(async () => {
    await h2close(session);
    if (server) await stop(server).catch(() => {});
  });

  it('GET and the handler\'s view', async () => {
    assert.equal(session.encrypted, false);
    const r = await h2request(session, { path: '/inspect?h2c=1' });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.httpVersion, '2.0');
    assert.equal(b.url, '/inspect?h2c=1');
    assert.equal(b.headers[':scheme'], 'http');
    assert.equal(b.headers[':authority'], `127.0.0.1:${port}`);
    assert.equal(b.headers[':method'], 'GET');
    assert.equal(b.encrypted, false, 'req.socket.encrypted is not true over h2c');
  });

  it('POST echo and a 2 MB response', async () => {
    const data = crypto.randomBytes(300 * 1024);
    const r = await h2request(session, { method: 'POST', path: '/echo', body: data });
    assert.ok(r.body.equals(data));
    const d = await h2request(session, { path: `/download?size=${TWO_MB}` });
    assert.equal(sha256(d.body), sha256(pattern(0, TWO_MB)));
  });

  it('100 concurrent streams', async () => {
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => h2request(session, { path: `/id?i=${i}` })));
    results.forEach((r, i) => assert.equal(r.text(), `id:${i}`));
  });

  it('pendingRequests returns to 0', async () => {
    const m = await pollUntil(() => server.connectionPool.getMetrics(), (x) => x.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(m.pendingRequests, 0);
  });
});

describe('h2load smoke', () => {
  const h2load = probeProgram('h2load', ['--version']);

  function parseH2load(out) {
    const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
    const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
    assert.ok(req && codes, `unexpected h2load output:\n${out}`);
    const [total, started, done, succeeded, failed, errored, timeout] = req.slice(1).map(Number);
    const [c2, c3, c4, c5] = codes.slice(1).map(Number);
    return { total, started, done, succeeded, failed, errored, timeout, c2, c3, c4, c5 };
  }

  for (const variant of ['tls', 'h2c']) {
    it(`h2load -n 2000 -c 4 -m 32 over ${variant === 'tls' ? 'TLS (ALPN h2)' : 'h2c'}: 0 errors, all 2xx`, { skip: !h2load.ok && 'h2load not installed' }, async () => {
      const { app, state } = makeApp();
      const options = variant === 'tls' ? h2Options() : { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true };
      const server = new Http2Server(app, options);
      const port = await start(server);
      try {
        const scheme = variant === 'tls' ? 'https' : 'http';
        const r = await runProgram('h2load', ['-n', '2000', '-c', '4', '-m', '32', `${scheme}://127.0.0.1:${port}/hello`], { timeoutMs: 40000 });
        const out = `${r.stdout}${r.stderr}`;
        assert.equal(r.code, 0, `h2load exit code ${r.code}\n${out}`);
        if (variant === 'tls') assert.match(out, /Application protocol: h2\b/);
        const s = parseH2load(out);
        assert.equal(s.succeeded, 2000, out);
        assert.equal(s.failed, 0, out);
        assert.equal(s.errored, 0, out);
        assert.equal(s.timeout, 0, out);
        assert.equal(s.c2, 2000, out);
        assert.equal(state.calls, 2000, 'the handler ran once per request');
        const m = await pollUntil(() => server.connectionPool.getMetrics(), (x) => x.pendingRequests === 0, { timeoutMs: 3000 });
        assert.equal(m.pendingRequests, 0);
      } finally {
        await stop(server).catch(() => {});
      }
    });
  }
});

// A session that connected (SETTINGS exchanged) and never made a request is drained as HTTP/2 is:
// GOAWAY at once, and Stop() does not wait out the grace an HTTP/1 connection gets for a request
// that may be on the wire (≈ 1 s before; found by session 12's outside probe).
describe('Http2Server: a session that never made a request does not hold Stop()', () => {
  for (const h2c of [false, true]) {
    it(h2c ? 'h2c (the preface tells)' : 'h2 over TLS (ALPN tells)', async () => {
      const { app } = makeApp();
      const server = new Http2Server(app, h2c ? { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true } : h2Options());
      const port = await start(server);
      const session = await h2connect(`${h2c ? 'http' : 'https'}://127.0.0.1:${port}`, h2c ? {} : { ca: CA });
      await withTimeout(new Promise((resolve) => (session.remoteSettings ? resolve() : session.once('remoteSettings', resolve))), 5000, 'remote settings');
      let goaway = null;
      session.once('goaway', () => { goaway = Date.now(); });
      const closed = new Promise((resolve) => session.once('close', resolve));
      const t0 = Date.now();
      await stop(server);
      const took = Date.now() - t0;
      await withTimeout(closed, 5000, 'session close');
      assert.ok(took < 600, `Stop() took ${took} ms (a fresh HTTP/1 connection's grace is 1000 ms)`);
      assert.ok(goaway !== null && goaway - t0 < 600, `GOAWAY ${goaway === null ? 'never came' : `after ${goaway - t0} ms`}`);
    });
  }
});

// hyper waits for the rest of a partial HTTP/2 preface with no timer of its own: on a port serving
// HTTP/1.1 and h2c, such a client held its connection for good (session 12's second probe).
describe('Http2Server: h2c port, a partial preface and nothing more', () => {
  it('is closed after the header timer, as a partial HTTP/1.1 head is', async () => {
    const { app } = makeApp();
    const server = new Http2Server(app, {
      hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true,
      connectionPool: { keepAliveTimeout: 400, headersTimeout: 400 },
    });
    const port = await start(server);
    try {
      const socket = require('net').connect(port, '127.0.0.1');
      socket.on('error', () => {});
      await new Promise((resolve) => socket.once('connect', resolve));
      const t0 = Date.now();
      socket.write('PRI * HTTP/2.0\r\n');
      const closed = await withTimeout(new Promise((resolve) => socket.once('close', resolve)).then(() => Date.now() - t0), 5000, 'partial preface closed');
      assert.ok(closed >= 300 && closed < 2500, `closed after ${closed} ms`);
    } finally {
      await stop(server);
    }
  });
});

describe('Http2Server: a body written on a 204, 205 or 304, or to HEAD, as node http2 answers it (outside probe, session 14)', () => {
  // node drops what a handler writes where no content may follow; hyper's HTTP/2 sent it as DATA
  // (and a HEAD of a 204 got a Content-Length), which node's client refuses with a stream reset.
  const handler = (req, res) => {
    const [, status, how] = req.url.split('/');
    res.statusCode = Number(status);
    if (how === 'write') {
      res.write(new Uint8Array([1, 2, 3]));
      res.end();
    } else if (how === 'end') {
      res.end(new Uint8Array([1, 2, 3]));
    } else {
      res.end();
    }
  };
  const CASES = [];
  for (const status of [204, 205, 304, 200]) {
    for (const how of ['write', 'end', 'none']) {
      for (const method of ['GET', 'HEAD']) CASES.push({ method, path: `/${status}/${how}` });
    }
  }
  async function answers(port) {
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA, servername: 'localhost' });
    try {
      const out = [];
      for (const c of CASES) {
        const r = await h2request(session, c).then(
          (res) => `${res.status} content-length=${res.headers['content-length']} body=${res.body.toString('hex')}`,
          (err) => `${err.code}`,
        );
        out.push(`${c.method} ${c.path}: ${r}`);
      }
      return out;
    } finally {
      await h2close(session);
    }
  }
  it('the same status, length and body on every case', async () => {
    const [onNode, onNative] = await onNodeAndNative(() => ({ handler }), answers);
    // node's compat API leaves the length of a whole 200 out; this server sends it (listed in
    // the README): compared without it there.
    const lengthless = (line) => (/ \/200\/end: 200 /.test(line) ? line.replace(/content-length=\d+/, 'content-length=undefined') : line);
    assert.deepEqual(onNative.map(lengthless), onNode);
  });
});

describe('Http2Server: writeHead as node http2\'s compatibility API applies it (outside probe, session 14)', () => {
  // After a setHeader, pairs given as arrays replace and append (node's http refuses them there);
  // undefined or null is refused with http2's code, and the status stays as it was.
  const handler = (req, res) => {
    const seen = [];
    res.setHeader('X-Pre', '1');
    const tries = req.url === '/pairs' ? [[['a', '1'], ['b', '2']]] : [{ c: undefined }, { d: null }];
    for (const headers of tries) {
      try {
        res.writeHead(201, headers);
      } catch (err) {
        seen.push(err.code);
      }
    }
    res.end(`${seen.join(' ')} ${res.statusCode}`);
  };
  async function answer(port) {
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA, servername: 'localhost' });
    try {
      const out = [];
      for (const path of ['/pairs', '/errors']) {
        const r = await h2request(session, { path });
        out.push(`${r.status} a=${r.headers.a} b=${r.headers.b} x-pre=${r.headers['x-pre']} ${r.body}`);
      }
      return out;
    } finally {
      await h2close(session);
    }
  }
  it('the same head and the same errors as node', async () => {
    const [onNode, onNative] = await onNodeAndNative(() => ({ handler }), answer);
    assert.deepEqual(onNative, onNode);
  });
});

describe('Http2Server: a request the client cancels (session 13 probe)', () => {
  // node's http2 compatibility API emits 'finish' then 'close' on the response of a stream that
  // closed before the answer (koatty_trace writes its access line on 'finish'); node's http emits
  // 'close' alone.
  function makeHandler() {
    const events = [];
    let held = null;
    const handler = (req, res) => {
      if (req.url === '/events') {
        res.end(JSON.stringify(events));
        return;
      }
      res.on('finish', () => events.push('finish'));
      res.on('close', () => {
        events.push('close');
        res.end('late', () => events.push('end callback'));
      });
      held = res;
    };
    return { handler, held: () => held };
  }
  async function cancelled(port, held) {
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA, servername: 'localhost' });
    try {
      const stream = session.request({ ':path': '/hold' });
      stream.on('error', () => {});
      await pollUntil(() => held(), (r) => r !== null, { timeoutMs: 3000 });
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((resolve) => setTimeout(resolve, 200));
      return (await h2request(session, { path: '/events' })).text();
    } finally {
      await h2close(session);
    }
  }
  // A handler that ends at once while the reset is on its way (one 'finish', not two), and one
  // that destroys its response (node's compatibility API finishes it too).
  function makeQuickHandler() {
    const events = [];
    const handler = (req, res) => {
      if (req.url === '/events') {
        res.end(JSON.stringify(events));
        return;
      }
      res.on('finish', () => events.push(`${req.url} finish`));
      res.on('close', () => events.push(`${req.url} close`));
      if (req.url === '/destroy') {
        res.write('x');
        res.destroy();
      } else {
        res.end('ok');
      }
    };
    return { handler };
  }
  async function quick(port) {
    const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA, servername: 'localhost' });
    try {
      for (let i = 0; i < 5; i++) {
        const stream = session.request({ ':path': '/sync' });
        stream.on('error', () => {});
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }
      const destroyed = session.request({ ':path': '/destroy' });
      destroyed.on('error', () => {});
      destroyed.resume();
      await new Promise((resolve) => destroyed.on('close', resolve));
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Counts per event: which stream got there first may differ.
      const counts = {};
      for (const e of JSON.parse((await h2request(session, { path: '/events' })).text())) counts[e] = (counts[e] ?? 0) + 1;
      return counts;
    } finally {
      await h2close(session);
    }
  }
  it("one 'finish' for a response ended at once as its stream is reset, and 'finish' after destroy(), as on node", async () => {
    const [onNode, onNative] = await onNodeAndNative(makeQuickHandler, quick);
    assert.deepEqual(onNative, onNode);
  });
  it("the response emits 'finish', then 'close', and a later end(cb) calls back, as on node", async () => {
    const [onNode, onNative] = await onNodeAndNative(makeHandler, (port, made) => cancelled(port, made.held));
    assert.equal(onNative, onNode);
  });
});
