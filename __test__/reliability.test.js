'use strict';
// Reliability and security suite, fast part (issue 9): hostile and broken clients against
// HttpServer / HttpsServer / Http2Server / WsServer used directly (fake apps), with raw net/tls
// sockets where node's clients refuse to send bad input. Every case checks a definite outcome (a
// status, a close code, or a clean close), that the server keeps serving, and that
// `connectionPool.getMetrics().pendingRequests` returns to 0. The long soak is reliability/soak.js;
// the cases and their outcomes are listed in docs/RELIABILITY.md.
//
// Tests named "FINDING: …" assert the behaviour the brief or decisions.md asks for where the server
// currently does something else; docs/RELIABILITY.md describes each with a minimal reproduction.
//
// Run alone: node --test __test__/reliability.test.js
//
// The same file is the child-process server of the memory and event-loop tests when
// KOATTY_RELIABILITY_CHILD=1 (an RSS figure or a blocked event loop must not be this process's).

if (process.env.KOATTY_RELIABILITY_CHILD === '1') {
  childServerMain();
} else {
  defineTests();
}

// ---------------------------------------------------------------------------------------------------
// Child-process server: HttpServer with native endpoints, /ok, /read-body, /block?ms=N (busy loop),
// /stream?size=N (backpressure-aware). IPC: { cmd: 'stats' } → { rss, fds, metrics, streamed, … }.

