'use strict';
// WsServer (ws / wss) with real sockets: the `ws` package as client, raw frames over net sockets for
// what a well-behaved client never sends, and the Koatty fixture app with a WebSocket controller
// (koatty_router's WebsocketRouter) in a child process. See koatty-contract.md §4 and decisions.md §17.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const net = require('net');
const util = require('util');
const WebSocket = require('ws');
const { WsServer, NewServe } = require('..');
const { frame, parseFrames } = require('./ws-frames');
const { getCerts } = require('./certs');
const { request, startKoattyApp, pollUntil, withTimeout, sleep, failIfKeptAlive } = require('./helpers');
const { NO_POSIX_SIGNALS } = require('./platform');

failIfKeptAlive(__filename);

// ---------------------------------------------------------------------------------------------------
// Servers and clients

/**
 * A fake Koatty app: `app.callback()` answers plain HTTP, `app.callback('ws'|'wss')` records each
 * message call (the contract's per-message `app.callback(protocol)(upgradeReq, client)`).
 */
function makeApp() {
  const calls = [];
  return {
    calls,
    callbackProtocols: [],
    callback(protocol) {
      this.callbackProtocols.push(protocol);
      if (protocol === undefined) {
        return (req, res) => {
          res.setHeader('Content-Type', 'text/plain');
          res.end(`plain http ${req.method} ${req.url}`);
        };
      }
      return (req, client) => { calls.push({ protocol, req, client, data: req.data }); };
    },
    config: () => undefined,
  };
}

/** Echoes every message back with its kind (text/binary) kept. */
function echo(client) {
  client.on('message', (data, isBinary) => client.send(data, { binary: isBinary }));
}

const open = new Set();

/**
 * Starts a WsServer on 127.0.0.1:0. `onConnection(client, req)` defaults to echo. Resolves with
 * { server, app, port, url(path), connections: [{client, req}], accepted(path) → Promise<server-side client> }.
 */
async function startWs({ protocolSpecific, connectionPool = {}, onConnection = echo, app = makeApp(), ...options } = {}) {
  const server = new WsServer(app, {
    hostname: '127.0.0.1', port: 0, protocol: 'ws', ...options,
    connectionPool: { ...connectionPool, ...(protocolSpecific ? { protocolSpecific } : {}) },
  });
  const connections = [];
  const waiting = [];
  server.on('connection', (client, req) => {
    connections.push({ client, req });
    onConnection(client, req);
    for (const w of waiting.filter((x) => x.path === req.url)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(client);
    }
  });
  // The server side of the connection upgraded at `path` (the client's 'open' may come first).
  const accepted = (p) => {
    const hit = connections.find((c) => c.req.url === p);
    if (hit) return Promise.resolve(hit.client);
    return withTimeout(new Promise((resolve) => waiting.push({ path: p, resolve })), 5000, `server-side connection ${p}`);
  };
  await withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(resolve);
  }), 5000, 'WsServer Start');
  open.add(server);
  const port = server.server.address().port;
  const scheme = options.protocol === 'wss' || options.ssl ? 'wss' : 'ws';
  return { server, app, port, connections, accepted, url: (p = '/') => `${scheme}://127.0.0.1:${port}${p}` };
}

async function stopWs(server) {
  open.delete(server);
  await withTimeout(server.gracefulShutdown({ drainDelay: 0, timeout: 3000, stepTimeout: 2000 }), 8000, 'gracefulShutdown');
}

after(async () => {
  for (const s of [...open]) await stopWs(s).catch(() => {});
});

const clients = new Set();
after(() => { for (const c of clients) c.terminate(); });

/** A `ws` client, resolved once open. */
function connect(url, options = {}) {
  const ws = new WebSocket(url, options);
  clients.add(ws);
  ws.on('error', () => {});
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`unexpected response ${res.statusCode}`), { statusCode: res.statusCode })));
  }), 5000, `connect ${url}`);
}

/** Resolves with { code, reason } when `ws` (client or server side) closes. */
function closed(ws, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: String(reason) }));
  }), ms, 'close event');
}

/** The next `n` messages of `ws` as [{ data (Buffer), isBinary }]. */
function nextMessages(ws, n = 1, ms = 5000) {
  return withTimeout(new Promise((resolve) => {
    const got = [];
    const on = (data, isBinary) => {
      got.push({ data: Buffer.isBuffer(data) ? data : Buffer.from(data), isBinary });
      if (got.length === n) {
        ws.off('message', on);
        resolve(got);
      }
    };
    ws.on('message', on);
  }), ms, `${n} message(s)`);
}

// ---------------------------------------------------------------------------------------------------
// Raw frames (RFC 6455 §5.2) over a net socket, after a hand-made upgrade

/**
 * A WebSocket opened by hand on a net socket. Resolves with { socket, status, send(buf),
 * frames: [{ opcode, payload }] (all server frames so far), closeFrame: Promise<{ code, reason } | null>
 * (the server's close frame; null if the socket ended without one), ended: Promise<ms> }.
 */
