'use strict';
// WebSocket echo throughput: this package's WsServer vs the `ws` package's server, both running
// bench/ws/echo-server.js, driven by `ws-load` (../shared/tools/loadgen) with N connections that
// each send a small text message and await its echo, in a loop.
//
// Per run: msgs/s and p99 round trip (ws-load), server CPU per message (all threads, from
// /proc/PID/stat) and JS-thread CPU per message (the main thread, /proc/PID/task/PID/stat), peak
// RSS, and how busy ws-load and the rest of the machine were. Rounds are interleaved (the order of
// the two servers alternates) and the table gives medians with the min–max spread.
//
// Build ws-load once (low priority), then run:
//   nice -n 19 cargo build --release --manifest-path ../shared/tools/loadgen/Cargo.toml \
//        --target-dir /tmp/loadgen-target -p ws-load
//   node bench/ws/echo-bench.js [--rounds 5] [--conns 64] [--duration 10] [--warmup 3]
//        [--ws-load /tmp/loadgen-target/release/ws-load] [--wait-idle 60] [--only native,ws]
// Results: bench/ws/results/echo-<timestamp>.json and .md (also printed).
const { spawn, spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.join(__dirname, '..', '..');
const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv) {
  const o = {
    rounds: 5, conns: 64, duration: 10, warmup: 3, waitIdle: 60, pause: 2, threads: 1,
    wsLoad: process.env.WS_LOAD || '/tmp/loadgen-target/release/ws-load', only: ['native', 'ws'], message: 'hello',
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--rounds': o.rounds = Number(v); i++; break;
      case '--conns': o.conns = Number(v); i++; break;
      case '--duration': o.duration = Number(v); i++; break;
      case '--warmup': o.warmup = Number(v); i++; break;
      case '--wait-idle': o.waitIdle = Number(v); i++; break;
      case '--threads': o.threads = Number(v); i++; break;
      case '--ws-load': o.wsLoad = v; i++; break;
      case '--only': o.only = v.split(','); i++; break;
      case '--message': o.message = v; i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  return o;
}

/** utime+stime ticks of a process (all threads) or of one thread. */
function cpuTicks(pid, tid) {
  const file = tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`;
  const s = fs.readFileSync(file, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // fields 14 and 15 (utime, stime)
}

function procStatus(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s) || [])[1]) || 0;
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), threads: kb('Threads') };
}

/** Machine-wide busy and total jiffies (all CPUs). */
function machineTicks() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3] + line[4];
  const total = line.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

async function waitIdle(maxSeconds) {
  const t0 = Date.now();
  for (;;) {
    const a = machineTicks();
    await sleep(1000);
    const b = machineTicks();
    const busy = (b.busy - a.busy) / Math.max(1, b.total - a.total) * os.cpus().length * 100;
    if (busy < 10) return { waited: (Date.now() - t0) / 1000 - 1, busy };
    if ((Date.now() - t0) / 1000 >= maxSeconds) return { waited: (Date.now() - t0) / 1000, busy, notIdle: true };
  }
}

function startServer(impl) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'echo-server.js'), impl, '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const info = JSON.parse(out.slice(0, nl));
      if (info.error) { reject(new Error(info.error)); return; }
      resolve({ child, info, stderr: () => err });
    });
    child.once('exit', (code) => reject(new Error(`${impl} server exited (${code}) before ready: ${err}`)));
  });
}

function stopServer(s) {
  return new Promise((resolve) => {
    if (s.child.exitCode !== null) { resolve(); return; }
    const t = setTimeout(() => s.child.kill('SIGKILL'), 3000);
    s.child.once('exit', () => { clearTimeout(t); resolve(); });
    s.child.kill('SIGTERM');
  });
}

/** Runs ws-load; samples its CPU while it runs. Resolves with the RESULT fields and its CPU ticks. */
function runLoad(opts, port, secs, warmup) {
  return new Promise((resolve, reject) => {
    const args = ['-c', String(opts.conns), '-d', String(secs), '-w', String(warmup), '-t', String(opts.threads), '-m', opts.message, `ws://127.0.0.1:${port}/`];
    const child = spawn(opts.wsLoad, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let lastTicks = 0;
    const sampler = setInterval(() => { try { lastTicks = cpuTicks(child.pid); } catch { /* exited */ } }, 100);
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('error', reject);
    child.on('exit', (code) => {
      clearInterval(sampler);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) { reject(new Error(`ws-load exited ${code} without RESULT: ${out}`)); return; }
      const r = Object.fromEntries(line.slice(7).split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
      resolve({ ...r, loadTicks: lastTicks, cmd: [opts.wsLoad, ...args].join(' ') });
    });
  });
}

