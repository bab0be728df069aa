#!/usr/bin/env node
'use strict';
// Side-by-side HTTP/1.1 "hello" benchmark: node:http, koatty_serve 2.3.0 (JS),
// this package (native), and one minimal Koatty 3.11.8 app on each server.
//
//   node bench/run.js [options]          (npm run bench -- [options])
//
// Every server runs in its own child process (node spawned directly, so the
// pid read from /proc is the server itself), started fresh for each round.
// Rounds are interleaved (the server order rotates every round); each
// measurement is preceded by a warm-up run of wrk against the same process.
// See --help, and bench/RESULTS.md for the method.
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const RESULTS_DIR = path.join(BENCH, 'results');
let BASH = null; // set in main()

// ---------------------------------------------------------------- servers
// group: rows are compared with the baseline row of their group.
const SERVERS = [
  { name: 'node-http-bare', group: 'bare', script: 'servers/node-http-bare.js', baseline: true, desc: 'node:http, res.end(\'hello\')' },
  { name: 'js-serve-bare', group: 'bare', script: 'servers/js-serve-bare.js', desc: 'koatty_serve 2.3.0 NewServe, fake app' },
  { name: 'native-bare', group: 'bare', script: 'servers/native-bare.js', native: true, desc: 'native HttpServer, fake app' },
  { name: 'koatty-js', group: 'koatty', app: 'koatty-js', logs: 'warning', baseline: true, desc: 'Koatty 3.11.8 on koatty_serve 2.3.0, logs_level warning' },
  { name: 'koatty-native', group: 'koatty', app: 'koatty-native', logs: 'warning', native: true, desc: 'Koatty 3.11.8 on native koatty_serve, logs_level warning' },
  { name: 'koatty-js-info', group: 'koatty-info', app: 'koatty-js', logs: 'info', baseline: true, desc: 'as koatty-js, access log at info' },
  { name: 'koatty-native-info', group: 'koatty-info', app: 'koatty-native', logs: 'info', native: true, desc: 'as koatty-native, access log at info' },
];
const GROUP_TITLES = {
  bare: 'bare servers (ratios vs node-http-bare)',
  koatty: 'Koatty app, NODE_ENV=production, logs_level warning (ratios vs koatty-js)',
  'koatty-info': 'Koatty app, access log at info (ratios vs koatty-js-info)',
};

// ---------------------------------------------------------------- options
const HELP = `Usage: node bench/run.js [options]      (or: npm run bench -- [options])

  --rounds N        interleaved rounds                  (env BENCH_ROUNDS, default 5)
  --duration S      seconds of each measured wrk run    (env BENCH_DURATION, default 10)
  --warmup S        seconds of the warm-up wrk run      (env BENCH_WARMUP, default 3)
  --connections N   wrk -c                              (env BENCH_CONNECTIONS, default 64)
  --threads N       wrk -t                              (env BENCH_THREADS, default 1)
  --pause S         idle seconds between runs           (env BENCH_PAUSE, default 1)
  --quick           smoke run: 1 round, -d3s, 1 s warm-up (env BENCH_QUICK=1); explicit options win
  --only a,b        only these servers                  (env BENCH_ONLY)
  --skip a,b        not these servers                   (env BENCH_SKIP)
  --allow-debug     run the native rows even if the addon is not a release build (loud warning)
  --no-setup        do not npm-install the Koatty sub-packages (bench/setup.js); skip them if missing
  --keep-logs       keep each server's stdout/stderr log (otherwise deleted after each run)
  --help

Servers: ${SERVERS.map((s) => s.name).join(', ')}
Writes bench/results/<timestamp>.json and bench/results/<timestamp>.md (a snippet for bench/RESULTS.md).`;

