'use strict';
// HttpServer used directly (no Koatty), in-process, with a tiny fake app whose callback() returns a
// (req, res) handler. Real sockets, node's http/net clients.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const http = require('http');
const { HttpServer } = require('..');
const { request, occupyPort, withTimeout, sleep, failIfKeptAlive } = require('./helpers');

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

// A server that keeps a handle (tokio task, threadsafe function) alive after Stop would keep this
// process from exiting and hang the runner: fail loudly instead.
failIfKeptAlive(__filename);

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

function stop(server, timeout = 5000) {
  return withTimeout(new Promise((resolve) => server.Stop(() => resolve())), timeout, 'HttpServer.Stop');
}

describe('HttpServer lifecycle', () => {
  it('Start on port 0 binds an ephemeral port, serves, and Stop closes it', async () => {
    let calls = 0;
    const server = new HttpServer(fakeApp((req, res) => {
      calls++;
      res.setHeader('Content-Type', 'text/plain');
      res.end(`hello ${req.method} ${req.url}`);
    }), { hostname: '127.0.0.1', port: 0, protocol: 'http' });
    assert.equal(server.protocol, 'http');
    assert.equal(server.options.port, 0);

    const port = await start(server);
    assert.ok(Number.isInteger(port) && port > 0 && port < 65536, `bound port ${port}`);
    assert.equal(server.options.port, 0, 'options.port keeps the configured value');
    const addr = server.server.address();
    assert.equal(addr.address, '127.0.0.1');
    assert.equal(addr.family, 'IPv4');
    assert.equal(server.server.listening, true);

    const r = await request({ port, path: '/a/b?c=1' });
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'hello GET /a/b?c=1');
    assert.equal(r.headers['content-type'], 'text/plain');
    assert.equal(calls, 1);

    await stop(server);
    assert.equal(server.server.listening, false);
    await assert.rejects(request({ port, path: '/', timeout: 2000 }), (err) => err.code === 'ECONNREFUSED');
  });

  it('EADDRINUSE is emitted as an "error" event with a code, not thrown', async () => {
    const busy = await occupyPort();
    try {
      const server = new HttpServer(fakeApp((req, res) => res.end('x')),
        { hostname: '127.0.0.1', port: busy.port, protocol: 'http' });
      let listened = false;
      const errored = withTimeout(new Promise((resolve) => server.once('error', resolve)), 5000, "'error' event");
      assert.doesNotThrow(() => server.Start(() => { listened = true; }));
      const err = await errored;
      assert.ok(err instanceof Error, 'an Error');
      assert.equal(err.code, 'EADDRINUSE');
      // node:http's own words for the same failure.
      const nodeErr = await new Promise((resolve) => {
        const other = require('node:http').createServer();
        other.once('error', resolve);
        other.listen(busy.port, '127.0.0.1');
      });
      assert.equal(err.message, nodeErr.message);
      await sleep(50);
      assert.equal(listened, false, 'Start callback not called on a bind failure');
      assert.notEqual(server.server.listening, true);
      await withTimeout(new Promise((resolve) => server.Stop(() => resolve())), 5000, 'Stop after failed Start')
        .catch(() => {}); // Stop after a failed bind must not hang the suite; its outcome is not asserted
    } finally {
      await busy.close();
    }
  });
});

