'use strict';
// createServer: node's http.Server surface on the native core (listen binds before it returns,
// close, the connection sweeps, getConnections, ref/unref, the limit properties, bind errors),
// checked side by side with node's own http server where node is the reference. Clients: node's
// http/https/http2 and undici.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { spawn, spawnSync } = require('node:child_process');
const { once } = require('node:events');
const undici = require('undici');
const WebSocket = require('ws');
const { createServer, createSecureServer } = require('..');
const { request, httpsRequest, keepAliveAgent, h2connect, h2request, h2close, withTimeout, REPO_ROOT } = require('./helpers');
const { getCerts, hasOpenssl } = require('./certs');

const servers = new Set();
/** A createServer server, closed after the file (whatever the test left). */
function serve(listener, options) {
  const server = options ? createServer(options, listener) : createServer(listener);
  servers.add(server);
  return server;
}
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    if (s.listening) await new Promise((r) => s.close(r));
  }
});

const hello = (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello ${req.method} ${req.url}`);
};

/** A promise and its resolve function. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('createServer: listen and address', () => {
  it('binds before listen() returns: address() is right at once, listening on the next tick (as node)', async () => {
    const server = serve(hello);
    let calledBack = false;
    const returned = server.listen(0, '127.0.0.1', () => {
      calledBack = true;
    });
    assert.equal(returned, server);
    const addr = server.address();
    assert.equal(server.listening, true);
    assert.equal(addr.address, '127.0.0.1');
    assert.equal(addr.family, 'IPv4');
    assert.ok(addr.port > 0);
    assert.equal(calledBack, false, "'listening' comes on a later tick");
    await once(server, 'listening');
    assert.equal(calledBack, true);
    const res = await request({ port: addr.port, path: '/a?b=1' });
    assert.equal(res.status, 200);
    assert.equal(res.text(), 'hello GET /a?b=1');
  });

  it('listen() with no host serves every interface (:: dual-stack), like node', async () => {
    const ours = serve(hello).listen(0);
    const node = http.createServer(hello).listen(0);
    try {
      assert.deepEqual({ ...ours.address(), port: 0 }, { ...node.address(), port: 0 });
      const res = await request({ port: ours.address().port, host: '127.0.0.1' });
      assert.equal(res.status, 200);
    } finally {
      node.close();
      await new Promise((r) => ours.close(r));
    }
  });

  it("a port in use is an 'error' event with node's code, errno, syscall, address, port and message", async () => {
    const holder = http.createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const { port } = holder.address();
    try {
      const nodeErr = await new Promise((resolve) => http.createServer().on('error', resolve).listen(port, '127.0.0.1'));
      const server = serve(hello);
      const errored = once(server, 'error');
      let listened = false;
      server.listen(port, '127.0.0.1', () => {
        listened = true;
      });
      assert.equal(server.listening, false);
      const [err] = await errored;
      for (const key of ['code', 'errno', 'syscall', 'address', 'port', 'message']) assert.equal(err[key], nodeErr[key], key);
      assert.equal(listened, false);
      assert.equal(server.address(), null);
    } finally {
      holder.close();
    }
  });

  it("an address this machine does not have: EADDRNOTAVAIL as node's (no port in the message for port 0)", async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here; nothing is sent anywhere.
    const pick = (e) => ({ code: e.code, errno: e.errno, syscall: e.syscall, address: e.address, port: e.port, message: e.message });
    const nodeErr = await new Promise((resolve) => http.createServer().on('error', resolve).listen(0, '192.0.2.1'));
    const ours = await new Promise((resolve) => serve(hello).on('error', resolve).listen(0, '192.0.2.1'));
    assert.deepEqual(pick(ours), pick(nodeErr));
  });

  it('bad ports throw ERR_SOCKET_BAD_PORT at once, as node; paths and handles throw ERR_NOT_SUPPORTED', () => {
    for (const options of [{ port: 65536 }, { port: -1 }, { port: 1.5 }, { port: 'abc1' }, { port: true }, { host: '127.0.0.1' }]) {
      const nodeThrew = (() => {
        try {
          http.createServer().listen(options);
        } catch (e) {
          return e;
        }
      })();
      assert.throws(() => serve(hello).listen(options), (e) => e.code === nodeThrew.code && e.constructor === nodeThrew.constructor && e.message === nodeThrew.message, JSON.stringify(options));
    }
    assert.throws(() => serve(hello).listen(65536), { code: 'ERR_SOCKET_BAD_PORT' });
    assert.throws(() => serve(hello).listen('/tmp/koatty-serve.sock'), { code: 'ERR_NOT_SUPPORTED' });
    assert.throws(() => serve(hello).listen({ path: '/tmp/koatty-serve.sock' }), { code: 'ERR_NOT_SUPPORTED' });
    assert.throws(() => serve(hello).listen({ fd: 3 }), { code: 'ERR_NOT_SUPPORTED' });
  });

  it('listen twice throws ERR_SERVER_ALREADY_LISTEN; after close it listens again', async () => {
    const server = serve(hello).listen(0, '127.0.0.1');
    assert.throws(() => server.listen(0), { code: 'ERR_SERVER_ALREADY_LISTEN' });
    await new Promise((r) => server.close(r));
    assert.equal(server.address(), null);
    server.listen(0, '127.0.0.1');
    const res = await request({ port: server.address().port });
    assert.equal(res.status, 200);
  });
});

describe('createServer: close and the connection sweeps', () => {
  it('close() on a server that is not listening: the callback gets ERR_SERVER_NOT_RUNNING, as node', async () => {
    const nodeErr = await new Promise((r) => http.createServer().close(r));
    const err = await new Promise((r) => serve(hello).close(r));
    assert.equal(err.code, nodeErr.code);
    assert.equal(err.message, nodeErr.message);
  });

  it('close() under load: every request in flight completes, then close, then the port refuses', async () => {
    const IN_FLIGHT = 40;
    let arrived = 0;
    const allArrived = deferred();
    const gate = deferred();
    const release = gate.resolve;
    const server = serve(async (req, res) => {
      if (++arrived === IN_FLIGHT) allArrived.resolve();
      await gate.promise;
      res.end(`done ${req.url}`);
    }).listen(0, '127.0.0.1');
    const { port } = server.address();
    const pool = new undici.Pool(`http://127.0.0.1:${port}`, { connections: IN_FLIGHT, pipelining: 1 });
    try {
      const requests = Array.from({ length: IN_FLIGHT }, (_, i) => pool.request({ path: `/${i}`, method: 'GET' }).then(async (r) => ({ status: r.statusCode, body: await r.body.text(), connection: r.headers.connection })));
      await withTimeout(allArrived.promise, 10000, 'requests in the handler');
      let closed = false;
      const closing = new Promise((r) => server.close(() => {
        closed = true;
        r();
      }));
      assert.equal(server.listening, false);
      assert.equal(server.address(), null);
      release();
      const results = await withTimeout(Promise.all(requests), 15000, 'requests in flight');
      assert.deepEqual(results.map((r) => r.status), Array(IN_FLIGHT).fill(200));
      assert.deepEqual(results.map((r) => r.body), Array.from({ length: IN_FLIGHT }, (_, i) => `done /${i}`));
      // Unlike node (README): responses in flight at close() end their connection.
      assert.deepEqual(results.map((r) => r.connection), Array(IN_FLIGHT).fill('close'));
      await withTimeout(closing, 10000, "'close'");
      assert.equal(closed, true);
      await assert.rejects(request({ port }), { code: 'ECONNREFUSED' });
    } finally {
      release();
      await pool.destroy();
    }
  });

  it('closeIdleConnections() closes idle keep-alive connections and spares busy ones; getConnections counts', async () => {
    const slowArrived = deferred();
    const server = serve((req, res) => {
      if (req.url === '/slow') {
        slowArrived.resolve(() => res.end('slow'));
        return;
      }
      res.end('fast');
    }).listen(0, '127.0.0.1');
    const { port } = server.address();
    const idleAgent = keepAliveAgent();
    const busyAgent = keepAliveAgent();
    try {
      const first = await request({ port, agent: idleAgent });
      assert.equal(first.text(), 'fast');
      const slow = request({ port, agent: busyAgent, path: '/slow' });
      const release = await withTimeout(slowArrived.promise, 5000, 'slow request in the handler');
      const counted = await new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
      assert.equal(counted, 2);
      const idleSocket = Object.values(idleAgent.freeSockets)[0][0];
      const idleClosed = once(idleSocket, 'close');
      server.closeIdleConnections();
      await withTimeout(idleClosed, 5000, 'idle connection closed');
      release();
      const slowDone = await slow;
      assert.equal(slowDone.text(), 'slow');
      const again = await request({ port, agent: busyAgent });
      assert.equal(again.reusedSocket, true, 'the busy connection stayed open');
      assert.equal(server.listening, true);
    } finally {
      idleAgent.destroy();
      busyAgent.destroy();
    }
  });

  it('closeIdleConnections() leaves a connection that has not sent a request yet, as node: its request is answered', async () => {
    const server = serve((req, res) => res.end('fresh')).listen(0, '127.0.0.1');
    const { port } = server.address();
    const socket = net.connect(port, '127.0.0.1');
    try {
      await once(socket, 'connect');
      await new Promise((resolve) => setTimeout(resolve, 50));
      server.closeIdleConnections();
      await new Promise((resolve) => setTimeout(resolve, 50));
      let data = '';
      socket.setEncoding('latin1');
      socket.on('data', (d) => { data += d; });
      socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      await withTimeout(once(socket, 'close'), 5000, 'the answer and the close');
      assert.match(data, /^HTTP\/1\.1 200 /);
      assert.match(data, /fresh$/);
    } finally {
      socket.destroy();
    }
  });

  it('closeAllConnections() drops every connection, requests in flight too; the server keeps accepting', async () => {
    const arrived = deferred();
    const server = serve((req, res) => {
      if (req.url === '/hang') {
        arrived.resolve();
        return;
      }
      res.end('ok');
    }).listen(0, '127.0.0.1');
    const { port } = server.address();
    const hanging = request({ port, path: '/hang' });
    await withTimeout(arrived.promise, 5000, 'hanging request in the handler');
    server.closeAllConnections();
    await assert.rejects(hanging, (e) => ['ECONNRESET', 'UND_ERR_SOCKET'].includes(e.code) || /socket hang up/.test(e.message));
    const res = await request({ port });
    assert.equal(res.text(), 'ok');
  });

  it('unref(): a listening server does not keep the process alive; ref() does (as node)', () => {
    const script = (call) => `const s = require(${JSON.stringify(REPO_ROOT)}).createServer((q, r) => r.end()); s.listen(0, '127.0.0.1'); ${call}`;
    const unrefd = spawnSync(process.execPath, ['-e', script('s.unref();')], { timeout: 10000 });
    assert.equal(unrefd.status, 0, `unref'd server should let the process exit (${unrefd.signal})\n${unrefd.stderr}`);
    const refd = spawnSync(process.execPath, ['-e', script('s.unref(); s.ref();')], { timeout: 1500 });
    assert.equal(refd.signal, 'SIGTERM', 'a referenced server keeps the process alive');
  });

  // A timer keeps the child alive until the head is in; the rest of the request comes 600 ms
  // later, when nothing but the connection keeps the child's event loop alive (as a socket does
  // in node). A small Content-Length body is collected natively before the handler runs.
  for (const [kind, first, rest] of [
    ['a chunked body', 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n', '5\r\nworld\r\n0\r\n\r\n'],
    ['a Content-Length body', 'Content-Length: 10\r\n\r\nhello', 'world'],
  ]) {
    it(`unref(): an open connection keeps the process alive until its request is answered (${kind}, as node)`, async () => {
      const child = spawn(process.execPath, ['-e', `
        const s = require(${JSON.stringify(REPO_ROOT)}).createServer((req, res) => {
          let n = 0;
          req.on('data', (c) => { n += c.length; });
          req.on('end', () => res.end('ok ' + n));
        });
        s.listen(0, '127.0.0.1', () => { s.unref(); console.log(s.address().port); });
        setTimeout(() => {}, 300);`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      const port = Number(await withTimeout(new Promise((resolve) => child.stdout.once('data', (d) => resolve(String(d).trim()))), 10000, 'the child listening'));
      const socket = net.connect(port, '127.0.0.1');
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('error', () => {});
      const answered = new Promise((resolve) => socket.on('data', (d) => { answer += d; if (answer.includes('ok 10')) resolve(); }));
      await once(socket, 'connect');
      socket.write(`POST / HTTP/1.1\r\nHost: x\r\n${first}`);
      await new Promise((resolve) => setTimeout(resolve, 600));
      socket.write(rest);
      await withTimeout(answered, 5000, `the answer (child: ${stderr})`);
      socket.end();
      const { code } = await withTimeout(exited, 10000, 'the child exiting once the connection closed');
      assert.equal(code, 0, stderr);
    });
  }
});

describe('createServer: the limit properties', () => {
  it("defaults are node's", () => {
    const ours = serve(hello);
    const node = http.createServer();
    for (const key of ['timeout', 'keepAliveTimeout', 'headersTimeout', 'requestTimeout', 'maxHeadersCount', 'maxRequestsPerSocket']) {
      assert.equal(ours[key], node[key], key);
    }
  });

  it('keepAliveTimeout set on the server applies to new requests (an idle connection closes after it)', async () => {
    const server = serve(hello);
    server.keepAliveTimeout = 300;
    server.listen(0, '127.0.0.1');
    // A raw client: node's agent would act on the Keep-Alive hint itself.
    const socket = net.connect(server.address().port, '127.0.0.1');
    try {
      await once(socket, 'connect');
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const [first] = await once(socket, 'data');
      assert.match(first.toString(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*Keep-Alive: timeout=0\r\n/);
      const t0 = Date.now();
      await withTimeout(once(socket, 'close'), 4000, 'idle connection closed by the server');
      const idle = Date.now() - t0;
      assert.ok(idle >= 250 && idle < 2000, `closed after ${idle} ms (default: 5000)`);
    } finally {
      socket.destroy();
    }
  });

  it('timeout closes a connection that never sends a byte, as node destroys its socket (keepAliveTimeout 0)', async () => {
    const server = serve(hello);
    server.timeout = 500;
    server.keepAliveTimeout = 0;
    server.listen(0, '127.0.0.1');
    const socket = net.connect(server.address().port, '127.0.0.1');
    try {
      await once(socket, 'connect');
      const t0 = Date.now();
      // Before session 12 it waited for headersTimeout (60 s): the timeout began with the first byte.
      await withTimeout(once(socket, 'close'), 4000, 'silent connection closed by the server');
      const silent = Date.now() - t0;
      assert.ok(silent >= 400 && silent < 2500, `closed after ${silent} ms`);
    } finally {
      socket.destroy();
    }
  });

  it('requestTimeout 0 is no limit (node), and a request past requestTimeout is answered by the server', async () => {
    let wait = 300;
    const server = serve((req, res) => setTimeout(() => res.end('late'), wait), { requestTimeout: 0 }).listen(0, '127.0.0.1');
    const { port } = server.address();
    assert.equal((await request({ port })).text(), 'late');
    server.requestTimeout = 100;
    await new Promise((r) => setImmediate(r));
    wait = 1000;
    const res = await request({ port });
    assert.ok(res.status >= 400, `status ${res.status}`);
  });
});

describe('createServer: maxRequestsPerSocket', () => {
  it('the last request allowed on a connection gets Connection: close, as node; the next one opens a new connection', async () => {
    const server = serve((req, res) => res.end(String(req.socket.remotePort)));
    server.maxRequestsPerSocket = 2;
    server.listen(0, '127.0.0.1');
    const agent = keepAliveAgent();
    try {
      const port = server.address().port;
      const first = await request({ port, agent });
      assert.equal(first.headers.connection, 'keep-alive');
      const second = await request({ port, agent });
      assert.equal(second.headers.connection, 'close');
      assert.equal(second.text(), first.text(), 'same connection');
      const third = await request({ port, agent });
      assert.notEqual(third.text(), first.text(), 'a new connection');
    } finally {
      agent.destroy();
    }
  });
});

describe('createServer: fetch with undici', () => {
  it('routing, a JSON body, a streamed body, and keep-alive over one connection', async () => {
    const remotePorts = new Set();
    const server = serve((req, res) => {
      remotePorts.add(req.socket.remotePort);
      if (req.method === 'POST') {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString());
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ got: body, length: req.headers['content-length'], distinct: req.headersDistinct['content-type'] }));
        });
        return;
      }
      res.write('a');
      setImmediate(() => res.end('b'));
    }).listen(0, '127.0.0.1');
    const agent = new undici.Agent({ connections: 1 });
    try {
      const base = `http://127.0.0.1:${server.address().port}`;
      const posted = await undici.fetch(`${base}/json`, { method: 'POST', body: JSON.stringify({ x: 1 }), headers: { 'content-type': 'application/json' }, dispatcher: agent });
      assert.deepEqual(await posted.json(), { got: { x: 1 }, length: '7', distinct: ['application/json'] });
      const big = 'x'.repeat(200000);
      const streamedUp = await undici.fetch(`${base}/big`, { method: 'POST', body: JSON.stringify(big), dispatcher: agent });
      assert.equal((await streamedUp.json()).got.length, big.length);
      const streamed = await undici.fetch(`${base}/stream`, { dispatcher: agent });
      assert.equal(streamed.headers.get('transfer-encoding'), 'chunked');
      assert.equal(await streamed.text(), 'ab');
      assert.equal(remotePorts.size, 1, 'one keep-alive connection');
    } finally {
      await agent.close();
    }
  });
});