function parseArgs(argv) {
  const env = process.env;
  const o = {
    rounds: null, duration: null, warmup: null, pause: null,
    connections: Number(env.BENCH_CONNECTIONS || 64),
    threads: Number(env.BENCH_THREADS || 1),
    quick: /^(1|true|yes)$/i.test(env.BENCH_QUICK || ''),
    only: env.BENCH_ONLY ? env.BENCH_ONLY.split(',') : null,
    skip: env.BENCH_SKIP ? env.BENCH_SKIP.split(',') : [],
    allowDebug: /^(1|true|yes)$/i.test(env.BENCH_ALLOW_DEBUG || ''),
    setup: !/^(1|true|yes)$/i.test(env.BENCH_NO_SETUP || ''),
    keepLogs: false,
  };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) die(`bad value for --${name}: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = () => (v !== undefined ? v : argv[++i]);
    switch (a) {
      case '--rounds': o.rounds = num('rounds', val()); break;
      case '--duration': o.duration = num('duration', val()); break;
      case '--warmup': o.warmup = num('warmup', val()); break;
      case '--pause': o.pause = num('pause', val()); break;
      case '--connections': o.connections = num('connections', val()); break;
      case '--threads': o.threads = num('threads', val()); break;
      case '--quick': o.quick = true; break;
      case '--only': o.only = val().split(','); break;
      case '--skip': o.skip = val().split(','); break;
      case '--allow-debug': o.allowDebug = true; break;
      case '--no-setup': o.setup = false; break;
      case '--keep-logs': o.keepLogs = true; break;
      case '-h': case '--help': console.log(HELP); process.exit(0); break;
      default: die(`unknown option ${a}\n\n${HELP}`);
    }
  }
  const pick = (cli, envName, normal, quick) => {
    if (cli !== null) return cli;
    if (env[envName] !== undefined && env[envName] !== '') return num(envName, env[envName]);
    return o.quick ? quick : normal;
  };
  o.rounds = Math.max(1, Math.floor(pick(o.rounds, 'BENCH_ROUNDS', 5, 1)));
  o.duration = pick(o.duration, 'BENCH_DURATION', 10, 3);
  o.warmup = pick(o.warmup, 'BENCH_WARMUP', 3, 1);
  o.pause = pick(o.pause, 'BENCH_PAUSE', 1, 0.5);
  // wrk takes whole seconds only
  if (!Number.isInteger(o.duration) || o.duration < 1) die('--duration must be a whole number of seconds, at least 1');
  if (!Number.isInteger(o.warmup)) die('--warmup must be a whole number of seconds (0 = no warm-up)');
  const known = new Set(SERVERS.map((s) => s.name));
  for (const n of [...(o.only || []), ...o.skip]) if (!known.has(n)) die(`unknown server "${n}"; known: ${[...known].join(', ')}`);
  return o;
}

function die(msg, code = 2) {
  console.error(`bench: ${msg}`);
  process.exit(code);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- machine
function findInPath(cmd) {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(d, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

function clockTicks() {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number((r.stdout || '').trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
}

function machineInfo(wrkPath) {
  const w = spawnSync(wrkPath, ['-v'], { encoding: 'utf8' });
  const wrkVersion = ((w.stdout || '') + (w.stderr || '')).split('\n')[0].replace(/\s*Copyright.*$/, '').trim();
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    nproc: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    cpuModel: cpus[0] ? cpus[0].model : 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    memTotalMB: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    wrk: wrkVersion,
    clkTck: clockTicks(),
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

// ---------------------------------------------------------------- /proc
// utime+stime in clock ticks: fields 14 and 15 of /proc/<pid>/stat (counted
// after the parenthesised command name, which may contain spaces). For the
// process this includes every thread (also exited ones); for
// /proc/<pid>/task/<pid>/stat it is the main (JS) thread alone.
function readTicks(file) {
  const s = fs.readFileSync(file, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // f[0] is field 3 (state)
}

function readCpu(pid) {
  return {
    proc: readTicks(`/proc/${pid}/stat`),
    main: readTicks(`/proc/${pid}/task/${pid}/stat`),
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
  };
}

// Machine-wide busy and total jiffies from the aggregate "cpu" line of /proc/stat.
function readMachine() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  const busy = user + nice + system + irq + softirq + (steal || 0);
  return { busy, total: busy + idle + (iowait || 0) };
}

function readMem(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => { const m = s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')); return m ? Number(m[1]) : null; };
  return { vmHwmKB: kb('VmHWM'), vmRssKB: kb('VmRSS') };
}

// ---------------------------------------------------------------- wrk
function toMs(value, unit) {
  const v = Number(value);
  switch (unit) {
    case 'us': return v / 1000;
    case 'ms': return v;
    case 's': return v * 1000;
    case 'm': return v * 60000;
    case 'h': return v * 3600000;
    default: return NaN;
  }
}

function parseWrk(out) {
  const r = {};
  let m = out.match(/Requests\/sec:\s+([\d.]+)/);
  r.reqPerSec = m ? Number(m[1]) : null;
  m = out.match(/(\d+) requests in ([\d.]+)(us|ms|s|m|h)/);
  r.requests = m ? Number(m[1]) : null;
  r.wrkSeconds = m ? toMs(m[2], m[3]) / 1000 : null;
  m = out.match(/^\s*Latency\s+([\d.]+)(us|ms|s|m|h)/m);
  r.latencyAvgMs = m ? toMs(m[1], m[2]) : null;
  for (const p of ['50', '75', '90', '99']) {
    m = out.match(new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm'));
    r[`p${p}Ms`] = m ? toMs(m[1], m[2]) : null;
  }
  m = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const sock = m ? { connect: +m[1], read: +m[2], write: +m[3], timeout: +m[4] } : { connect: 0, read: 0, write: 0, timeout: 0 };
  m = out.match(/Non-2xx or 3xx responses: (\d+)/);
  const non2xx = m ? Number(m[1]) : 0;
  r.errors = { ...sock, non2xx, total: sock.connect + sock.read + sock.write + sock.timeout + non2xx };
  return r;
}

function runWrk(wrkPath, url, seconds, opts, latency) {
  const args = [`-t${opts.threads}`, `-c${opts.connections}`, `-d${seconds}s`];
  if (latency) args.push('--latency');
  args.push(url);
  // Run through bash so that its `times` builtin reports wrk's own user+sys CPU.
  const viaBash = !!BASH;
  const cmd = viaBash ? BASH : wrkPath;
  const cmdArgs = viaBash ? ['-c', '"$0" "$@"; rc=$?; times >&2; exit $rc', wrkPath, ...args] : args;
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited ${code}: ${out}${err}`));
      const r = parseWrk(out);
      if (r.reqPerSec === null || r.requests === null) return reject(new Error(`cannot parse wrk output:\n${out}${err}`));
      let wrkCpuSeconds = null;
      const t = viaBash && err.trim().match(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/);
      if (t) wrkCpuSeconds = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]);
      resolve({ ...r, wrkCpuSeconds, cmd: `wrk ${args.join(' ')}`, raw: out });
    });
  });
}

