'use strict';
// Memory of idle WebSocket connections: this package's WsServer vs the `ws` package's server (both
// bench/ws/echo-server.js). A client process (bench/ws/idle-clients.js) opens N connections in
// steps; after each step (and a settle pause) the server's VmRSS is read from /proc. At N the
// connections stay idle for --idle seconds (RSS read again: flat or growing?), then a sample of
// them is checked to still echo. RSS per connection = (RSS at N − RSS with none) / N.
//
// Needs a high open-files limit: the script re-runs itself under `bash -c 'ulimit -n <hard limit>'`.
//
//   node bench/ws/idle-memory.js [--conns 10000] [--rounds 2] [--idle 10] [--settle 2] [--only native,ws]
// Results: bench/ws/results/idle-<timestamp>.json and .md (also printed).
const { spawn, fork, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs(argv) {
  const o = { conns: 10000, rounds: 2, idle: 10, settle: 2, only: ['native', 'ws'], steps: 4 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--conns': o.conns = Number(v); i++; break;
      case '--rounds': o.rounds = Number(v); i++; break;
      case '--idle': o.idle = Number(v); i++; break;
      case '--settle': o.settle = Number(v); i++; break;
      case '--steps': o.steps = Number(v); i++; break;
      case '--only': o.only = v.split(','); i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  return o;
}

/** Re-run under a raised `ulimit -n` (soft = hard limit) unless already done. */
function ensureUlimit(opts) {
  if (process.env.WS_IDLE_ULIMIT) return Number(process.env.WS_IDLE_ULIMIT);
  const script = 'ulimit -n "$(ulimit -Hn)" && export WS_IDLE_ULIMIT="$(ulimit -n)" && exec "$0" "$@"';
  const r = spawnSync('bash', ['-c', script, process.execPath, __filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status === null ? 1 : r.status);
  return opts; // not reached
}

function status(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s) || [])[1]) || 0;
  return { rssKb: kb('VmRSS'), anonKb: kb('RssAnon'), threads: kb('Threads') };
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
      if (info.error) reject(new Error(info.error));
      else resolve({ child, info });
    });
    child.once('exit', (code) => reject(new Error(`${impl} server exited (${code}) before ready: ${err}`)));
  });
}