describe('HttpServer request handling', () => {
  let server;
  let port;
  const seen = {};
  let pattern;

  const routes = {
    '/ok': (req, res) => res.end('ok'),
    '/throw': () => { throw new Error('sync boom'); },
    '/reject': () => Promise.reject(new Error('async boom')),
    '/count': (req, res) => {
      let bytes = 0;
      let chunks = 0;
      let allBuffers = true;
      const hash = crypto.createHash('sha256');
      req.on('data', (c) => {
        if (!Buffer.isBuffer(c)) allBuffers = false;
        bytes += c.length;
        chunks++;
        hash.update(c);
      });
      req.on('end', () => {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ bytes, chunks, allBuffers, sha256: hash.digest('hex') }));
      });
    },
    '/backpressure': (req, res) => {
      const total = 24 * 1024 * 1024;
      const chunk = 64 * 1024;
      let offset = 0;
      const info = { writeTypes: new Set(), sawFalse: false, drains: 0, falseAt: -1 };
      seen.backpressure = info;
      res.setHeader('Content-Type', 'application/octet-stream');
      const pump = () => {
        while (offset < total) {
          const ok = res.write(pattern(offset, chunk));
          info.writeTypes.add(typeof ok);
          offset += chunk;
          if (ok === false) {
            if (!info.sawFalse) info.falseAt = offset;
            info.sawFalse = true;
            res.once('drain', () => { info.drains++; pump(); });
            return;
          }
        }
        res.end();
      };
      pump();
    },
    '/headers': (req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({
        headers: req.headers,
        method: req.method,
        url: req.url,
        httpVersion: req.httpVersion,
        httpVersionMajor: req.httpVersionMajor,
      }));
    },
    '/res-api': (req, res) => {
      const s = {};
      s.statusCodeDefault = res.statusCode;
      s.headersSentBefore = res.headersSent;
      s.writableEndedBefore = res.writableEnded;
      s.hasThen = 'then' in res;
      s.hasSet = 'set' in res;
      res.setHeader('X-A', '1');
      s.getA = res.getHeader('x-a');
      s.hasA = res.hasHeader('X-a');
      res.setHeader('X-B', ['1', '2']);
      res.setHeader('X-C', 'c');
      s.headersBeforeRemove = { ...res.getHeaders() };
      res.removeHeader('x-a');
      s.hasAAfterRemove = res.hasHeader('X-A');
      s.getAAfterRemove = res.getHeader('X-A');
      s.names = res.getHeaderNames().slice().sort();
      res.statusCode = 202;
      res.statusMessage = 'Accepted Custom';
      res.once('finish', () => { s.finished = true; });
      const ret = res.end('done');
      s.endReturnsRes = ret === res;
      s.headersSentAfter = res.headersSent;
      s.writableEndedAfter = res.writableEnded;
      seen.resApi = s;
    },
  };

  before(async () => {
    pattern = (offset, length) => {
      const buf = Buffer.allocUnsafe(length);
      for (let i = 0; i < length; i++) buf[i] = ((offset + i) * 13) & 0xff;
      return buf;
    };
    server = new HttpServer(fakeApp((req, res) => {
      const route = routes[req.url.split('?')[0]];
      if (!route) { res.statusCode = 404; res.end('no route'); return undefined; }
      return route(req, res);
    }), { hostname: '127.0.0.1', port: 0, protocol: 'http' });
    port = await start(server);
  });

  after(async () => {
    if (server) await stop(server).catch(() => {});
  });

  it('a handler that throws synchronously gives 500, the next request is fine', async () => {
    const r = await request({ port, path: '/throw' });
    assert.equal(r.status, 500);
    const ok = await request({ port, path: '/ok' });
    assert.equal(ok.status, 200);
    assert.equal(ok.text(), 'ok');
  });

  it('a handler returning a rejected promise gives 500', async () => {
    const r = await request({ port, path: '/reject' });
    assert.equal(r.status, 500);
    const ok = await request({ port, path: '/ok' });
    assert.equal(ok.status, 200);
  });

  it('streams a 3 MB chunked request body to req "data" events', async () => {
    const data = crypto.randomBytes(3 * 1024 * 1024);
    const chunks = [];
    for (let o = 0; o < data.length; o += 16 * 1024) chunks.push(data.subarray(o, o + 16 * 1024));
    const r = await request({ port, method: 'POST', path: '/count', body: chunks, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(r.status, 200);
    const body = r.json();
    assert.equal(body.bytes, data.length);
    assert.equal(body.sha256, sha256(data));
    assert.equal(body.allBuffers, true, 'chunks are Buffers');
    assert.ok(body.chunks > 1, `body arrived in ${body.chunks} chunks (streamed, not buffered whole)`);
  });

  it('res.write signals backpressure (returns false) and emits "drain"', async () => {
    const total = 24 * 1024 * 1024;
    const received = await new Promise((resolve, reject) => {
      const req = http.get({ port, host: '127.0.0.1', path: '/backpressure', agent: false }, (res) => {
        assert.equal(res.statusCode, 200);
        // read slowly at first so the server's buffers fill up
        res.pause();
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
        setTimeout(() => res.resume(), 300);
      });
      req.on('error', reject);
      req.setTimeout(20000, () => req.destroy(new Error('timeout')));
    });
    const info = seen.backpressure;
    assert.ok(info, 'handler ran');
    assert.deepEqual([...info.writeTypes], ['boolean'], 'write() returns a boolean');
    assert.equal(info.sawFalse, true, 'write() returned false at some point');
    assert.ok(info.falseAt < total, `first false after ${info.falseAt} bytes`);
    assert.ok(info.drains >= 1, `'drain' emitted ${info.drains} times`);
    assert.equal(received.length, total);
    assert.equal(sha256(received), sha256(pattern(0, total)));
  });

  it('req.headers are lower-case, set-cookie is an array, duplicates are joined', async () => {
    const r = await request({
      port,
      path: '/headers?q=1',
      headers: {
        'X-Mixed-Case': 'Value',
        'Set-Cookie': ['a=1', 'b=2'],
        'X-Dup': ['one', 'two'],
        Cookie: 'k=v',
      },
    });
    assert.equal(r.status, 200);
    const b = r.json();
    for (const key of Object.keys(b.headers)) assert.equal(key, key.toLowerCase(), `header key ${key}`);
    assert.equal(b.headers['x-mixed-case'], 'Value');
    assert.deepEqual(b.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(b.headers['x-dup'], 'one, two');
    assert.equal(b.headers.cookie, 'k=v');
    assert.equal(b.headers.host, `127.0.0.1:${port}`);
    assert.equal(b.method, 'GET');
    assert.equal(b.url, '/headers?q=1');
    assert.equal(b.httpVersion, '1.1');
    assert.equal(b.httpVersionMajor, 1);
  });

  it('res header API, headersSent and writableEnded behave like node', async () => {
    const r = await request({ port, path: '/res-api' });
    assert.equal(r.status, 202);
    assert.equal(r.statusMessage, 'Accepted Custom');
    assert.equal(r.text(), 'done');
    assert.equal(r.headers['x-a'], undefined, 'removed header not sent');
    assert.equal(r.headers['x-b'], '1, 2');
    assert.equal(r.headers['x-c'], 'c');
    const s = seen.resApi;
    assert.ok(s, 'handler ran');
    assert.equal(s.statusCodeDefault, 200);
    assert.equal(s.headersSentBefore, false);
    assert.equal(s.writableEndedBefore, false);
    assert.equal(s.hasThen, false, 'res has no then (would make it a thenable)');
    assert.equal(s.hasSet, false, 'res has no set (cookies would misuse it)');
    assert.equal(s.getA, '1');
    assert.equal(s.hasA, true);
    assert.deepEqual(s.headersBeforeRemove, { 'x-a': '1', 'x-b': ['1', '2'], 'x-c': 'c' });
    assert.equal(s.hasAAfterRemove, false);
    assert.equal(s.getAAfterRemove, undefined);
    assert.deepEqual(s.names, ['x-b', 'x-c']);
    assert.equal(s.endReturnsRes, true, 'end() returns res');
    assert.equal(s.headersSentAfter, true);
    assert.equal(s.writableEndedAfter, true);
    await sleep(20);
    assert.equal(s.finished, true, "'finish' emitted");
  });

  it('pendingRequests is back to 0 when idle', async () => {
    const m = server.connectionPool.getMetrics();
    assert.equal(typeof m.pendingRequests, 'number');
    assert.equal(m.pendingRequests, 0);
  });
});

describe('HttpServer requestTimeout', () => {
  it('a handler that never answers is ended by requestTimeout with 503', async () => {
    const server = new HttpServer(fakeApp((req, res) => {
      if (req.url === '/ok') res.end('ok');
      // any other path: never answer
    }), { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: { requestTimeout: 300 } });
    const port = await start(server);
    try {
      const t0 = Date.now();
      const r = await request({ port, path: '/never', timeout: 10000 });
      const elapsed = Date.now() - t0;
      assert.equal(r.status, 503);
      assert.ok(elapsed >= 250, `answered after ${elapsed} ms, requestTimeout is 300 ms`);
      assert.ok(elapsed < 5000, `answered after ${elapsed} ms`);
      const ok = await request({ port, path: '/ok' });
      assert.equal(ok.status, 200);
      assert.equal(ok.text(), 'ok');
      const m = server.connectionPool.getMetrics();
      assert.equal(m.pendingRequests, 0, 'the timed-out request is no longer pending');
    } finally {
      await stop(server).catch(() => {});
    }
  });
});