async function runOne(impl, opts) {
  const s = await startServer(impl);
  const pid = s.child.pid;
  try {
    // Warm-up pass (JIT, allocator), not measured.
    await runLoad(opts, s.info.port, opts.warmup, 0);
    await sleep(500);
    const m0 = machineTicks();
    const all0 = cpuTicks(pid);
    const js0 = cpuTicks(pid, pid);
    const t0 = process.hrtime.bigint();
    const r = await runLoad(opts, s.info.port, opts.duration, 0);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const all1 = cpuTicks(pid);
    const js1 = cpuTicks(pid, pid);
    const m1 = machineTicks();
    const st = procStatus(pid);
    const usPerTick = 1e6 / HZ;
    const serverTicks = all1 - all0;
    const machineBusy = m1.busy - m0.busy;
    return {
      impl,
      serverClass: s.info.serverClass,
      buildProfile: s.info.buildProfile,
      msgsPerSec: r.msgs_per_sec,
      msgs: r.msgs,
      errors: r.errors,
      mismatched: r.mismatched,
      conns: r.conns,
      p50Ms: r.p50_ms,
      p99Ms: r.p99_ms,
      cpuUsPerMsg: (serverTicks * usPerTick) / r.msgs,
      jsCpuUsPerMsg: ((js1 - js0) * usPerTick) / r.msgs,
      serverCpuPercent: (serverTicks / HZ / wall) * 100,
      jsCpuPercent: ((js1 - js0) / HZ / wall) * 100,
      loadCpuPercent: (r.loadTicks / HZ / wall) * 100,
      otherCpuPercent: (Math.max(0, machineBusy - serverTicks - r.loadTicks) / HZ / wall) * 100,
      peakRssMB: st.hwmKb / 1024,
      threads: st.threads,
      wall,
      cmd: r.cmd,
    };
  } finally {
    await stopServer(s);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, d = 1) => (x == null || Number.isNaN(x) ? '–' : x.toFixed(d));

function addonFingerprint() {
  const nodes = fs.readdirSync(ROOT).filter((f) => f.endsWith('.node')).sort();
  if (!nodes.length) return null;
  const file = path.join(ROOT, nodes[0]);
  return { file: nodes[0], sha256: crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex').slice(0, 16), mtime: fs.statSync(file).mtime.toISOString() };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(opts.wsLoad)) {
    console.error(`ws-load not found at ${opts.wsLoad}. Build it:\n  nice -n 19 cargo build --release --manifest-path ../shared/tools/loadgen/Cargo.toml --target-dir /tmp/loadgen-target -p ws-load`);
    process.exit(2);
  }
  const startedAt = new Date().toISOString();
  const addon0 = addonFingerprint();
  console.log(`ws echo bench: ${os.cpus().length} CPUs (${os.cpus()[0].model}), Node ${process.version}, ${opts.rounds} rounds, ${opts.conns} conns, ${opts.duration}s (+${opts.warmup}s warm-up pass), addon ${addon0 && addon0.sha256}`);
  const runs = [];
  const notes = [];
  for (let r = 0; r < opts.rounds; r++) {
    const order = r % 2 === 0 ? opts.only : [...opts.only].reverse();
    for (const impl of order) {
      if (opts.waitIdle > 0) {
        const w = await waitIdle(opts.waitIdle);
        if (w.notIdle) notes.push(`round ${r + 1} ${impl}: machine still ${fmt(w.busy, 0)} % busy after ${opts.waitIdle} s; ran anyway`);
      }
      const res = await runOne(impl, opts);
      res.round = r + 1;
      runs.push(res);
      console.log(`  r${r + 1} ${impl.padEnd(6)} ${fmt(res.msgsPerSec, 0).padStart(7)} msg/s  p99 ${fmt(res.p99Ms, 2)} ms  CPU ${fmt(res.cpuUsPerMsg, 2)} µs/msg  JS ${fmt(res.jsCpuUsPerMsg, 2)} µs/msg  (server ${fmt(res.serverCpuPercent, 0)} %, JS thread ${fmt(res.jsCpuPercent, 0)} %, ws-load ${fmt(res.loadCpuPercent, 0)} %, other ${fmt(res.otherCpuPercent, 0)} %; RSS ${fmt(res.peakRssMB)} MB; ${res.threads} threads; errors ${res.errors}, mismatched ${res.mismatched})`);
      await sleep(opts.pause * 1000);
    }
  }
  const addon1 = addonFingerprint();
  if (JSON.stringify(addon0) !== JSON.stringify(addon1)) notes.push(`the addon binary changed during the run (${addon0 && addon0.sha256} → ${addon1 && addon1.sha256})`);

  const rows = opts.only.map((impl) => {
    const rs = runs.filter((x) => x.impl === impl);
    const stat = (k) => ({ med: median(rs.map((x) => x[k])), min: Math.min(...rs.map((x) => x[k])), max: Math.max(...rs.map((x) => x[k])) });
    return { impl, n: rs.length, msgsPerSec: stat('msgsPerSec'), p99Ms: stat('p99Ms'), cpuUsPerMsg: stat('cpuUsPerMsg'), jsCpuUsPerMsg: stat('jsCpuUsPerMsg'), peakRssMB: stat('peakRssMB'), loadCpuPercent: stat('loadCpuPercent'), otherCpuPercent: stat('otherCpuPercent'), errors: rs.reduce((a, x) => a + x.errors + x.mismatched, 0) };
  });
  const cell = (s, d) => `${fmt(s.med, d)} (${fmt(s.min, d)}–${fmt(s.max, d)})`;
  const md = [];
  md.push(`| server | msgs/s | p99 RTT ms | server CPU µs/msg | JS-thread CPU µs/msg | peak RSS MB | ws-load CPU % | other CPU % | errors |`);
  md.push('|---|---|---|---|---|---|---|---|---|');
  for (const row of rows) {
    md.push(`| ${row.impl} | ${cell(row.msgsPerSec, 0)} | ${cell(row.p99Ms, 2)} | ${cell(row.cpuUsPerMsg, 2)} | ${cell(row.jsCpuUsPerMsg, 2)} | ${cell(row.peakRssMB, 1)} | ${fmt(row.loadCpuPercent.med, 0)} | ${fmt(row.otherCpuPercent.med, 0)} | ${row.errors} |`);
  }
  const n = rows.find((x) => x.impl === 'native');
  const w = rows.find((x) => x.impl === 'ws');
  if (n && w) {
    md.push('');
    md.push(`Ratios native / ws (medians): msgs/s ${fmt(n.msgsPerSec.med / w.msgsPerSec.med, 2)}×, JS-thread CPU per message ${fmt(n.jsCpuUsPerMsg.med / w.jsCpuUsPerMsg.med, 2)}×, server CPU per message ${fmt(n.cpuUsPerMsg.med / w.cpuUsPerMsg.med, 2)}×, p99 ${fmt(n.p99Ms.med / w.p99Ms.med, 2)}×.`);
    // The same ratios paired round by round (the two runs of a round are minutes apart at most).
    const paired = (k) => {
      const rs = [];
      for (let r = 1; r <= opts.rounds; r++) {
        const a = runs.find((x) => x.round === r && x.impl === 'native');
        const b = runs.find((x) => x.round === r && x.impl === 'ws');
        if (a && b) rs.push(a[k] / b[k]);
      }
      return `${fmt(median(rs), 2)}× (${rs.map((x) => fmt(x, 2)).join(', ')})`;
    };
    md.push('');
    md.push(`Paired per round, native / ws: msgs/s ${paired('msgsPerSec')}; JS-thread CPU per message ${paired('jsCpuUsPerMsg')}; server CPU per message ${paired('cpuUsPerMsg')}; p99 ${paired('p99Ms')}.`);
  }
  for (const note of notes) md.push(`\n**Note:** ${note}`);
  const text = md.join('\n');
  console.log('\n' + text);
  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  fs.writeFileSync(path.join(dir, `echo-${stamp}.json`), JSON.stringify({ startedAt, finishedAt: new Date().toISOString(), command: ['node', 'bench/ws/echo-bench.js', ...process.argv.slice(2)].join(' '), options: opts, machine: { cpus: os.cpus().length, model: os.cpus()[0].model, node: process.version, hz: HZ }, addon: addon0, notes, rows, runs }, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, `echo-${stamp}.md`), text + '\n');
  console.log(`\nwritten bench/ws/results/echo-${stamp}.{json,md}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