function rawWebSocket(port, urlPath = '/') {
  return withTimeout(new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const received = [];
    let onClose;
    const closeFrame = new Promise((r) => { onClose = r; });
    const t0 = Date.now();
    const ended = new Promise((r) => socket.once('close', () => { onClose(null); r(Date.now() - t0); }));
    socket.on('error', reject);
    socket.on('connect', () => {
      socket.write(`GET ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        upgraded = true;
        const status = Number(head.split(' ')[1]);
        if (status !== 101) { reject(new Error(`upgrade answered ${head.split('\r\n')[0]}`)); return; }
        resolve({ socket, status, send: (b) => socket.write(b), closeFrame, ended, frames: received });
      }
      const { frames, rest } = parseFrames(buf);
      buf = rest;
      received.push(...frames);
      for (const f of frames) {
        if (f.opcode === 0x8) {
          onClose({ code: f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005, reason: f.payload.subarray(2).toString('utf8') });
        }
      }
    });
  }), 5000, 'raw WebSocket upgrade');
}

/** Server RSS in bytes (this process: the server runs in-process). */
const rss = () => process.memoryUsage().rss;

// ---------------------------------------------------------------------------------------------------

describe('WsServer: messages', () => {
  let srv;
  before(async () => { srv = await startWs(); });
  after(async () => { await stopWs(srv.server); });

  it('echoes text and binary messages with isBinary kept', async () => {
    const ws = await connect(srv.url('/echo'));
    const serverSide = await srv.accepted('/echo');
    const seen = [];
    serverSide.on('message', (data, isBinary) => seen.push({ data, isBinary }));
    const replies = nextMessages(ws, 4);
    const bin = crypto.randomBytes(70000); // > 64 KiB: the 8-byte length form
    ws.send('héllo ✓ 你好');
    ws.send(Buffer.from([0, 1, 2, 255]));
    ws.send(bin);
    ws.send('');
    const got = await replies;
    assert.deepEqual(got.map((m) => m.isBinary), [false, true, true, false]);
    assert.equal(got[0].data.toString('utf8'), 'héllo ✓ 你好');
    assert.deepEqual(got[1].data, Buffer.from([0, 1, 2, 255]));
    assert.ok(got[2].data.equals(bin), 'binary payload intact');
    assert.equal(got[3].data.length, 0);
    // The server-side socket sees Buffers (ws 8 style) and the right isBinary flag.
    assert.ok(seen.every((m) => Buffer.isBuffer(m.data)));
    assert.deepEqual(seen.map((m) => m.isBinary), [false, true, true, false]);
    ws.close();
  });

  it('messages of every size around the staging limits go out byte for byte, several sends in one turn', async () => {
    // Small chunks cross to the native side staged (js/wire.js `staged`): each send copies into
    // one shared area, so two sends in one turn must not see each other's bytes.
    const twice = await startWs({
      onConnection: (client) => client.on('message', (data, isBinary) => {
        client.send(data, { binary: isBinary });
        client.send(Buffer.from(data).reverse(), { binary: true });
        client.send(new Uint8Array(data), { binary: true });
      }),
    });
    try {
      const ws = await connect(twice.url('/sizes'));
      const sizes = [0, 1, 5, 63, 64, 65, 1023, 1024, 1025, 4095, 4096, 4097, 70000];
      const replies = nextMessages(ws, sizes.length * 3, 10000);
      const sent = sizes.map((n) => crypto.randomBytes(n));
      for (const b of sent) ws.send(b);
      const got = await replies;
      sent.forEach((b, i) => {
        const [same, reversed, view] = got.slice(i * 3, i * 3 + 3);
        assert.ok(same.data.equals(b), `${b.length} bytes as sent`);
        assert.ok(reversed.data.equals(Buffer.from(b).reverse()), `${b.length} bytes reversed`);
        assert.ok(view.data.equals(b), `${b.length} bytes from a Uint8Array`);
      });
      ws.close();
    } finally {
      await stopWs(twice.server);
    }
  });

  it('a detached Buffer goes out as an empty binary message, as ws sends it', async () => {
    const detached = await startWs({
      onConnection: (client) => client.on('message', () => {
        const b = Buffer.from(new Uint8Array([1, 2, 3]).buffer);
        structuredClone(b.buffer, { transfer: [b.buffer] });
        client.send(b);
        client.send('after');
      }),
    });
    try {
      const ws = await connect(detached.url('/detached'));
      const replies = nextMessages(ws, 2);
      ws.send('go');
      const [empty, after] = await replies;
      assert.equal(empty.isBinary, true);
      assert.equal(empty.data.length, 0);
      assert.equal(after.data.toString(), 'after');
      ws.close();
    } finally {
      await stopWs(detached.server);
    }
  });

  it('per message calls app.callback(protocol)(upgradeReq, client) with upgradeReq.data (contract §4.1)', async () => {
    const before = srv.app.calls.length;
    const callbacksBefore = srv.app.callbackProtocols.length;
    const ws = await connect(srv.url('/contract/path?q=1'), { headers: { 'X-Request-Id': 'ws-trace-1' } });
    const serverSide = await srv.accepted('/contract/path?q=1');
    const replies = nextMessages(ws, 2);
    ws.send('first');
    ws.send(Buffer.from('second'));
    await replies;
    const calls = srv.app.calls.slice(before);
    assert.equal(calls.length, 2);
    assert.deepEqual(srv.app.callbackProtocols.slice(callbacksBefore), ['ws', 'ws'], 'app.callback(protocol) taken per message, as 2.3.0 does');
    for (const c of calls) {
      assert.equal(c.protocol, 'ws');
      assert.equal(c.client, serverSide, 'the client is the connection object');
      assert.equal(c.req.url, '/contract/path?q=1');
      assert.equal(c.req.method, 'GET');
      assert.equal(c.req.headers['x-request-id'], 'ws-trace-1');
      assert.equal(typeof c.req.socket.remoteAddress, 'string');
    }
    assert.equal(calls[0].req, calls[1].req, 'one upgrade request shared by all messages');
    assert.ok(Buffer.isBuffer(calls[0].data) && calls[0].data.toString() === 'first');
    assert.equal(calls[1].data.toString(), 'second');
    const d = Object.getOwnPropertyDescriptor(calls[0].req, 'data');
    assert.equal(d.enumerable, true);
    assert.equal(d.writable, true);
    assert.equal(d.configurable, false);
    assert.equal(typeof serverSide.send, 'function');
    assert.equal(serverSide.readyState, WebSocket.OPEN);
    // The writer task lowers the count just after its write returns, which may be a moment after
    // the client has the bytes: wait (bounded) for it rather than racing it.
    const settle = Date.now() + 1000;
    while (serverSide.bufferedAmount !== 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 5));
    assert.equal(serverSide.bufferedAmount, 0);
    ws.close();
  });

  it('1000 messages arrive and are echoed in order', async () => {
    const ws = await connect(srv.url('/order'));
    const replies = nextMessages(ws, 1000, 10000);
    for (let i = 0; i < 1000; i++) ws.send(i % 3 === 0 ? Buffer.from(`m${i}`) : `m${i}`);
    const got = await replies;
    got.forEach((m, i) => {
      assert.equal(m.data.toString(), `m${i}`);
      assert.equal(m.isBinary, i % 3 === 0);
    });
    ws.close();
  });

  it('50 concurrent clients each get their own echoes', async () => {
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => connect(srv.url(`/c/${i}`))));
    await Promise.all(all.map(async (ws, i) => {
      const replies = nextMessages(ws, 20, 10000);
      for (let k = 0; k < 20; k++) ws.send(`client ${i} message ${k}`);
      const got = await replies;
      got.forEach((m, k) => assert.equal(m.data.toString(), `client ${i} message ${k}`));
    }));
    await Promise.all(all.map((ws) => { const c = closed(ws); ws.close(1000); return c; }));
  });

  it('server send(data, cb) calls back; ping() from the server is answered with a pong event', async () => {
    const ws = await connect(srv.url('/ping'));
    const serverSide = await srv.accepted('/ping');
    await new Promise((resolve, reject) => serverSide.send('from server', (err) => (err ? reject(err) : resolve())));
    const pong = new Promise((r) => serverSide.once('pong', r));
    const clientPing = new Promise((r) => ws.once('ping', r));
    serverSide.ping(Buffer.from('hb'));
    assert.equal(String(await withTimeout(clientPing, 3000, 'client ping')), 'hb');
    assert.equal(String(await withTimeout(pong, 3000, 'server pong')), 'hb');
    // A client ping is answered by the server (in Rust).
    const clientPong = new Promise((r) => ws.once('pong', r));
    ws.ping('abc');
    assert.equal(String(await withTimeout(clientPong, 3000, 'client pong')), 'abc');
    ws.close();
  });

  it('plain HTTP on the WebSocket port is answered by app.callback() (decisions §17)', async () => {
    const r = await request({ port: srv.port, path: '/plain?x=1' });
    assert.equal(r.status, 200);
    assert.equal(r.text(), 'plain http GET /plain?x=1');
    const post = await request({ port: srv.port, method: 'POST', path: '/form', body: 'a=1' });
    assert.equal(post.text(), 'plain http POST /form');
  });
});

describe('WsServer in another process: the first message of every connection arrives', () => {
  // The server runs in a child process whose JS thread is kept a little busy (as an app's would
  // be); each client sends at once on 'open'. The upgrade and the first message must reach JS in
  // that order, so no first message may go unanswered.
  const SERVER = `
    const { WsServer } = require(${JSON.stringify(require.resolve('..'))});
    const app = { callback: () => () => {}, config: () => undefined };
    const s = new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws' });
    s.on('connection', (c) => c.on('message', (d, b) => c.send(d, { binary: b })));
    s.Start(() => process.stdout.write(s.server.address().port + '\\n'));
    setInterval(() => { const t = Date.now(); while (Date.now() - t < 3); }, 5);
    process.on('disconnect', () => process.exit(0));
  `;
  let child;
  let port;
  before(async () => {
    const { spawn } = require('child_process');
    child = spawn(process.execPath, ['-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    port = await withTimeout(new Promise((resolve) => {
      child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    }), 5000, 'child WsServer');
  });
  after(() => { if (child) child.kill('SIGKILL'); });

  it('300 connections each send one message right after open: all are echoed', async () => {
    const lost = [];
    for (let i = 0; i < 300; i++) {
      const ws = await connect(`ws://127.0.0.1:${port}/first/${i}`);
      const got = nextMessages(ws, 1, 500).then(() => true, () => false);
      ws.send(`first ${i}`);
      if (!(await got)) lost.push(i);
      ws.terminate();
      clients.delete(ws);
    }
    assert.deepEqual(lost, [], `${lost.length} of 300 first messages got no echo`);
  });

  it('messages in the same TCP write as the upgrade request reach the handler after it, in order (as ws)', async () => {
    for (let round = 0; round < 20; round++) {
      const socket = net.connect(port, '127.0.0.1');
      const echoes = withTimeout(new Promise((resolve, reject) => {
        let buf = Buffer.alloc(0);
        socket.on('error', reject);
        socket.on('data', (d) => {
          buf = Buffer.concat([buf, d]);
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const { frames } = parseFrames(buf.subarray(end + 4));
          if (frames.length >= 5) resolve(frames.map((f) => f.payload.toString()));
        });
      }), 5000, 'five echoes');
      await new Promise((r) => socket.once('connect', r));
      const messages = ['m0', 'm1', 'm2', 'm3', 'm4'];
      socket.write(Buffer.concat([
        Buffer.from(`GET /same-write/${round} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
          + `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`),
        ...messages.map((m) => frame({ opcode: 0x1, payload: Buffer.from(m) })),
      ]));
      try {
        assert.deepEqual(await echoes, messages, `round ${round}`);
      } finally {
        socket.destroy();
      }
    }
  });
});

describe('WsServer: closing handshake', () => {
  let srv;
  before(async () => { srv = await startWs(); });
  after(async () => { await stopWs(srv.server); });

  it("a client that drops the connection without a close frame is reported as 1006 on the server side, as ws reports it (was 1002)", async () => {
    const ws = await connect(srv.url('/drop'));
    const serverSide = await srv.accepted('/drop');
    const onServer = closed(serverSide, 5000);
    ws._socket.destroy();
    assert.equal((await onServer).code, 1006);
  });

  it("client close(4001, 'bye') is seen by the server with code and reason", async () => {
    const ws = await connect(srv.url('/close1'));
    const serverSide = await srv.accepted('/close1');
    const onServer = closed(serverSide);
    const onClient = closed(ws);
    ws.close(4001, 'bye');
    assert.deepEqual(await onServer, { code: 4001, reason: 'bye' });
    assert.equal((await onClient).code, 4001);
    assert.equal(serverSide.readyState, WebSocket.CLOSED);
  });

  it("server close(4002, 'x') is seen by the client with code and reason", async () => {
    const ws = await connect(srv.url('/close2'));
    const serverSide = await srv.accepted('/close2');
    const onServer = closed(serverSide);
    const onClient = closed(ws);
    serverSide.close(4002, 'x');
    assert.equal(serverSide.readyState, WebSocket.CLOSING);
    assert.deepEqual(await onClient, { code: 4002, reason: 'x' });
    assert.equal((await onServer).code, 4002);
    // Sending on a closed socket calls back with an error, as ws does.
    const err = await new Promise((r) => serverSide.send('late', r));
    assert.ok(err instanceof Error);
  });

  it('server close() with no code sends a close frame without one: the client sees 1005, as with ws', async () => {
    const ws = await connect(srv.url('/no-code'));
    const serverSide = await srv.accepted('/no-code');
    const onClient = closed(ws);
    const onServer = closed(serverSide);
    serverSide.close();
    assert.deepEqual(await onClient, { code: 1005, reason: '' });
    assert.equal((await onServer).code, 1005);
  });

  it('close() validates code and reason like ws', async () => {
    const ws = await connect(srv.url('/close3'));
    const serverSide = await srv.accepted('/close3');
    assert.throws(() => serverSide.close(1005), /ERR_WS_INVALID_CLOSE_CODE|valid error code/);
    assert.throws(() => serverSide.close(4000, 'x'.repeat(124)), /123 bytes/);
    const onClient = closed(ws);
    serverSide.terminate();
    assert.equal((await onClient).code, 1006, 'terminate() drops the connection without a close frame');
  });
});

describe('WsServer: limits and protocol errors', () => {
  let srv;
  before(async () => { srv = await startWs({ protocolSpecific: { maxPayload: 64 * 1024 } }); });
  after(async () => { await stopWs(srv.server); });

  it('a message larger than maxPayload closes with 1009; the limit itself is accepted', async () => {
    const ws = await connect(srv.url('/big'));
    const ok = nextMessages(ws, 1);
    ws.send(Buffer.alloc(64 * 1024, 1));
    assert.equal((await ok)[0].data.length, 64 * 1024);
    const serverSide = await srv.accepted('/big');
    const onServer = closed(serverSide);
    const onClient = closed(ws);
    ws.send(Buffer.alloc(64 * 1024 + 1, 2));
    assert.equal((await onClient).code, 1009);
    assert.equal((await onServer).code, 1009);
  });

  it('a client still sending after going over maxPayload gets the 1009 close frame, with no reason (as ws); the server side has the reason', async () => {
    // The server fails the connection at the frame's header while megabytes of it are still on
    // their way: it must read and drop them after its close frame, or the reset of a socket closed
    // with unread bytes makes the client lose that frame (1006).
    for (let i = 0; i < 3; i++) {
      const ws = await connect(srv.url(`/over-${i}`));
      const serverSide = await srv.accepted(`/over-${i}`);
      const onServer = closed(serverSide);
      const onClient = closed(ws);
      ws.send(Buffer.alloc(4 * 1024 * 1024, 3));
      assert.deepEqual(await onClient, { code: 1009, reason: '' }, `try ${i}`);
      const server = await onServer;
      assert.equal(server.code, 1009);
      assert.match(server.reason, /Message too long/);
    }
  });

  it('a frame that can only fail is refused at its header, before its payload arrives (as ws)', async () => {
    for (const [i, head] of [
      // Unmasked binary frame announcing 50,000 bytes; a ping announcing 50,000 bytes.
      Buffer.from([0x82, 126, 0xc3, 0x50]),
      Buffer.from([0x89, 0x80 | 126, 0xc3, 0x50, 1, 2, 3, 4]),
    ].entries()) {
      const raw = await rawWebSocket(srv.port, `/head-${i}`);
      raw.send(head);
      assert.equal((await withTimeout(raw.closeFrame, 2000, 'close frame before the payload'))?.code, 1002);
      raw.socket.destroy();
    }
  });

  it('a message over maxPayload in fragments (each below it) also closes with 1009', async () => {
    const raw = await rawWebSocket(srv.port, '/fragments');
    const part = Buffer.alloc(40 * 1024, 0x61);
    raw.send(frame({ opcode: 0x1, payload: part, fin: false }));
    raw.send(frame({ opcode: 0x0, payload: part, fin: true }));
    assert.equal((await withTimeout(raw.closeFrame, 5000, 'close frame'))?.code, 1009);
    raw.socket.destroy();
  });

  it('invalid UTF-8 in a text frame closes with 1007', async () => {
    const raw = await rawWebSocket(srv.port, '/utf8');
    raw.send(frame({ opcode: 0x1, payload: Buffer.from([0x68, 0x69, 0xff, 0xfe]) }));
    assert.equal((await withTimeout(raw.closeFrame, 5000, 'close frame'))?.code, 1007);
    await withTimeout(raw.ended, 6000, 'socket end');
  });

  it('invalid UTF-8 split over fragments closes with 1007; valid UTF-8 split mid-character is fine', async () => {
    const good = await rawWebSocket(srv.port, '/utf8-ok');
    const text = Buffer.from('✓✓'); // e2 9c 93 e2 9c 93
    good.send(frame({ opcode: 0x1, payload: text.subarray(0, 4), fin: false }));
    good.send(frame({ opcode: 0x0, payload: text.subarray(4), fin: true }));
    const texts = () => good.frames.filter((f) => f.opcode === 0x1).map((f) => f.payload.toString('utf8'));
    assert.deepEqual(await pollUntil(texts, (t) => t.length > 0, { timeoutMs: 3000 }), ['✓✓'], 'the reassembled message is echoed');
    good.send(frame({ opcode: 0x8, payload: Buffer.from([0x03, 0xe8]) }));
    assert.equal((await withTimeout(good.closeFrame, 5000, 'close frame'))?.code, 1000);
    const bad = await rawWebSocket(srv.port, '/utf8-bad');
    bad.send(frame({ opcode: 0x1, payload: Buffer.from([0xe2, 0x9c]), fin: false }));
    bad.send(frame({ opcode: 0x0, payload: Buffer.from([0x28]), fin: true }));
    assert.equal((await withTimeout(bad.closeFrame, 5000, 'close frame'))?.code, 1007);
    good.socket.destroy();
    bad.socket.destroy();
  });

  for (const [i, [what, bytes]] of [
    ['an unmasked client frame', frame({ opcode: 0x1, payload: Buffer.from('hi'), mask: false })],
    ['a reserved opcode (0x3)', frame({ opcode: 0x3, payload: Buffer.from('hi') })],
    ['RSV1 set without a negotiated extension', frame({ opcode: 0x1, payload: Buffer.from('hi'), rsv: 4 })],
    ['a fragmented ping', frame({ opcode: 0x9, payload: Buffer.from('hi'), fin: false })],
    ['a continuation frame with nothing to continue', frame({ opcode: 0x0, payload: Buffer.from('hi') })],
  ].entries()) {
    it(`${what} closes with 1002`, async () => {
      const raw = await rawWebSocket(srv.port, `/proto-${i}`);
      const serverSide = await srv.accepted(`/proto-${i}`);
      const onServer = closed(serverSide);
      raw.send(bytes);
      assert.equal((await withTimeout(raw.closeFrame, 5000, 'close frame'))?.code, 1002);
      assert.equal((await onServer).code, 1002);
      raw.socket.destroy();
    });
  }

  it('a bad upgrade request (wrong version) is refused, not upgraded', async () => {
    const r = await request({
      port: srv.port, path: '/',
      headers: { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version': '8' },
    }).catch((e) => ({ error: e }));
    if (r.error) assert.match(String(r.error.message), /socket hang up|ECONNRESET|Parse Error/);
    else assert.ok([400, 426].includes(r.status), `status ${r.status}`);
  });
});

describe('WsServer: heartbeat', () => {
  const PING = 300;
  const PONG = 300;
  let srv;
  before(async () => { srv = await startWs({ protocolSpecific: { pingInterval: PING, pongTimeout: PONG } }); });
  after(async () => { await stopWs(srv.server); });

  it('a peer that does not answer pings is terminated within pingInterval + pongTimeout; a normal one survives', async () => {
    const normal = await connect(srv.url('/alive'));
    let pings = 0;
    normal.on('ping', () => { pings++; });
    const t0 = Date.now();
    const dead = await connect(srv.url('/dead'), { autoPong: false });
    const deadServerSide = await srv.accepted('/dead');
    let deadPings = 0;
    dead.on('ping', () => { deadPings++; });
    const onServer = closed(deadServerSide, 5000);
    const { code } = await closed(dead, 5000);
    const elapsed = Date.now() - t0;
    assert.equal(code, 1006, 'dropped without a closing handshake');
    assert.ok(deadPings >= 1, 'the dead peer was pinged');
    assert.ok(elapsed >= PING + PONG - 100, `dropped after ${elapsed} ms, before pingInterval + pongTimeout`);
    assert.ok(elapsed <= PING + PONG + 400, `dropped after ${elapsed} ms (limit ${PING + PONG} ms + 400 ms slack)`);
    assert.equal((await onServer).code, 1006);
    // The normal client keeps going for several ping rounds.
    await sleep(5 * PING);
    assert.ok(pings >= 4, `normal client saw ${pings} pings`);
    assert.equal(normal.readyState, WebSocket.OPEN);
    const reply = nextMessages(normal, 1);
    normal.send('still here');
    assert.equal((await reply)[0].data.toString(), 'still here');
    normal.close();
  });
});

describe('WsServer: connection limit and backpressure', () => {
  it('maxConnections reached: the next upgrade is answered 503 before upgrading', async () => {
    const srv = await startWs({ connectionPool: { maxConnections: 2 } });
    try {
      const a = await connect(srv.url('/1'));
      const b = await connect(srv.url('/2'));
      const err = await connect(srv.url('/3')).then(() => null, (e) => e);
      assert.ok(err, 'third connection was upgraded');
      assert.equal(err.statusCode, 503, `third connection: ${err && err.message}`);
      // The two open connections still work, and a slot frees when one closes.
      const r = nextMessages(a, 1);
      a.send('ok');
      assert.equal((await r)[0].data.toString(), 'ok');
      const c = closed(b);
      b.close();
      await c;
      let d = null;
      for (let i = 0; i < 20 && !d; i++) {
        d = await connect(srv.url('/4')).catch(() => null);
        if (!d) await sleep(50);
      }
      assert.ok(d, 'a connection is accepted again once one closed');
      a.close();
      d.close();
    } finally {
      await stopWs(srv.server);
    }
  });

  it('one message larger than maxBufferedAmount goes out when nothing else is queued (as ws sends it)', async () => {
    const srv = await startWs({ protocolSpecific: { maxBufferedAmount: 64 * 1024, maxPayload: 1024 * 1024 } });
    const ws = await connect(srv.url('/big'));
    const big = crypto.randomBytes(300 * 1024);
    const got = nextMessages(ws, 1);
    ws.send(big);
    const [m] = await got;
    assert.ok(Buffer.from(m.data).equals(big), 'the 300 KiB echo arrived whole');
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.close();
  });

  it('a reader that stops reading: server memory stays bounded and the connection is terminated past maxBufferedAmount; others unaffected', async () => {
    const MAX = 2 * 1024 * 1024;
    const CHUNK = Buffer.alloc(256 * 1024, 0x5a);
    let pump = null;
    const srv = await startWs({
      protocolSpecific: { maxBufferedAmount: MAX },
      onConnection(client, req) {
        if (req.url !== '/slow') { echo(client); return; }
        pump = { client, sent: 0, maxBuffered: 0, errors: [], closedAt: null, done: null };
        pump.done = new Promise((resolve) => client.once('close', (code) => { pump.closedAt = Date.now(); resolve(code); }));
        client.on('error', (e) => pump.errors.push(e.code));
        const tick = () => {
          if (client.readyState !== WebSocket.OPEN || pump.sent >= 256 * CHUNK.length) return;
          client.send(CHUNK, { binary: true }, (err) => { if (err) pump.errors.push(err.code); });
          pump.sent += CHUNK.length;
          pump.maxBuffered = Math.max(pump.maxBuffered, client.bufferedAmount);
          // A steady stream (not a burst): the server's writes keep up until the peer's socket
          // buffers are full, then the queue grows to maxBufferedAmount.
          setTimeout(tick, 2);
        };
        setTimeout(tick, 2);
      },
    });
    try {
      const rss0 = rss();
      const other = await connect(srv.url('/other'));
      const slow = await connect(srv.url('/slow'));
      slow._socket.pause(); // stop reading: the kernel buffers fill, then the server's writes stall
      let rssMax = rss0;
      const sampler = setInterval(() => { rssMax = Math.max(rssMax, rss()); }, 20);
      // Others keep being served while the slow one is stuck.
      const t0 = Date.now();
      for (let i = 0; i < 20; i++) {
        const r = nextMessages(other, 1, 2000);
        other.send(`other ${i}`);
        assert.equal((await r)[0].data.toString(), `other ${i}`);
      }
      const otherMs = Date.now() - t0;
      const code = await withTimeout(pump.done, 5000, 'server-side close of the slow reader').catch((e) => e);
      clearInterval(sampler);
      const state = `sent ${pump.sent} B, errors ${pump.errors.join(',') || 'none'}, bufferedAmount peak ${pump.maxBuffered}, now ${pump.client.bufferedAmount}, readyState ${pump.client.readyState}`;
      assert.ok(pump.errors.includes('ERR_WS_BACKPRESSURE'), `send reported backpressure (errors: ${pump.errors.join(',')})`);
      assert.ok(pump.sent < 256 * CHUNK.length, `the server stopped sending (sent ${pump.sent} B)`);
      assert.ok(pump.maxBuffered <= MAX + CHUNK.length, `bufferedAmount peaked at ${pump.maxBuffered}`);
      assert.ok(rssMax - rss0 < 48 * 1024 * 1024, `RSS grew by ${((rssMax - rss0) / 1048576).toFixed(1)} MiB`);
      assert.ok(otherMs < 3000, `20 echoes for the other client took ${otherMs} ms`);
      assert.ok(!(code instanceof Error), `the slow reader was not terminated: ${code && code.message} (${state})`);
      assert.equal(code, 1006);
      const clientSide = closed(slow, 5000);
      slow._socket.resume();
      assert.equal((await clientSide).code, 1006, 'the slow client sees the connection dropped');
      other.close();
    } finally {
      await stopWs(srv.server);
    }
  });
});

describe('WsServer: graceful shutdown', () => {
  it('every open socket gets close 1001 and the drain completes', async () => {
    const srv = await startWs();
    const all = await Promise.all([1, 2, 3].map((i) => connect(srv.url(`/s${i}`))));
    const serverSides = srv.connections.map((c) => closed(c.client));
    const onClient = all.map((ws) => closed(ws));
    open.delete(srv.server);
    const report = await withTimeout(srv.server.gracefulShutdown({ drainDelay: 0, timeout: 5000 }), 8000, 'gracefulShutdown');
    for (const c of await Promise.all(onClient)) assert.equal(c.code, 1001);
    for (const c of await Promise.all(serverSides)) assert.equal(c.code, 1001);
    assert.equal(report.forced, 0, JSON.stringify(report));
    assert.equal(srv.server.server.listening, false);
    const refused = await connect(srv.url('/after')).then(() => false, () => true);
    assert.ok(refused, 'no new connection after shutdown');
  });

  it('close 1001 comes at step 1 by default, at step 3 (after the drain delay) with keepOpenDuringDrainDelay', async () => {
    for (const keep of [false, true]) {
      const srv = await startWs(keep ? { protocolSpecific: { keepOpenDuringDrainDelay: true } } : {});
      const ws = await connect(srv.url('/k'));
      const t0 = Date.now();
      const gotClose = closed(ws, 5000).then((c) => ({ ...c, after: Date.now() - t0 }));
      open.delete(srv.server);
      const report = await withTimeout(srv.server.gracefulShutdown({ drainDelay: 700, timeout: 5000 }), 8000, 'gracefulShutdown');
      const c = await gotClose;
      assert.equal(c.code, 1001);
      if (keep) {
        assert.ok(c.after >= 650, `kept open through the drain delay: closed after ${c.after} ms (drainDelay 700)`);
        assert.equal(report.steps.find((s) => s.name === 'waitDrainDelay').status, 'completed');
      } else {
        assert.ok(c.after < 400, `closed at step 1: after ${c.after} ms`);
      }
      assert.equal(report.forced, 0, JSON.stringify(report));
    }
    assert.throws(() => new WsServer(makeApp(), { hostname: '127.0.0.1', port: 0, protocol: 'ws', connectionPool: { protocolSpecific: { keepOpenDuringDrainDelay: 'yes' } } }), { code: 'ERR_INVALID_CONFIG', message: /keepOpenDuringDrainDelay/ });
  });
});

describe('WsServer over TLS (wss) and NewServe', () => {
  const certs = getCerts();

  it('wss with the test CA: echo, and the upgrade request is encrypted', async () => {
    const srv = await startWs({ protocol: 'wss', ssl: { enabled: true, key: certs.server.keyPem, cert: certs.server.certPem } });
    try {
      const ws = await connect(`wss://localhost:${srv.port}/secure`, { ca: certs.ca.certPem });
      const r = nextMessages(ws, 2);
      ws.send('secret');
      ws.send(Buffer.from([9, 8, 7]));
      const got = await r;
      assert.equal(got[0].data.toString(), 'secret');
      assert.equal(got[0].isBinary, false);
      assert.deepEqual(got[1].data, Buffer.from([9, 8, 7]));
      assert.equal((await srv.accepted('/secure')) && srv.connections.find((c) => c.req.url === '/secure').req.socket.encrypted, true);
      // A client that does not trust the CA is refused by TLS.
      const untrusted = await connect(`wss://localhost:${srv.port}/`).then(() => null, (e) => e);
      assert.ok(untrusted && /self[- ]signed|unable to (get|verify)|certificate/i.test(untrusted.message), String(untrusted && untrusted.message));
      const c = closed(ws);
      ws.close(1000);
      await c;
    } finally {
      await stopWs(srv.server);
    }
  });

  it("NewServe(app, {protocol:'ws'}) and ({protocol:'wss'}) with Koatty key_file/crt_file give working WsServers", async () => {
    for (const protocol of ['ws', 'wss']) {
      const app = makeApp();
      app.config = (key) => ({ key_file: certs.server.key, crt_file: certs.server.cert })[key];
      const server = NewServe(app, { hostname: '127.0.0.1', port: 0, protocol });
      assert.ok(server instanceof WsServer, `${protocol}: ${server.constructor.name}`);
      assert.equal(server.constructor.name, 'WsServer');
      server.on('connection', echo);
      await new Promise((resolve) => server.Start(resolve));
      open.add(server);
      try {
        const port = server.server.address().port;
        const ws = await connect(`${protocol}://localhost:${port}/ns`, { ca: certs.ca.certPem });
        const r = nextMessages(ws, 1);
        ws.send(`via NewServe ${protocol}`);
        assert.equal((await r)[0].data.toString(), `via NewServe ${protocol}`);
        assert.equal(app.calls.at(-1).protocol, protocol, 'app.callback gets the server protocol');
        ws.close();
      } finally {
        await stopWs(server);
      }
    }
  });
});

describe('Koatty 3.11.8 app with a WebSocket controller (koatty_router WebsocketRouter)', () => {
  let app;
  before(async () => {
    // Router protocol 'ws' through koatty_config's run-con env override (router config: protocol).
    app = await startKoattyApp({ env: { KOATTY_TEST_PROTOCOL: 'ws', router_router__protocol: 'ws' } });
  });
  after(async () => { if (app) await app.stop(); });

  it('is served by the native WsServer', () => {
    assert.equal(app.info.serverClass, 'WsServer');
    assert.equal(app.info.native, true);
  });

  it('messages are routed like GET <upgrade path> and answered with util.inspect(ctx.body) (contract §4.2)', async () => {
    const ws = await connect(`ws://127.0.0.1:${app.port}/ws/echo?x=1`);
    const r = nextMessages(ws, 2);
    ws.send('hello');
    ws.send(Buffer.from('second'));
    const got = await r;
    const expected = (echoText) => util.inspect({ echo: echoText, path: '/ws/echo', method: 'GET', websocket: true });
    assert.equal(got[0].data.toString(), expected('hello'));
    assert.equal(got[0].data.toString(), "{ echo: 'hello', path: '/ws/echo', method: 'GET', websocket: true }");
    assert.equal(got[0].isBinary, false, 'replies are text frames');
    assert.equal(got[1].data.toString(), expected('second'));
    ws.close();
  });

  it('a controller sends its own frames through ctx.websocket; errors come back as koatty_exception JSON', async () => {
    const push = await connect(`ws://127.0.0.1:${app.port}/ws/push`);
    const r = nextMessages(push, 4);
    push.send('3');
    assert.deepEqual((await r).map((m) => m.data.toString()), ['push 1/3', 'push 2/3', 'push 3/3', "'pushed'"]);
    push.close();
    const boom = await connect(`ws://127.0.0.1:${app.port}/ws/throw`);
    const e = nextMessages(boom, 1);
    boom.send('x');
    const body = JSON.parse((await e)[0].data.toString());
    assert.equal(body.code, 1);
    assert.equal(body.message, 'ws boom');
    boom.close();
  });

  it('plain HTTP on the ws port reaches the Koatty app', async () => {
    const r = await request({ port: app.port, path: '/api/json' });
    assert.equal(r.status, 200);
    assert.equal(r.json().hello, 'world');
  });

  it('SIGTERM (Koatty Stop) closes open sockets with 1001 and the process exits 0', { skip: NO_POSIX_SIGNALS }, async () => {
    const ws = await connect(`ws://127.0.0.1:${app.port}/ws/echo`);
    const c = closed(ws, 15000);
    const exit = app.stop(15000);
    assert.equal((await c).code, 1001);
    const { code, forced } = await exit;
    assert.equal(forced, false, app.output());
    assert.equal(code, 0, app.output());
  });
});
