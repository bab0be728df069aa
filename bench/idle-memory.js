'use strict';
// Idle-connection memory: RSS of a server process before and after N idle TCP connections, native
// HttpServer vs node:http side by side (issue 16 §3). Two kinds of idle client: connected and
// silent ("connect"), and one keep-alive request answered, then silent ("keepalive").
//
//   node bench/idle-memory.js [N=3000] [rounds=1]
//
// The server runs in a child process (its RSS alone is measured, after a GC); the clients are raw
// sockets in this process. `ulimit -n` must allow 2 N + 100 descriptors (raised here if it can be).
const net = require('net');
const path = require('path');
const { spawn, execSync } = require('child_process');

const N = Number(process.argv[2] || 3000);
const ROUNDS = Number(process.argv[3] || 1);

const SERVERS = {
  native: `
    const { HttpServer } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const s = new HttpServer({ callback: () => (req, res) => res.end('ok') },
      { hostname: '127.0.0.1', port: 0, protocol: 'http', connectionPool: { keepAliveTimeout: 600000, headersTimeout: 600000 } });
    s.Start(() => process.send({ port: s.server.address().port }));`,
  'node:http': `
    const http = require('http');
    const s = http.createServer((req, res) => res.end('ok'));
    s.keepAliveTimeout = 600000; s.headersTimeout = 600000; s.requestTimeout = 0;
    s.listen(0, '127.0.0.1', () => process.send({ port: s.address().port }));`,
};

function rssOf(pid) {
  const status = require('fs').readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
}

async function measure(kind, mode) {
  const child = spawn(process.execPath, ['--expose-gc', '-e', `${SERVERS[kind]}
    process.on('message', (m) => { if (m === 'gc') { global.gc(); setTimeout(() => process.send('gcd'), 200); } });`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port } = await new Promise((resolve) => child.once('message', resolve));
  const gc = () => new Promise((resolve) => { child.once('message', resolve); child.send('gc'); });
  // Warm up: a few requests so lazy allocations are not counted as per-connection cost.
  await Promise.all(Array.from({ length: 50 }, () => request(port)));
  await gc();
  const before = rssOf(child.pid);
  const sockets = [];
  for (let i = 0; i < N; i += 200) {
    const batch = await Promise.all(Array.from({ length: Math.min(200, N - i) }, () => open(port, mode)));
    sockets.push(...batch);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  await gc();
  const after = rssOf(child.pid);
  for (const s of sockets) s.destroy();
  child.kill();
  return { kind, mode, before, after, perConnKB: ((after - before) * 1024) / N };
}

function open(port, mode) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      if (mode === 'connect') return resolve(s);
      s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      s.once('data', () => resolve(s));
    });
    s.on('error', reject);
  });
}

function request(port) {
  return open(port, 'keepalive').then((s) => s.destroy());
}

(async () => {
  try { execSync(`prlimit --pid ${process.pid} --nofile=${2 * N + 1000}`); } catch { /* keep the limit we have */ }
  const rows = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of ['connect', 'keepalive']) {
      for (const kind of Object.keys(SERVERS)) rows.push(await measure(kind, mode));
    }
  }
  for (const x of rows) console.log(`${x.kind.padEnd(10)} ${x.mode.padEnd(9)} N=${N}  RSS ${x.before.toFixed(1)} → ${x.after.toFixed(1)} MiB  ${x.perConnKB.toFixed(1)} KiB per idle connection`);
})();