function clientProcess(port) {
  const child = fork(path.join(__dirname, 'idle-clients.js'), [String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let id = 0;
  const pending = new Map();
  child.on('message', (m) => { const p = pending.get(m.id); if (p) { pending.delete(m.id); p(m); } });
  return {
    child,
    ask: (msg) => new Promise((resolve) => { const i = ++id; pending.set(i, resolve); child.send({ ...msg, id: i }); }),
  };
}

async function runOne(impl, opts) {
  const server = await startServer(impl);
  const pid = server.child.pid;
  const points = [];
  try {
    await sleep(opts.settle * 1000);
    const base = status(pid);
    points.push({ conns: 0, ...base });
    const client = clientProcess(server.info.port);
    let last;
    for (let k = 1; k <= opts.steps; k++) {
      const total = Math.round((opts.conns * k) / opts.steps);
      last = await client.ask({ cmd: 'open', total });
      await sleep(opts.settle * 1000);
      points.push({ conns: last.connected, ...status(pid), openMs: last.ms });
      if (last.connected < total) break;
    }
    await sleep(opts.idle * 1000);
    const idle = status(pid);
    const check = await client.ask({ cmd: 'check', count: 200 });
    await client.ask({ cmd: 'close' });
    await sleep(opts.settle * 1000);
    const after = status(pid);
    const n = last.connected;
    const top = points[points.length - 1];
    return {
      impl,
      serverClass: server.info.serverClass,
      buildProfile: server.info.buildProfile,
      conns: n,
      failed: last.failed,
      baseRssMB: base.rssKb / 1024,
      rssAtNMB: top.rssKb / 1024,
      rssAfterIdleMB: idle.rssKb / 1024,
      rssAfterCloseMB: after.rssKb / 1024,
      rssPerConnKB: n ? (top.rssKb - base.rssKb) / n : null,
      rssPerConnAfterIdleKB: n ? (idle.rssKb - base.rssKb) / n : null,
      idleGrowthKB: idle.rssKb - top.rssKb,
      threads: top.threads,
      check,
      points,
    };
  } finally {
    server.child.kill('SIGKILL');
    await new Promise((r) => (server.child.exitCode !== null ? r() : server.child.once('exit', r)));
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, d = 1) => (x == null || Number.isNaN(x) ? '–' : x.toFixed(d));

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const limit = ensureUlimit(opts);
  if (limit < opts.conns + 500) {
    console.error(`open-files limit is ${limit} (hard limit); ${opts.conns} connections need at least ${opts.conns + 500}`);
    process.exit(2);
  }
  const startedAt = new Date().toISOString();
  console.log(`ws idle memory: ${opts.conns} connections, ${opts.rounds} rounds, ulimit -n ${limit}, Node ${process.version}, ${os.cpus().length} CPUs`);
  const runs = [];
  for (let r = 0; r < opts.rounds; r++) {
    const order = r % 2 === 0 ? opts.only : [...opts.only].reverse();
    for (const impl of order) {
      const res = await runOne(impl, opts);
      res.round = r + 1;
      runs.push(res);
      console.log(`  r${r + 1} ${impl.padEnd(6)} ${res.conns} conns (${res.failed} failed): RSS ${fmt(res.baseRssMB)} → ${fmt(res.rssAtNMB)} MB = ${fmt(res.rssPerConnKB, 2)} KB/conn; after ${opts.idle}s idle ${fmt(res.rssAfterIdleMB)} MB (${res.idleGrowthKB >= 0 ? '+' : ''}${res.idleGrowthKB} KB); after close ${fmt(res.rssAfterCloseMB)} MB; echo check ${res.check.ok}/${res.check.checked}; steps ${res.points.map((p) => `${p.conns}:${fmt(p.rssKb / 1024)}MB`).join(' ')}`);
      await sleep(1000);
    }
  }
  const md = ['| server | connections | RSS idle server MB | RSS at N MB | RSS per connection KB | after idle KB/conn | RSS after close MB | alive check |', '|---|---|---|---|---|---|---|---|'];
  const rows = opts.only.map((impl) => {
    const rs = runs.filter((x) => x.impl === impl);
    const m = (k) => median(rs.map((x) => x[k]));
    const range = (k, d) => `${fmt(m(k), d)} (${fmt(Math.min(...rs.map((x) => x[k])), d)}–${fmt(Math.max(...rs.map((x) => x[k])), d)})`;
    md.push(`| ${impl} | ${m('conns')} | ${fmt(m('baseRssMB'))} | ${fmt(m('rssAtNMB'))} | ${range('rssPerConnKB', 2)} | ${fmt(m('rssPerConnAfterIdleKB'), 2)} | ${fmt(m('rssAfterCloseMB'))} | ${rs.map((x) => `${x.check.ok}/${x.check.checked}`).join(', ')} |`);
    return { impl, rssPerConnKB: m('rssPerConnKB') };
  });
  const n = rows.find((x) => x.impl === 'native');
  const w = rows.find((x) => x.impl === 'ws');
  if (n && w) md.push('', `RSS per idle connection native / ws: ${fmt(n.rssPerConnKB / w.rssPerConnKB, 2)}×.`);
  md.push('', 'RSS after each step (median over rounds), MB:', '');
  for (const impl of opts.only) {
    const rs = runs.filter((x) => x.impl === impl);
    const steps = rs[0].points.map((p, i) => `${p.conns}: ${fmt(median(rs.map((x) => (x.points[i] ? x.points[i].rssKb : NaN))) / 1024)}`);
    md.push(`- ${impl}: ${steps.join(', ')}`);
  }
  const text = md.join('\n');
  console.log('\n' + text);
  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  fs.writeFileSync(path.join(dir, `idle-${stamp}.json`), JSON.stringify({ startedAt, finishedAt: new Date().toISOString(), command: ['node', 'bench/ws/idle-memory.js', ...process.argv.slice(2)].join(' '), options: opts, ulimit: limit, machine: { cpus: os.cpus().length, node: process.version }, runs }, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, `idle-${stamp}.md`), text + '\n');
  console.log(`\nwritten bench/ws/results/idle-${stamp}.{json,md}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
