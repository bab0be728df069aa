'use strict';
// Idle WebSocket clients for bench/ws/idle-memory.js (forked with an IPC channel). Plain net sockets
// with a hand-made upgrade (no `ws` objects on the client side, so one client process holds 10,000
// connections cheaply). Commands (IPC):
//   { cmd: 'open', total: K }  open connections until K are open → { connected, failed, ms }
//   { cmd: 'check', count: M } send a masked text frame on M spread-out connections and await the
//                              echoes → { checked, ok, ms }
//   { cmd: 'close' }           destroy all sockets → { closed } and exit
const crypto = require('crypto');
const net = require('net');

const port = Number(process.argv[2]);
const CONCURRENCY = 200;
const sockets = [];
let failed = 0;

function openOne() {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let head = Buffer.alloc(0);
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      if (ok) sockets.push(socket);
      else { failed++; socket.destroy(); }
      resolve(ok);
    };
    socket.setNoDelay(true);
    socket.on('error', () => finish(false));
    socket.on('close', () => finish(false));
    socket.on('connect', () => {
      socket.write(`GET /idle HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    const onData = (d) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      finish(head.subarray(0, 12).toString() === 'HTTP/1.1 101');
    };
    socket.on('data', onData);
  });
}

async function openUntil(total) {
  const t0 = Date.now();
  while (sockets.length < total) {
    const batch = Math.min(CONCURRENCY, total - sockets.length);
    const results = await Promise.all(Array.from({ length: batch }, openOne));
    if (results.every((ok) => !ok)) break; // the server refuses: stop instead of spinning
  }
  return { connected: sockets.length, failed, ms: Date.now() - t0 };
}

function maskedText(text) {
  const payload = Buffer.from(text);
  const key = crypto.randomBytes(4);
  for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), key, payload]);
}

async function check(count) {
  const t0 = Date.now();
  const step = Math.max(1, Math.floor(sockets.length / count));
  const picked = [];
  for (let i = 0; i < sockets.length && picked.length < count; i += step) picked.push(sockets[i]);
  const results = await Promise.all(picked.map((s, i) => new Promise((resolve) => {
    const text = `alive ${i}`;
    const timer = setTimeout(() => { s.off('data', on); resolve(false); }, 5000);
    let buf = Buffer.alloc(0);
    const on = (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 + text.length) return;
      clearTimeout(timer);
      s.off('data', on);
      resolve(buf[0] === 0x81 && buf.subarray(2, 2 + text.length).toString() === text);
    };
    s.on('data', on);
    s.write(maskedText(text));
  })));
  return { checked: picked.length, ok: results.filter(Boolean).length, ms: Date.now() - t0 };
}

process.on('message', async (msg) => {
  if (msg.cmd === 'open') process.send({ id: msg.id, ...(await openUntil(msg.total)) });
  else if (msg.cmd === 'check') process.send({ id: msg.id, ...(await check(msg.count)) });
  else if (msg.cmd === 'close') {
    for (const s of sockets) s.destroy();
    process.send({ id: msg.id, closed: sockets.length }, () => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
