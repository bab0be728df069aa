'use strict';
// WsServer hardening (issue 16) and drop-in fidelity with `ws` (issue 15) with real sockets: raw
// net sockets for floods and bad handshakes, the `ws` package as client. Memory is measured on a
// server running in a child process (its RSS from /proc), so the test process's own buffers do not
// count; every flood is bounded in time and count.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const net = require('net');
const { spawn } = require('child_process');
const WebSocket = require('ws');
const { WsServer } = require('..');
const { withTimeout, failIfKeptAlive, pollUntil } = require('./helpers');
const { NO_PROC_STATUS } = require('./platform');
const { frame: wsFrame, parseFrames } = require('./ws-frames');

const MiB = 1024 * 1024;

failIfKeptAlive(__filename);

// ---------------------------------------------------------------------------------------------------
// A WsServer in a child process

/**
 * The child: a WsServer with `options` (JSON in argv), echoing messages (with WS_REFERENCE=1 the
 * `ws` package's WebSocketServer instead, to compare figures; the memory tests print theirs). With `lagMs`, the first
 * message blocks its JS thread that long (a handler that falls behind), then the child reports
 * 'lag-over' over IPC. Prints its port on stdout.
 */
const CHILD = `
  const { options, lagMs, reference } = JSON.parse(process.argv[1]);
  let s;
  if (reference) {
    // The \`ws\` package's server, for side-by-side figures (WS_REFERENCE=1).
    const { WebSocketServer } = require('ws');
    const maxPayload = options.connectionPool?.protocolSpecific?.maxPayload;
    s = new WebSocketServer({ host: '127.0.0.1', port: 0, ...(maxPayload ? { maxPayload } : {}) });
    s.Start = (cb) => s.once('listening', cb);
    s.server = s;
  } else {
    const { WsServer } = require(${JSON.stringify(require.resolve('..'))});
    const app = { callback: () => () => {}, config: () => undefined };
    s = new WsServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'ws', ...options });
  }
  let lagged = false;
  s.on('connection', (c) => c.on('message', (d, b) => {
    if (lagMs && !lagged) {
      lagged = true;
      const end = Date.now() + lagMs;
      while (Date.now() < end);
      process.send('lag-over');
      return;
    }
    c.send(d, { binary: b });
  }));
  s.Start(() => process.stdout.write(s.server.address().port + '\\n'));
  process.on('disconnect', () => process.exit(0));
`;

const children = new Set();
after(() => { for (const c of children) c.kill('SIGKILL'); });

async function startChild({ options = {}, lagMs = 0 } = {}) {
  const reference = process.env.WS_REFERENCE === '1';
  const child = spawn(process.execPath, ['-e', CHILD, JSON.stringify({ options, lagMs, reference })], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  children.add(child);
  const port = await withTimeout(new Promise((resolve) => {
    child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
  }), 10000, 'child WsServer');
  return {
    child,
    port,
    stop() { children.delete(child); child.kill('SIGKILL'); },
  };
}

/** `VmRSS` (now) or `VmHWM` (peak) of a process, bytes. */
function memoryOf(pid, field = 'VmRSS') {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${field}:`));
  return Number(line.split(/\s+/)[1]) * 1024;
}

// ---------------------------------------------------------------------------------------------------
// Raw WebSocket clients over net sockets

/** One masked client frame (a control frame here: at most 125 bytes). */
function frame(opcode, payload = Buffer.alloc(0)) {
  assert.ok(payload.length < 126);
  return wsFrame({ opcode, payload });
}

/**
 * Sends a hand-made upgrade request with `headers` (name → value; `undefined` leaves a default
 * out) and resolves with { status, head (the response head text), socket, frames, ended } once the
 * response head arrived. `read: false` stops reading right after the head.
 */
function rawUpgrade(port, { path = '/', headers = {}, read = true } = {}) {
  const all = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...headers,
  };
  const lines = Object.entries(all).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return withTimeout(new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let head = null;
    const frames = [];
    const ended = new Promise((r) => socket.once('close', r));
    socket.on('error', () => {});
    socket.once('error', reject);
    socket.on('connect', () => socket.write(`GET ${path} HTTP/1.1\r\n${lines}\r\n`));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (head === null) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buf.subarray(0, end).toString('latin1');
        buf = buf.subarray(end + 4);
        if (!read) socket.pause();
        resolve({ status: Number(head.split(' ')[1]), head, socket, frames, ended });
      }
      const parsed = parseFrames(buf);
      buf = parsed.rest;
      frames.push(...parsed.frames);
    });
  }), 5000, 'raw upgrade');
}

/** Writes `make(i)` for i = 0.. until `count` or `ms` passed, honouring backpressure; resolves with how many were written and whether the peer stopped taking them. */
function flood(socket, make, { count, ms }) {
  return new Promise((resolve) => {
    const deadline = Date.now() + ms;
    let i = 0;
    let stalled = false;
    let timer = null;
    const finish = () => {
      clearTimeout(timer);
      socket.off('drain', pump);
      resolve({ written: i, stalled });
    };
    const pump = () => {
      stalled = false;
      while (i < count && Date.now() < deadline) {
        const ok = socket.write(make(i++));
        if (!ok) {
          stalled = true;
          return; // wait for 'drain' (or the deadline)
        }
      }
      finish();
    };
    socket.on('drain', pump);
    timer = setTimeout(finish, ms + 10);
    pump();
  });
}

// ---------------------------------------------------------------------------------------------------

describe('WsServer hardening: ping flood from a client that never reads (issue 16 §1)', () => {
  it('memory stays bounded and the server stops reading once its replies cannot be written', { skip: NO_PROC_STATUS }, async (t) => {
    const srv = await startChild();
    try {
      const rss0 = memoryOf(srv.child.pid);
      const peer = await rawUpgrade(srv.port, { read: false });
      assert.equal(peer.status, 101);
      // 125-byte pings (the largest allowed): the pongs fill the socket buffers soon.
      const payload = Buffer.alloc(125, 0x70);
      const ping = frame(0x9, payload);
      const result = await flood(peer.socket, () => ping, { count: 4_000_000, ms: 5000 });
      const grown = memoryOf(srv.child.pid, 'VmHWM') - rss0;
      peer.socket.destroy();
      t.diagnostic(`server RSS +${(grown / MiB).toFixed(1)} MiB; ${result.written} pings taken; stalled ${result.stalled}`);
      assert.ok(grown < 64 * MiB, `server RSS grew by ${(grown / MiB).toFixed(1)} MiB during ${result.written} pings`);
      assert.ok(result.stalled, `the server kept reading: all ${result.written} pings were taken`);
      assert.ok(result.written < 1_000_000, `the server took ${result.written} pings before it stopped reading`);
    } finally {
      srv.stop();
    }
  });

  it('unsolicited pongs do not keep a peer that never answers the server pings alive', async () => {
    const server = new WsServer({ callback: () => () => {}, config: () => undefined }, {
      hostname: '127.0.0.1', port: 0, protocol: 'ws',
      connectionPool: { protocolSpecific: { pingInterval: 300, pongTimeout: 200 } },
    });
    await withTimeout(new Promise((resolve) => server.Start(resolve)), 5000, 'Start');
    try {
      const peer = await rawUpgrade(server.server.address().port);
      const t0 = Date.now();
      // A pong every 50 ms (never the answer to a server ping); the pings themselves are ignored.
      const pong = frame(0xa, Buffer.from('unsolicited'));
      const timer = setInterval(() => peer.socket.write(pong), 50);
      const gone = await withTimeout(peer.ended.then(() => Date.now() - t0), 3000, 'server terminates the peer').catch((e) => e);
      clearInterval(timer);
      peer.socket.destroy();
      assert.ok(!(gone instanceof Error), 'the peer survived 3 s with pingInterval 300 / pongTimeout 200');
      assert.ok(gone < 1500, `terminated after ${gone} ms`);
      assert.ok(peer.frames.some((f) => f.opcode === 0x9), 'the server pinged');
      assert.ok(server.connectionPool.getMetrics().wsDeadPeers >= 1, "counted as a dead peer");
    } finally {
      await server.gracefulShutdown({ drainDelay: 0, timeout: 3000, stepTimeout: 2000 });
    }
  });

  it('a pong answering the server ping keeps a peer alive (ws client: automatic pongs)', async () => {
    const server = new WsServer({ callback: () => () => {}, config: () => undefined }, {
      hostname: '127.0.0.1', port: 0, protocol: 'ws',
      connectionPool: { protocolSpecific: { pingInterval: 100, pongTimeout: 100 } },
    });
    await withTimeout(new Promise((resolve) => server.Start(resolve)), 5000, 'Start');
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${server.server.address().port}/`);
      let pings = 0;
      ws.on('ping', () => { pings++; });
      await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'open');
      let closed = false;
      ws.once('close', () => { closed = true; });
      await withTimeout(new Promise((resolve) => { const on = () => { if (pings >= 10) { ws.off('ping', on); resolve(); } }; ws.on('ping', on); }), 5000, '10 server pings');
      assert.equal(closed, false, 'a peer answering every ping was terminated');
      ws.close();
    } finally {
      await server.gracefulShutdown({ drainDelay: 0, timeout: 3000, stepTimeout: 2000 });
    }
  });
});

