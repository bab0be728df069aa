#!/usr/bin/env node
'use strict';
// Peak RSS of the minimal Koatty 3.11.8 app at the same request rate on both servers: koatty_serve
// 2.3.0 (JS, bench/apps/koatty-js) and this package (bench/apps/koatty-native).
//
//   node bench/rss-at-rate.js [--protocol http|http2|ws] [--rate N] [--conns N] [--duration S]
//                             [--warmup S] [--rounds N]
//
// http: GET / over keep-alive connections (node's http client); http2: GET / over TLS, `--conns`
// sessions (node's http2 client, a throwaway certificate); ws: messages to /ws/echo on `--conns`
// WebSockets (`ws`), each answered before that socket sends again.
//
// bench/run.js and bench/koatty-protocols.js measure peak RSS at each server's own saturation, where
// the native server answers about 3× as many requests per second. V8 sizes the old generation from
// the rate at which objects are promoted into it, so the heap there grows with the request rate
// as much as with the bytes each request keeps. This script drives both at one fixed rate (open
// loop: every millisecond the requests due are sent on `--conns` connections; one that finds no free
// connection is counted as missed, not queued) and reads VmHWM after the run.
// Rounds interleave the two servers, the order rotating. Needs `node bench/setup.js` first.
const http = require('http');
const http2 = require('http2');
const fs = require('fs');
const WebSocket = require('ws');
const path = require('path');
const { sleep, freePort, startReadyChild, stopChild, readMem, readCpu, stat, fmt, median } = require('./lib/measure');

const { spawnSync } = require('child_process');

const BENCH = __dirname;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const str = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const PROTOCOL = str('protocol', 'http');
if (!['http', 'http2', 'ws'].includes(PROTOCOL)) throw new Error(`--protocol ${PROTOCOL}: http, http2 or ws`);
const RATE = opt('rate', 4000);
const CONNS = opt('conns', 64);
const DURATION = opt('duration', 10);
const WARMUP = opt('warmup', 3);
const ROUNDS = opt('rounds', 3);

/**
 * Clients for each protocol: `open(port)` resolves with `{ send(done), close() }`, where one send
 * is one request (or message) and `done(ok)` is called once it is answered.
 */