// ---------------------------------------------------------------- children
let current = null; // the running server child, killed on Ctrl-C

function childEnv(extra) {
  const env = { ...process.env };
  // koatty_serve 2.3.0's NewServe reads these as defaults; keep them out.
  delete env.PORT; delete env.APP_PORT; delete env.IP;
  return { ...env, NODE_ENV: 'production', BENCH_READY_FD: '3', BENCH_PORT: '0', ...extra };
}

function tail(file, bytes = 3000) {
  try {
    const s = fs.readFileSync(file, 'utf8');
    return s.length > bytes ? '…' + s.slice(-bytes) : s;
  } catch { return ''; }
}

function startServer(server, logFile) {
  const fd = fs.openSync(logFile, 'w');
  let args;
  let cwd;
  const extra = {};
  if (server.script) {
    args = [path.join(BENCH, server.script)];
    cwd = BENCH;
  } else {
    cwd = path.join(BENCH, 'apps', server.app);
    args = [path.join(cwd, 'app', 'main.js')];
    extra.BENCH_LOGS_LEVEL = server.logs;
  }
  const child = spawn(process.execPath, args, { cwd, env: childEnv(extra), stdio: ['ignore', fd, fd, 'pipe'] });
  fs.closeSync(fd);
  current = child;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('not ready after 30 s')), 30000);
    child.stdio[3].on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try { resolve(JSON.parse(buf.slice(0, nl))); } catch (e) { reject(new Error('bad ready line: ' + buf.slice(0, nl))); }
      }
    });
    child.stdio[3].on('error', () => {});
    exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`exited before ready (code ${code}, signal ${signal})`)); });
  });
  return { child, ready, exited };
}

async function stopServer(h) {
  if (h.child.exitCode === null && h.child.signalCode === null) {
    try { process.kill(h.child.pid, 'SIGTERM'); } catch { /* gone */ }
    const t = await Promise.race([h.exited, sleep(5000).then(() => 'timeout')]);
    if (t === 'timeout') {
      try { process.kill(h.child.pid, 'SIGKILL'); } catch { /* gone */ }
      await h.exited;
    }
  }
  if (current === h.child) current = null;
}

