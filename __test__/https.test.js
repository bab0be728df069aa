'use strict';
// HttpsServer used directly (no Koatty), in-process, with the fake app of tls-app.js. Real sockets;
// node's https/net clients, curl when present. The test PKI comes from certs.js (openssl CLI).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const path = require('path');
const { HttpsServer, Http2Server } = require('..');
const { getCerts } = require('./certs');
const {
  httpsRequest, h2connect, h2close, h2request, rawConnection, runProgram, probeProgram, pollUntil, withTimeout, sleep,
  failIfKeptAlive,
} = require('./helpers');
const { makeApp, start, stop, pattern, sha256 } = require('./tls-app');

failIfKeptAlive(__filename);

const certs = getCerts();
const CA = certs.ca.certPem;
const SSL = { mode: 'manual', key: certs.server.key, cert: certs.server.cert };
const ONE_MB = 1024 * 1024;

function httpsOptions(ssl, extra = {}) {
  return { hostname: '127.0.0.1', port: 0, protocol: 'https', ssl, ...extra };
}

/** Start an HttpsServer (or `Cls`) with `options`, run `fn(port, server, state)`, always Stop. */
async function withServer(options, fn, Cls = HttpsServer) {
  const { app, state } = makeApp();
  const server = new Cls(app, options);
  const port = await start(server);
  try {
    return await fn(port, server, state);
  } finally {
    await stop(server).catch(() => {});
  }
}

const get = (port, p = '/hello', tls = {}, extra = {}) => httpsRequest({ port, path: p, tls: { ca: CA, ...tls }, ...extra });

/** Resolves with the error when the request fails, rejects when it unexpectedly succeeds. */
async function expectFailure(promise, what) {
  let res;
  try {
    res = await promise;
  } catch (err) {
    return err;
  }
  assert.fail(`${what}: expected the connection to fail, got HTTP ${res.status} ${res.text().slice(0, 200)}`);
  return null;
}

