#!/usr/bin/env node
'use strict';
// gRPC benchmark: the native GrpcServer vs an @grpc/grpc-js Server running the same JS handler
// (bench/grpc/service.js), unary and server streaming. Unary load: grpc-load
// (../shared/tools/loadgen); server-streaming load: bench/grpc/stream-load (grpc-stream-load, which
// counts the streamed messages; grpc-load cannot read @grpc/grpc-js's one-DATA-frame-per-message
// streams, see its source). Both are built with `nice` into target/loadgen-grpc when missing.
//
//   node bench/grpc/run.js [--rounds 5] [--duration 8] [--warmup 3] [--unary-c 8] [--unary-m 16]
//                          [--stream-c 4] [--stream-m 8] [--stream-count 100] [--threads 1]
//                          [--wait-idle 20] [--retry-noisy 2] [--only unary|unary-gjs|stream[,…]]
//                          [--native-require FILE] [--baseline DIR]
//
// Workloads: `unary` (grpc-load, which sends no grpc-accept-encoding), `unary-gjs` (the same unary
// load through grpc-stream-load -n 1 with the request headers every @grpc/grpc-js client adds:
// `grpc-accept-encoding: identity,deflate,gzip`, `accept-encoding: identity` — what decides
// whether a server compresses its replies; grpc-stream-load also counts replies with the compressed
// flag) and `stream` (server streaming). Default: unary and stream.
//
// --baseline DIR adds a row 'native-base': the native server loaded from a copy of the package in
// DIR (package.json, index.js, config.js, binding.js, js/, the .node binary of another build), e.g.
// the commit before a change, so before and after run interleaved in one session.
//
// --wait-idle S: before each run wait up to S s for the machine to be idle. --retry-noisy N: a run
// during which the rest of the machine used ≥ 15 % of a CPU is repeated up to N times (the noisy
// attempts stay in the JSON with `discarded: true`). `node bench/grpc/run.js --summarize FILE…`
// prints the tables again from result files.
//
// --native-require FILE adds a row 'native+require' whose server process is started with
// `node -r FILE` (e.g. to try a fix of the server's JS side without editing the repository).
//
// Every measurement starts a fresh server process (node spawned directly, so its pid is the server
// and /proc/PID/task/PID is its main = JavaScript thread), checks it answers correctly, runs a
// warm-up load, then the measured load. Rounds are interleaved: each round runs both workloads on
// both servers, the order rotating every round. Per run: calls/s, p50/p99 (grpc-load), CPU of the
// JS thread and of the whole process per call (utime+stime ticks over the measured run ÷ ok calls).
// Ratios native ÷ grpc-js are paired per round; the summary gives their median and range.
// Results: bench/grpc/results/grpc-<date>.json and a markdown table on stdout.
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { grpc, Greeter, LOAD_OPTIONS } = require('./service');
const { readTicks, readCpu, readMachine, fmt } = require('../lib/measure');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..');
const LOADGEN = path.resolve(ROOT, '..', 'shared', 'tools', 'loadgen');
const TARGET_DIR = path.join(ROOT, 'target', 'loadgen-grpc');
const GRPC_LOAD = path.join(TARGET_DIR, 'release', 'grpc-load');
const STREAM_LOAD = path.join(TARGET_DIR, 'release', 'grpc-stream-load');