describe('WsServer hardening: receive queue bounded in bytes (issue 16 §2)', () => {
  it('while the handler lags, large messages do not pile up in memory', { skip: NO_PROC_STATUS }, async (t) => {
    const MESSAGE = 4 * MiB;
    const srv = await startChild({ options: { connectionPool: { protocolSpecific: { maxPayload: MESSAGE } } }, lagMs: 4000 });
    try {
      const rss0 = memoryOf(srv.child.pid);
      const lagOver = new Promise((resolve) => srv.child.once('message', resolve));
      const data = Buffer.alloc(MESSAGE, 0x61);
      const clients = [];
      for (let c = 0; c < 2; c++) {
        const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/`, { maxPayload: 0 });
        ws.on('error', () => {});
        await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'open');
        clients.push(ws);
      }
      for (const ws of clients) for (let i = 0; i < 33; i++) ws.send(data);
      await withTimeout(lagOver, 15000, 'the lagging handler');
      const grown = memoryOf(srv.child.pid, 'VmHWM') - rss0;
      for (const ws of clients) ws.terminate();
      t.diagnostic(`server RSS peak +${(grown / MiB).toFixed(1)} MiB`);
      assert.ok(grown < 96 * MiB, `server RSS grew by ${(grown / MiB).toFixed(1)} MiB while 2 × 33 × 4 MiB were sent to a lagging handler`);
    } finally {
      srv.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// In-process servers: ours and ws's, side by side

const wsServers = new Set();
after(async () => {
  for (const s of wsServers) await s.gracefulShutdown({ drainDelay: 0, timeout: 3000, stepTimeout: 2000 }).catch(() => {});
});

/** Our WsServer with `options`; `onConnection(client, req)` defaults to echo. */
async function startOurs(options = {}, onConnection = (c) => c.on('message', (d, b) => c.send(d, { binary: b }))) {
  const server = new WsServer({ callback: () => () => {}, config: () => undefined }, { hostname: '127.0.0.1', port: 0, protocol: 'ws', ...options });
  server.on('connection', onConnection);
  await withTimeout(new Promise((resolve) => server.Start(resolve)), 5000, 'Start');
  wsServers.add(server);
  return { server, port: server.server.address().port };
}

const referenceServers = new Set();
after(() => Promise.all([...referenceServers].map((server) => new Promise((resolve) => {
  for (const c of server.clients) c.terminate();
  server.close(resolve);
}))));

/** ws's WebSocketServer with `options`, for the reference answers. */
async function startReference(options = {}) {
  const server = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
  await new Promise((resolve) => server.once('listening', resolve));
  referenceServers.add(server);
  return { server, port: server.address().port };
}

/** A `ws` client: resolves with it once open, or rejects with `statusCode` on an HTTP answer. */
function connect(port, protocols, options = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, protocols, options);
  ws.on('error', () => {});
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => { reject(Object.assign(new Error(`unexpected response ${res.statusCode}`), { statusCode: res.statusCode })); ws.terminate(); });
  }), 5000, 'connect');
}

describe('WsServer: close() after a backlog, to a reader that is slow for a while', () => {
  it('every message sent before close() arrives, then the close frame, as with ws (the closing handshake was cut off after 5 s)', async () => {
    const MIB = 1024 * 1024;
    const { port } = await startOurs({}, (c) => {
      for (let i = 0; i < 6; i++) c.send(Buffer.alloc(MIB, i));
      c.close(1000, 'done');
    });
    const ws = await connect(port);
    ws._socket.pause(); // the reader takes 6 s before it reads at all
    const got = [];
    ws.on('message', (d) => got.push(d.length));
    const closed = withTimeout(new Promise((resolve) => ws.on('close', (code) => resolve(code))), 20000, 'close');
    await new Promise((resolve) => setTimeout(resolve, 6000));
    ws._socket.resume();
    const code = await closed;
    assert.deepEqual(got, [MIB, MIB, MIB, MIB, MIB, MIB], 'all six messages');
    assert.equal(code, 1000);
  });
});

describe('WsServer: a client that closes first while a backlog waits for it', () => {
  it('gets every message queued before its close frame, then the close reply, even when it reads only after 2.5 s (the final flush was cut after 1 s)', async () => {
    const MIB = 1024 * 1024;
    const COUNT = 24;
    const { port } = await startOurs({ connectionPool: { protocolSpecific: { maxBufferedAmount: 64 * MIB } } }, (c) => {
      c.on('message', () => { for (let i = 0; i < COUNT; i++) c.send(Buffer.alloc(MIB, i)); });
    });
    const raw = await rawUpgrade(port, { read: false });
    assert.equal(raw.status, 101);
    // 'go' (the handler queues 24 MiB, more than the kernel buffers take), then the close frame;
    // nothing is read for 2.5 s.
    raw.socket.write(frame(0x1, Buffer.from('go')));
    await new Promise((resolve) => setTimeout(resolve, 300));
    raw.socket.write(frame(0x8, Buffer.from([0x03, 0xe8])));
    await new Promise((resolve) => setTimeout(resolve, 2500));
    raw.socket.resume();
    await withTimeout(raw.ended, 20000, 'the server closes the connection');
    const data = raw.frames.filter((f) => f.opcode === 0x2);
    assert.equal(data.length, COUNT, 'every message');
    assert.ok(data.every((f, i) => f.payload.length === MIB && f.payload[0] === i), 'in order, whole');
    const last = raw.frames[raw.frames.length - 1];
    assert.equal(last.opcode, 0x8, 'the close reply comes last');
    assert.equal(last.payload.readUInt16BE(0), 1000);
  });
});

describe('WsServer: replies to the messages just before the peer\'s close frame', () => {
  it('go out before the close reply, as with ws, when a client sends and closes at once (none arrived before: the close reply left the I/O thread first)', async () => {
    const COUNT = 50;
    const CLIENTS = 10;
    // Two replies per message, and a send after the close frame that must fail as in ws (CLOSING).
    const lateErrors = [];
    const { port } = await startOurs({}, (c) => {
      c.on('message', (d) => {
        c.send(d);
        c.send(Buffer.concat([d, Buffer.from('!')]));
      });
      c.on('close', () => c.send('late', (err) => lateErrors.push(err instanceof Error)));
    });
    const results = await Promise.all(Array.from({ length: CLIENTS }, async () => {
      const ws = await connect(port);
      const got = [];
      ws.on('message', (d) => got.push(d.toString()));
      const closed = withTimeout(new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))), 10000, 'close');
      for (let i = 0; i < COUNT; i++) ws.send(`m${i}`);
      ws.close(4001, 'done');
      return { got, ...(await closed) };
    }));
    const expected = [];
    for (let i = 0; i < COUNT; i++) expected.push(`m${i}`, `m${i}!`);
    for (const r of results) {
      assert.deepEqual(r.got, expected, 'every reply, in order, before the close');
      assert.equal(r.code, 4001, 'the close echoed');
      assert.equal(r.reason, 'done');
    }
    await withTimeout((async () => { while (lateErrors.length < CLIENTS) await new Promise((resolve) => setTimeout(resolve, 20)); })(), 5000, 'late sends');
    assert.deepEqual(lateErrors, Array(CLIENTS).fill(true), 'a send after the close fails, as in ws');
  });

  it('a close code that may not be sent is answered with 1002, and the handler hears 1002 (not the peer\'s code)', async () => {
    const heard = [];
    const { port } = await startOurs({}, (c) => c.on('close', (code, reason) => heard.push([code, reason.toString()])));
    for (const code of [1006, 1005, 999, 5000]) {
      const raw = await rawUpgrade(port);
      assert.equal(raw.status, 101);
      const payload = Buffer.alloc(10);
      payload.writeUInt16BE(code);
      payload.write('spoofed!', 2);
      raw.socket.write(frame(0x8, payload));
      await withTimeout(raw.ended, 5000, 'closed');
      const last = raw.frames[raw.frames.length - 1];
      assert.equal(last.opcode, 0x8);
      assert.equal(last.payload.readUInt16BE(0), 1002, `reply to ${code}`);
    }
    await withTimeout((async () => { while (heard.length < 4) await new Promise((resolve) => setTimeout(resolve, 20)); })(), 5000, 'close events');
    assert.deepEqual(heard, Array(4).fill([1002, 'Protocol violation']));
  });

  it('the answer to our close with a code that may not be sent: the handler hears 1002, not the peer\'s code', async () => {
    const heard = [];
    const { port } = await startOurs({}, (c) => {
      c.on('message', () => c.close(4002, 'srv'));
      c.on('close', (code, reason) => heard.push([code, reason.toString()]));
    });
    const raw = await rawUpgrade(port);
    raw.socket.write(frame(0x1, Buffer.from('go')));
    await withTimeout((async () => { while (!raw.frames.some((f) => f.opcode === 0x8)) await new Promise((resolve) => setTimeout(resolve, 10)); })(), 5000, 'our close');
    const payload = Buffer.alloc(6);
    payload.writeUInt16BE(1006);
    payload.write('spoo', 2);
    raw.socket.write(frame(0x8, payload));
    await withTimeout(raw.ended, 5000, 'closed');
    await withTimeout((async () => { while (heard.length < 1) await new Promise((resolve) => setTimeout(resolve, 10)); })(), 5000, 'close event');
    assert.deepEqual(heard, [[1002, 'Protocol violation']]);
  });

  it('a shutdown while the JS thread is busy still sends each waiting connection its close frame', async () => {
    const { server, port } = await startOurs();
    const raws = [];
    for (let i = 0; i < 10; i++) raws.push(await rawUpgrade(port));
    for (const [i, raw] of raws.entries()) raw.socket.write(Buffer.concat([frame(0x1, Buffer.from('hi')), i % 2 ? frame(0x8, Buffer.from([0x03, 0xe8])) : frame(0x3)]));
    const busy = (ms) => { const end = Date.now() + ms; while (Date.now() < end); };
    busy(600);
    const done = server.gracefulShutdown({ drainDelay: 0, timeout: 5000, stepTimeout: 3000 });
    busy(1500);
    await withTimeout(Promise.all(raws.map((raw) => raw.ended)), 5000, 'every socket closed');
    await done;
    for (const raw of raws) assert.ok(raw.frames.some((f) => f.opcode === 0x8), 'a close frame before the socket closed');
  });

  it('replies to a message just before a protocol error go out before the 1002, as with ws', async () => {
    const { port } = await startOurs();
    for (const bad of [frame(0x3, Buffer.from('x')), Buffer.from([0x81 | 0x40, 0x81, 0, 0, 0, 0, 0x68])]) {
      const raw = await rawUpgrade(port);
      raw.socket.write(Buffer.concat([frame(0x1, Buffer.from('hi')), bad]));
      await withTimeout(raw.ended, 5000, 'closed');
      assert.deepEqual(raw.frames.map((f) => f.opcode), [0x1, 0x8], 'the echo, then the close');
      assert.equal(raw.frames[0].payload.toString(), 'hi');
      assert.equal(raw.frames[1].payload.readUInt16BE(0), 1002);
    }
  });

  it('a handler whose JS thread is busy when the close frame comes still gets its replies out first', async () => {
    const { port } = await startOurs({}, (c) => {
      c.on('message', (d) => {
        const end = Date.now() + 200;
        while (Date.now() < end);
        c.send(d);
      });
    });
    const ws = await connect(port);
    const got = [];
    ws.on('message', (d) => got.push(d.toString()));
    const closed = withTimeout(new Promise((resolve) => ws.on('close', resolve)), 10000, 'close');
    ws.send('slow');
    ws.close();
    assert.equal(await closed, 1005);
    assert.deepEqual(got, ['slow']);
  });
});

describe('WsServer: maxReceiveQueue', () => {
  it('a budget smaller than the messages still delivers every message, in order (each goes through alone)', async () => {
    const { port } = await startOurs({ connectionPool: { protocolSpecific: { maxReceiveQueue: 1024, maxPayload: 64 * 1024 } } });
    const ws = await connect(port);
    const got = [];
    const all = withTimeout(new Promise((resolve) => ws.on('message', (d) => { got.push(d); if (got.length === 20) resolve(); })), 10000, '20 echoes');
    const sent = [];
    for (let i = 0; i < 20; i++) {
      const m = Buffer.alloc(10 * 1024, i);
      sent.push(m);
      ws.send(m);
    }
    await all;
    assert.deepEqual(got.map((d) => d[0]), sent.map((d) => d[0]));
    assert.ok(got.every((d, i) => d.equals(sent[i])));
    ws.terminate();
  });
});

describe('WsServer hardening: Sec-WebSocket-Key is checked as RFC 6455 §4.2.1 and ws check it (issue 16 §7)', () => {
  let ours;
  let reference;
  before(async () => {
    ours = await startOurs();
    reference = await startReference();
  });

  const keys = {
    empty: '',
    'not base64': 'not a key at all!!',
    '15 bytes': crypto.randomBytes(15).toString('base64'),
    '17 bytes': crypto.randomBytes(17).toString('base64'),
    'unpadded 16 bytes': crypto.randomBytes(16).toString('base64').replace(/=+$/, ''),
    'bad character': `${crypto.randomBytes(16).toString('base64').slice(0, 21)}*==`,
  };
  for (const [what, key] of Object.entries(keys)) {
    it(`${what} key: 400 like ws, not upgraded`, async () => {
      const mine = await rawUpgrade(ours.port, { headers: { 'Sec-WebSocket-Key': key } });
      const theirs = await rawUpgrade(reference.port, { headers: { 'Sec-WebSocket-Key': key } });
      mine.socket.destroy();
      theirs.socket.destroy();
      assert.equal(theirs.status, 400, 'ws answers 400');
      assert.equal(mine.status, 400, `answered ${mine.head.split('\r\n')[0]}`);
    });
  }

  it('a missing key: 400', async () => {
    const mine = await rawUpgrade(ours.port, { headers: { 'Sec-WebSocket-Key': undefined } });
    mine.socket.destroy();
    assert.equal(mine.status, 400);
  });

  it('a valid key is still upgraded, with the right Sec-WebSocket-Accept', async () => {
    const key = crypto.randomBytes(16).toString('base64');
    const mine = await rawUpgrade(ours.port, { headers: { 'Sec-WebSocket-Key': key } });
    mine.socket.destroy();
    assert.equal(mine.status, 101);
    const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    assert.match(mine.head, new RegExp(`\\r\\nsec-websocket-accept: ${accept.replace(/[+/]/g, '\\$&')}`, 'i'));
  });
});

describe('NativeWebSocket ping/pong payloads over 125 bytes throw as in ws (issue 16 §6)', () => {
  it('ping(126 bytes) and pong(126 bytes) throw RangeError; 125 bytes go out as control frames', async () => {
    let server;
    const { port } = await startOurs({}, (c) => { server = c; });
    const peer = await rawUpgrade(port);
    await withTimeout((async () => { while (!server) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    const expected = { name: 'RangeError', message: 'The data size must not be greater than 125 bytes' };
    // ws's own WebSocket, server side, for the reference behaviour.
    const reference = await startReference();
    const refSide = new Promise((resolve) => reference.server.once('connection', resolve));
    const refClient = await connect(reference.port);
    const refServer = await refSide;
    for (const [what, data] of [['a Buffer', Buffer.alloc(126)], ['a string', 'x'.repeat(126)], ['a multi-byte string', 'é'.repeat(63)]]) {
      assert.throws(() => refServer.ping(data), expected, `ws: ping(${what})`);
      assert.throws(() => server.ping(data), expected, `ping(${what})`);
      assert.throws(() => server.pong(data), expected, `pong(${what})`);
    }
    refClient.terminate();
    server.ping(Buffer.alloc(125, 1));
    server.pong(Buffer.alloc(125, 2));
    server.ping('after');
    await withTimeout((async () => {
      while (!peer.frames.some((f) => f.opcode === 0x9 && String(f.payload) === 'after')) await new Promise((r) => peer.socket.once('data', r));
    })(), 5000, 'the frames');
    const control = peer.frames.filter((f) => f.opcode === 0x9 || f.opcode === 0xa);
    assert.deepEqual(control.map((f) => [f.opcode, f.payload.length]), [[0x9, 125], [0xa, 125], [0x9, 5]]);
    assert.ok(!peer.frames.some((f) => f.payload.length > 125 && f.opcode >= 0x8), 'no oversized control frame went out');
    peer.socket.destroy();
  });
});

describe('NativeWebSocket pings from the handler are bounded like sends', () => {
  it('pings to a peer that never reads count toward maxBufferedAmount: ERR_WS_BACKPRESSURE and terminated, not an endless queue', async () => {
    let server;
    const { port } = await startOurs({ connectionPool: { protocolSpecific: { maxBufferedAmount: 64 * 1024, pingInterval: 0 } } }, (c) => { server = c; });
    const peer = await rawUpgrade(port, { read: false });
    await withTimeout((async () => { while (!server) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    const errors = [];
    server.on('error', (e) => errors.push(e.code));
    const closedCode = new Promise((resolve) => server.once('close', resolve));
    const payload = Buffer.alloc(125, 0x70);
    let sent = 0;
    while (sent < 1_000_000 && errors.length === 0) {
      server.ping(payload);
      sent++;
    }
    assert.deepEqual(errors, ['ERR_WS_BACKPRESSURE'], `after ${sent} pings`);
    assert.ok(sent < 1_000_000);
    assert.equal(await withTimeout(closedCode, 5000, 'terminated'), 1006);
    peer.socket.destroy();
  });
});

describe('WsServer subprotocols (Sec-WebSocket-Protocol) as ws selects them (issue 15)', () => {
  const OFFER = ['graphql-transport-ws', 'graphql-ws'];

  it('by default the first offered is selected: the client sees it, and so does the handler as client.protocol', async () => {
    let serverSide;
    const { port } = await startOurs({}, (c) => { serverSide = c; });
    const reference = await startReference();
    const theirs = await connect(reference.port, OFFER);
    const mine = await connect(port, OFFER);
    assert.equal(theirs.protocol, 'graphql-transport-ws', 'ws selects the first');
    assert.equal(mine.protocol, theirs.protocol);
    await withTimeout((async () => { while (!serverSide) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    assert.equal(serverSide.protocol, 'graphql-transport-ws');
    mine.terminate();
    theirs.terminate();
  });

  it('no offer: no protocol header, client.protocol is empty', async () => {
    let serverSide;
    const { port } = await startOurs({}, (c) => { serverSide = c; });
    const peer = await rawUpgrade(port);
    peer.socket.destroy();
    assert.equal(peer.status, 101);
    assert.doesNotMatch(peer.head, /sec-websocket-protocol/i);
    await withTimeout((async () => { while (!serverSide) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    assert.equal(serverSide.protocol, '');
  });

  // (Spaces around the whole value are not part of it: HTTP parsers drop them.)
  for (const header of ['', 'a,', ',a', 'a,,b', 'a, ,b', 'a b', 'a,a', 'a;b']) {
    it(`an empty or invalid offer ${JSON.stringify(header)} is refused with 400, as ws refuses it`, async () => {
      const { port } = await startOurs();
      const reference = await startReference();
      const mine = await rawUpgrade(port, { headers: { 'Sec-WebSocket-Protocol': header } });
      const theirs = await rawUpgrade(reference.port, { headers: { 'Sec-WebSocket-Protocol': header } });
      mine.socket.destroy();
      theirs.socket.destroy();
      assert.equal(theirs.status, 400, 'ws answers 400');
      assert.equal(mine.status, 400, `answered ${mine.head.split('\r\n')[0]}`);
    });
  }

  it('handleProtocols(protocols: Set, request) chooses: its answer is in the 101 and is client.protocol', async () => {
    const calls = [];
    let serverSide;
    const { port } = await startOurs({
      handleProtocols(protocols, req) {
        calls.push({ protocols: [...protocols], isSet: protocols instanceof Set, url: req.url });
        return 'graphql-ws';
      },
    }, (c) => {
      serverSide = c;
      c.on('message', (d) => c.send(d));
    });
    const mine = await connect(port, OFFER);
    assert.equal(mine.protocol, 'graphql-ws');
    assert.deepEqual(calls, [{ protocols: OFFER, isSet: true, url: '/' }]);
    await withTimeout((async () => { while (!serverSide) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    assert.equal(serverSide.protocol, 'graphql-ws');
    // Messages flow as usual on a negotiated connection.
    const echoed = new Promise((resolve) => mine.once('message', (d) => resolve(String(d))));
    mine.send('hello');
    assert.equal(await withTimeout(echoed, 5000, 'echo'), 'hello');
    mine.terminate();
  });

  it('handleProtocols returning false: 101 without a protocol header, as ws answers', async () => {
    let serverSide;
    const { port } = await startOurs({ handleProtocols: () => false }, (c) => { serverSide = c; });
    const reference = await startReference({ handleProtocols: () => false });
    const mine = await rawUpgrade(port, { headers: { 'Sec-WebSocket-Protocol': 'a, b' } });
    const theirs = await rawUpgrade(reference.port, { headers: { 'Sec-WebSocket-Protocol': 'a, b' } });
    mine.socket.destroy();
    theirs.socket.destroy();
    assert.equal(theirs.status, 101);
    assert.doesNotMatch(theirs.head, /sec-websocket-protocol/i);
    assert.equal(mine.status, 101);
    assert.doesNotMatch(mine.head, /sec-websocket-protocol/i);
    await withTimeout((async () => { while (!serverSide) await new Promise((r) => setImmediate(r)); })(), 5000, 'connection');
    assert.equal(serverSide.protocol, '');
  });

  it('handleProtocols is not asked when nothing is offered; a throw refuses the upgrade with 500 and reaches handlerError', async () => {
    let asked = 0;
    const errors = [];
    const { server, port } = await startOurs({ handleProtocols: () => { asked++; throw new Error('boom'); } });
    server.on('handlerError', (e) => errors.push(e.message));
    const plain = await rawUpgrade(port);
    plain.socket.destroy();
    assert.equal(plain.status, 101);
    assert.equal(asked, 0);
    const refused = await rawUpgrade(port, { headers: { 'Sec-WebSocket-Protocol': 'a' } });
    await withTimeout(refused.ended, 5000, 'the refused connection closes');
    assert.equal(refused.status, 500);
    assert.equal(asked, 1);
    assert.deepEqual(errors, ['boom']);
    // The refused upgrade is not left open on the server.
    await withTimeout((async () => {
      while (server.connectionPool.getMetrics().activeConnections > 0) await new Promise((r) => setTimeout(r, 20));
    })(), 5000, 'no connection left open');
  });

  it('handleProtocols set and removed by updateConfig applies to new connections, without a restart', async () => {
    const { server, port } = await startOurs();
    const before = await connect(port, OFFER);
    assert.equal(before.protocol, 'graphql-transport-ws');
    const set = await server.updateConfig({ handleProtocols: () => 'graphql-ws' });
    assert.deepEqual([set.changedKeys, set.restarted], [['handleProtocols'], false]);
    const chosen = await connect(port, OFFER);
    assert.equal(chosen.protocol, 'graphql-ws');
    await server.updateConfig({ handleProtocols: null });
    const byDefault = await connect(port, OFFER);
    assert.equal(byDefault.protocol, 'graphql-transport-ws');
    for (const ws of [before, chosen, byDefault]) ws.terminate();
  });

  it('handleProtocols must be a function (ConfigHelper and the constructor), and only on WebSocket servers', () => {
    const { ConfigHelper } = require('../config');
    const fn = () => false;
    assert.equal(ConfigHelper.createWebSocketConfig({ handleProtocols: fn }).handleProtocols, fn);
    assert.throws(() => ConfigHelper.createWebSocketConfig({ handleProtocols: 'first' }), { code: 'ERR_INVALID_CONFIG', key: 'handleProtocols' });
    assert.throws(() => ConfigHelper.createHttpConfig({ handleProtocols: fn }), { code: 'ERR_INVALID_CONFIG' });
    assert.throws(() => new WsServer({ callback: () => () => {} }, { hostname: '127.0.0.1', port: 0, protocol: 'ws', handleProtocols: 'first' }), { code: 'ERR_INVALID_CONFIG' });
  });
});

describe('NativeWebSocket send() takes what ws takes (outside probe, session 14)', () => {
  const vm = require('vm');
  // What the server sends, by name: each value given to client.send() on both servers.
  const VALUES = {
    'a number': () => 42,
    'zero': () => 0,
    'false': () => false,
    'null': () => null,
    'an array of bytes': () => [104, 105],
    'an ArrayBuffer': () => new Uint8Array([1, 2]).buffer,
    'an ArrayBuffer of another realm': () => vm.runInNewContext('new Uint8Array([3, 4]).buffer'),
    'a Uint16Array': () => new Uint16Array([0x0102]),
    'an object with toString': () => ({ toString: () => 'text' }),
    'a plain object': () => ({ a: 1 }),
  };
  // (data, options) pairs: ws spreads the options over its default, so an own `binary` counts by
  // its truthiness, undefined included.
  const WITH_OPTIONS = {
    'a Buffer with binary: undefined': () => [Buffer.from('ab'), { binary: undefined }],
    'a Buffer with binary: 0': () => [Buffer.from('ab'), { binary: 0 }],
    'a string with binary: 1': () => ['ab', { binary: 1 }],
    "a string with binary: 'yes'": () => ['ab', { binary: 'yes' }],
    'a string with options null': () => ['ab', null],
  };
  for (const [name, make] of Object.entries(WITH_OPTIONS)) VALUES[name] = make;
  /** For each value: what the client received (kind and bytes) or what send threw. */
  async function outcomes(start) {
    const results = {};
    const { port } = await start((client) => client.on('message', (name) => {
      try {
        const key = name.toString();
        if (key in WITH_OPTIONS) client.send(...VALUES[key]());
        else client.send(VALUES[key]());
      } catch (err) {
        client.send(`threw ${err.constructor.name} ${err.code}`);
      }
    }));
    const ws = await connect(port);
    for (const name of Object.keys(VALUES)) {
      const reply = new Promise((resolve) => ws.once('message', (data, isBinary) => resolve(`${isBinary ? 'binary' : 'text'} ${data.toString('hex')} ${isBinary ? '' : data}`)));
      ws.send(name);
      results[name] = await withTimeout(reply, 5000, name);
    }
    ws.close();
    return results;
  }
  it('numbers, falsy values, byte arrays and ArrayBuffers of any realm as ws sends them; other objects throw as in ws', async () => {
    const reference = await outcomes(async (onConnection) => {
      const ref = await startReference();
      ref.server.on('connection', onConnection);
      return ref;
    });
    const ours = await outcomes((onConnection) => startOurs({}, onConnection));
    assert.deepEqual(ours, reference);
  });
});

describe("send()'s callback comes once the data is written, as ws's (outside probe, session 16)", () => {
  /** A handler that sends 64 KiB messages, each once the last one's callback came, to a client that does not read. */
  async function chained(start) {
    const state = { called: 0, errors: [], closed: null };
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const { port } = await start((c) => {
      c.on('error', (err) => state.errors.push(err.code || err.message));
      c.on('close', (code) => { state.closed = code; });
      const next = (err) => {
        if (err) return state.errors.push(`cb ${err.code || err.message}`);
        state.called++;
        if (state.called < 1000) c.send(chunk, next);
      };
      c.send(chunk, next);
    });
    const peer = await rawUpgrade(port, { read: false });
    await new Promise((resolve) => setTimeout(resolve, 800));
    const held = { ...state, errors: [...state.errors] };
    peer.socket.destroy();
    return held;
  }

  it('a sender that waits for each callback is paced by a client that does not read (it was terminated with ERR_WS_BACKPRESSURE)', async () => {
    const reference = await chained((onConnection) => startReference().then((ref) => { ref.server.on('connection', onConnection); return ref; }));
    const ours = await chained((onConnection) => startOurs({}, onConnection));
    assert.deepEqual(reference.errors, [], 'ws: no error');
    assert.ok(reference.called < 200, `ws: paced (${reference.called} callbacks of 64 KiB)`);
    assert.deepEqual(ours.errors, [], `no error (${ours.called} callbacks)`);
    assert.equal(ours.closed, null, 'still open');
    assert.ok(ours.called < 200, `paced as ws is: ${ours.called} callbacks of 64 KiB while the client read nothing (ws: ${reference.called})`);
  });

  it('callbacks come in order, and those of sends never written get an error when the connection ends', async () => {
    const calls = [];
    const { port } = await startOurs({}, (c) => {
      c.send('a', (err) => calls.push(`a ${err ? err.code : 'ok'}`));
      c.send('b', (err) => calls.push(`b ${err ? err.code : 'ok'}`));
      setTimeout(() => {
        // The client reads nothing more: a large send stays unwritten, then the connection is cut.
        c.send(Buffer.alloc(32 * 1024 * 1024), (err) => calls.push(`big ${err ? err.code : 'ok'}`));
        setTimeout(() => c.terminate(), 100);
      }, 100);
    });
    const peer = await rawUpgrade(port);
    await new Promise((resolve) => setTimeout(resolve, 50));
    peer.socket.pause();
    try {
      await pollUntil(() => calls.length, (n) => n === 3, { timeoutMs: 3000 });
      assert.deepEqual(calls, ['a ok', 'b ok', 'big ERR_WS_NOT_OPEN']);
    } finally {
      peer.socket.destroy();
    }
  });
});

describe('floods ws 8.23 cuts off are cut off here too (outside probe, session 16)', () => {
  /** What a raw client sees after writing `bytes` at once: close codes of the close frames it got, and whether the socket ended. */
  async function afterFlood(port, bytes) {
    const peer = await rawUpgrade(port);
    assert.equal(peer.status, 101);
    peer.socket.write(bytes);
    const ended = await withTimeout(peer.ended.then(() => true), 5000, 'the server ends the connection').catch(() => false);
    peer.socket.destroy();
    const closes = peer.frames.filter((f) => f.opcode === 8).map((f) => (f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005));
    return { ended, closes };
  }
  const servers = () => [startOurs({}, () => {}), startReference().then((ref) => { ref.server.on('connection', (c) => c.on('error', () => {})); return ref; })];

  it('a message in more than 16,384 frames (empty continuations, which never reach maxPayload): close 1008, as ws', async () => {
    const parts = [wsFrame({ opcode: 1, payload: Buffer.from('a'), fin: false })];
    for (let i = 0; i < 20000; i++) parts.push(wsFrame({ opcode: 0, fin: false }));
    const bytes = Buffer.concat(parts);
    const [ours, reference] = await Promise.all(servers());
    const got = { ours: await afterFlood(ours.port, bytes), ws: await afterFlood(reference.port, bytes) };
    assert.deepEqual(got.ws, { ended: true, closes: [1008] }, 'ws (the reference)');
    assert.deepEqual(got.ours, got.ws);
  });

  it('200 pings back to back from a client that reads the pongs: the connection is cut off, as ws cuts it (maxPendingAutoPongs)', async () => {
    const bytes = Buffer.concat(Array.from({ length: 200 }, () => frame(0x9, Buffer.from('p'))));
    const [ours, reference] = await Promise.all(servers());
    const got = { ours: await afterFlood(ours.port, bytes), ws: await afterFlood(reference.port, bytes) };
    assert.equal(got.ws.ended, true, 'ws ends it');
    assert.equal(got.ours.ended, true, 'ended here too');
    assert.deepEqual(got.ours.closes, [], 'without a close frame (terminated), as ws');
  });

  it('pings spaced out are all answered (a keepalive is not a flood)', async () => {
    const { port } = await startOurs({}, () => {});
    const peer = await rawUpgrade(port);
    try {
      for (let i = 0; i < 80; i++) {
        peer.socket.write(frame(0x9, Buffer.from(String(i))));
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      await pollUntil(() => peer.frames.filter((f) => f.opcode === 0xa).length, (n) => n === 80, { timeoutMs: 3000 });
    } finally {
      peer.socket.destroy();
    }
  });
});

describe('NativeWebSocket sends after the server\'s own close frame fail instead of vanishing (outside probe, session 15)', () => {
  it('a shutdown: what was sent before gracefulShutdown() arrives before the 1001; a send after it (same turn) gets ERR_WS_NOT_OPEN, as after ws\'s close()', async () => {
    const calls = [];
    let server;
    const { port } = await startOurs({}, (c) => {
      c.send('before', (err) => calls.push(`before ${err ? err.code : 'sent'}`));
      server.gracefulShutdown({ drainDelay: 0, timeout: 2000 });
      calls.push(`state ${c.readyState}`);
      c.send('after', (err) => calls.push(`after ${err ? err.code : 'sent'}`));
    }).then((started) => {
      server = started.server;
      return started;
    });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.on('error', () => {});
    const got = [];
    ws.on('message', (d) => got.push(d.toString()));
    const code = await withTimeout(new Promise((resolve) => ws.on('close', (c) => resolve(c))), 5000, 'close');
    assert.equal(code, 1001);
    assert.deepEqual(got, ['before']);
    await pollUntil(() => calls.length, (n) => n === 3, { timeoutMs: 2000 });
    // As ws orders them: a refused send calls back on the next tick, a sent one once written.
    assert.deepEqual(calls, ['state 2', 'after ERR_WS_NOT_OPEN', 'before sent']);
  });

  it('closeConnection() in the turn of 50 sends: all 50 arrive, then the 1001 (the close overtook sends held for the end of the turn)', async () => {
    let server;
    const started = await startOurs({}, (c) => {
      const [live] = server.connectionPool.getConnections(10);
      for (let i = 0; i < 50; i++) c.send(`m${i}`);
      server.connectionPool.closeConnection(live.id);
    });
    server = started.server;
    const ws = new WebSocket(`ws://127.0.0.1:${started.port}/`);
    ws.on('error', () => {});
    const got = [];
    ws.on('message', (d) => got.push(d.toString()));
    const code = await withTimeout(new Promise((resolve) => ws.on('close', (c) => resolve(c))), 5000, 'close');
    assert.equal(code, 1001);
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`));
  });

  it('closeConnection(): a send in a later turn, while the peer has not answered the 1001, gets ERR_WS_NOT_OPEN (it was dropped with a success callback)', async () => {
    let client;
    const { server, port } = await startOurs({}, (c) => { client = c; });
    const { socket } = await rawUpgrade(port, { read: false }); // never answers the close frame
    try {
      await withTimeout((async () => { while (!client) await new Promise((resolve) => setTimeout(resolve, 5)); })(), 3000, 'connection');
      const [live] = server.connectionPool.getConnections(10);
      assert.ok(server.connectionPool.closeConnection(live.id));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const result = await new Promise((resolve) => client.send('late', (err) => resolve(err ? err.code : 'sent')));
      assert.equal(result, 'ERR_WS_NOT_OPEN');
      assert.equal(client.readyState, 2, 'CLOSING');
    } finally {
      socket.destroy();
    }
  });
});

describe('NativeWebSocket send()/ping() of a Blob as ws 8.18+ (read, then sent in order)', () => {
  /** What a client of the server sees: messages (kind, hex), pings, the close; and the callbacks. */
  async function observe(start, script) {
    const calls = [];
    const { port } = await start((client) => script(client, calls));
    // (Listening from the start: ws's frames can come with its 101, before 'open' is handled.)
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.on('error', () => {});
    const seen = [];
    ws.on('message', (data, isBinary) => seen.push(`${isBinary ? 'binary' : 'text'} ${Buffer.from(data).toString('hex')}`));
    ws.on('ping', (data) => seen.push(`ping ${data.toString('hex')}`));
    const code = await withTimeout(new Promise((resolve) => ws.on('close', (c, reason) => resolve(`close ${c} ${reason}`))), 5000, 'close');
    seen.push(code);
    await new Promise((resolve) => setTimeout(resolve, 50));
    return { seen, calls };
  }
  const onReference = async (onConnection) => {
    const ref = await startReference();
    ref.server.on('connection', onConnection);
    return ref;
  };
  const onOurs = (onConnection) => startOurs({}, onConnection);
  const note = (calls, name) => (err) => calls.push(`${name} ${err ? err.message : 'sent'}`);

  it('what is sent after a Blob waits for it: every frame in the order sent, callbacks and bufferedAmount as ws', async () => {
    const script = (c, calls) => {
      c.send('a', note(calls, 'a'));
      c.send(new Blob(['bb']), note(calls, 'blob bb'));
      calls.push(`bufferedAmount counts the blob: ${c.bufferedAmount >= 2}`);
      c.send(Buffer.from('c'), note(calls, 'c'));
      c.send(new Blob([new Uint8Array([1, 2, 3])]), { binary: false }, note(calls, 'blob as text'));
      c.ping(new Blob(['p']), false, note(calls, 'ping blob'));
      c.ping('q');
      c.send(new File(['ff'], 'f.txt'), note(calls, 'file'));
      c.send('e');
      c.close(1000, 'bye');
      calls.push(`state after close ${c.readyState}`);
    };
    const reference = await observe(onReference, script);
    const ours = await observe(onOurs, script);
    assert.deepEqual(ours.seen, reference.seen);
    assert.deepEqual(ours.seen, ['text 61', 'binary 6262', 'binary 63', 'text 010203', 'ping 70', 'ping 71', 'binary 6666', 'text 65', 'close 1000 bye']);
    assert.deepEqual(ours.calls.sort(), reference.calls.sort());
  });

  it('a ping Blob over 125 bytes throws RangeError; a Blob sent to a closed socket gets ERR_WS_NOT_OPEN-style errors, as ws', async () => {
    const script = (c, calls) => {
      try {
        c.ping(new Blob([Buffer.alloc(126)]));
      } catch (err) {
        calls.push(`ping threw ${err.constructor.name} ${err.message}`);
      }
      c.close(1000);
      c.send(new Blob(['late']), note(calls, 'after close'));
    };
    const reference = await observe(onReference, script);
    const ours = await observe(onOurs, script);
    assert.deepEqual(ours.seen, reference.seen);
    assert.deepEqual(ours.calls, reference.calls);
    assert.equal(ours.calls.length, 2);
  });

  it('a reply Blob to the message just before the peer\'s close goes out before the close reply, as with ws', async () => {
    // A Blob backed by a file: it is read on libuv's thread pool, after the close frame is handled.
    const file = path.join(os.tmpdir(), `ks-blob-${process.pid}.txt`);
    fs.writeFileSync(file, 'from a file');
    const fromFile = await fs.openAsBlob(file);
    const run = async (start) => {
      const { port } = await start((c) => c.on('message', (d) => {
        c.send(new Blob([d, '!']));
        c.send(fromFile);
      }));
      const { socket, frames, ended } = await rawUpgrade(port);
      // The message and the close frame in one write: both reach the handler in one turn, while
      // the reply's Blob is still being read.
      const close = Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('client done')]);
      socket.write(Buffer.concat([wsFrame({ opcode: 1, payload: Buffer.from('last') }), wsFrame({ opcode: 8, payload: close })]));
      await withTimeout(ended, 5000, 'closed');
      return frames.map((f) => `${f.opcode} ${f.payload.toString('latin1')}`);
    };
    const reference = await run(onReference);
    const ours = await run(onOurs);
    assert.deepEqual(ours, reference);
    fs.unlinkSync(file);
    assert.deepEqual(ours, ['2 last!', '2 from a file', '8 \x03\xe8client done']);
  });

  it('a Blob whose read fails: what was sent before it still arrives, then a close (1011), its callback and those behind it get the error, then \'error\' (outside probe)', async () => {
    const MIB = 1024 * 1024;
    const file = path.join(os.tmpdir(), `ks-blob-gone-${process.pid}.txt`);
    fs.writeFileSync(file, 'soon changed');
    const stale = await fs.openAsBlob(file);
    fs.writeFileSync(file, 'changed after the Blob was made: node can no longer read it');
    const calls = [];
    const errors = [];
    const { port } = await startOurs({}, (c) => {
      c.on('error', (err) => errors.push(err.name));
      for (let i = 0; i < 5; i++) c.send(Buffer.alloc(MIB, i), note(calls, `MiB ${i}`));
      c.send(stale, note(calls, 'stale blob'));
      c.send('behind', note(calls, 'behind'));
    });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.on('error', () => {});
    const got = [];
    ws.on('message', (d) => got.push(d.length));
    const closed = withTimeout(new Promise((resolve) => ws.on('close', (code) => resolve(code))), 10000, 'close');
    await new Promise((resolve) => ws.once('open', resolve));
    ws._socket.pause(); // a slow reader: the 5 MiB are still queued when the read fails
    await new Promise((resolve) => setTimeout(resolve, 300));
    ws._socket.resume();
    assert.equal(await closed, 1011);
    fs.unlinkSync(file);
    assert.deepEqual(got, [MIB, MIB, MIB, MIB, MIB], 'everything sent before the Blob arrived');
    await pollUntil(() => calls.length, (n) => n === 7, { timeoutMs: 3000 });
    // The sends' callbacks come as their bytes are written (ws's), so the Blob's failure, which the
    // slow reader does not hold up, may come between them.
    assert.deepEqual(calls.filter((c) => c.startsWith('MiB ')), ['MiB 0 sent', 'MiB 1 sent', 'MiB 2 sent', 'MiB 3 sent', 'MiB 4 sent']);
    const failed = calls.filter((c) => !c.startsWith('MiB '));
    assert.ok(failed[0].startsWith('stale blob ') && failed[1].startsWith('behind '), calls.join('; '));
    assert.ok(failed.every((c) => / could not be read/i.test(c)), calls.join('; '));
    assert.deepEqual(errors, ['NotReadableError']);
  });

  it('sends waiting behind a Blob count against maxBufferedAmount: past it ERR_WS_BACKPRESSURE, CLOSING at once, not an endless queue (outside probe)', async () => {
    // A Blob read on the thread pool: the sends after it wait in JavaScript meanwhile.
    const file = path.join(os.tmpdir(), `ks-blob-slow-${process.pid}.txt`);
    fs.writeFileSync(file, 'x'.repeat(500));
    const fromFile = await fs.openAsBlob(file);
    const seen = {};
    const done = new Promise((resolve) => {
      startOurs({ connectionPool: { protocolSpecific: { maxBufferedAmount: 1024 } } }, (c) => {
        c.on('error', (err) => {
          seen.error = err.code;
          seen.stateInError = c.readyState;
        });
        c.send(fromFile);
        let sent = 0;
        let peak = 0;
        for (let i = 0; i < 2000 && c.readyState === 1; i++) {
          c.send(Buffer.alloc(100, 1));
          sent++;
          peak = Math.max(peak, c.bufferedAmount);
        }
        Object.assign(seen, { sent, peak, state: c.readyState });
        c.on('close', resolve);
      }).then(({ port }) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.on('error', () => {});
      });
    });
    await withTimeout(done, 5000, 'closed');
    fs.unlinkSync(file);
    assert.equal(seen.error, 'ERR_WS_BACKPRESSURE');
    assert.equal(seen.stateInError, 2, 'CLOSING inside the error listener');
    assert.equal(seen.state, 2);
    assert.ok(seen.sent < 20, `stopped after ${seen.sent} sends`);
    assert.ok(seen.peak <= 1024, `bufferedAmount peaked at ${seen.peak}`);
  });

  it('close() behind a Blob whose read never ends terminates after ws\'s close timeout (30 s), and a Blob that outgrows its size for ping() gets RangeError', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const never = { size: 3, type: '', stream() {}, arrayBuffer: () => new Promise(() => {}), [Symbol.toStringTag]: 'Blob' };
    const liar = { size: 3, type: '', stream() {}, arrayBuffer: async () => new ArrayBuffer(200), [Symbol.toStringTag]: 'Blob' };
    const pingResult = {};
    let onClient;
    const clientReady = new Promise((resolve) => { onClient = resolve; });
    const { port } = await startOurs({}, (c) => onClient(c));
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    ws.on('error', () => {});
    // (Its time limit is set once the clock is real again.)
    const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    const c = await withTimeout(clientReady, 5000, 'connection');
    // The server hears of the connection with its 101; the client may not have read it yet.
    if (ws.readyState !== WebSocket.OPEN) await withTimeout(new Promise((resolve) => ws.once('open', resolve)), 5000, 'client open');
    await new Promise((resolve) => c.ping(liar, false, (err) => { pingResult.err = err?.constructor.name; resolve(); }));
    assert.equal(pingResult.err, 'RangeError');
    assert.equal(c.readyState, 1, 'still open');
    c.send(never);
    c.close(1000, 'never goes');
    assert.equal(c.readyState, 2);
    t.mock.timers.tick(29_999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(ws.readyState, 1, 'open until the close timeout');
    t.mock.timers.tick(1);
    t.mock.timers.reset();
    assert.equal(await withTimeout(closed, 5000, 'close'), 1006, 'terminated');
  });

  it('terminate() while a Blob is read: its callback and those behind it get ws\'s error, nothing is sent', async () => {
    const script = (c, calls) => {
      c.send(new Blob(['never']), note(calls, 'blob'));
      c.send('behind', note(calls, 'behind'));
      c.terminate();
    };
    const reference = await observe(onReference, script);
    const ours = await observe(onOurs, script);
    assert.deepEqual(ours.seen, reference.seen);
    assert.deepEqual(ours.calls, reference.calls);
    assert.deepEqual(ours.calls, ['blob The socket was closed while the blob was being read', 'behind The socket was closed while the blob was being read']);
  });
});