describe('createServer: the connection pool', () => {
  it('getMetrics() has the figures ConnectionMetrics types (averageLatency, uptime, http1), as connectionPool.getMetrics()', async () => {
    const server = serve(hello).listen(0, '127.0.0.1');
    const agent = keepAliveAgent();
    try {
      for (let i = 0; i < 3; i++) assert.equal((await request({ port: server.address().port, agent })).status, 200);
      const m = server.getMetrics();
      assert.equal(typeof m.averageLatency, 'number');
      assert.equal(typeof m.uptime, 'number');
      assert.equal(m.requestsTotal, 3);
      assert.equal(m.http1.keepAliveReuses, 2);
      assert.equal(server.connectionPool.getConnections().length, 1);
    } finally {
      agent.destroy();
    }
  });
});

describe('createServer: events', () => {
  it("'checkContinue' gets an Expect: 100-continue request instead of 'request'; the client gets 100 Continue and sends its body", async () => {
    const seen = [];
    const server = serve((req, res) => {
      seen.push('request');
      res.end('plain');
    });
    server.on('checkContinue', (req, res) => {
      seen.push('checkContinue');
      res.writeContinue();
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => res.end(`got ${Buffer.concat(chunks)}`));
    });
    server.listen(0, '127.0.0.1');
    const body = await new Promise((resolve, reject) => {
      const req = http.request({ port: server.address().port, host: '127.0.0.1', method: 'POST', headers: { expect: '100-continue', 'content-length': 5 } }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve(text));
      });
      req.on('continue', () => req.end('hello'));
      req.on('error', reject);
    });
    assert.equal(body, 'got hello');
    assert.deepEqual(seen, ['checkContinue']);
  });

  it("'checkContinue' can refuse the upload: the handler sees the head before any 100 Continue, as node (a small body was read whole first)", async () => {
    const server = serve(hello);
    let readBody = false;
    server.on('checkContinue', (req, res) => {
      req.on('data', () => { readBody = true; });
      res.statusCode = 417;
      res.end('no');
    });
    server.listen(0, '127.0.0.1');
    const raw = await new Promise((resolve, reject) => {
      const socket = net.connect(server.address().port, '127.0.0.1', () => {
        socket.write('POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n');
      });
      let text = '';
      socket.on('data', (d) => {
        text += d;
        if (text.includes('\r\n\r\nno')) { socket.destroy(); resolve(text); }
      });
      socket.on('error', reject);
      setTimeout(() => { socket.destroy(); resolve(text); }, 3000).unref();
    });
    assert.match(raw, /^HTTP\/1\.1 417 /, raw);
    assert.doesNotMatch(raw, /100 Continue/, 'no 100 Continue before the refusal');
    assert.equal(readBody, false);
  });

  it("another expectation: 417 without a 'checkExpectation' listener, the listener with one (as node)", async () => {
    const server = serve(hello).listen(0, '127.0.0.1');
    const node = http.createServer(hello).listen(0, '127.0.0.1');
    await once(node, 'listening');
    try {
      const ask = (port) => request({ port, headers: { expect: 'something-else' } });
      const [ours, theirs] = [await ask(server.address().port), await ask(node.address().port)];
      assert.equal(ours.status, 417);
      assert.equal(ours.status, theirs.status);
      server.on('checkExpectation', (req, res) => res.end(`expected ${req.headers.expect}`));
      assert.equal((await ask(server.address().port)).text(), 'expected something-else');
      assert.equal((await request({ port: server.address().port })).text(), 'hello GET /', 'requests without Expect are unaffected');
    } finally {
      node.close();
    }
  });

  it("'clientError' for a malformed request head, with node's code (the native side answered it)", async () => {
    const ours = serve(hello).listen(0, '127.0.0.1');
    const node = http.createServer(hello).listen(0, '127.0.0.1');
    await once(node, 'listening');
    /** The 'clientError' `server` emits for `raw`: `{ code, remote }`. */
    const clientError = async (server, raw) => {
      const heard = once(server, 'clientError');
      const socket = net.connect(server.address().port, '127.0.0.1');
      socket.on('error', () => {});
      socket.write(raw);
      const [err, errSocket] = await withTimeout(heard, 5000, `'clientError' for ${JSON.stringify(raw)}`);
      socket.destroy();
      return { code: err.code, remote: errSocket.remoteAddress };
    };
    try {
      // (FOOBAR: a method node's parser does not know; re-probe, session 16.)
      for (const raw of ['GET / HTTP/1.1\r\nBad Header\r\n\r\n', 'GET / HTTP/9.9\r\nHost: x\r\n\r\n', `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20000)}\r\n\r\n`, 'FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n']) {
        assert.deepEqual(await clientError(ours, raw), await clientError(node, raw), JSON.stringify(raw.slice(0, 30)));
      }
    } finally {
      node.close();
    }
  });

  it("a 'request' listener that throws: 500 and 'handlerError' (node would crash the process)", async () => {
    const server = serve(() => {
      throw new Error('listener broke');
    });
    const reported = once(server, 'handlerError');
    server.listen(0, '127.0.0.1');
    const res = await request({ port: server.address().port });
    assert.equal(res.status, 500);
    const [err, req] = await reported;
    assert.equal(err.message, 'listener broke');
    assert.equal(req.url, '/');
  });
});