function parseArgs(argv) {
  const o = {
    rounds: 5, duration: 8, warmup: 3, unaryC: 8, unaryM: 16, streamC: 4, streamM: 8, streamCount: 100,
    threads: 1, waitIdle: 20, only: null, nativeRequire: null, retryNoisy: 2, baseline: null,
  };
  const keys = {
    '--rounds': 'rounds', '--duration': 'duration', '--warmup': 'warmup', '--unary-c': 'unaryC', '--unary-m': 'unaryM',
    '--stream-c': 'streamC', '--stream-m': 'streamM', '--stream-count': 'streamCount', '--threads': 'threads', '--wait-idle': 'waitIdle',
    '--retry-noisy': 'retryNoisy',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      const lines = fs.readFileSync(__filename, 'utf8').split('\n').slice(2);
      console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
      process.exit(0);
    } else if (a === '--only') {
      o.only = argv[++i];
    } else if (a === '--native-require') {
      o.nativeRequire = path.resolve(argv[++i]);
    } else if (a === '--baseline') {
      o.baseline = path.resolve(argv[++i]);
    } else if (keys[a]) {
      o[keys[a]] = Number(argv[++i]);
    } else {
      throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A run counts as quiet when the rest of the machine used less than this share of one CPU. */
const QUIET = 0.15;

// ---------------------------------------------------------------- /proc
/** Waits up to `seconds` for a quiet machine (< 10 % of one CPU busy over 1 s); returns the last busy share. */
async function waitIdle(seconds) {
  const deadline = Date.now() + seconds * 1000;
  let share = 1;
  do {
    const a = readMachine();
    await sleep(1000);
    const b = readMachine();
    share = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * os.cpus().length;
    if (share < 0.1) return share;
  } while (Date.now() < deadline);
  return share;
}

// ---------------------------------------------------------------- grpc-load
function cargoBuild(binary, args) {
  if (fs.existsSync(binary)) return;
  console.error(`[bench] building ${path.basename(binary)} into ${path.relative(ROOT, TARGET_DIR)} …`);
  const r = spawnSync('nice', ['-n', '10', 'cargo', 'build', '--release', ...args, '--target-dir', TARGET_DIR], { stdio: 'inherit' });
  if (r.status !== 0 || !fs.existsSync(binary)) throw new Error(`building ${path.basename(binary)} failed`);
}

function ensureTools() {
  cargoBuild(GRPC_LOAD, ['--manifest-path', path.join(LOADGEN, 'Cargo.toml'), '-p', 'grpc-load']);
  cargoBuild(STREAM_LOAD, ['--manifest-path', path.join(HERE, 'stream-load', 'Cargo.toml')]);
}

/** A gRPC-framed request body file (5-byte prefix + protobuf) for grpc-load -b. */
function bodyFile(dir, name, method, request) {
  const message = Greeter.service[method].requestSerialize(request);
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, 5);
  const file = path.join(dir, `${name}.bin`);
  fs.writeFileSync(file, framed);
  return file;
}

/** Runs a load generator; `cpuTicks` is its CPU (polled from /proc until it exits). */
function runLoad(tool, args) {
  return new Promise((resolve) => {
    const child = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let cpuTicks = 0;
    const poll = setInterval(() => { try { cpuTicks = readTicks(`/proc/${child.pid}/stat`); } catch { /* exited */ } }, 100);
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('close', (code) => {
      clearInterval(poll);
      const line = out.split('\n').find((l) => l.startsWith('RESULT ')) || '';
      const result = { code, output: out.trim(), cpuTicks };
      for (const [, k, v] of line.matchAll(/(\w+)=([\d.]+)/g)) result[k] = Number(v);
      resolve(result);
    });
  });
}

/** The request headers @grpc/grpc-js 1.x clients add to every call (compression-filter.ts). */
const GRPC_JS_HEADERS = ['-H', 'grpc-accept-encoding: identity,deflate,gzip', '-H', 'accept-encoding: identity'];

// ---------------------------------------------------------------- servers
const SERVERS = [
  { name: 'native', script: 'server-native.js', desc: 'native GrpcServer (this addon), RegisterService with the proto-loader definition' },
  { name: 'grpc-js', script: 'server-grpcjs.js', desc: '@grpc/grpc-js Server, addService + bindAsync (insecure)' },
];

function startServer(server) {
  return new Promise((resolve, reject) => {
    const args = [...(server.preload ? ['-r', server.preload] : []), path.join(HERE, server.script)];
    const env = { ...process.env, NODE_ENV: 'production', ...(server.root ? { BENCH_NATIVE_ROOT: server.root } : {}) };
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${server.name} did not start\n${out}\n${err}`)); }, 15000);
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('{"event":"listening"'));
      if (!line) return;
      clearTimeout(timer);
      const info = JSON.parse(line);
      resolve({ child, info, stderr: () => err });
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${server.name} exited (${code})\n${out}\n${err}`)); });
  });
}