function getOnce(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- one run
async function runOne(server, round, ctx) {
  const logFile = path.join(ctx.logDir, `${server.name}-r${round + 1}.log`);
  const h = startServer(server, logFile);
  const fail = async (msg) => {
    await stopServer(h);
    const t = tail(logFile);
    const e = new Error(`${msg}${t ? `\n--- ${server.name} log (tail) ---\n${t}` : ''}`);
    if (!ctx.opts.keepLogs) fs.rmSync(logFile, { force: true });
    throw e;
  };
  let info;
  try { info = await h.ready; } catch (e) { return fail(`${server.name} did not start: ${e.message}`); }
  if (info.error) return fail(`${server.name} reported: ${info.error}`);
  if (info.pid !== h.child.pid) return fail(`${server.name}: ready line from pid ${info.pid}, but the spawned node is ${h.child.pid}`);
  if (server.native && info.buildProfile !== 'release' && !ctx.opts.allowDebug) {
    return fail(`${server.name}: native buildProfile is ${JSON.stringify(info.buildProfile)}, not 'release' (decisions.md §19); build with npm run build or pass --allow-debug`);
  }
  if (server.app === 'koatty-native' && !(info.koattyServe && info.koattyServe.root === ctx.rootReal)) {
    return fail(`${server.name}: koatty loaded koatty_serve from ${info.koattyServe && info.koattyServe.root}, not this repo`);
  }
  if (server.app === 'koatty-js' && !(info.koattyServe && info.koattyServe.version === '2.3.0')) {
    return fail(`${server.name}: koatty loaded koatty_serve ${info.koattyServe && info.koattyServe.version}, not 2.3.0`);
  }
  if (server.app && !/^1\.11\./.test(info.koattyCore || '')) return fail(`${server.name}: koatty_core ${info.koattyCore}, expected 1.11.x`);

  // One plain request first: correct answer, from the expected server.
  let probe;
  try { probe = await getOnce(info.port); } catch (e) { return fail(`${server.name}: GET / failed: ${e.message}`); }
  if (probe.status !== 200 || probe.body !== 'hello' || !/^text\/plain/.test(probe.headers['content-type'] || '')) {
    return fail(`${server.name}: GET / answered ${probe.status} ${JSON.stringify(probe.headers['content-type'])} ${JSON.stringify(probe.body.slice(0, 200))}, expected 200 text/plain "hello"`);
  }

  const url = `http://127.0.0.1:${info.port}/`;
  let warm = null;
  let wrk;
  let cpu0;
  let cpu1;
  let mem;
  let mach0;
  let mach1;
  const loadavg = os.loadavg().map((x) => +x.toFixed(2));
  try {
    if (ctx.opts.warmup > 0) warm = await runWrk(ctx.wrkPath, url, ctx.opts.warmup, ctx.opts, false);
    cpu0 = readCpu(h.child.pid);
    mach0 = readMachine();
    wrk = await runWrk(ctx.wrkPath, url, ctx.opts.duration, ctx.opts, true);
    mach1 = readMachine();
    cpu1 = readCpu(h.child.pid);
    mem = readMem(h.child.pid);
  } catch (e) {
    return fail(`${server.name}: ${e.message}`);
  }
  await stopServer(h);
  let logBytes = null;
  try { logBytes = fs.statSync(logFile).size; } catch { /* none */ }
  if (!ctx.opts.keepLogs) fs.rmSync(logFile, { force: true });

  const tickUs = 1e6 / ctx.machine.clkTck;
  const procUs = (cpu1.proc - cpu0.proc) * tickUs;
  const mainUs = (cpu1.main - cpu0.main) * tickUs;
  const n = wrk.requests;
  const secs = wrk.wrkSeconds;
  // Busy share of the whole machine during the measured run, in % of one CPU
  // (nproc × 100 = all busy), and what neither the server nor wrk used.
  const machinePercent = (mach1.busy - mach0.busy) / Math.max(1, mach1.total - mach0.total) * ctx.machine.nproc * 100;
  const serverPercent = secs ? (procUs / 1e4) / secs : null;
  const wrkPercent = wrk.wrkCpuSeconds != null && secs ? wrk.wrkCpuSeconds * 100 / secs : null;
  const otherPercent = serverPercent != null && wrkPercent != null ? Math.max(0, machinePercent - serverPercent - wrkPercent) : null;
  return {
    server: server.name,
    round: round + 1,
    pid: h.child.pid,
    port: info.port,
    info: round === 0 ? info : undefined,
    probeHeaders: round === 0 ? probe.headers : undefined,
    loadavgBefore: loadavg,
    warmupReqPerSec: warm ? warm.reqPerSec : null,
    wrkCmd: wrk.cmd,
    reqPerSec: wrk.reqPerSec,
    requests: n,
    wrkSeconds: wrk.wrkSeconds,
    latencyAvgMs: wrk.latencyAvgMs,
    p50Ms: wrk.p50Ms,
    p99Ms: wrk.p99Ms,
    errors: wrk.errors,
    cpuUsPerReq: n ? procUs / n : null,
    jsCpuUsPerReq: n ? mainUs / n : null,
    cpuPercent: serverPercent,
    jsCpuPercent: secs ? (mainUs / 1e4) / secs : null,
    wrkCpuPercent: wrkPercent,
    machineCpuPercent: machinePercent,
    otherCpuPercent: otherPercent,
    cpuTicks: { proc: cpu1.proc - cpu0.proc, main: cpu1.main - cpu0.main },
    threads: cpu1.threads,
    peakRssMB: mem.vmHwmKB != null ? mem.vmHwmKB / 1024 : null,
    endRssMB: mem.vmRssKB != null ? mem.vmRssKB / 1024 : null,
    logBytes,
    logBytesPerReq: logBytes != null && n ? logBytes / n : null,
    wrkOutput: wrk.raw,
  };
}

// ---------------------------------------------------------------- stats
function median(xs) {
  const a = xs.filter((x) => x != null && Number.isFinite(x)).sort((p, q) => p - q);
  if (!a.length) return null;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}
function spread(xs) {
  const a = xs.filter((x) => x != null && Number.isFinite(x));
  return a.length ? { min: Math.min(...a), max: Math.max(...a) } : null;
}
function stat(xs) { return { median: median(xs), ...(spread(xs) || { min: null, max: null }), n: xs.filter((x) => x != null).length }; }

const METRICS = ['reqPerSec', 'p99Ms', 'cpuUsPerReq', 'jsCpuUsPerReq', 'peakRssMB', 'cpuPercent', 'jsCpuPercent', 'wrkCpuPercent', 'machineCpuPercent', 'otherCpuPercent', 'logBytesPerReq'];

function summarize(runs, servers) {
  const byServer = {};
  for (const s of servers) {
    const rs = runs.filter((r) => r.server === s.name);
    if (!rs.length) continue;
    const sum = { server: s.name, group: s.group, rounds: rs.length, errorsTotal: rs.reduce((t, r) => t + r.errors.total, 0) };
    for (const m of METRICS) sum[m] = stat(rs.map((r) => r[m]));
    byServer[s.name] = sum;
  }
  // Ratios vs the group's baseline, paired within each round; median and spread of the per-round ratios.
  for (const s of servers) {
    const sum = byServer[s.name];
    if (!sum) continue;
    const base = servers.find((b) => b.group === s.group && b.baseline);
    if (!base || base.name === s.name || !byServer[base.name]) continue;
    const pairs = runs.filter((r) => r.server === s.name)
      .map((r) => [r, runs.find((b) => b.server === base.name && b.round === r.round)])
      .filter(([, b]) => b);
    const ratio = (f) => stat(pairs.map(([r, b]) => (b[f] ? r[f] / b[f] : null)));
    sum.vs = base.name;
    sum.ratio = { reqPerSec: ratio('reqPerSec'), cpuUsPerReq: ratio('cpuUsPerReq'), jsCpuUsPerReq: ratio('jsCpuUsPerReq'), p99Ms: ratio('p99Ms'), peakRssMB: ratio('peakRssMB') };
  }
  return byServer;
}

// ---------------------------------------------------------------- output
function fmt(x, d) {
  if (x == null || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}
function cell(st, d, single) {
  if (!st || st.median == null) return '–';
  if (single || st.n < 2) return fmt(st.median, d);
  return `${fmt(st.median, d)} (${fmt(st.min, d)}–${fmt(st.max, d)})`;
}
function ratioCell(st) {
  if (!st || st.median == null) return '';
  return st.n < 2 ? `${fmt(st.median, 2)}×` : `${fmt(st.median, 2)}× (${fmt(st.min, 2)}–${fmt(st.max, 2)})`;
}

// A row without ratios: the baseline itself, or a row whose baseline did not run.
function noRatio(s) { return s.baseline ? 'base' : 'no base'; }

function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(w[i])).join(' | ')} |`;
  return [line(header), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function markdown(ctx, summary, skipped, failures, noisy) {
  const o = ctx.opts;
  const m = ctx.machine;
  const out = [];
  out.push(`### Run ${ctx.startedAt}${o.quick ? ' (quick smoke run)' : ''}`);
  out.push('');
  out.push(`- Command: \`${ctx.command}\``);
  out.push(`- Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.kernel}, ${m.memTotalMB} MB; Node ${m.node}; ${m.wrk}; load average at start ${m.loadavgAtStart.join(' ')}`);
  out.push(`- Load: \`wrk -t${o.threads} -c${o.connections} -d${o.duration}s --latency\` after a ${o.warmup} s warm-up, ${o.rounds} interleaved round${o.rounds > 1 ? 's' : ''}, a fresh server process per run; cells are median (min–max) over rounds, ratios are paired within each round`);
  if (ctx.native) out.push(`- Native addon: ${ctx.native.ok ? `buildProfile \`${ctx.native.buildProfile}\`` : `not measured (${ctx.native.reason})`}`);
  for (const a of Object.values(ctx.apps || {})) {
    if (a.ok) out.push(`- ${a.name}: koatty ${a.koatty}, koatty_core ${a.koattyCore}, koatty_serve ${a.koattyServe.version}${a.koattyServe.path === ctx.rootReal ? ' (this repo)' : ''}`);
  }
  out.push('');
  const header = ['server', 'req/s', '× base', 'p99 ms', 'errors', 'CPU µs/req', '× base', 'JS-thread µs/req', '× base', 'peak RSS MB', 'CPU % server/wrk/other'];
  for (const g of Object.keys(GROUP_TITLES)) {
    const rows = ctx.servers.filter((s) => s.group === g && summary[s.name]).map((s) => {
      const r = summary[s.name];
      return [
        s.name,
        cell(r.reqPerSec, 0),
        r.ratio ? ratioCell(r.ratio.reqPerSec) : noRatio(s),
        cell(r.p99Ms, 2),
        String(r.errorsTotal),
        cell(r.cpuUsPerReq, 1),
        r.ratio ? ratioCell(r.ratio.cpuUsPerReq) : noRatio(s),
        cell(r.jsCpuUsPerReq, 1),
        r.ratio ? ratioCell(r.ratio.jsCpuUsPerReq) : noRatio(s),
        cell(r.peakRssMB, 1),
        `${fmt(r.cpuPercent.median, 0)}/${fmt(r.wrkCpuPercent.median, 0)}/${fmt(r.otherCpuPercent.median, 0)}`,
      ];
    });
    if (!rows.length) continue;
    out.push(`**${GROUP_TITLES[g]}**`);
    out.push('');
    out.push(table(header, rows));
    out.push('');
  }
  out.push('`× base` for req/s: higher is faster; for CPU: the fraction of the baseline\'s CPU per request (lower is better). CPU = utime+stime of the server process (all threads) over the measured run ÷ requests; JS-thread = the same for the main thread alone; peak RSS = VmHWM after the run; CPU % = medians in % of one CPU during the measured run for the server, wrk, and everything else on the machine. errors = wrk socket errors + non-2xx/3xx, summed over rounds.');
  if (noisy.length) {
    out.push('');
    out.push(`**Not clean:** other processes used more than 15 % of a CPU during ${noisy.length} of ${ctx.runCount} runs (${noisy.map((x) => `${x.server} r${x.round}: ${fmt(x.otherCpuPercent, 0)} %`).join(', ')}).`);
  }
  const notes = [...skipped.map((s) => `- ${s.server}: skipped — ${s.reason}`), ...failures.map((f) => `- ${f.server} round ${f.round}: FAILED — ${f.message.split('\n')[0]}`)];
  if (notes.length) { out.push(''); out.push(...notes); }
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------- native check
// In a child so the harness never loads the addon (its runtime threads) itself.
function nativeCheck() {
  const code = `try { const m = require(${JSON.stringify(ROOT)}); const i = typeof m.runtimeInfo === 'function' ? m.runtimeInfo() : null;
    process.stdout.write(JSON.stringify({ ok: true, hasHttpServer: typeof m.HttpServer === 'function', runtimeInfo: i })); }
    catch (e) { process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e) })); }`;
  const r = spawnSync(process.execPath, ['-e', code], { cwd: ROOT, encoding: 'utf8', timeout: 30000, env: childEnv({}) });
  let j;
  try { j = JSON.parse(r.stdout); } catch { j = { ok: false, error: `check exited ${r.status}: ${(r.stderr || '').slice(0, 500)}` }; }
  if (!j.ok) return { ok: false, reason: `cannot load the native koatty_serve from the repo root (not built yet? npm run build): ${j.error.split('\n')[0]}` };
  if (!j.hasHttpServer) return { ok: false, reason: 'the repo root does not export HttpServer' };
  const buildProfile = j.runtimeInfo && j.runtimeInfo.buildProfile;
  return { ok: true, buildProfile, runtimeInfo: j.runtimeInfo };
}

function banner(lines) {
  const w = Math.max(...lines.map((l) => l.length));
  const bar = '!'.repeat(w + 8);
  console.error(`\n${bar}\n${lines.map((l) => `!!! ${l.padEnd(w)} !!!`).join('\n')}\n${bar}\n`);
}

// ---------------------------------------------------------------- main
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const wrkPath = findInPath('wrk');
  BASH = findInPath('bash');
  if (!wrkPath) die('wrk not found in PATH. Install it (Debian/Ubuntu: apt-get install -y wrk) and run again.');
  if (process.platform !== 'linux') die('this benchmark reads /proc and needs Linux');

  const startedAt = new Date().toISOString();
  const machine = machineInfo(wrkPath);
  const ctx = {
    opts, wrkPath, machine, startedAt,
    command: ['node', path.relative(process.cwd(), __filename) || 'bench/run.js', ...process.argv.slice(2)].join(' '),
    rootReal: fs.realpathSync(ROOT),
  };
  let servers = SERVERS.filter((s) => (!opts.only || opts.only.includes(s.name)) && !opts.skip.includes(s.name));
  const skipped = [];
  const skip = (pred, reason) => {
    for (const s of servers.filter(pred)) skipped.push({ server: s.name, reason });
    servers = servers.filter((s) => !pred(s));
  };

  console.log(`bench: ${machine.nproc} CPUs (${machine.cpuModel}), Node ${machine.node}, ${machine.wrk}`);
  console.log(`bench: ${opts.rounds} round(s), wrk -t${opts.threads} -c${opts.connections} -d${opts.duration}s, warm-up ${opts.warmup}s${opts.quick ? ' (quick)' : ''}`);
  if (machine.loadavgAtStart[0] > 0.5) {
    console.warn(`bench: WARNING load average is ${machine.loadavgAtStart.join(' ')}: something else is using the CPUs; figures will be noisy`);
  }

  if (servers.some((s) => s.native)) {
    ctx.native = nativeCheck();
    if (!ctx.native.ok) {
      console.warn(`bench: SKIPPING native rows: ${ctx.native.reason}`);
      skip((s) => s.native, ctx.native.reason);
    } else {
      console.log(`bench: native runtimeInfo().buildProfile = ${JSON.stringify(ctx.native.buildProfile)}`);
      if (ctx.native.buildProfile !== 'release') {
        if (opts.allowDebug) {
          banner([`The native addon is a ${JSON.stringify(ctx.native.buildProfile)} build, not 'release'.`,
            'Its figures mean nothing for performance (decisions.md §19).', 'Running anyway because of --allow-debug.']);
        } else {
          const reason = `native addon buildProfile is ${JSON.stringify(ctx.native.buildProfile)}, not 'release' (decisions.md §19); build with \`npm run build\`, or pass --allow-debug`;
          banner([`REFUSING to benchmark the native rows: ${reason}`]);
          ctx.native = { ok: false, reason, buildProfile: ctx.native.buildProfile };
          skip((s) => s.native, reason);
        }
      }
    }
  }

  const appsNeeded = [...new Set(servers.filter((s) => s.app).map((s) => s.app))];
  if (appsNeeded.length) {
    const { ensureApps } = require('./setup');
    ctx.apps = ensureApps(appsNeeded, { install: opts.setup });
    for (const a of Object.values(ctx.apps)) {
      if (a.ok) console.log(`bench: ${a.name}: koatty ${a.koatty}, koatty_core ${a.koattyCore} (npm ls: ${a.npmLsKoattyCore}), koatty_serve ${a.koattyServe.version} at ${a.koattyServe.path}`);
      else {
        const reason = `${a.name} sub-package: ${a.problems.join('; ')}`;
        console.warn(`bench: SKIPPING ${a.name} rows: ${reason}`);
        skip((s) => s.app === a.name, reason);
      }
    }
  }
  ctx.servers = servers;
  if (!servers.length) die('no server left to run', 1);

  ctx.logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-serve-bench-'));
  process.on('SIGINT', () => {
    if (current) { try { process.kill(current.pid, 'SIGKILL'); } catch { /* gone */ } }
    process.exit(130);
  });

  const runs = [];
  const failures = [];
  const noisy = [];
  const dead = new Set();
  for (let r = 0; r < opts.rounds; r++) {
    const live = servers.filter((s) => !dead.has(s.name));
    if (!live.length) break;
    const order = live.map((_, i) => live[(i + r) % live.length]);
    console.log(`\nround ${r + 1}/${opts.rounds}: ${order.map((s) => s.name).join(', ')}`);
    for (const s of order) {
      if (runs.length || failures.length) await sleep(opts.pause * 1000);
      try {
        const res = await runOne(s, r, ctx);
        runs.push(res);
        const e = res.errors.total ? `, ${res.errors.total} errors` : '';
        console.log(`  ${s.name.padEnd(19)} ${fmt(res.reqPerSec, 0).padStart(8)} req/s  p99 ${fmt(res.p99Ms, 2).padStart(6)} ms  CPU ${fmt(res.cpuUsPerReq, 1).padStart(6)} µs/req  JS ${fmt(res.jsCpuUsPerReq, 1).padStart(6)} µs/req  RSS ${fmt(res.peakRssMB, 1)} MB  (server ${fmt(res.cpuPercent, 0)}%, wrk ${fmt(res.wrkCpuPercent, 0)}%, other ${fmt(res.otherCpuPercent, 0)}% CPU; ${res.threads} threads; log ${fmt(res.logBytesPerReq, 1)} B/req${e})`);
        if (res.otherCpuPercent != null && res.otherCpuPercent > 15) {
          console.warn(`  WARNING ${s.name}: other processes used ${fmt(res.otherCpuPercent, 0)}% of a CPU during this run: not a clean measurement`);
          noisy.push({ server: s.name, round: r + 1, otherCpuPercent: +res.otherCpuPercent.toFixed(1) });
        }
        if (s.logs === 'info' && res.logBytesPerReq != null && res.logBytesPerReq < 20) console.warn(`  WARNING ${s.name}: only ${fmt(res.logBytesPerReq, 1)} log bytes per request: is the access log on?`);
        if (s.logs === 'warning' && res.logBytesPerReq != null && res.logBytesPerReq > 5) console.warn(`  WARNING ${s.name}: ${fmt(res.logBytesPerReq, 1)} log bytes per request at logs_level warning`);
      } catch (e) {
        failures.push({ server: s.name, round: r + 1, message: e.message });
        dead.add(s.name);
        console.error(`  ${s.name}: FAILED (not retried in later rounds): ${e.message}`);
      }
    }
  }

  const summary = summarize(runs, servers);
  ctx.runCount = runs.length;
  const md = markdown(ctx, summary, skipped, failures, noisy);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  const jsonFile = path.join(RESULTS_DIR, `${stamp}.json`);
  const mdFile = path.join(RESULTS_DIR, `${stamp}.md`);
  fs.writeFileSync(jsonFile, JSON.stringify({
    startedAt, finishedAt: new Date().toISOString(), command: ctx.command, options: opts, machine,
    native: ctx.native || null, apps: ctx.apps || null,
    servers: servers.map(({ name, group, desc, baseline, native }) => ({ name, group, desc, baseline: !!baseline, native: !!native })),
    skipped, failures, noisy, summary, runs,
  }, null, 2) + '\n');
  fs.writeFileSync(mdFile, md);
  if (!opts.keepLogs) fs.rmSync(ctx.logDir, { recursive: true, force: true });
  else console.log(`\nserver logs kept in ${ctx.logDir}`);

  console.log('\n' + md);
  console.log(`results: ${path.relative(process.cwd(), jsonFile)}\nmarkdown: ${path.relative(process.cwd(), mdFile)} (paste into bench/RESULTS.md)`);
  if (skipped.length) console.warn(`bench: skipped: ${skipped.map((s) => s.server).join(', ')} (see the notes above)`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  if (current) { try { process.kill(current.pid, 'SIGKILL'); } catch { /* gone */ } }
  console.error(e && e.stack || e);
  process.exit(1);
});