describe('createServer: WebSocket on the same port', () => {
  it("webSocket: true emits 'websocket' with a ws-compatible socket; plain requests still reach 'request'", async () => {
    const server = serve(hello, { webSocket: true });
    server.on('websocket', (socket, req) => {
      socket.on('message', (data, isBinary) => socket.send(`${req.url} ${data}`, { binary: isBinary }));
    });
    server.listen(0, '127.0.0.1');
    const { port } = server.address();
    const client = new WebSocket(`ws://127.0.0.1:${port}/chat`);
    await once(client, 'open');
    client.send('hi');
    const [reply] = await once(client, 'message');
    assert.equal(reply.toString(), '/chat hi');
    client.close();
    await once(client, 'close');
    assert.equal((await request({ port, path: '/plain' })).text(), 'hello GET /plain');
  });
});

describe('createSecureServer', { skip: !hasOpenssl() && 'openssl CLI not available' }, () => {
  it('HTTPS with node-style key/cert/ca options; node https client verifies the chain', async () => {
    const c = getCerts();
    const server = createSecureServer({ key: c.server.keyPem, cert: Buffer.from(c.server.certPem) }, (req, res) => {
      res.end(`secure ${req.socket.encrypted === true} ${req.url}`);
    });
    servers.add(server);
    server.listen(0, '127.0.0.1');
    const res = await httpsRequest({ port: server.address().port, path: '/s', tls: { ca: c.ca.certPem, servername: 'localhost' } });
    assert.equal(res.status, 200);
    assert.equal(res.text(), 'secure true /s');
  });

  it('allowHTTP1: HTTP/2 for h2 clients and HTTP/1.1 for the others, as http2.createSecureServer', async () => {
    const c = getCerts();
    const server = createSecureServer({ key: c.server.keyPem, cert: c.server.certPem, allowHTTP1: true }, (req, res) => {
      res.end(`v${req.httpVersion}`);
    });
    servers.add(server);
    server.listen(0, '127.0.0.1');
    const { port } = server.address();
    const session = await h2connect(`https://localhost:${port}`, { ca: c.ca.certPem });
    try {
      const h2 = await h2request(session, { path: '/' });
      assert.equal(h2.body.toString(), 'v2.0');
    } finally {
      await h2close(session);
    }
    const h1 = await httpsRequest({ port, tls: { ca: c.ca.certPem, servername: 'localhost' } });
    assert.equal(h1.text(), 'v1.1');
  });

  it('requestCert + rejectUnauthorized: false with webSocket: clients without a valid certificate get in, as node and ws', async () => {
    const c = getCerts();
    const server = createSecureServer({
      key: c.server.keyPem, cert: c.server.certPem, ca: c.ca.certPem, requestCert: true, rejectUnauthorized: false, webSocket: true,
    }, (req, res) => res.end(`authorized ${req.socket.authorized}`));
    server.on('websocket', (ws, req) => ws.send(`authorized ${req.socket.authorized}`));
    servers.add(server);
    server.listen(0, '127.0.0.1');
    const { port } = server.address();
    const tls = { ca: c.ca.certPem, servername: 'localhost' };
    assert.equal((await httpsRequest({ port, tls })).text(), 'authorized false');
    const withCert = await httpsRequest({ port, tls: { ...tls, key: c.client.keyPem, cert: c.client.certPem } });
    assert.equal(withCert.text(), 'authorized true');
    const ws = new WebSocket(`wss://localhost:${port}/`, { ca: c.ca.certPem });
    const [message] = await withTimeout(once(ws, 'message'), 5000, 'wss message');
    assert.equal(message.toString(), 'authorized false');
    ws.terminate();
  });

  it('bad TLS material throws from createSecureServer, coded', () => {
    assert.throws(() => createSecureServer({ key: 'not a key', cert: 'not a cert' }), { code: 'ERR_TLS_CONFIG' });
    assert.throws(() => createSecureServer({ pfx: Buffer.alloc(1) }), { code: 'ERR_NOT_SUPPORTED' });
  });
});