async function stopServer(s) {
  if (s.child.exitCode !== null) return;
  const exited = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  const t = setTimeout(() => s.child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

/** A correctness check with a grpc-js client before loading the server. */
async function check(port, streamCount) {
  const c = new Greeter(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const reply = await new Promise((res, rej) => c.SayHello({ name: 'world' }, { deadline: Date.now() + 5000 }, (e, v) => (e ? rej(e) : res(v))));
    if (reply.message !== 'Hello world') throw new Error(`unary check: ${JSON.stringify(reply)}`);
    const n = await new Promise((res, rej) => {
      let k = 0;
      const s = c.SayHelloStream({ name: 'world', count: streamCount }, { deadline: Date.now() + 5000 });
      s.on('data', (m) => { if (m.index !== k || m.message !== 'Hello world') rej(new Error(`stream check: message ${k} = ${JSON.stringify(m)}`)); k++; });
      s.on('error', rej);
      s.on('end', () => res(k));
    });
    if (n !== streamCount) throw new Error(`stream check: ${n} messages, expected ${streamCount}`);
  } finally {
    c.close();
  }
}

// ---------------------------------------------------------------- one run
async function measure(opts, server, workload, bodies) {
  const s = await startServer(server);
  try {
    const { port, pid } = s.info;
    if (s.info.impl === 'native' && s.info.runtimeInfo.buildProfile !== 'release') {
      throw new Error(`the native addon is a ${s.info.runtimeInfo.buildProfile} build; benchmarks need release (npm run build)`);
    }
    let checkError = null;
    try {
      await check(port, opts.streamCount);
    } catch (err) {
      checkError = String(err && err.message || err);
    }
    const tool = workload === 'unary' ? GRPC_LOAD : STREAM_LOAD;
    const load = workload === 'unary'
      ? ['-c', opts.unaryC, '-m', opts.unaryM, '-b', bodies.unary, '-p', '/helloworld.Greeter/SayHello']
      : workload === 'unary-gjs'
        ? ['-c', opts.unaryC, '-m', opts.unaryM, '-n', 1, '-T', 2, ...GRPC_JS_HEADERS, '-b', bodies.unary, '-p', '/helloworld.Greeter/SayHello']
        : ['-c', opts.streamC, '-m', opts.streamM, '-n', opts.streamCount, '-T', 2, '-b', bodies.stream, '-p', '/helloworld.Greeter/SayHelloStream'];
    const common = ['-t', opts.threads, '-w', 0, ...load].map(String);
    const warm = await runLoad(tool, [...common, '-d', String(opts.warmup), `127.0.0.1:${port}`]);
    const m0 = readMachine();
    const c0 = readCpu(pid);
    const t0 = process.hrtime.bigint();
    const r = await runLoad(tool, [...common, '-d', String(opts.duration), `127.0.0.1:${port}`]);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c1 = readCpu(pid);
    const m1 = readMachine();
    const firstError = (r.output.match(/first error: (.*)/) || [])[1] || (warm.code !== 0 ? `warm-up: ${(warm.output.match(/first error: (.*)/) || [])[1]}` : null);
    const usPerTick = 1e6 / CLK_TCK;
    const jsTicks = c1.js - c0.js;
    const procTicks = c1.proc - c0.proc;
    const perCall = workload === 'stream' ? opts.streamCount : 1;
    const machineTicks = (m1.busy - m0.busy);
    return {
      server: server.name,
      workload,
      tool: path.basename(tool),
      callsPerSec: r.rps || 0,
      msgsPerSec: (r.rps || 0) * perCall,
      // Replies with the compressed flag set (grpc-stream-load only), as a share of the messages.
      compressedShare: r.compressed !== undefined && r.msgs ? r.compressed / r.msgs : null,
      ok: r.ok || 0,
      failed: r.failed || 0,
      timeouts: r.timeouts || 0,
      checkError,
      firstError,
      p50ms: r.p50_ms,
      p99ms: r.p99_ms,
      jsUsPerCall: r.ok ? (jsTicks * usPerTick) / r.ok : NaN,
      procUsPerCall: r.ok ? (procTicks * usPerTick) / r.ok : NaN,
      jsCpuShare: jsTicks / CLK_TCK / wall,
      procCpuShare: procTicks / CLK_TCK / wall,
      loadgenCpuShare: r.cpuTicks / CLK_TCK / wall,
      machineBusy: (machineTicks / Math.max(1, m1.total - m0.total)) * os.cpus().length,
      // CPU of everything else on the machine during the run (other processes disturb the figures).
      otherCpuShare: Math.max(0, machineTicks - procTicks - r.cpuTicks) / CLK_TCK / wall,
      threads: c1.threads,
      wall,
      loadArgs: [...common, '-d', String(opts.duration)].join(' '),
    };
  } finally {
    await stopServer(s);
  }
}

// ---------------------------------------------------------------- summary
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const range = (xs, d) => `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`;

function summarize(runs, opts, servers) {
  const lines = [];
  const titles = {
    unary: 'Unary SayHello',
    'unary-gjs': 'Unary SayHello with grpc-js\'s request headers (grpc-accept-encoding: identity,deflate,gzip)',
    stream: `Server streaming SayHelloStream (${opts.streamCount} messages per call)`,
  };
  for (const workload of ['unary', 'unary-gjs', 'stream']) {
    const rows = runs.filter((r) => r.workload === workload);
    if (rows.length === 0) continue;
    lines.push('', `### ${titles[workload]}`, '');
    lines.push(`| server | calls/s | msgs/s | p50 ms | p99 ms | JS-thread CPU µs/call | process CPU µs/call | JS thread busy | process CPU | failed + timed out | other CPU | rounds |`);
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const server of servers) {
      const rs = rows.filter((r) => r.server === server.name);
      if (rs.length === 0) continue;
      const col = (k) => rs.map((r) => r[k]);
      lines.push(`| ${server.name} | ${fmt(median(col('callsPerSec')))} (${range(col('callsPerSec'))}) | ${fmt(median(col('msgsPerSec')))} | ${fmt(median(col('p50ms')), 2)} | ${fmt(median(col('p99ms')), 2)} (${range(col('p99ms'), 2)}) | ${fmt(median(col('jsUsPerCall')), 1)} (${range(col('jsUsPerCall'), 1)}) | ${fmt(median(col('procUsPerCall')), 1)} | ${fmt(median(col('jsCpuShare')) * 100)} % | ${fmt(median(col('procCpuShare')) * 100)} % | ${rs.reduce((n, r) => n + r.failed + r.timeouts, 0)} | ${fmt(Math.max(...col('otherCpuShare')) * 100)} % max | ${rs.length} |`);
    }
    const compressed = servers.map((server) => {
      const shares = rows.filter((r) => r.server === server.name && r.compressedShare !== null && r.compressedShare !== undefined).map((r) => r.compressedShare);
      return shares.length ? `${server.name} ${fmt(median(shares) * 100)} %` : null;
    }).filter(Boolean);
    if (compressed.length) lines.push('', `Replies with the compressed flag (grpc-stream-load), median share: ${compressed.join(', ')}.`);
    // Paired ratios per round, each native row against grpc-js, and native against native-base.
    const pairings = servers.filter((s) => s.name !== 'grpc-js').map((s) => [s.name, 'grpc-js']);
    if (servers.some((s) => s.name === 'native-base')) pairings.push(['native', 'native-base']);
    for (const [name, base] of pairings) {
      if (name === base) continue;
      const pairs = [];
      for (let round = 0; round < opts.rounds; round++) {
        const n = rows.find((r) => r.server === name && r.round === round);
        const j = rows.find((r) => r.server === base && r.round === round);
        if (n && j && n.ok > 0) pairs.push({ tput: n.callsPerSec / j.callsPerSec, cpu: n.jsUsPerCall / j.jsUsPerCall, proc: n.procUsPerCall / j.procUsPerCall, p99: n.p99ms / j.p99ms });
      }
      if (pairs.length) {
        lines.push('', `${name} ÷ ${base}, paired per round (median, range over ${pairs.length} rounds): ` +
          `throughput **${fmt(median(pairs.map((p) => p.tput)), 2)}×** (${range(pairs.map((p) => p.tput), 2)}), ` +
          `JS-thread CPU per call **${fmt(median(pairs.map((p) => p.cpu)), 3)}** (${range(pairs.map((p) => p.cpu), 3)}), ` +
          `process CPU per call ${fmt(median(pairs.map((p) => p.proc)), 3)} (${range(pairs.map((p) => p.proc), 3)}), ` +
          `p99 ${fmt(median(pairs.map((p) => p.p99)), 2)} (${range(pairs.map((p) => p.p99), 2)}).`);
      }
    }
    // The same over the runs the rest of the machine left alone (other CPU < QUIET): on a shared
    // machine other processes can take a core in the middle of a run.
    const quiet = rows.filter((r) => r.otherCpuShare < QUIET);
    const quietLine = servers.map((server) => {
      const rs = quiet.filter((r) => r.server === server.name);
      if (rs.length === 0) return `${server.name}: no quiet run`;
      const col = (k) => rs.map((r) => r[k]);
      return `${server.name} ${fmt(median(col('callsPerSec')))} calls/s (${fmt(median(col('msgsPerSec')))} msgs/s), p99 ${fmt(median(col('p99ms')), 2)} ms, JS ${fmt(median(col('jsUsPerCall')), 1)} µs/call, process ${fmt(median(col('procUsPerCall')), 1)} µs/call (${rs.length} runs)`;
    });
    lines.push('', `Quiet runs only (other CPU < ${QUIET * 100} %), medians: ${quietLine.join('; ')}.`);
    const nq = quiet.filter((r) => r.server === 'native');
    const jq = quiet.filter((r) => r.server === 'grpc-js');
    if (nq.length && jq.length) {
      lines.push(`Quiet medians native ÷ grpc-js: throughput **${fmt(median(nq.map((r) => r.callsPerSec)) / median(jq.map((r) => r.callsPerSec)), 2)}×**, JS-thread CPU per call **${fmt(median(nq.map((r) => r.jsUsPerCall)) / median(jq.map((r) => r.jsUsPerCall)), 3)}**.`);
    }
    const errors = [...new Set(rows.filter((r) => r.firstError || r.checkError).map((r) => `${r.server}: ${r.checkError ? `check: ${r.checkError}; ` : ''}${r.firstError || ''}`))];
    if (errors.length) lines.push('', 'Errors seen:', ...errors.map((e) => `- ${e}`));
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main
async function main() {
  if (process.argv[2] === '--summarize') {
    // node bench/grpc/run.js --summarize FILE...: the tables again, over the runs of one or more result files.
    const files = process.argv.slice(3).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
    let offset = 0;
    const runs = [];
    for (const f of files) {
      for (const r of f.runs) runs.push({ ...r, round: r.round + offset });
      offset += f.meta.opts.rounds;
    }
    const servers = files[0].meta.servers;
    console.log(summarize(runs, { ...files[0].meta.opts, rounds: offset }, servers));
    return;
  }
  if (process.platform !== 'linux') throw new Error('this benchmark reads /proc and needs Linux');
  const opts = parseArgs(process.argv.slice(2));
  ensureTools();
  const servers = [...SERVERS];
  if (opts.nativeRequire) {
    servers.splice(1, 0, { name: 'native+require', script: 'server-native.js', preload: opts.nativeRequire, desc: `native GrpcServer, node -r ${opts.nativeRequire}` });
  }
  if (opts.baseline) {
    if (!fs.existsSync(path.join(opts.baseline, 'index.js'))) throw new Error(`--baseline ${opts.baseline}: no index.js (a copy of the package is expected)`);
    servers.splice(1, 0, { name: 'native-base', script: 'server-native.js', root: opts.baseline, desc: `native GrpcServer loaded from ${opts.baseline}` });
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-grpc-bench-'));
  const bodies = {
    unary: bodyFile(tmp, 'sayhello', 'SayHello', { name: 'world' }),
    stream: bodyFile(tmp, 'sayhellostream', 'SayHelloStream', { name: 'world', count: opts.streamCount }),
  };
  const workloads = opts.only ? opts.only.split(',') : ['unary', 'stream'];
  for (const w of workloads) if (!['unary', 'unary-gjs', 'stream'].includes(w)) throw new Error(`unknown workload ${w} (unary, unary-gjs, stream)`);
  const addon = path.join(ROOT, 'koatty_serve.linux-x64-gnu.node');
  const addonStat = () => (fs.existsSync(addon) ? fs.statSync(addon).mtimeMs : null);
  const addonAtStart = addonStat();
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0] && os.cpus()[0].model,
    grpcJs: require('@grpc/grpc-js/package.json').version,
    opts,
    clkTck: CLK_TCK,
    command: `node bench/grpc/run.js ${process.argv.slice(2).join(' ')}`.trim(),
  };
  meta.servers = servers;
  console.error(`[bench] ${meta.command}: ${opts.rounds} rounds × ${workloads.join('+')} × ${servers.map((s) => s.name).join('/')} (${opts.warmup}s warm-up + ${opts.duration}s each)`);
  const runs = [];
  const discarded = [];
  for (let round = 0; round < opts.rounds; round++) {
    const wl = round % 2 ? [...workloads].reverse() : workloads;
    for (const workload of wl) {
      const order = servers.map((_, i) => servers[(i + round) % servers.length]);
      for (const server of order) {
        let r;
        for (let attempt = 0; ; attempt++) {
          const idle = opts.waitIdle > 0 ? await waitIdle(opts.waitIdle) : null;
          r = await measure(opts, server, workload, bodies);
          r.round = round;
          r.attempt = attempt;
          r.idleBefore = idle;
          r.addonChanged = addonStat() !== addonAtStart;
          if (r.otherCpuShare < QUIET || attempt >= opts.retryNoisy) break;
          r.discarded = true;
          discarded.push(r);
          console.error(`[bench] round ${round + 1} ${workload} ${server.name}: other processes used ${fmt(r.otherCpuShare * 100)} % of a CPU, repeating`);
        }
        runs.push(r);
        console.error(`[bench] round ${round + 1} ${workload.padEnd(9)} ${server.name.padEnd(14)} ${fmt(r.callsPerSec).padStart(8)} calls/s ${fmt(r.msgsPerSec).padStart(10)} msgs/s  p99 ${fmt(r.p99ms, 2)} ms  JS ${fmt(r.jsUsPerCall, 1)} µs/call  proc ${fmt(r.procUsPerCall, 1)} µs/call  JS busy ${fmt(r.jsCpuShare * 100)} %  loadgen ${fmt(r.loadgenCpuShare * 100)} %  other ${fmt(r.otherCpuShare * 100)} %${r.compressedShare !== null ? `  compressed ${fmt(r.compressedShare * 100)} %` : ''}${r.failed || r.timeouts ? `  FAILED ${r.failed} TIMEOUTS ${r.timeouts}` : ''}${r.firstError ? `  (${r.firstError})` : ''}${r.addonChanged ? '  (addon rebuilt during the run!)' : ''}`);
      }
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  const summary = summarize(runs, opts, servers);
  const dir = path.join(HERE, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `grpc-${meta.date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify({ meta, runs, discarded, summary }, null, 2));
  console.log(summary);
  console.error(`[bench] raw results: ${path.relative(ROOT, file)}`);
}

main().catch((err) => {
  console.error(err && err.stack || err);
  process.exit(1);
});