const clients = {
  async http(port) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONNS });
    return {
      slots: CONNS,
      send(done) {
        const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          res.resume();
          res.on('end', () => done(res.statusCode === 200));
        });
        req.on('error', () => done(false));
      },
      close: () => agent.destroy(),
    };
  },
  async http2(port) {
    const sessions = [];
    for (let i = 0; i < CONNS; i++) {
      const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
      session.on('error', () => {});
      sessions.push(session);
    }
    let next = 0;
    return {
      // Several streams per session, as h2load's -m.
      slots: CONNS * 8,
      send(done) {
        const session = sessions[next++ % sessions.length];
        const stream = session.request({ ':path': '/' });
        let status = 0;
        stream.on('response', (h) => { status = h[':status']; });
        stream.resume();
        stream.on('end', () => done(status === 200));
        stream.on('error', () => done(false));
      },
      close: () => sessions.forEach((s) => s.destroy()),
    };
  },
  async ws(port) {
    const sockets = await Promise.all(Array.from({ length: CONNS }, () => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`);
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    })));
    const idle = [...sockets];
    for (const ws of sockets) {
      ws.on('message', () => {
        const done = ws._done;
        ws._done = null;
        idle.push(ws);
        if (done) done(true);
      });
      ws.on('error', () => {});
    }
    return {
      slots: CONNS,
      send(done) {
        const ws = idle.pop();
        ws._done = done;
        ws.send('12345');
      },
      close: () => sockets.forEach((ws) => ws.terminate()),
    };
  },
};

/** Sends RATE per second for `seconds`; resolves with what was answered. */
async function drive(port, seconds) {
  const client = await clients[PROTOCOL](port);
  let free = client.slots;
  let sent = 0;
  let answered = 0;
  let failed = 0;
  let missed = 0;
  const done = (ok) => {
    free++;
    if (ok) answered++;
    else failed++;
  };
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      if (elapsed >= seconds) {
        clearInterval(tick);
        setTimeout(() => {
          client.close();
          resolve({ sent, answered, failed, missed, seconds: elapsed });
        }, 200);
        return;
      }
      const due = Math.floor(elapsed * RATE) - sent - missed;
      for (let i = 0; i < due; i++) {
        if (free > 0) {
          free--;
          sent++;
          client.send(done);
        } else {
          missed++;
        }
      }
    }, 1);
  });
}

async function measure(app) {
  const port = await freePort();
  const cwd = path.join(BENCH, 'apps', app);
  const env = { ...process.env, NODE_ENV: 'production', BENCH_READY_FD: '3', BENCH_PORT: String(port), BENCH_PROTOCOL: PROTOCOL, BENCH_LOGS_LEVEL: 'warning' };
  if (PROTOCOL === 'http2') Object.assign(env, tlsPair());
  const h = startReadyChild([path.join(cwd, 'app', 'main.js')], { cwd, env, logFile: `/tmp/rss-at-rate-${app}.log` });
  await h.ready;
  const pid = h.child.pid;
  const idle = readMem(pid);
  await drive(port, WARMUP);
  const before = readCpu(pid);
  const run = await drive(port, DURATION);
  const after = readCpu(pid);
  const mem = readMem(pid);
  await stopChild(h, 8000);
  return {
    app, rate: run.answered / run.seconds, missed: run.missed, failed: run.failed,
    cpuPct: (after.proc - before.proc) * 100 / CLK_TCK / run.seconds,
    idleRssMB: idle.vmRssKB / 1024, peakRssMB: mem.vmHwmKB / 1024,
  };
}

/** A throwaway EC key and self-signed certificate for 127.0.0.1 (openssl), as the app's env. */
function tlsPair() {
  const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'rss-at-rate-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  return { BENCH_TLS_KEY: key, BENCH_TLS_CERT: cert };
}

async function main() {
  const rows = { 'koatty-js': [], 'koatty-native': [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ['koatty-js', 'koatty-native'] : ['koatty-native', 'koatty-js'];
    for (const app of order) {
      const m = await measure(app);
      rows[app].push(m);
      console.log(`round ${r + 1} ${app.padEnd(14)} ${fmt(m.rate, 0)} ${PROTOCOL === 'ws' ? 'msgs' : 'req'}/s (missed ${m.missed}, failed ${m.failed})  CPU ${fmt(m.cpuPct, 0)} %  RSS idle ${fmt(m.idleRssMB, 1)} MB, peak ${fmt(m.peakRssMB, 1)} MB`);
      await sleep(1000);
    }
  }
  const js = rows['koatty-js'];
  const nat = rows['koatty-native'];
  const ratios = nat.map((n, i) => n.peakRssMB / js[i].peakRssMB);
  console.log(`\n${PROTOCOL}: rate ${RATE}/s on ${CONNS} connections, ${DURATION} s after ${WARMUP} s, ${ROUNDS} rounds`);
  console.log(`| server | ${PROTOCOL === 'ws' ? 'msgs' : 'req'}/s | CPU % | idle RSS MB | peak RSS MB |`);
  console.log('|---|---:|---:|---:|---:|');
  for (const [name, rs] of Object.entries(rows)) {
    const s = (k, d) => { const x = stat(rs.map((m) => m[k])); return `${fmt(x.median, d)} (${fmt(x.min, d)}–${fmt(x.max, d)})`; };
    console.log(`| ${name} | ${s('rate', 0)} | ${s('cpuPct', 0)} | ${s('idleRssMB', 1)} | ${s('peakRssMB', 1)} |`);
  }
  console.log(`peak RSS native ÷ JS, paired: ${fmt(median(ratios), 2)}× (${ratios.map((x) => fmt(x, 2)).join(', ')})`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
