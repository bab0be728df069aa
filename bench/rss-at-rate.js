#!/usr/bin/env node
'use strict';
// Peak RSS of the minimal Koatty 3.11.8 app over HTTP/1.1 at the same request rate on both servers:
// koatty_serve 2.3.0 (JS, bench/apps/koatty-js) and this package (bench/apps/koatty-native).
//
//   node bench/rss-at-rate.js [--rate N] [--conns N] [--duration S] [--warmup S] [--rounds N]
//
// bench/run.js and bench/koatty-protocols.js measure peak RSS at each server's own saturation, where
// the native server answers about 3× as many requests per second. V8 sizes the old generation from
// the rate at which objects are promoted into it, so the heap there grows with the request rate
// as much as with the bytes each request keeps. This script drives both at one fixed rate (open
// loop: every millisecond the requests due are sent on `--conns` keep-alive connections; a request
// that finds no free connection is counted as missed, not queued) and reads VmHWM after the run.
// Rounds interleave the two servers, the order rotating. Needs `node bench/setup.js` first.
const http = require('http');
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
const RATE = opt('rate', 5000);
const CONNS = opt('conns', 64);
const DURATION = opt('duration', 10);
const WARMUP = opt('warmup', 3);
const ROUNDS = opt('rounds', 3);

/** Sends RATE req/s for `seconds` on CONNS keep-alive sockets; resolves with what was answered. */
function drive(port, seconds) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNS });
  let free = CONNS;
  let sent = 0;
  let answered = 0;
  let failed = 0;
  let missed = 0;
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const send = () => {
      free--;
      sent++;
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume();
        res.on('end', () => {
          free++;
          if (res.statusCode === 200) answered++;
          else failed++;
        });
      });
      req.on('error', () => {
        free++;
        failed++;
      });
    };
    const tick = setInterval(() => {
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      if (elapsed >= seconds) {
        clearInterval(tick);
        setTimeout(() => {
          agent.destroy();
          resolve({ sent, answered, failed, missed, seconds: elapsed });
        }, 200);
        return;
      }
      const due = Math.floor(elapsed * RATE) - sent - missed;
      for (let i = 0; i < due; i++) {
        if (free > 0) send();
        else missed++;
      }
    }, 1);
  });
}

async function measure(app) {
  const port = await freePort();
  const cwd = path.join(BENCH, 'apps', app);
  const env = { ...process.env, NODE_ENV: 'production', BENCH_READY_FD: '3', BENCH_PORT: String(port), BENCH_PROTOCOL: 'http', BENCH_LOGS_LEVEL: 'warning' };
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

async function main() {
  const rows = { 'koatty-js': [], 'koatty-native': [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ['koatty-js', 'koatty-native'] : ['koatty-native', 'koatty-js'];
    for (const app of order) {
      const m = await measure(app);
      rows[app].push(m);
      console.log(`round ${r + 1} ${app.padEnd(14)} ${fmt(m.rate, 0)} req/s (missed ${m.missed}, failed ${m.failed})  CPU ${fmt(m.cpuPct, 0)} %  RSS idle ${fmt(m.idleRssMB, 1)} MB, peak ${fmt(m.peakRssMB, 1)} MB`);
      await sleep(1000);
    }
  }
  const js = rows['koatty-js'];
  const nat = rows['koatty-native'];
  const ratios = nat.map((n, i) => n.peakRssMB / js[i].peakRssMB);
  console.log(`\nrate ${RATE} req/s on ${CONNS} connections, ${DURATION} s after ${WARMUP} s, ${ROUNDS} rounds`);
  console.log('| server | req/s | CPU % | idle RSS MB | peak RSS MB |');
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