describe('HttpsServer: requests over TLS', () => {
  let server;
  let port;
  let state;

  before(async () => {
    const made = makeApp();
    state = made.state;
    server = new HttpsServer(made.app, httpsOptions(SSL));
    assert.equal(server.protocol, 'https');
    port = await start(server);
  });

  after(async () => {
    if (server) await stop(server).catch(() => {});
  });

  it('GET over TLS 1.3 by default; the client verifies the server cert with the test CA', async () => {
    const r = await get(port, '/hello');
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'hello');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(r.tls.protocol, 'TLSv1.3');
    assert.equal(r.tls.authorized, true, 'client authorised the server certificate');
    assert.equal(r.tls.peerCertificate.subject.CN, 'localhost');
    assert.equal(r.tls.peerCertificate.serialNumber, certs.server.serial);
    const viaName = await httpsRequest({ port, host: 'localhost', path: '/hello', tls: { ca: CA, servername: 'localhost' } })
      .catch((err) => (err.code === 'ENOTFOUND' ? null : Promise.reject(err)));
    if (viaName) assert.equal(viaName.status, 200, 'DNS SAN localhost verifies too');
  });

  it('a TLS 1.2-only client is served with TLS 1.2', async () => {
    const r = await get(port, '/hello', { maxVersion: 'TLSv1.2' });
    assert.equal(r.status, 200);
    assert.equal(r.tls.protocol, 'TLSv1.2');
  });

  it('the handler sees an encrypted HTTP/1.1 socket without a client certificate', async () => {
    const r = await get(port, '/inspect?q=1', {}, { headers: { 'X-Custom': 'abc' } });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.httpVersion, '1.1');
    assert.equal(b.method, 'GET');
    assert.equal(b.url, '/inspect?q=1');
    assert.equal(b.headers['x-custom'], 'abc');
    assert.equal(b.headers.host, `127.0.0.1:${port}`);
    for (const k of Object.keys(b.headers)) assert.ok(!k.startsWith(':'), `no pseudo-header ${k} over HTTP/1.1`);
    assert.equal(b.encrypted, true, 'req.socket.encrypted');
    assert.equal(typeof b.authorized, 'boolean', 'req.socket.authorized is a boolean');
    assert.equal(b.authorized, false, 'no client certificate was requested');
    assert.equal(b.authorizationError, null, 'authorizationError is null when no certificate was requested, as node');
    assert.equal(b.peer.available, true, 'req.socket.getPeerCertificate is a function');
    assert.equal(b.peer.empty, true, 'getPeerCertificate() is {} without a client certificate');
  });

  it('POST 1 MB with Content-Length is streamed back byte for byte', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const r = await httpsRequest({
      port, method: 'POST', path: '/echo', body: data, tls: { ca: CA }, headers: { 'Content-Type': 'application/octet-stream' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-had-content-length'], String(ONE_MB));
    assert.equal(r.body.length, ONE_MB);
    assert.ok(r.body.equals(data), 'echo equals the upload');
  });

  it('POST 1 MB chunked arrives whole and in several chunks', async () => {
    const data = crypto.randomBytes(ONE_MB);
    const chunks = [];
    for (let o = 0; o < data.length; o += 32 * 1024) chunks.push(data.subarray(o, o + 32 * 1024));
    const r = await httpsRequest({ port, method: 'POST', path: '/count', body: chunks, tls: { ca: CA } });
    assert.equal(r.status, 200);
    const b = r.json();
    assert.equal(b.bytes, ONE_MB);
    assert.equal(b.sha256, sha256(data));
    assert.ok(b.chunks > 1, `body arrived in ${b.chunks} chunks`);
    const echoed = await httpsRequest({ port, method: 'POST', path: '/echo', body: chunks, tls: { ca: CA } });
    assert.equal(echoed.headers['x-had-content-length'], 'none');
    assert.ok(echoed.body.equals(data), 'chunked echo equals the upload');
  });

  it('streams a 1 MB response written in 64 KiB pieces', async () => {
    const r = await get(port, `/download?size=${ONE_MB}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.length, ONE_MB);
    assert.equal(sha256(r.body), sha256(pattern(0, ONE_MB)));
  });

  it('keep-alive over TLS reuses the connection', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: CA });
    try {
      const r1 = await httpsRequest({ port, path: '/id?i=1', agent });
      const r2 = await httpsRequest({ port, path: '/id?i=2', agent });
      assert.equal(r1.text(), 'id:1');
      assert.equal(r2.text(), 'id:2');
      assert.equal(r2.reusedSocket, true);
    } finally {
      agent.destroy();
    }
  });

  it('20 concurrent connections are all answered correctly', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => get(port, `/id?i=${i}`)));
    results.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal(r.text(), `id:${i}`);
    });
  });

  it('plain HTTP sent to the TLS port is closed and the server keeps serving', async () => {
    const c = rawConnection({ port, send: 'GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' });
    await c.connected;
    const closed = await withTimeout(c.closed, 5000, 'server closes a plain-HTTP connection on the TLS port')
      .finally(() => c.destroy());
    assert.ok(!closed.data.toString('latin1').includes('hello'), 'the handler did not answer plain HTTP');
    const r = await get(port, '/hello');
    assert.equal(r.status, 200);
  });

  it('garbage bytes on the TLS port are closed and the server keeps serving', async () => {
    const c = rawConnection({ port, send: crypto.randomBytes(4096) });
    await c.connected;
    await withTimeout(c.closed, 5000, 'server closes a garbage connection').finally(() => c.destroy());
    const r = await get(port, '/hello');
    assert.equal(r.status, 200);
  });

  it('silent TCP clients (no ClientHello) do not block other clients', async () => {
    const stalled = [];
    for (let i = 0; i < 5; i++) {
      const c = rawConnection({ port });
      stalled.push(c);
      await c.connected;
    }
    // one that sends the first bytes of a TLS record and stops
    const partial = rawConnection({ port, send: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) });
    stalled.push(partial);
    await partial.connected;
    try {
      const t0 = Date.now();
      const r = await get(port, '/hello', {}, { timeout: 5000 });
      assert.equal(r.status, 200);
      assert.ok(Date.now() - t0 < 3000, `served in ${Date.now() - t0} ms while 6 handshakes are stalled`);
    } finally {
      for (const c of stalled) c.destroy();
    }
  });

  it('pendingRequests is back to 0', async () => {
    const m = await pollUntil(() => server.connectionPool.getMetrics(), (x) => x.pendingRequests === 0, { timeoutMs: 3000 });
    assert.equal(typeof m.pendingRequests, 'number');
    assert.equal(m.pendingRequests, 0);
    assert.ok(state.calls > 0);
  });
});

describe('HttpsServer: handshake timeout', () => {
  it('connectionPool.handshakeTimeout closes stalled handshakes; others are served meanwhile', async () => {
    await withServer(httpsOptions(SSL, { connectionPool: { handshakeTimeout: 300 } }), async (port) => {
      const silent = rawConnection({ port });
      const partial = rawConnection({ port, send: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]) });
      await Promise.all([silent.connected, partial.connected]);
      try {
        const r = await get(port, '/hello', {}, { timeout: 5000 });
        assert.equal(r.status, 200, 'served while two handshakes are stalled');
        const [a, b] = await withTimeout(Promise.all([silent.closed, partial.closed]), 5000,
          'stalled handshakes closed by the server');
        for (const [name, c] of [['silent', a], ['partial', b]]) {
          assert.ok(c.ms >= 200, `${name} connection closed after ${c.ms} ms: not before the 300 ms timeout`);
          assert.ok(c.ms < 3000, `${name} connection closed after ${c.ms} ms`);
        }
        const again = await get(port, '/hello');
        assert.equal(again.status, 200);
      } finally {
        silent.destroy();
        partial.destroy();
      }
    });
  });
});

describe('HttpsServer: a stalled handshake during a shutdown', () => {
  // It held Stop() for the whole handshakeTimeout (10 s) before session 12's second outside probe.
  it('is dropped a grace (1 s) after the drain began, not at handshakeTimeout', async () => {
    const { app } = makeApp();
    const server = new HttpsServer(app, httpsOptions(SSL));
    const port = await start(server);
    const partial = rawConnection({ port, send: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]) });
    await partial.connected;
    try {
      await sleep(100);
      const t0 = Date.now();
      await stop(server, 8000);
      const took = Date.now() - t0;
      assert.ok(took < 3000, `Stop() took ${took} ms (handshakeTimeout: 10000)`);
      const closed = await withTimeout(partial.closed, 5000, 'stalled handshake closed');
      assert.ok(closed.bytes === 0, 'nothing was answered');
    } finally {
      partial.destroy();
    }
  });
});

describe('HttpsServer: key and certificate forms', () => {
  it('key and cert as PEM text', async () => {
    await withServer(httpsOptions({ mode: 'manual', key: certs.server.keyPem, cert: certs.server.certPem }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.tls.peerCertificate.serialNumber, certs.server.serial);
    });
  });

  it('encrypted PKCS#8 key (file path) with passphrase', async () => {
    const ssl = { mode: 'manual', key: certs.server.encKey, cert: certs.server.cert, passphrase: certs.server.passphrase };
    await withServer(httpsOptions(ssl), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.text(), 'hello');
    });
  });

  it('encrypted PKCS#8 key (PEM text) with passphrase', async () => {
    const ssl = { mode: 'manual', key: certs.server.encKeyPem, cert: certs.server.certPem, passphrase: certs.server.passphrase };
    await withServer(httpsOptions(ssl), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
    });
  });

  it('SEC1 "EC PRIVATE KEY" and PKCS#1 "RSA PRIVATE KEY" keys', async () => {
    await withServer(httpsOptions({ mode: 'manual', key: certs.server.sec1Key, cert: certs.server.cert }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
    });
    const rsa = certs.rsaServer();
    await withServer(httpsOptions({ mode: 'manual', key: rsa.key, cert: rsa.cert }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      const r12 = await get(port, '/hello', { maxVersion: 'TLSv1.2' });
      assert.equal(r12.status, 200);
      assert.match(r12.tls.cipher.name, /^ECDHE-RSA-/, 'an RSA certificate negotiates an ECDHE-RSA suite');
    });
  });

  it('a certificate chain (leaf + intermediate) verifies against the root CA', async () => {
    await withServer(httpsOptions({ mode: 'manual', key: certs.chain.key, cert: certs.chain.cert }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.tls.authorized, true);
      assert.equal(r.tls.peerCertificate.issuer.CN, 'koatty_serve Test Intermediate');
    });
  });

  it('auto mode with key/cert uses them', async () => {
    await withServer(httpsOptions({ mode: 'auto', key: certs.server.key, cert: certs.server.cert }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.tls.peerCertificate.serialNumber, certs.server.serial);
    });
  });

  it('auto mode without key/cert serves with a self-signed development certificate and warns', async () => {
    // The warning may go to stderr, console.warn or process.emitWarning: capture all three while constructing.
    const seen = [];
    const origWrite = process.stderr.write;
    const origWarn = console.warn;
    const onWarning = (w) => seen.push(String(w && w.message));
    process.stderr.write = function write(chunk, ...rest) {
      seen.push(String(chunk));
      return origWrite.call(this, chunk, ...rest);
    };
    console.warn = (...args) => { seen.push(args.join(' ')); };
    process.on('warning', onWarning);
    const { app } = makeApp();
    let server;
    try {
      server = new HttpsServer(app, httpsOptions({ mode: 'auto' }));
      await sleep(50); // process 'warning' events are emitted on the next tick
    } finally {
      process.stderr.write = origWrite;
      console.warn = origWarn;
      process.off('warning', onWarning);
    }
    assert.ok(seen.some((line) => /self-signed|development cert/i.test(line)),
      `a warning about the generated certificate; saw: ${JSON.stringify(seen).slice(0, 500)}`);
    const port = await start(server);
    try {
      const r = await httpsRequest({ port, path: '/hello', tls: { rejectUnauthorized: false } });
      assert.equal(r.status, 200);
      assert.equal(r.text(), 'hello');
      assert.notEqual(r.tls.peerCertificate.serialNumber, certs.server.serial, 'not the test CA\'s server cert');
      await expectFailure(get(port), 'a client trusting only the test CA');
    } finally {
      await stop(server).catch(() => {});
    }
  });

  it('auto mode without key/cert on Http2Server serves h2 with the development certificate', async () => {
    await withServer({ hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: { mode: 'auto' } }, async (port) => {
      const session = await h2connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
      try {
        assert.equal(session.alpnProtocol, 'h2');
        assert.equal((await h2request(session, { path: '/hello' })).text(), 'hello');
      } finally {
        await h2close(session);
      }
    }, Http2Server);
  });
});

describe('HttpsServer: bad TLS configuration throws ERR_TLS_CONFIG', () => {
  const missing = path.join(certs.dir, 'does-not-exist', 'missing-file.pem');
  const garbagePem = '-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n';
  const cases = [
    ['missing key file', { mode: 'manual', key: missing, cert: certs.server.cert }, /missing-file\.pem/],
    ['missing cert file', { mode: 'manual', key: certs.server.key, cert: missing }, /missing-file\.pem/],
    ['missing ca file (mutual_tls)', { mode: 'mutual_tls', key: certs.server.key, cert: certs.server.cert, ca: missing }, /missing-file\.pem/],
    ['wrong passphrase', { mode: 'manual', key: certs.server.encKey, cert: certs.server.cert, passphrase: 'wrong' }, /passphrase|decrypt/i],
    ['encrypted key without passphrase', { mode: 'manual', key: certs.server.encKey, cert: certs.server.cert }, /passphrase|encrypted/i],
    ['key does not match cert', { mode: 'manual', key: certs.mismatchKey.key, cert: certs.server.cert }, /match/i],
    ['secureProtocol TLSv1_method', { ...SSL, secureProtocol: 'TLSv1_method' }, /TLSv1_method/],
    ['secureProtocol TLSv1_1_method', { ...SSL, secureProtocol: 'TLSv1_1_method' }, /TLSv1_1_method/],
    ['unknown cipher', { ...SSL, ciphers: 'NOPE-CIPHER' }, /NOPE-CIPHER/],
    ['unknown cipher among known ones', { ...SSL, ciphers: 'TLS_AES_128_GCM_SHA256:NOPE-CIPHER' }, /NOPE-CIPHER/],
    ['manual mode without cert', { mode: 'manual', key: certs.server.key }, /cert/i],
    ['manual mode without key and cert', { mode: 'manual' }, /key|cert/i],
    ['cert PEM that does not parse', { mode: 'manual', key: certs.server.key, cert: garbagePem }, /cert/i],
  ];

  for (const [Cls, protocol] of [[HttpsServer, 'https'], [Http2Server, 'http2']]) {
    for (const [name, ssl, re] of cases) {
      it(`${protocol}: ${name}`, () => {
        const { app } = makeApp();
        assert.throws(
          () => new Cls(app, { hostname: '127.0.0.1', port: 0, protocol, ssl }),
          (err) => {
            assert.ok(err instanceof Error, 'an Error');
            assert.equal(err.code, 'ERR_TLS_CONFIG', `code of "${err.message}"`);
            assert.match(err.message, re);
            return true;
          },
        );
      });
    }
  }
});

describe('HttpsServer: secureProtocol', () => {
  it('TLSv1_2_method: exactly TLS 1.2', async () => {
    await withServer(httpsOptions({ ...SSL, secureProtocol: 'TLSv1_2_method' }), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.tls.protocol, 'TLSv1.2');
      const r12 = await get(port, '/hello', { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
      assert.equal(r12.tls.protocol, 'TLSv1.2');
      await expectFailure(get(port, '/hello', { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }), 'TLS 1.3-only client');
    });
  });

  it('TLSv1_3_method: exactly TLS 1.3', async () => {
    await withServer(httpsOptions({ ...SSL, secureProtocol: 'TLSv1_3_method' }), async (port) => {
      const r = await get(port);
      assert.equal(r.tls.protocol, 'TLSv1.3');
      await expectFailure(get(port, '/hello', { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), 'TLS 1.2-only client');
    });
  });

  it('TLS_method: TLS 1.2 and 1.3', async () => {
    await withServer(httpsOptions({ ...SSL, secureProtocol: 'TLS_method' }), async (port) => {
      assert.equal((await get(port)).tls.protocol, 'TLSv1.3');
      assert.equal((await get(port, '/hello', { maxVersion: 'TLSv1.2' })).tls.protocol, 'TLSv1.2');
    });
  });

  it('a TLS 1.0/1.1 client is refused', async () => {
    await withServer(httpsOptions(SSL), async (port) => {
      await expectFailure(get(port, '/hello', { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
        'TLS 1.0/1.1 client');
    });
  });
});

describe('HttpsServer: ciphers', () => {
  const TLS12 = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' };
  const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' };

  it('a TLS 1.2 suite list restricts what is negotiated', async () => {
    const ssl = { ...SSL, secureProtocol: 'TLSv1_2_method', ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384' };
    await withServer(httpsOptions(ssl), async (port) => {
      const r = await get(port);
      assert.equal(r.status, 200);
      assert.equal(r.tls.protocol, 'TLSv1.2');
      assert.equal(r.tls.cipher.name, 'ECDHE-ECDSA-AES256-GCM-SHA384');
      await expectFailure(get(port, '/hello', { ...TLS12, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' }),
        'client offering only a suite the server does not allow');
    });
  });

  it('TLS 1.3 and 1.2 names in one list', async () => {
    const ssl = { ...SSL, ciphers: 'TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-CHACHA20-POLY1305' };
    await withServer(httpsOptions(ssl), async (port) => {
      const r13 = await get(port, '/hello', TLS13);
      assert.equal(r13.tls.protocol, 'TLSv1.3');
      assert.equal(r13.tls.cipher.name, 'TLS_AES_128_GCM_SHA256');
      const r12 = await get(port, '/hello', TLS12);
      assert.equal(r12.tls.protocol, 'TLSv1.2');
      assert.equal(r12.tls.cipher.name, 'ECDHE-ECDSA-CHACHA20-POLY1305');
      await expectFailure(get(port, '/hello', { ...TLS13, ciphers: 'TLS_AES_256_GCM_SHA384' }),
        'TLS 1.3 client offering only TLS_AES_256_GCM_SHA384');
    });
  });

  it('"!X" exclusions are honoured', async () => {
    const ssl = {
      ...SSL,
      secureProtocol: 'TLSv1_2_method',
      ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:!ECDHE-ECDSA-AES128-GCM-SHA256',
    };
    await withServer(httpsOptions(ssl), async (port) => {
      const r = await get(port);
      assert.equal(r.tls.cipher.name, 'ECDHE-ECDSA-AES256-GCM-SHA384');
      await expectFailure(get(port, '/hello', { ...TLS12, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' }), 'excluded suite');
    });
  });

  it('honorCipherOrder: the server\'s order wins over the client\'s', async () => {
    const serverOrder = 'ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256';
    const clientOrder = { ...TLS12, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305' };
    const base = { ...SSL, secureProtocol: 'TLSv1_2_method', ciphers: serverOrder };
    await withServer(httpsOptions({ ...base, honorCipherOrder: true }), async (port) => {
      assert.equal((await get(port, '/hello', clientOrder)).tls.cipher.name, 'ECDHE-ECDSA-CHACHA20-POLY1305');
    });
    await withServer(httpsOptions({ ...base, honorCipherOrder: false }), async (port) => {
      assert.equal((await get(port, '/hello', clientOrder)).tls.cipher.name, 'ECDHE-ECDSA-AES128-GCM-SHA256');
    });
  });
});

describe('HttpsServer: mutual TLS', () => {
  const clientCert = { cert: certs.client.certPem, key: certs.client.keyPem };
  const otherCert = { cert: certs.otherClient.certPem, key: certs.otherClient.keyPem };

  it('mutual_tls: no cert and a cert from another CA are refused; a valid cert is accepted and visible', async () => {
    const ssl = { mode: 'mutual_tls', key: certs.server.key, cert: certs.server.cert, ca: certs.ca.cert };
    await withServer(httpsOptions(ssl), async (port, server, state) => {
      await expectFailure(get(port, '/inspect'), 'client without a certificate');
      await expectFailure(get(port, '/inspect', otherCert), 'client with a certificate from another CA');
      assert.equal(state.calls, 0, 'the handler never ran for refused clients');

      const r = await get(port, '/inspect', clientCert);
      assert.equal(r.status, 200);
      const b = r.json();
      assert.equal(b.encrypted, true);
      assert.equal(b.authorized, true, 'req.socket.authorized');
      assert.equal(b.peer.empty, false);
      assert.equal(b.peer.subjectCN, 'test-client', 'getPeerCertificate().subject.CN');
      assert.equal(b.peer.issuerCN, 'koatty_serve Test CA', 'getPeerCertificate().issuer.CN');
      // TLS 1.2 clients too
      const r12 = await get(port, '/inspect', { ...clientCert, maxVersion: 'TLSv1.2' });
      assert.equal(r12.json().authorized, true);
      await expectFailure(get(port, '/inspect', { maxVersion: 'TLSv1.2' }), 'TLS 1.2 client without a certificate');
    });
  });

  it('mutual_tls with ca given as PEM text', async () => {
    const ssl = { mode: 'mutual_tls', key: certs.server.keyPem, cert: certs.server.certPem, ca: certs.ca.certPem };
    await withServer(httpsOptions(ssl), async (port) => {
      assert.equal((await get(port, '/inspect', clientCert)).json().peer.subjectCN, 'test-client');
      await expectFailure(get(port, '/inspect'), 'client without a certificate');
    });
  });

  for (const mode of ['mutual_tls', 'manual']) {
    it(`${mode} + requestCert: true, rejectUnauthorized: false: everyone connects, authorized tells them apart`, async () => {
      const ssl = {
        mode, key: certs.server.key, cert: certs.server.cert, ca: certs.ca.cert, requestCert: true, rejectUnauthorized: false,
      };
      await withServer(httpsOptions(ssl), async (port) => {
        const none = (await get(port, '/inspect')).json();
        assert.equal(none.authorized, false, 'no certificate: authorized false');
        assert.equal(none.peer.empty, true, 'no certificate: getPeerCertificate() is {}');

        const other = (await get(port, '/inspect', otherCert)).json();
        assert.equal(other.authorized, false, 'other CA: authorized false');
        assert.equal(other.peer.subjectCN, 'rogue-client', 'the unverified certificate is still visible');

        const good = (await get(port, '/inspect', clientCert)).json();
        assert.equal(good.authorized, true, 'valid certificate: authorized true');
        assert.equal(good.peer.subjectCN, 'test-client');
      });
    });
  }
});

describe('HttpsServer: reloadCertificates', () => {
  it('new handshakes get the new cert; an open keep-alive connection keeps working', async () => {
    const dir = certs.scratchDir('reload');
    const keyPath = path.join(dir, 'server.key');
    const certPath = path.join(dir, 'server.crt');
    const replace = (file, text) => {
      const tmp = `${file}.tmp`;
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, file);
    };
    fs.copyFileSync(certs.server.key, keyPath);
    fs.copyFileSync(certs.server.cert, certPath);

    await withServer(httpsOptions({ mode: 'manual', key: keyPath, cert: certPath }), async (port, server) => {
      assert.equal(typeof server.reloadCertificates, 'function');
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: CA });
      try {
        const first = await httpsRequest({ port, path: '/id?i=1', agent });
        assert.equal(first.tls.peerCertificate.serialNumber, certs.server.serial);

        // 1. same key, new cert
        replace(certPath, certs.reload.cert2Pem);
        await server.reloadCertificates();
        const fresh = await get(port);
        assert.equal(fresh.tls.peerCertificate.serialNumber, certs.reload.serial2, 'a new connection sees the new cert');
        const kept = await httpsRequest({ port, path: '/id?i=2', agent });
        assert.equal(kept.status, 200);
        assert.equal(kept.text(), 'id:2');
        assert.equal(kept.reusedSocket, true, 'the keep-alive connection survived the reload');
        assert.equal(kept.tls.peerCertificate.serialNumber, certs.server.serial, 'it still uses its original session');

        // 2. new key and new cert
        replace(keyPath, certs.reload.key3Pem);
        replace(certPath, certs.reload.cert3Pem);
        await server.reloadCertificates();
        const fresh3 = await get(port);
        assert.equal(fresh3.tls.peerCertificate.serialNumber, certs.reload.serial3);

        // 3. a broken pair is refused (coded error) and the last good cert stays in use
        replace(keyPath, certs.mismatchKey.keyPem);
        let reloadError = null;
        try {
          await server.reloadCertificates();
        } catch (err) {
          reloadError = err;
        }
        assert.ok(reloadError, 'reloading a mismatched key/cert reports an error');
        assert.equal(reloadError.code, 'ERR_TLS_CONFIG');
        const still = await get(port);
        assert.equal(still.status, 200);
        assert.equal(still.tls.peerCertificate.serialNumber, certs.reload.serial3, 'the last good cert is still served');
        const keptAgain = await httpsRequest({ port, path: '/id?i=3', agent });
        assert.equal(keptAgain.text(), 'id:3');
      } finally {
        agent.destroy();
      }
    });
  });
});

describe('curl against HttpsServer and Http2Server', () => {
  const curl = probeProgram('curl', ['--version']);
  const hasHttp2 = curl.ok && /^Features:.*\bHTTP2\b/m.test(curl.output);
  const curlGet = (url, extra = []) => runProgram('curl', [
    '-sS', '--max-time', '10', '--cacert', certs.ca.cert, '-w', '\n%{http_version}', ...extra, url,
  ], { timeoutMs: 15000 });
  const parse = (r) => {
    const nl = r.stdout.lastIndexOf('\n');
    return { body: r.stdout.slice(0, nl), version: r.stdout.slice(nl + 1).trim() };
  };

  it('curl --http1.1 against HttpsServer', { skip: !curl.ok && 'curl not installed' }, async () => {
    await withServer(httpsOptions(SSL), async (port) => {
      const r = await curlGet(`https://127.0.0.1:${port}/inspect`, ['--http1.1']);
      assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
      const { body, version } = parse(r);
      assert.equal(version, '1.1');
      const b = JSON.parse(body);
      assert.equal(b.httpVersion, '1.1');
      assert.equal(b.encrypted, true);
    });
  });

  it('curl --http2 against Http2Server (h2 via ALPN), and --http1.1 falls back', { skip: !hasHttp2 && 'curl without HTTP2' }, async () => {
    await withServer({ hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: SSL }, async (port) => {
      const r = await curlGet(`https://127.0.0.1:${port}/inspect`, ['--http2']);
      assert.equal(r.code, 0, `curl failed: ${r.stderr}`);
      const { body, version } = parse(r);
      assert.equal(version, '2');
      const b = JSON.parse(body);
      assert.equal(b.httpVersion, '2.0');
      assert.equal(b.alpnProtocol, 'h2');
      assert.equal(b.headers[':scheme'], 'https');

      const r1 = await curlGet(`https://127.0.0.1:${port}/inspect`, ['--http1.1']);
      assert.equal(r1.code, 0, `curl failed: ${r1.stderr}`);
      const p1 = parse(r1);
      assert.equal(p1.version, '1.1');
      assert.equal(JSON.parse(p1.body).httpVersion, '1.1');
    }, Http2Server);
  });

  it('curl with a client certificate against mutual_tls', { skip: !curl.ok && 'curl not installed' }, async () => {
    const ssl = { mode: 'mutual_tls', key: certs.server.key, cert: certs.server.cert, ca: certs.ca.cert };
    await withServer(httpsOptions(ssl), async (port) => {
      const url = `https://127.0.0.1:${port}/inspect`;
      const ok = await curlGet(url, ['--http1.1', '--cert', certs.client.cert, '--key', certs.client.key]);
      assert.equal(ok.code, 0, `curl failed: ${ok.stderr}`);
      const b = JSON.parse(parse(ok).body);
      assert.equal(b.authorized, true);
      assert.equal(b.peer.subjectCN, 'test-client');
      const refused = await curlGet(url, ['--http1.1']);
      assert.notEqual(refused.code, 0, 'curl without a client certificate fails');
    });
  });
});

describe('server classes without options.protocol', () => {
  it('HttpsServer serves TLS and Http2Server serves h2 when protocol is not given (the class decides)', async () => {
    const bare = { hostname: '127.0.0.1', port: 0, ssl: SSL };
    await withServer(bare, async (port, server) => {
      assert.equal(server.protocol, 'https');
      const r = await get(port);
      assert.equal(r.status, 200);
    });
    await withServer(bare, async (port, server) => {
      assert.equal(server.protocol, 'http2');
      const session = await h2connect(`https://127.0.0.1:${port}`, { ca: CA });
      try {
        const r = await h2request(session, { path: '/hello' });
        assert.equal(r.status, 200);
      } finally {
        await h2close(session);
      }
    }, Http2Server);
  });
});