function childServerMain() {
  const fs = require('fs');
  const { HttpServer } = require('..');
  const state = { streamed: 0, streamsOpen: 0, streamsClosed: 0 };
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const handler = (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/ok') return res.end('ok');
    if (url.pathname === '/read-body') {
      // Reads the upload without an 'error' listener, as `req.pipe(dest)` does.
      req.on('data', () => {});
      req.on('end', () => res.end('read'));
      return undefined;
    }
    if (url.pathname === '/block') {
      const until = Date.now() + Number(url.searchParams.get('ms') || 1500);
      while (Date.now() < until) { /* block the event loop */ }
      return res.end('blocked');
    }
    if (url.pathname === '/stream') {
      const size = Number(url.searchParams.get('size') || 64 * 1024 * 1024);
      let sent = 0;
      let done = false;
      state.streamsOpen++;
      res.on('close', () => {
        if (done) return;
        done = true;
        state.streamsOpen--;
        state.streamsClosed++;
      });
      res.setHeader('Content-Type', 'application/octet-stream');
      const pump = () => {
        while (sent < size && !res.destroyed) {
          const ok = res.write(chunk);
          sent += chunk.length;
          state.streamed += chunk.length;
          if (!ok) { res.once('drain', pump); return; }
        }
        if (!res.destroyed) res.end();
      };
      return pump();
    }
    res.statusCode = 404;
    return res.end('no route');
  };
  const server = new HttpServer({ callback: () => handler }, {
    hostname: '127.0.0.1',
    port: 0,
    protocol: 'http',
    nativeEndpoints: true,
    connectionPool: { requestTimeout: 60000 },
  });
  server.on('handlerError', () => {});
  server.Start(() => {
    process.send({ event: 'listening', port: server.server.address().port });
  });
  process.on('message', (msg) => {
    if (!msg || typeof msg !== 'object') return;
    if (msg.cmd === 'stats') {
      let fds = -1;
      try { fds = fs.readdirSync('/proc/self/fd').length; } catch { /* not Linux */ }
      const m = server.connectionPool.getMetrics();
      process.send({
        id: msg.id,
        rss: process.memoryUsage().rss,
        fds,
        pendingRequests: m.pendingRequests,
        activeConnections: m.activeConnections,
        bytesOut: m.bytesOut,
        streamed: state.streamed,
        streamsOpen: state.streamsOpen,
        streamsClosed: state.streamsClosed,
      });
    } else if (msg.cmd === 'stop') {
      server.gracefulShutdown({ drainDelay: 0, timeout: 2000 }).finally(() => process.exit(0));
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------------

function defineTests() {
  const { describe, it, before, after } = require('node:test');
  const assert = require('node:assert/strict');
  const { spawn } = require('child_process');
  const crypto = require('crypto');
  const http2 = require('http2');
  const net = require('net');
  const tls = require('tls');
  const { HttpServer, HttpsServer, Http2Server, WsServer } = require('..');
  const { getCerts } = require('./certs');
  const { request, httpsRequest, pollUntil, withTimeout, sleep, failIfKeptAlive } = require('./helpers');

  failIfKeptAlive(__filename);

  const certs = getCerts();
  const CA = certs.ca.certPem;
  const SSL = { mode: 'manual', key: certs.server.keyPem, cert: certs.server.certPem };

  // ---- server helpers ------------------------------------------------------------------------------

  function start(server, timeout = 5000) {
    return withTimeout(new Promise((resolve, reject) => {
      server.once('error', reject);
      server.Start(() => {
        server.off('error', reject);
        resolve(server.server.address().port);
      });
    }), timeout, `${server.constructor.name}.Start`);
  }

  /** Quick stop for tests: no drain delay, `timeout` ms for what is left, then force. */
  function stop(server, timeout = 2000) {
    return withTimeout(server.gracefulShutdown({ drainDelay: 0, timeout }), 10000, `${server.constructor.name} shutdown`);
  }

  function quiet(server) {
    const errors = [];
    server.on('handlerError', (err) => errors.push(err));
    return errors;
  }

  const pending = (server) => server.connectionPool.getMetrics().pendingRequests;

  /** pendingRequests reaches 0 within `ms` (the server may still be finishing a close). */
  async function assertNoPending(server, what = '', ms = 3000) {
    const n = await pollUntil(() => pending(server), (v) => v === 0, { timeoutMs: ms, intervalMs: 20 });
    assert.equal(n, 0, `pendingRequests back to 0 ${what}`);
  }

  // ---- raw socket helpers --------------------------------------------------------------------------

  /**
   * Opens a TCP connection, writes `send` (a string/Buffer, or an array of { data, delay } steps), and
   * collects what the server sends until it closes or `timeoutMs` passes.
   * Resolves { data, text, closedByPeer, ms, error }.
   */
  function exchange(port, send, { timeoutMs = 3000 } = {}) {
    return new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const chunks = [];
      let error = null;
      let timedOut = false;
      const t0 = Date.now();
      socket.on('connect', async () => {
        const steps = Array.isArray(send) ? send : [{ data: send }];
        for (const step of steps) {
          if (step.delay) await sleep(step.delay);
          if (socket.destroyed) return;
          socket.write(step.data);
        }
      });
      socket.on('data', (d) => chunks.push(d));
      socket.on('error', (e) => { error = e; });
      const timer = setTimeout(() => { timedOut = true; socket.destroy(); }, timeoutMs);
      socket.on('close', () => {
        clearTimeout(timer);
        const data = Buffer.concat(chunks);
        resolve({ data, text: data.toString('latin1'), closedByPeer: !timedOut, ms: Date.now() - t0, error });
      });
    });
  }

  /** Status codes of the HTTP/1.x responses in `text`, in order. */
  function statuses(text) {
    return [...text.matchAll(/^HTTP\/1\.[01] (\d{3})/gm)].map((m) => Number(m[1]));
  }

  // =================================================================================================
  // 1. Malformed HTTP/1.1

  describe('reliability: malformed HTTP/1.1', () => {
    let server;
    let port;
    let calls;
    let errors;

    before(async () => {
      calls = [];
      server = new HttpServer({
        callback: () => (req, res) => {
          calls.push(`${req.method} ${req.url}`);
          const url = new URL(req.url, 'http://x');
          if (url.pathname === '/delay') {
            // Answer later the earlier the request came: order must still be kept.
            const ms = Number(url.searchParams.get('ms'));
            let n = 0;
            req.on('data', (c) => { n += c.length; });
            req.on('end', () => setTimeout(() => res.end(`id=${url.searchParams.get('id')} body=${n}\n`), ms));
            return;
          }
          let n = 0;
          req.on('data', (c) => { n += c.length; });
          req.on('end', () => res.end(`ok ${req.url} body=${n}\n`));
          req.on('error', () => {
            // An error-aware handler answers 400 itself when it can.
            if (!res.headersSent && !res.destroyed) {
              res.statusCode = 400;
              res.end('bad body');
            }
          });
        },
      }, {
        hostname: '127.0.0.1',
        port: 0,
        protocol: 'http',
        connectionPool: { maxBodySize: 1024, requestTimeout: 20000, headersTimeout: 5000, keepAliveTimeout: 5000 },
      });
      errors = quiet(server);
      port = await start(server);
    });

    after(async () => {
      if (server) await stop(server).catch(() => {});
    });

    const H = 'Host: x\r\n';
    // name, bytes, expected first status, whether the handler may see the request
    const rejected = [
      ['request line without method/target/version', 'GARBAGE\r\n\r\n', 400],
      ['request line with only a method', 'GET\r\n\r\n', 400],
      ['unknown HTTP version', `GET / HTTP/9.9\r\n${H}\r\n`, 400],
      ['invalid method token', `G@T / HTTP/1.1\r\n${H}\r\n`, 400],
      ['space inside the request target', `GET /a b HTTP/1.1\r\n${H}\r\n`, 400],
      ['NUL in the request target', `GET /\x00 HTTP/1.1\r\n${H}\r\n`, 400],
      ['header name with a space', `GET / HTTP/1.1\r\n${H}Bad Name: v\r\n\r\n`, 400],
      ['header name with a separator', `GET / HTTP/1.1\r\n${H}Ba(d: v\r\n\r\n`, 400],
      ['whitespace between header name and colon', `GET / HTTP/1.1\r\n${H}X-A : v\r\n\r\n`, 400],
      ['header line without a colon', `GET / HTTP/1.1\r\n${H}NoColon\r\n\r\n`, 400],
      ['NUL in a header value', `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`, 400],
      ['bare CR in a header value', `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, 400],
      ['obsolete line folding', `GET / HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, 400],
      ['conflicting Content-Length headers', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde`, 400],
      ['Content-Length list with different values', `POST / HTTP/1.1\r\n${H}Content-Length: 3, 5\r\n\r\nabcde`, 400],
      ['negative Content-Length', `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\nabc`, 400],
      ['Content-Length with a sign', `POST / HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`, 400],
      ['Content-Length overflowing 64 bits', `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999999\r\n\r\nabc`, 400],
      ['unknown transfer coding', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, 400],
      ['chunked not the final transfer coding', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, 400],
      ['HTTP/0.9 simple request', 'GET /\r\n', 400],
      ['HTTP/0.9 simple request without CRLF', 'GET /index.html\n', 400],
    ];

    for (const [name, bytes, expected] of rejected) {
      it(`${name} → ${expected}, connection closed, handler not called`, async () => {
        const before = calls.length;
        const r = await exchange(port, bytes);
        assert.equal(r.closedByPeer, true, `the server closed the connection (after ${r.ms} ms)`);
        assert.deepEqual(statuses(r.text), [expected], `one ${expected} answer; got ${JSON.stringify(r.text.slice(0, 120))}`);
        assert.match(r.text, /\r\nconnection: close\r\n/i);
        assert.equal(calls.length, before, 'the handler never saw the request');
        await assertNoPending(server);
      });
    }

    it('duplicate identical Content-Length headers are accepted as one (RFC 9112 §6.3)', async () => {
      const r = await exchange(port, `POST /dupcl HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`);
      assert.deepEqual(statuses(r.text), [200]);
      assert.match(r.text, /ok \/dupcl body=3/);
      await assertNoPending(server);
    });

    for (const [name, head] of [
      ['Content-Length then Transfer-Encoding: chunked', `Content-Length: 6\r\nTransfer-Encoding: chunked\r\n`],
      ['Transfer-Encoding: chunked then Content-Length', `Transfer-Encoding: chunked\r\nContent-Length: 6\r\n`],
    ]) {
      it(`smuggling (${name}): chunked wins, one answer, connection closed, smuggled request never served`, async () => {
        const before = calls.length;
        const smuggled = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;
        const r = await exchange(port, `POST /front HTTP/1.1\r\n${H}${head}\r\n0\r\n\r\n${smuggled}`);
        assert.equal(r.closedByPeer, true, 'connection closed after the answer (RFC 9112 §6.3)');
        assert.deepEqual(statuses(r.text), [200], `exactly one answer: ${JSON.stringify(r.text)}`);
        assert.match(r.text, /ok \/front body=0/);
        assert.match(r.text, /\r\nconnection: close\r\n/i);
        assert.deepEqual(calls.slice(before), ['POST /front'], 'the smuggled request never reached the handler');
        await assertNoPending(server);
      });
    }

    for (const [name, body] of [
      ['non-hex chunk size', 'ZZ\r\nabc\r\n0\r\n\r\n'],
      ['negative chunk size', '-1\r\nabc\r\n0\r\n\r\n'],
      ['chunk size overflowing 64 bits', 'FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n'],
      ['chunk data longer than its size', '3\r\nabcXX\r\n0\r\n\r\n'],
    ]) {
      it(`bad chunked body (${name}): error-aware handler answers 400, connection closed`, async () => {
        const r = await exchange(port, `POST /chunks HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${body}`);
        assert.equal(r.closedByPeer, true, 'the server closed the connection');
        assert.deepEqual(statuses(r.text), [400], JSON.stringify(r.text.slice(0, 120)));
        await assertNoPending(server);
      });
    }

    it('oversized headers (many) → 431, handler not called', async () => {
      const before = calls.length;
      const many = Array.from({ length: 200 }, (_, i) => `X-H${i}: ${'v'.repeat(100)}\r\n`).join('');
      const r = await exchange(port, `GET / HTTP/1.1\r\n${H}${many}\r\n`);
      assert.equal(r.closedByPeer, true);
      assert.deepEqual(statuses(r.text), [431]);
      assert.equal(calls.length, before);
      await assertNoPending(server);
    });

    it('150 small header fields within maxHeaderSize are served (node accepts up to maxHeadersCount, 2000)', async () => {
      const fields = Array.from({ length: 150 }, (_, i) => `X-H${i}: v\r\n`).join('');
      const r = await exchange(port, `GET /fields HTTP/1.1\r\n${H}${fields}Connection: close\r\n\r\n`);
      assert.deepEqual(statuses(r.text), [200], `got ${JSON.stringify(r.text.slice(0, 60))}`);
      await assertNoPending(server);
    });

    it('more header fields than connectionPool.maxHeadersCount → 431, handler not called', async () => {
      await server.updateConfig({ connectionPool: { maxHeadersCount: 20 } });
      try {
        const before = calls.length;
        const fields = Array.from({ length: 30 }, (_, i) => `X-H${i}: v\r\n`).join('');
        const r = await exchange(port, `GET /fields HTTP/1.1\r\n${H}${fields}\r\n`);
        assert.deepEqual(statuses(r.text), [431], `got ${JSON.stringify(r.text.slice(0, 60))}`);
        assert.equal(calls.length, before);
        const ok = await exchange(port, `GET /fields HTTP/1.1\r\n${H}X-A: 1\r\nConnection: close\r\n\r\n`);
        assert.deepEqual(statuses(ok.text), [200]);
      } finally {
        await server.updateConfig({ connectionPool: { maxHeadersCount: 2000 } });
      }
      await assertNoPending(server);
    });

    it('oversized headers (one 20 KB value) → 431', async () => {
      const r = await exchange(port, `GET / HTTP/1.1\r\n${H}X-Big: ${'v'.repeat(20000)}\r\n\r\n`);
      assert.equal(r.closedByPeer, true);
      assert.deepEqual(statuses(r.text), [431]);
      await assertNoPending(server);
    });

    it('a request line just under maxHeaderSize (9 KB target) is served', async () => {
      const target = '/' + 'a'.repeat(9000);
      const r = await exchange(port, `GET ${target} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
      assert.deepEqual(statuses(r.text), [200]);
      await assertNoPending(server);
    });

    it('oversized request line (20 KB target, over maxHeaderSize) → 431, as node answers', async () => {
      const before = calls.length;
      const r = await exchange(port, `GET /${'a'.repeat(20000)} HTTP/1.1\r\n${H}\r\n`);
      assert.equal(r.closedByPeer, true);
      assert.equal(calls.length, before, 'handler not called');
      await assertNoPending(server);
      // Decided: 431, as node answers and as README's maxHeaderSize row says (the request line counts
      // toward the head limit); issue 9 allows 414/431.
      assert.deepEqual(statuses(r.text), [431], `got ${JSON.stringify(r.text.slice(0, 60))}`);
    });

    it('HTTP/1.1 request without Host → 400 (RFC 9112 §3.2; node answers 400)', async () => {
      const before = calls.length;
      const r = await exchange(port, 'GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n');
      await assertNoPending(server);
      assert.deepEqual(statuses(r.text), [400], `got ${JSON.stringify(r.text.slice(0, 60))}`);
      assert.equal(calls.length, before, 'handler not called');
    });

    it('HTTP/1.0 request is answered with HTTP/1.0 and closed', async () => {
      const r = await exchange(port, 'GET /ten HTTP/1.0\r\n\r\n');
      assert.equal(r.closedByPeer, true);
      assert.match(r.text, /^HTTP\/1\.0 200/);
      await assertNoPending(server);
    });

    it('body over maxBodySize with Content-Length → 413 before the body is sent, upload stopped', async () => {
      const before = calls.length;
      const socket = net.connect({ host: '127.0.0.1', port });
      let text = '';
      socket.on('data', (d) => { text += d.toString('latin1'); });
      const errorSeen = new Promise((resolve) => socket.on('error', resolve));
      const closed = new Promise((resolve) => socket.on('close', resolve));
      await new Promise((resolve) => socket.on('connect', resolve));
      socket.write(`POST /upload HTTP/1.1\r\n${H}Content-Length: ${10 * 1024 * 1024}\r\n\r\n`);
      await pollUntil(() => text, (t) => t.includes('\r\n\r\n'), { timeoutMs: 2000 });
      assert.deepEqual(statuses(text), [413], 'answered before any body byte was sent');
      assert.match(text, /\r\nconnection: close\r\n/i);
      // Keep uploading: the server has stopped reading, the connection ends (FIN, then EPIPE/RST).
      let written = 0;
      const chunk = Buffer.alloc(64 * 1024, 0x62);
      const deadline = Date.now() + 3000;
      while (!socket.destroyed && Date.now() < deadline && written < 10 * 1024 * 1024) {
        if (!socket.write(chunk)) await Promise.race([new Promise((r) => socket.once('drain', r)), sleep(100)]);
        written += chunk.length;
      }
      await Promise.race([closed, errorSeen, sleep(3000)]);
      assert.ok(socket.destroyed || socket.readableEnded, 'the server ended the connection');
      socket.destroy();
      assert.equal(calls.length, before, 'handler not called for a declared oversized body');
      await assertNoPending(server);
    });

    it('chunked body crossing maxBodySize → 413, handler gets ERR_BODY_TOO_LARGE, connection closed', async () => {
      const chunk = `${(800).toString(16)}\r\n${'a'.repeat(800)}\r\n`;
      const r = await exchange(port, [{ data: `POST /chunked-upload HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n` }, { data: chunk }, { data: chunk, delay: 20 }]);
      assert.equal(r.closedByPeer, true);
      assert.deepEqual(statuses(r.text), [413]);
      await assertNoPending(server);
    });

    it('pipelined requests (10, with bodies, slowest first) are answered in order on one connection', async () => {
      let bytes = '';
      for (let i = 0; i < 10; i++) {
        const body = 'x'.repeat(i);
        bytes += `POST /delay?id=${i}&ms=${(10 - i) * 15} HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n${i === 9 ? 'Connection: close\r\n' : ''}\r\n${body}`;
      }
      const r = await exchange(port, bytes, { timeoutMs: 5000 });
      assert.equal(r.closedByPeer, true);
      assert.deepEqual(statuses(r.text), Array(10).fill(200));
      const ids = [...r.text.matchAll(/id=(\d+) body=(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
      assert.deepEqual(ids, Array.from({ length: 10 }, (_, i) => [i, i]), 'answers in request order, bodies intact');
      await assertNoPending(server);
    });

    it('the server still serves normally and no handler error was raised by the bad inputs', async () => {
      const r = await request({ port, path: '/after' });
      assert.equal(r.status, 200);
      assert.equal(errors.length, 0, errors.map((e) => e.message).join('; '));
      await assertNoPending(server);
    });
  });

  describe('reliability: malformed chunked body and a handler that waits for "end" only', () => {
    it('FINDING: bad chunk size → the request is ended by the server (400 or close) at once, not held until requestTimeout', async () => {
      const server = new HttpServer({
        callback: () => (req, res) => {
          req.on('data', () => {});
          req.on('end', () => res.end('ok'));
          // The handler never answers a broken body (node would not need it to: it answers 400 and
          // closes). The empty 'error' listener keeps finding F0 (the process crash below) out of this test.
          req.on('error', () => {});
        },
      }, { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: { requestTimeout: 20000 } });
      quiet(server);
      const port = await start(server);
      try {
        const r = await exchange(port, `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n`, { timeoutMs: 2500 });
        const stillPending = pending(server);
        // node: 400 Bad Request + close at once. Here: req gets 'aborted' and 'error', but the request
        // stays pending (connection open, in-flight slot held) until requestTimeout (503).
        assert.equal(r.closedByPeer, true, `connection still open after ${r.ms} ms with ${stillPending} pending request(s)`);
        assert.ok(statuses(r.text).every((s) => s === 400), JSON.stringify(r.text.slice(0, 80)));
        await assertNoPending(server, 'after the broken body', 500);
      } finally {
        await stop(server, 300).catch(() => {});
      }
    });
  });

  // =================================================================================================
  // 2. Slow and abusive clients

  describe('reliability: slow and abusive clients', () => {
    let server;
    let port;

    before(async () => {
      server = new HttpServer({
        callback: () => (req, res) => {
          let n = 0;
          req.on('data', (c) => { n += c.length; });
          req.on('end', () => res.end(`ok ${n}`));
          req.on('error', () => {});
        },
      }, {
        hostname: '127.0.0.1',
        port: 0,
        protocol: 'http',
        connectionPool: { headersTimeout: 600, keepAliveTimeout: 600, requestTimeout: 1000, maxConnections: 6 },
      });
      quiet(server);
      port = await start(server);
    });

    after(async () => {
      if (server) await stop(server).catch(() => {});
    });

    it('slowloris (one header byte per 100 ms) is closed at headersTimeout; others are served meanwhile', async () => {
      const head = `GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(60)}`;
      const steps = [...head].map((c) => ({ data: c, delay: 100 }));
      const slow = exchange(port, steps, { timeoutMs: 4000 });
      await sleep(200);
      const ok = await request({ port, path: '/meanwhile', headers: { Connection: 'close' } });
      assert.equal(ok.status, 200);
      const r = await slow;
      assert.equal(r.closedByPeer, true, 'closed by the server');
      assert.ok(r.ms >= 500 && r.ms < 1500, `closed after ${r.ms} ms (headersTimeout 600)`);
      await assertNoPending(server);
    });

    it('slowloris gets 408 Request Timeout before the close (decisions.md §18: headersTimeout → 408 and close)', async () => {
      const r = await exchange(port, [{ data: 'GET / HTTP/1.1\r\nHost: x\r\n' }, { data: 'X-A: 1\r\n', delay: 200 }], { timeoutMs: 3000 });
      assert.equal(r.closedByPeer, true);
      await assertNoPending(server);
      assert.deepEqual(statuses(r.text), [408], `got ${JSON.stringify(r.text)} (a silent close)`);
    });


    it('an idle keep-alive connection is closed at the timer without a 408 (only a begun head gets one)', async () => {
      const r = await exchange(port, [{ data: 'GET /a HTTP/1.1\r\nHost: x\r\n\r\n' }], { timeoutMs: 3000 });
      assert.equal(r.closedByPeer, true);
      assert.deepEqual(statuses(r.text), [200], `got ${JSON.stringify(r.text)}`);
    });

    it('slow body POST (one byte per 100 ms) → 408 at requestTimeout, connection closed, pending 0', async () => {
      const steps = [{ data: 'POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n' }];
      for (let i = 0; i < 30; i++) steps.push({ data: 'a', delay: 100 });
      const r = await exchange(port, steps, { timeoutMs: 4000 });
      assert.equal(r.closedByPeer, true);
      assert.ok(r.ms >= 900 && r.ms < 2500, `closed after ${r.ms} ms (requestTimeout 1000)`);
      assert.deepEqual(statuses(r.text), [408]);
      await assertNoPending(server);
    });

    it('idle connections up to maxConnections are held; past it → 503 + Retry-After: 1 and close', async () => {
      const rejectedBefore = server.connectionPool.getMetrics().rejectedConnections;
      const results = [];
      for (let i = 0; i < 9; i++) {
        const p = exchange(port, Buffer.alloc(0), { timeoutMs: 3000 });
        results.push(p);
        await sleep(15);
      }
      const r = await Promise.all(results);
      const busy = r.filter((x) => statuses(x.text)[0] === 503);
      const idle = r.filter((x) => x.text === '');
      assert.equal(busy.length, 3, `3 of 9 turned away: ${JSON.stringify(r.map((x) => x.text.slice(0, 30)))}`);
      assert.equal(idle.length, 6, '6 held (then closed idle by the header timer)');
      for (const b of busy) {
        assert.match(b.text, /\r\nRetry-After: 1\r\n/i);
        assert.ok(b.ms < 500, `turned away at once (${b.ms} ms)`);
      }
      for (const i of idle) assert.ok(i.closedByPeer && i.ms >= 500, `idle connection closed by the server after ${i.ms} ms`);
      const m = server.connectionPool.getMetrics();
      assert.equal(m.rejectedConnections - rejectedBefore, 3);
      await pollUntil(() => server.connectionPool.getMetrics().activeConnections, (n) => n === 0, { timeoutMs: 2000 });
      const ok = await request({ port, path: '/after-flood', headers: { Connection: 'close' } });
      assert.equal(ok.status, 200, 'a new connection is served once the idle ones are gone');
      await assertNoPending(server);
    });

  });

  describe('reliability: abrupt client resets', () => {
    /** A server whose handler reads uploads (answering at 'end') and streams /drip until closed. */
    async function resetServer(connectionPool = {}) {
      const state = { calls: 0, aborted: 0, resClosed: 0, dripTimers: 0 };
      const server = new HttpServer({
        callback: () => (req, res) => {
          state.calls++;
          if (req.url === '/drip') {
            state.dripTimers++;
            const timer = setInterval(() => res.write(Buffer.alloc(16 * 1024, 0x63)), 5);
            res.on('close', () => { clearInterval(timer); state.dripTimers--; state.resClosed++; });
            return;
          }
          if (req.url === '/ok') { res.end('ok'); return; }
          req.on('aborted', () => { state.aborted++; });
          res.on('close', () => { if (!res.writableFinished) state.resClosed++; });
          if (req.url === '/noread') return; // never reads the body, never answers
          let n = 0;
          req.on('data', (c) => { n += c.length; });
          req.on('end', () => res.end(`ok ${n}`));
          req.on('error', () => {});
        },
      }, { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: { requestTimeout: 20000, ...connectionPool } });
      quiet(server);
      const port = await start(server);
      return { server, port, state };
    }

    /**
     * `n` uploads to `path` that send part of a streamed body (over the 64 KiB inline limit); once the
     * handler has all of them, every client resets its connection (RST).
     */
    async function partialUploads(port, state, n, path = '/upload', head = 'Content-Length: 100000') {
      const before = state.calls;
      const sockets = Array.from({ length: n }, () => {
        const s = net.connect({ host: '127.0.0.1', port }, () => {
          s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\n${head}\r\n\r\n`);
          // Less than the 64 KiB read ahead of a handler that does not read: a reset is noticed
          // while a read is outstanding (past it, as on node, at requestTimeout or when the
          // handler reads or answers).
          s.write(head.startsWith('Transfer') ? `8000\r\n${'a'.repeat(0x8000)}\r\n` : Buffer.alloc(60000, 0x61));
        });
        s.on('error', () => {});
        return s;
      });
      await pollUntil(() => state.calls - before, (c) => c === n, { timeoutMs: 3000 });
      assert.equal(state.calls - before, n, 'every upload reached the handler');
      await sleep(50);
      for (const s of sockets) s.resetAndDestroy();
    }

    it('abrupt resets mid-response (20 streaming responses, RST after the first bytes) end the handlers', async () => {
      const { server, port, state } = await resetServer();
      try {
        await Promise.all(Array.from({ length: 20 }, () => new Promise((resolve) => {
          const s = net.connect({ host: '127.0.0.1', port }, () => s.write('GET /drip HTTP/1.1\r\nHost: x\r\n\r\n'));
          s.once('data', () => { s.resetAndDestroy(); resolve(); });
          s.on('error', () => {});
        })));
        await assertNoPending(server, 'after mid-response resets');
        await pollUntil(() => state.resClosed, (n) => n === 20, { timeoutMs: 2000 });
        assert.equal(state.resClosed, 20, "every streaming response saw 'close'");
        assert.equal(state.dripTimers, 0, 'no handler keeps writing');
        const ok = await request({ port, path: '/ok', headers: { Connection: 'close' } });
        assert.equal(ok.status, 200);
      } finally {
        await stop(server, 300).catch(() => {});
      }
    });

    it('a reset while the handler is still working on a body-less request ends it at once', async () => {
      const { server, port, state } = await resetServer();
      try {
        const sockets = Array.from({ length: 20 }, () => {
          const s = net.connect({ host: '127.0.0.1', port }, () => s.write('GET /noread HTTP/1.1\r\nHost: x\r\n\r\n'));
          s.on('error', () => {});
          return s;
        });
        await pollUntil(() => state.calls, (n) => n === 20, { timeoutMs: 2000 });
        assert.equal(pending(server), 20, 'all 20 requests are with the handler');
        for (const s of sockets) s.resetAndDestroy();
        await assertNoPending(server, 'after resets of waiting requests', 2000);
        await pollUntil(() => state.resClosed, (n) => n === 20, { timeoutMs: 2000 });
        assert.equal(state.resClosed, 20, "every response saw 'close'");
      } finally {
        await stop(server, 300).catch(() => {});
      }
    });

    for (const [name, path, head] of [
      ['Content-Length body, handler reading it', '/upload', 'Content-Length: 100000'],
      ['chunked body, handler reading it', '/upload', 'Transfer-Encoding: chunked'],
      ['Content-Length body, handler not reading it', '/noread', 'Content-Length: 100000'],
    ]) {
      it(`FINDING: abrupt resets mid-request (20 partial uploads, ${name}) leave nothing pending`, async () => {
        const { server, port, state } = await resetServer();
        try {
          await partialUploads(port, state, 20, path, head);
          const left = await pollUntil(() => pending(server), (v) => v === 0, { timeoutMs: 2000 });
          // Today: the request stays pending, the connection counted active and res never emits
          // 'close' until requestTimeout (20 s here, 300 s by default); req does get 'aborted'
          // when the handler reads the body.
          assert.equal(left, 0, `${left} requests still pending 2 s after their clients reset (res 'close' seen ${state.resClosed}×, req 'aborted' ${state.aborted}×)`);
          // The native count drops before the 'close' events have crossed to this thread: wait for them.
          await pollUntil(() => state.resClosed, (n) => n === 20, { timeoutMs: 2000 });
          assert.equal(state.resClosed, 20, "every response saw 'close'");
          assert.equal(server.connectionPool.getMetrics().activeConnections, 0);
        } finally {
          await stop(server, 300).catch(() => {});
        }
      });
    }

    it('FINDING: reset uploads do not hold maxInFlight slots (maxInFlight 4, 4 reset uploads, then a GET)', async () => {
      const { server, port, state } = await resetServer({ maxInFlight: 4 });
      try {
        await partialUploads(port, state, 4);
        const t0 = Date.now();
        const r = await request({ port, path: '/ok', timeout: 3000 }).catch((err) => ({ status: `no answer (${err.message})` }));
        assert.equal(r.status, 200, `GET after the resets: ${r.status} after ${Date.now() - t0} ms`);
      } finally {
        await stop(server, 300).catch(() => {});
      }
    });
  });

  // A server in a child process: its RSS is not this process's, and blocking its event loop does not
  // block the test runner.
  async function startChild() {
    const env = { ...process.env, KOATTY_RELIABILITY_CHILD: '1' };
    delete env.NODE_TEST_CONTEXT;
    const child = spawn(process.execPath, [__filename], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let output = '';
    const keep = (d) => { output = (output + d).slice(-4000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const listening = await withTimeout(new Promise((resolve, reject) => {
      child.on('message', (m) => { if (m && m.event === 'listening') resolve(m); });
      child.once('exit', (code) => reject(new Error(`child exited with ${code} before listening`)));
    }), 10000, 'child server listening');
    let nextId = 1;
    const stats = () => withTimeout(new Promise((resolve) => {
      const id = nextId++;
      const onMsg = (m) => { if (m && m.id === id) { child.off('message', onMsg); resolve(m); } };
      child.on('message', onMsg);
      child.send({ cmd: 'stats', id });
    }), 5000, 'child stats');
    const stopChild = async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send({ cmd: 'stop' });
      // (A timer cleared once the child exits: a pending one kept this process alive for 5 s
      // after the last test, which failIfKeptAlive reports.)
      let timer;
      await Promise.race([exited, new Promise((resolve) => { timer = setTimeout(resolve, 5000); })]);
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
    };
    return { child, port: listening.port, stats, stop: stopChild, output: () => output };
  }

  describe('reliability: a client that never reads a large streamed response (child-process server)', () => {
    it('server RSS and the bytes produced stay bounded; the stream ends when the client goes away', async (t) => {
      const srv = await startChild();
      try {
        for (let i = 0; i < 3; i++) assert.equal((await request({ port: srv.port, path: '/ok' })).status, 200);
        const base = await srv.stats();
        const socket = net.connect({ host: '127.0.0.1', port: srv.port });
        socket.on('error', () => {});
        await new Promise((resolve) => socket.on('connect', resolve));
        socket.pause(); // never read
        socket.write('GET /stream?size=536870912 HTTP/1.1\r\nHost: x\r\n\r\n'); // 512 MiB
        await sleep(2500);
        const mid = await srv.stats();
        await sleep(500);
        const later = await srv.stats();
        const growth = later.rss - base.rss;
        assert.equal(later.streamsOpen, 1, 'the response is still open (blocked on backpressure)');
        assert.ok(later.streamed < 48 * 1024 * 1024, `handler produced ${(later.streamed / 1048576).toFixed(1)} MiB before backpressure stopped it`);
        assert.ok(later.streamed - mid.streamed <= 1024 * 1024, `no further progress while unread (${later.streamed - mid.streamed} bytes in 0.5 s)`);
        t.diagnostic(`unread 512 MiB response: handler produced ${(later.streamed / 1048576).toFixed(1)} MiB, server RSS ${(base.rss / 1048576).toFixed(1)} → ${(later.rss / 1048576).toFixed(1)} MiB`);
        assert.ok(growth < 64 * 1024 * 1024, `server RSS grew by ${(growth / 1048576).toFixed(1)} MiB`);
        socket.destroy();
        const end = await pollUntil(() => srv.stats(), (s) => s.streamsOpen === 0 && s.pendingRequests === 0, { timeoutMs: 3000 });
        assert.equal(end.streamsOpen, 0, "the handler's response saw 'close'");
        assert.equal(end.pendingRequests, 0);
      } finally {
        await srv.stop();
      }
    });
  });

  // =================================================================================================
  // 3. HTTP/2 abuse (raw frames over h2c, node's http2 client over TLS)

  const h2 = (() => {
    const { PREFACE, frame, onFrames } = require('./h2-frames');
    const int = (value, prefixBits, flags) => {
      const max = (1 << prefixBits) - 1;
      if (value < max) return Buffer.from([flags | value]);
      const out = [flags | max];
      let v = value - max;
      while (v >= 128) { out.push((v & 0x7f) | 0x80); v >>= 7; }
      out.push(v);
      return Buffer.from(out);
    };
    const str = (s) => { const b = Buffer.from(s); return Buffer.concat([int(b.length, 7, 0), b]); };
    const indexed = (i) => int(i, 7, 0x80);
    /** Literal header with incremental indexing, new name (enters the HPACK dynamic table). */
    const literalIndexed = (name, value) => Buffer.concat([Buffer.from([0x40]), str(name), str(value)]);
    const literal = (name, value) => Buffer.concat([Buffer.from([0x00]), str(name), str(value)]);
    /** :method GET, :scheme http, :path, :authority localhost. */
    const get = (path = '/') => Buffer.concat([
      indexed(2), indexed(6),
      path === '/' ? indexed(4) : Buffer.concat([Buffer.from([0x04]), str(path)]),
      Buffer.from([0x01]), str('localhost'),
    ]);
    const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
    const TYPE = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 };
    const FLAG = { END_STREAM: 1, ACK: 1, END_HEADERS: 4 };
    const headers = (stream, block, flags = FLAG.END_STREAM | FLAG.END_HEADERS) => frame(TYPE.HEADERS, flags, stream, block);
    const rst = (stream, code = 8) => frame(TYPE.RST_STREAM, 0, stream, u32(code));
    const windowUpdate = (stream, inc) => frame(TYPE.WINDOW_UPDATE, 0, stream, u32(inc));
    const settings = () => frame(TYPE.SETTINGS, 0, 0);
    const ping = () => frame(TYPE.PING, 0, 0, Buffer.alloc(8));

    /** A raw h2c session: sends the preface, acks SETTINGS, records frames, GOAWAY and RST codes. */
    function session(port, secure = false) {
      const s = secure
        ? tls.connect({ host: '127.0.0.1', port, ca: CA, servername: 'localhost', ALPNProtocols: ['h2'] })
        : net.connect({ host: '127.0.0.1', port });
      const st = { s, frames: 0, goaway: null, rstCodes: [], headers: [], pings: 0, closed: false, settings: 0 };
      onFrames(s, (type, flags, stream, payload) => {
        st.frames++;
        if (type === TYPE.GOAWAY) st.goaway = { lastStream: payload.readUInt32BE(0), code: payload.readUInt32BE(4), debug: payload.subarray(8).toString() };
        else if (type === TYPE.RST_STREAM) st.rstCodes.push(payload.readUInt32BE(0));
        else if (type === TYPE.HEADERS) st.headers.push(stream);
        else if (type === TYPE.PING && (flags & FLAG.ACK)) st.pings++;
        else if (type === TYPE.SETTINGS && !(flags & FLAG.ACK)) { st.settings++; s.write(frame(TYPE.SETTINGS, FLAG.ACK, 0)); }
      });
      s.on('error', (e) => { st.error = e; });
      st.closedP = new Promise((resolve) => s.on('close', () => { st.closed = true; resolve(); }));
      st.ready = new Promise((resolve) => s.on(secure ? 'secureConnect' : 'connect', () => { s.write(Buffer.concat([PREFACE, settings()])); resolve(); }));
      return st;
    }
    return { frame, indexed, literal, literalIndexed, get, headers, rst, windowUpdate, ping, settings, session, TYPE, FLAG };
  })();

  const H2_ENHANCE_YOUR_CALM = 0xb;
  const H2_REFUSED_STREAM = 0x7;
  const H2_FLOW_CONTROL_ERROR = 0x3;

  describe('reliability: HTTP/2 abuse', () => {
    let server;
    let port;
    let tlsServer;
    let tlsPort;
    let calls;

    const app = {
      callback: () => (req, res) => {
        calls++;
        if (req.url === '/slow') { setTimeout(() => res.end('slow'), 200); return; }
        res.end('ok');
      },
    };
    const protocolSpecific = { maxConcurrentStreams: 10, maxHeaderListSize: 8192 };

    before(async () => {
      calls = 0;
      server = new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', h2c: true, connectionPool: { protocolSpecific } });
      tlsServer = new Http2Server(app, { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: SSL, connectionPool: { protocolSpecific } });
      quiet(server);
      quiet(tlsServer);
      port = await start(server);
      tlsPort = await start(tlsServer);
    });

    after(async () => {
      await Promise.all([server && stop(server).catch(() => {}), tlsServer && stop(tlsServer).catch(() => {})]);
    });

    async function h2Works(p = port, secure = false) {
      const session = http2.connect(`${secure ? 'https' : 'http'}://127.0.0.1:${p}`, secure ? { ca: CA } : {});
      session.on('error', () => {});
      try {
        return await withTimeout(new Promise((resolve, reject) => {
          const s = session.request({ ':path': '/' });
          let body = '';
          s.on('data', (d) => { body += d; });
          s.on('end', () => resolve(body));
          s.on('error', reject);
        }), 5000, 'h2 request after abuse');
      } finally {
        session.destroy();
      }
    }

    for (const secure of [false, true]) {
      it(`rapid reset over ${secure ? 'TLS (h2)' : 'h2c'} (5000 HEADERS+RST_STREAM pairs in one burst) → GOAWAY ENHANCE_YOUR_CALM, handler work bounded`, async (t) => {
        const target = secure ? tlsServer : server;
        const before = calls;
        const st = h2.session(secure ? tlsPort : port, secure);
        await st.ready;
        const frames = [];
        for (let i = 0, sid = 1; i < 5000; i++, sid += 2) frames.push(h2.headers(sid, h2.get('/slow')), h2.rst(sid));
        st.s.write(Buffer.concat(frames));
        await Promise.race([st.closedP, sleep(3000)]);
        assert.equal(st.closed, true, 'session closed');
        if (!st.goaway && st.error) {
          // The server's close while our burst is still unread makes the kernel reset the
          // connection; the GOAWAY on its way can then be lost (always seen over TLS as EPIPE, and
          // now and then over h2c under load). The session must still be closed by the server.
          assert.ok(st.error, 'closed by the server (EPIPE/ECONNRESET on our side)');
        } else {
          assert.ok(st.goaway, 'GOAWAY sent');
          assert.equal(st.goaway.code, H2_ENHANCE_YOUR_CALM, JSON.stringify(st.goaway));
        }
        t.diagnostic(`rapid reset ${secure ? 'TLS' : 'h2c'}: GOAWAY ${st.goaway ? `${st.goaway.code} ${st.goaway.debug}` : '(lost with the reset)'}, ${calls - before} of 5000 streams reached the handler`);
        assert.ok(calls - before < 100, `${calls - before} requests reached the handler out of 5000`);
        await assertNoPending(target);
        assert.equal(await h2Works(secure ? tlsPort : port, secure), 'ok');
      });
    }

    it("node's http2 client opening and cancelling 2000 streams: bounded handler work, nothing pending", async (t) => {
      const before = calls;
      const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: CA });
      session.on('error', () => {});
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      for (let i = 0; i < 2000 && !session.destroyed && !session.closed; i++) {
        try {
          const s = session.request({ ':path': '/slow' });
          s.on('error', () => {});
          s.close(http2.constants.NGHTTP2_CANCEL);
        } catch { break; }
      }
      await sleep(500);
      session.destroy();
      // node's client never puts more than the advertised number of streams on the wire, so most of
      // the cancelled streams never reach the server.
      t.diagnostic(`node client request+cancel: ${calls - before} of 2000 streams reached the handler`);
      assert.ok(calls - before <= 500, `${calls - before} requests reached the handler out of 2000`);
      await assertNoPending(tlsServer, '', 5000);
      assert.equal(await h2Works(tlsPort, true), 'ok');
    });

    it('more streams than maxConcurrentStreams (30 at once, limit 10): 10 served, 20 REFUSED_STREAM', async () => {
      const st = h2.session(port);
      await st.ready;
      const frames = [];
      for (let i = 0, sid = 1; i < 30; i++, sid += 2) frames.push(h2.headers(sid, h2.get('/slow')));
      st.s.write(Buffer.concat(frames));
      await pollUntil(() => st.headers.length + st.rstCodes.length, (n) => n >= 30, { timeoutMs: 3000 });
      assert.equal(st.headers.length, 10, 'responses for the first 10 streams');
      assert.equal(st.rstCodes.length, 20);
      assert.ok(st.rstCodes.every((c) => c === H2_REFUSED_STREAM), `RST codes ${[...new Set(st.rstCodes)]}`);
      st.s.destroy();
      await assertNoPending(server);
    });

    it("node's client queues past the advertised limit: 40 concurrent requests all answered", async () => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
      // Before SETTINGS arrive a client may not know the limit; streams over it are refused (above).
      await new Promise((resolve) => session.once('remoteSettings', resolve));
      try {
        const bodies = await withTimeout(Promise.all(Array.from({ length: 40 }, () => new Promise((resolve, reject) => {
          const s = session.request({ ':path': '/slow' });
          let b = '';
          s.on('data', (d) => { b += d; });
          s.on('end', () => resolve(b));
          s.on('error', reject);
        }))), 10000, '40 h2 requests');
        assert.deepEqual(new Set(bodies), new Set(['slow']));
        assert.equal(session.remoteSettings.maxConcurrentStreams, 10);
      } finally {
        session.destroy();
      }
      await assertNoPending(server);
    });

    it('HTTP/2: more header fields than connectionPool.maxHeadersCount → 431 on that stream, handler not called', async () => {
      await tlsServer.updateConfig({ connectionPool: { maxHeadersCount: 20 } });
      const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: CA });
      session.on('error', () => {});
      try {
        const before = calls;
        const headers = { ':path': '/' };
        for (let i = 0; i < 30; i++) headers[`x-h${i}`] = 'v';
        const status = await withTimeout(new Promise((resolve, reject) => {
          const s = session.request(headers);
          s.on('response', (h) => resolve(h[':status']));
          s.on('error', reject);
          s.resume();
        }), 5000, 'too many header fields');
        assert.equal(status, 431);
        assert.equal(calls, before, 'handler not called');
      } finally {
        session.destroy();
        await tlsServer.updateConfig({ connectionPool: { maxHeadersCount: 2000 } });
      }
      await assertNoPending(tlsServer);
    });

    it('a header list over maxHeaderListSize (10 KB, limit 8 KiB) → 431 on that stream, session stays usable', async () => {
      const before = calls;
      const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: CA });
      session.on('error', () => {});
      try {
        const status = await withTimeout(new Promise((resolve, reject) => {
          const s = session.request({ ':path': '/', 'x-big': 'a'.repeat(10000) });
          s.on('response', (h) => resolve(h[':status']));
          s.on('error', reject);
          s.resume();
        }), 5000, 'oversized header list');
        assert.equal(status, 431);
        assert.equal(calls, before, 'handler not called');
        const ok = await withTimeout(new Promise((resolve, reject) => {
          const s = session.request({ ':path': '/' });
          let b = '';
          s.on('data', (d) => { b += d; });
          s.on('end', () => resolve(b));
          s.on('error', reject);
        }), 5000, 'request after 431');
        assert.equal(ok, 'ok');
      } finally {
        session.destroy();
      }
      await assertNoPending(tlsServer);
    });

    it('HPACK bomb (one 4 KB dynamic-table entry referenced 2000 times = 8 MB decoded) → GOAWAY, handler not called', async () => {
      const before = calls;
      const st = h2.session(port);
      await st.ready;
      const block = [h2.get('/'), h2.literalIndexed('x-bomb', 'a'.repeat(4000))];
      for (let i = 0; i < 2000; i++) block.push(h2.indexed(62));
      st.s.write(h2.headers(1, Buffer.concat(block)));
      await Promise.race([st.closedP, sleep(3000)]);
      assert.ok(st.goaway, 'GOAWAY sent');
      assert.equal(st.goaway.code, H2_ENHANCE_YOUR_CALM, JSON.stringify(st.goaway));
      assert.equal(st.closed, true);
      assert.equal(calls, before, 'handler not called');
      await assertNoPending(server);
    });

    it('CONTINUATION flood (HEADERS without END_HEADERS + 5000 CONTINUATION frames) → GOAWAY, bounded', async () => {
      const before = calls;
      const st = h2.session(port);
      await st.ready;
      const frames = [h2.headers(1, h2.get('/'), h2.FLAG.END_STREAM)];
      for (let i = 0; i < 5000; i++) frames.push(h2.frame(h2.TYPE.CONTINUATION, 0, 1, h2.literal(`x-c${i}`, 'v'.repeat(10))));
      st.s.write(Buffer.concat(frames));
      await Promise.race([st.closedP, sleep(3000)]);
      assert.ok(st.goaway, 'GOAWAY sent');
      assert.equal(st.goaway.code, H2_ENHANCE_YOUR_CALM, JSON.stringify(st.goaway));
      assert.equal(calls, before, 'handler not called');
      await assertNoPending(server);
    });

    it('WINDOW_UPDATE flood (20000 × increment 1) is absorbed; the request after it is answered', async () => {
      const st = h2.session(port);
      await st.ready;
      const frames = [];
      for (let i = 0; i < 20000; i++) frames.push(h2.windowUpdate(0, 1));
      frames.push(h2.headers(1, h2.get('/')));
      st.s.write(Buffer.concat(frames));
      await pollUntil(() => st.headers.length, (n) => n >= 1, { timeoutMs: 3000 });
      assert.deepEqual(st.headers, [1], 'stream 1 answered');
      assert.equal(st.goaway, null);
      st.s.destroy();
      await assertNoPending(server);
    });

    it('WINDOW_UPDATE past 2^31-1 → GOAWAY FLOW_CONTROL_ERROR', async () => {
      const st = h2.session(port);
      await st.ready;
      st.s.write(Buffer.concat([h2.windowUpdate(0, 0x7fffffff), h2.windowUpdate(0, 0x7fffffff)]));
      await Promise.race([st.closedP, sleep(3000)]);
      assert.ok(st.goaway);
      assert.equal(st.goaway.code, H2_FLOW_CONTROL_ERROR);
      assert.equal(st.closed, true);
    });

    it('PING flood (20000) and SETTINGS flood (20000) are answered without growing without bound', async () => {
      const st = h2.session(port);
      await st.ready;
      st.s.write(Buffer.concat(Array.from({ length: 20000 }, () => h2.ping())));
      await pollUntil(() => st.pings, (n) => n >= 20000, { timeoutMs: 5000 });
      assert.equal(st.pings, 20000, 'every PING acknowledged');
      st.s.write(Buffer.concat(Array.from({ length: 20000 }, () => h2.settings())));
      await sleep(300);
      st.s.write(h2.headers(1, h2.get('/')));
      await pollUntil(() => st.headers.length, (n) => n >= 1, { timeoutMs: 3000 });
      assert.deepEqual(st.headers, [1], 'still serving on the same session');
      st.s.destroy();
      await assertNoPending(server);
    });

    it('the h2 servers still serve after all of it', async () => {
      assert.equal(await h2Works(), 'ok');
      assert.equal(await h2Works(tlsPort, true), 'ok');
      await assertNoPending(server);
      await assertNoPending(tlsServer);
    });

  });

  // =================================================================================================
  // 4. TLS

  describe('reliability: TLS', () => {
    let server;
    let port;

    before(async () => {
      server = new HttpsServer({ callback: () => (req, res) => res.end('ok') }, {
        hostname: '127.0.0.1', port: 0, protocol: 'https', ssl: SSL, connectionPool: { handshakeTimeout: 700 },
      });
      quiet(server);
      port = await start(server);
    });

    after(async () => {
      if (server) await stop(server).catch(() => {});
    });

    function handshake(options) {
      return new Promise((resolve) => {
        const s = tls.connect({ host: '127.0.0.1', port, ca: CA, servername: 'localhost', ...options }, () => {
          resolve({ ok: true, protocol: s.getProtocol(), cipher: s.getCipher().name });
          s.destroy();
        });
        s.on('error', (e) => resolve({ ok: false, code: e.code, message: e.message }));
      });
    }

    for (const v of ['TLSv1', 'TLSv1.1']) {
      it(`a ${v}-only client is refused`, async () => {
        const r = await handshake({ minVersion: v, maxVersion: v });
        assert.equal(r.ok, false, JSON.stringify(r));
      });
    }

    for (const v of ['TLSv1.2', 'TLSv1.3']) {
      it(`a ${v}-only client is served with ${v} and an AEAD suite`, async () => {
        const r = await handshake({ minVersion: v, maxVersion: v });
        assert.equal(r.ok, true, JSON.stringify(r));
        assert.equal(r.protocol, v);
        assert.match(r.cipher, /GCM|CHACHA20/);
      });
    }

    for (const suite of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-RSA-AES128-SHA', 'AES128-SHA', 'AES128-GCM-SHA256', 'AES256-SHA256']) {
      it(`TLS 1.2 client offering only ${suite} (CBC or RSA key transport) is refused`, async () => {
        const r = await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `${suite}:@SECLEVEL=0` });
        assert.equal(r.ok, false, JSON.stringify(r));
      });
    }

    it('plain HTTP sent to the TLS port: closed at once with a TLS alert, server keeps serving', async () => {
      const r = await exchange(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(r.closedByPeer, true);
      assert.ok(r.ms < 500, `closed after ${r.ms} ms`);
      assert.equal(r.data[0], 0x15, 'a TLS alert record, no HTTP answer');
      const ok = await httpsRequest({ port, path: '/', tls: { ca: CA, servername: 'localhost' } });
      assert.equal(ok.status, 200);
    });

    it('garbage and a truncated ClientHello: closed (at once or at handshakeTimeout)', async () => {
      const garbage = await exchange(port, crypto.randomBytes(512));
      assert.equal(garbage.closedByPeer, true);
      const partial = await exchange(port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
      assert.equal(partial.closedByPeer, true);
      assert.ok(partial.ms >= 600 && partial.ms < 1500, `partial ClientHello closed after ${partial.ms} ms (handshakeTimeout 700)`);
    });

    it('handshake timeout: 20 silent TCP clients are closed at handshakeTimeout, others served meanwhile', async () => {
      const silent = Array.from({ length: 20 }, () => exchange(port, Buffer.alloc(0), { timeoutMs: 3000 }));
      await sleep(100);
      const t0 = Date.now();
      const ok = await httpsRequest({ port, path: '/', tls: { ca: CA, servername: 'localhost' } });
      assert.equal(ok.status, 200);
      assert.ok(Date.now() - t0 < 500, 'served while the silent clients wait');
      const rs = await Promise.all(silent);
      for (const r of rs) assert.ok(r.closedByPeer && r.ms >= 600 && r.ms < 1500, `closed after ${r.ms} ms`);
      await pollUntil(() => server.connectionPool.getMetrics().activeConnections, (n) => n === 0, { timeoutMs: 2000 });
      assert.equal(server.connectionPool.getMetrics().activeConnections, 0);
    });

    it('Http2Server over TLS also refuses TLS 1.1', async () => {
      const h2s = new Http2Server({ callback: () => (req, res) => res.end('ok') }, { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: SSL });
      const p = await start(h2s);
      try {
        const r = await new Promise((resolve) => {
          const s = tls.connect({ host: '127.0.0.1', port: p, ca: CA, servername: 'localhost', maxVersion: 'TLSv1.1', minVersion: 'TLSv1', ALPNProtocols: ['h2'] }, () => { resolve({ ok: true }); s.destroy(); });
          s.on('error', (e) => resolve({ ok: false, code: e.code }));
        });
        assert.equal(r.ok, false);
      } finally {
        await stop(h2s).catch(() => {});
      }
    });
  });

  // =================================================================================================
  // 5. WebSocket frame fuzzing (raw socket after a manual upgrade)

  describe('reliability: WebSocket frame fuzzing', () => {
    let server;
    let port;
    let messages;
    const MAX_PAYLOAD = 1024;

    before(async () => {
      messages = 0;
      server = new WsServer({
        callback: (protocol) => (protocol
          ? (req, client) => {
            messages++;
            const text = req.data.toString();
            if (text === 'throw') throw new Error('ws handler throws');
            if (text === 'reject') return Promise.reject(new Error('ws handler rejects'));
            client.send(req.data);
            return undefined;
          }
          : (req, res) => res.end('http')),
      }, { hostname: '127.0.0.1', port: 0, protocol: 'ws', connectionPool: { protocolSpecific: { maxPayload: MAX_PAYLOAD } } });
      quiet(server);
      port = await start(server);
    });

    after(async () => {
      if (server) await stop(server).catch(() => {});
    });

    function wsFrame(opcode, payload, { fin = true, mask = true, rsv = 0, length } = {}) {
      const data = Buffer.from(payload);
      const len = length ?? data.length;
      const b0 = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
      const m = mask ? 0x80 : 0;
      let head;
      if (len < 126) head = Buffer.from([b0, m | len]);
      else if (len < 65536) { head = Buffer.alloc(4); head[0] = b0; head[1] = m | 126; head.writeUInt16BE(len, 2); } else { head = Buffer.alloc(10); head[0] = b0; head[1] = m | 127; head.writeBigUInt64BE(BigInt(len), 2); }
      if (!mask) return Buffer.concat([head, data]);
      const key = crypto.randomBytes(4);
      const body = Buffer.from(data);
      for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
      return Buffer.concat([head, key, body]);
    }

    /** Server frames: [{ op, payload, code? }] (incomplete trailing frame ignored). */
    function parseFrames(buf) {
      const out = [];
      let o = 0;
      while (o + 2 <= buf.length) {
        const op = buf[o] & 0x0f;
        let len = buf[o + 1] & 0x7f;
        let p = o + 2;
        if (len === 126) { if (p + 2 > buf.length) break; len = buf.readUInt16BE(p); p += 2; } else if (len === 127) { if (p + 8 > buf.length) break; len = Number(buf.readBigUInt64BE(p)); p += 8; }
        if (p + len > buf.length) break;
        const payload = buf.subarray(p, p + len);
        out.push({ op, payload, code: op === 8 && payload.length >= 2 ? payload.readUInt16BE(0) : undefined });
        o = p + len;
      }
      return out;
    }

    function wsConnect() {
      return new Promise((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port });
        const key = crypto.randomBytes(16).toString('base64');
        let buf = Buffer.alloc(0);
        let upgraded = false;
        const st = { s, data: Buffer.alloc(0), closed: false };
        st.closedP = new Promise((r) => s.on('close', () => { st.closed = true; r(); }));
        s.on('connect', () => s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
        s.on('data', (d) => {
          if (upgraded) { st.data = Buffer.concat([st.data, d]); return; }
          buf = Buffer.concat([buf, d]);
          const i = buf.indexOf('\r\n\r\n');
          if (i < 0) return;
          upgraded = true;
          st.head = buf.subarray(0, i).toString();
          st.data = buf.subarray(i + 4);
          if (!/^HTTP\/1\.1 101/.test(st.head)) reject(new Error(`upgrade refused: ${st.head}`));
          else resolve(st);
        });
        s.on('error', () => {});
        s.on('close', () => { if (!upgraded) reject(new Error('closed before the upgrade answer')); });
      });
    }

    /** Sends `frames`, waits for the server to close (or `ms`), returns the close code seen (or null). */
    async function fuzzOne(frames, ms = 2000) {
      const st = await wsConnect();
      for (const f of frames) st.s.write(f);
      await Promise.race([st.closedP, sleep(ms)]);
      const closes = parseFrames(st.data).filter((f) => f.op === 8);
      st.s.destroy();
      return { closed: st.closed, code: closes.length ? closes[0].code : null, frames: parseFrames(st.data) };
    }

    it('a valid masked text frame is echoed (baseline)', async () => {
      const st = await wsConnect();
      st.s.write(wsFrame(1, 'hello'));
      await pollUntil(() => parseFrames(st.data).length, (n) => n >= 1, { timeoutMs: 2000 });
      const [f] = parseFrames(st.data);
      assert.equal(f.payload.toString(), 'hello');
      st.s.write(wsFrame(8, Buffer.from([0x03, 0xe8])));
      await Promise.race([st.closedP, sleep(2000)]);
      assert.equal(st.closed, true);
      assert.equal(parseFrames(st.data).find((x) => x.op === 8)?.code, 1000, 'close 1000 echoed');
    });

    const cases = [
      ['unmasked client frame', () => [wsFrame(1, 'hello', { mask: false })], [1002]],
      ['reserved bits set (no extension negotiated)', () => [wsFrame(1, 'hello', { rsv: 4 })], [1002]],
      ['reserved data opcode 0x3', () => [wsFrame(3, 'x')], [1002]],
      ['reserved control opcode 0xB', () => [wsFrame(0xb, 'x')], [1002]],
      ['frame over maxPayload', () => [wsFrame(2, Buffer.alloc(MAX_PAYLOAD + 1))], [1009]],
      ['header announcing 2^40 bytes (no payload sent)', () => [wsFrame(2, Buffer.alloc(0), { length: 2 ** 40 }).subarray(0, 14)], [1009]],
      ['64-bit length with the most significant bit set', () => [Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4])], [1002, 1009]],
      ['fragmented message growing past maxPayload', () => [wsFrame(2, Buffer.alloc(800), { fin: false }), wsFrame(0, Buffer.alloc(800))], [1009]],
      ['fragmented control frame', () => [wsFrame(9, 'x', { fin: false })], [1002]],
      ['control frame over 125 bytes', () => [wsFrame(9, Buffer.alloc(200))], [1002]],
      ['continuation without a start', () => [wsFrame(0, 'x')], [1002]],
      ['new data frame inside a fragmented message', () => [wsFrame(1, 'a', { fin: false }), wsFrame(1, 'b')], [1002]],
      ['invalid UTF-8 in a text frame', () => [wsFrame(1, Buffer.from([0xc3, 0x28]))], [1007]],
      ['invalid UTF-8 split across fragments', () => [wsFrame(1, Buffer.from([0xe2, 0x82]), { fin: false }), wsFrame(0, Buffer.from([0x28]))], [1007]],
      ['close frame with invalid code 999', () => [wsFrame(8, Buffer.from([0x03, 0xe7]))], [1002]],
      ['close frame with reserved code 1005', () => [wsFrame(8, Buffer.from([0x03, 0xed]))], [1002]],
      ['close frame with a 1-byte payload', () => [wsFrame(8, Buffer.from([0x03]))], [1002]],
      ['close frame with invalid UTF-8 reason', () => [wsFrame(8, Buffer.from([0x03, 0xe8, 0xff, 0xfe]))], [1007]],
    ];

    for (const [name, frames, codes] of cases) {
      it(`${name} → close ${codes.join(' or ')}`, async () => {
        const r = await fuzzOne(frames());
        assert.equal(r.closed, true, 'the server closed the connection');
        assert.ok(codes.includes(r.code), `close code ${r.code}`);
      });
    }

    it('truncated frame then FIN: the connection is dropped', async () => {
      const st = await wsConnect();
      st.s.write(wsFrame(1, 'hello world').subarray(0, 8));
      await sleep(100);
      st.s.end();
      await Promise.race([st.closedP, sleep(2000)]);
      assert.equal(st.closed, true);
    });

    it('seeded random fuzzing (150 connections: random bytes, bit-flipped and truncated frames) — bounded outcomes', async (t) => {
      let seed = 0x9e3779b9;
      const rand = () => {
        seed ^= seed << 13; seed >>>= 0;
        seed ^= seed >>> 17;
        seed ^= seed << 5; seed >>>= 0;
        return seed / 0x100000000;
      };
      const randBytes = (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
      const outcomes = { closeCode: {}, dropped: 0, open: 0 };
      const one = async () => {
        const parts = [];
        const n = 1 + Math.floor(rand() * 4);
        for (let i = 0; i < n; i++) {
          const kind = Math.floor(rand() * 4);
          if (kind === 0) parts.push(randBytes(1 + Math.floor(rand() * 64)));
          else {
            const op = [0, 1, 2, 8, 9, 10][Math.floor(rand() * 6)];
            let f = wsFrame(op, randBytes(Math.floor(rand() * 300)), { fin: rand() < 0.8 });
            if (kind === 1) { f = Buffer.from(f); f[Math.floor(rand() * f.length)] ^= 1 << Math.floor(rand() * 8); }
            if (kind === 2) f = f.subarray(0, Math.floor(rand() * f.length));
            parts.push(f);
          }
        }
        const st = await wsConnect();
        st.s.write(Buffer.concat(parts));
        await Promise.race([st.closedP, sleep(300)]);
        if (!st.closed) {
          // Still open: the garbage may have left the parser inside a frame. End our side: the
          // server must close too.
          st.s.end();
          await Promise.race([st.closedP, sleep(2000)]);
          if (!st.closed) outcomes.open++;
        }
        const close = parseFrames(st.data).find((f) => f.op === 8);
        if (close) outcomes.closeCode[close.code] = (outcomes.closeCode[close.code] ?? 0) + 1;
        else outcomes.dropped++;
        st.s.destroy();
      };
      for (let batch = 0; batch < 15; batch++) await Promise.all(Array.from({ length: 10 }, one));
      t.diagnostic(`fuzz outcomes: ${JSON.stringify(outcomes)}`);
      assert.equal(outcomes.open, 0, `connections the server never closed: ${JSON.stringify(outcomes)}`);
      const allowed = new Set([1000, 1002, 1007, 1009]);
      for (const code of Object.keys(outcomes.closeCode)) assert.ok(allowed.has(Number(code)), `close code ${code}: ${JSON.stringify(outcomes)}`);
      await pollUntil(() => server.connectionPool.getMetrics().activeConnections, (n) => n === 0, { timeoutMs: 3000 });
      assert.equal(server.connectionPool.getMetrics().activeConnections, 0, 'no connection left behind');
    });

    it('a throwing or rejecting message handler does not break the connection or the server', async () => {
      const st = await wsConnect();
      st.s.write(wsFrame(1, 'throw'));
      st.s.write(wsFrame(1, 'reject'));
      st.s.write(wsFrame(1, 'after'));
      await pollUntil(() => parseFrames(st.data).length, (n) => n >= 1, { timeoutMs: 2000 });
      const frames = parseFrames(st.data);
      assert.equal(frames[0].payload.toString(), 'after', 'the next message is still handled');
      st.s.destroy();
    });

    it('bad upgrade requests: wrong version → 426, missing key → 400; plain HTTP still served', async () => {
      const v = await exchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n');
      assert.deepEqual(statuses(v.text), [426]);
      const k = await exchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n');
      assert.deepEqual(statuses(k.text), [400]);
      const r = await request({ port, path: '/plain', headers: { Connection: 'close' } });
      assert.equal(r.text(), 'http');
      await assertNoPending(server);
    });
  });

  // =================================================================================================
  // 6. JavaScript faults

  describe('reliability: JavaScript handler faults', () => {
    let server;
    let port;
    let errors;
    const seen = {};

    before(async () => {
      const routes = {
        '/ok': (req, res) => res.end('ok'),
        '/throw': () => { throw new Error('sync boom'); },
        '/reject': () => Promise.reject(new Error('async boom')),
        '/throw-after-write': (req, res) => { res.write('partial'); throw new Error('boom after headers'); },
        '/never': () => {},
        '/never-streaming': (req, res) => { res.write('started'); },
        '/twice': (req, res) => {
          res.end('first');
          try {
            res.end('second');
            seen.twice = 'no throw';
          } catch (err) {
            seen.twice = err.code;
          }
        },
        '/write-after-end': (req, res) => {
          res.on('error', (err) => { seen.writeAfterEnd = err.code; });
          res.end('done');
          seen.writeReturned = res.write('more');
        },
        '/set-header-after-end': (req, res) => {
          res.end('done');
          try { res.setHeader('X-Late', '1'); seen.lateHeader = 'no throw'; } catch (err) { seen.lateHeader = err.code; }
        },
      };
      server = new HttpServer({
        callback: () => (req, res) => {
          const route = routes[req.url.split('?')[0]];
          if (!route) { res.statusCode = 404; res.end(); return undefined; }
          return route(req, res);
        },
      }, { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: { requestTimeout: 400 } });
      errors = quiet(server);
      port = await start(server);
    });

    after(async () => {
      if (server) await stop(server).catch(() => {});
    });

    async function stillServing() {
      const r = await request({ port, path: '/ok' });
      assert.equal(r.status, 200);
      assert.equal(r.text(), 'ok');
      await assertNoPending(server);
    }

    it('handler throws → 500, handlerError emitted, next request fine', async () => {
      const n = errors.length;
      const r = await request({ port, path: '/throw' });
      assert.equal(r.status, 500);
      assert.equal(errors.length, n + 1);
      assert.equal(errors[n].message, 'sync boom');
      await stillServing();
    });

    it('handler rejects → 500', async () => {
      const r = await request({ port, path: '/reject' });
      assert.equal(r.status, 500);
      await stillServing();
    });

    it('handler throws after the head was sent → response cut off (client sees an aborted body)', async () => {
      await assert.rejects(request({ port, path: '/throw-after-write', timeout: 3000 }), (err) => /aborted|ECONNRESET|socket hang up|terminated/i.test(`${err.code} ${err.message}`));
      await stillServing();
    });

    it('handler never answers → 503 at requestTimeout', async () => {
      const t0 = Date.now();
      const r = await request({ port, path: '/never' });
      assert.equal(r.status, 503);
      assert.ok(Date.now() - t0 >= 350, `after ${Date.now() - t0} ms (requestTimeout 400)`);
      await stillServing();
    });

    it('handler starts streaming and never ends → the stream is reset at requestTimeout', async () => {
      await assert.rejects(request({ port, path: '/never-streaming', timeout: 3000 }), (err) => /aborted|ECONNRESET|socket hang up|terminated/i.test(`${err.code} ${err.message}`));
      await stillServing();
    });

    it("handler answers twice → the first answer stands; the second end() is reported ('handlerError'), not an uncaught 'error'", async () => {
      const n = errors.length;
      const r = await request({ port, path: '/twice' });
      assert.equal(r.status, 200);
      assert.equal(r.text(), 'first');
      assert.equal(seen.twice, 'no throw', 'second end() does not throw, as in node');
      // node emits ERR_STREAM_WRITE_AFTER_END on res, which with no listener ends the process.
      await pollUntil(() => errors.length, (v) => v > n, { timeoutMs: 1000 });
      assert.equal(errors[n].code, 'ERR_STREAM_WRITE_AFTER_END');
      await stillServing();
    });

    it("write after end → 'error' event ERR_STREAM_WRITE_AFTER_END, write() returns false, no crash", async () => {
      const r = await request({ port, path: '/write-after-end' });
      assert.equal(r.text(), 'done');
      await pollUntil(() => seen.writeAfterEnd, (v) => v !== undefined, { timeoutMs: 1000 });
      assert.equal(seen.writeAfterEnd, 'ERR_STREAM_WRITE_AFTER_END');
      assert.equal(seen.writeReturned, false);
      await stillServing();
    });

    it('setHeader after end → ERR_HTTP_HEADERS_SENT thrown to the handler, response intact', async () => {
      const r = await request({ port, path: '/set-header-after-end' });
      assert.equal(r.text(), 'done');
      assert.equal(r.headers['x-late'], undefined);
      assert.equal(seen.lateHeader, 'ERR_HTTP_HEADERS_SENT');
      await stillServing();
    });

    it('mixed faults in parallel (40 requests) never affect the good ones', async () => {
      const paths = ['/ok', '/throw', '/reject', '/never', '/twice', '/ok'];
      const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => request({ port, path: paths[i % paths.length] })));
      rs.forEach((r, i) => {
        const p = paths[i % paths.length];
        const expected = { '/ok': 200, '/throw': 500, '/reject': 500, '/never': 503, '/twice': 200 }[p];
        assert.equal(r.status, expected, `${p}`);
      });
      await stillServing();
    });
  });

  describe('reliability: a client resetting an upload that a handler reads without an error listener (child-process server)', () => {
    it("FINDING: the server process survives (node emits no 'error' on req when nobody listens)", async () => {
      const srv = await startChild();
      try {
        const s = net.connect({ host: '127.0.0.1', port: srv.port });
        s.on('error', () => {});
        await new Promise((resolve) => s.on('connect', resolve));
        s.write('POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
        s.write(Buffer.alloc(70000, 0x61));
        await sleep(200);
        s.resetAndDestroy();
        const exited = await Promise.race([new Promise((resolve) => srv.child.once('exit', (code) => resolve(`exited with code ${code}`))), sleep(1000).then(() => null)]);
        // Today: NativeRequest emits 'error' ("request body failed: error reading a body from
        // connection") with no listener → uncaught exception → the server process exits with code 1.
        assert.equal(exited, null, `server process ${exited}: ${srv.output().trim().split('\n').slice(0, 6).join(' | ')}`);
        const r = await request({ port: srv.port, path: '/ok', timeout: 3000 });
        assert.equal(r.status, 200);
      } finally {
        await srv.stop();
      }
    });
  });

  describe('reliability: a handler blocking the event loop (child-process server)', () => {
    it('native /healthz answers while JS is blocked for 1.5 s; queued requests are served afterwards', async (t) => {
      const srv = await startChild();
      try {
        assert.equal((await request({ port: srv.port, path: '/ok' })).status, 200);
        const t0 = Date.now();
        const blocked = request({ port: srv.port, path: '/block?ms=1500', timeout: 10000 });
        await sleep(200);
        const queued = request({ port: srv.port, path: '/ok', timeout: 10000 }).then((r) => ({ r, at: Date.now() - t0 }));
        const h0 = Date.now();
        const health = await request({ port: srv.port, path: '/healthz', timeout: 5000 });
        const healthMs = Date.now() - h0;
        const healthAt = Date.now() - t0;
        t.diagnostic(`/healthz answered in ${healthMs} ms, ${healthAt} ms into the 1500 ms block`);
        assert.equal(health.status, 200);
        assert.equal(health.text(), 'ok');
        assert.ok(healthMs < 500 && healthAt < 1400, `/healthz answered in ${healthMs} ms, ${healthAt} ms into the 1500 ms block`);
        const b = await blocked;
        assert.equal(b.status, 200);
        assert.equal(b.text(), 'blocked');
        const q = await queued;
        assert.equal(q.r.status, 200);
        assert.ok(q.at >= 1400, `the queued request was answered after the block (${q.at} ms)`);
        const s = await pollUntil(() => srv.stats(), (x) => x.pendingRequests === 0, { timeoutMs: 2000 });
        assert.equal(s.pendingRequests, 0);
      } finally {
        await srv.stop();
      }
    });
  });
}
