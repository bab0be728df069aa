#!/usr/bin/env node
'use strict';
// Issue 11, the other protocols: the minimal Koatty 3.11.8 app (bench/koatty-app) on koatty_serve
// 2.3.0 (JS) vs the same app on this package (native server, native trace mode: NewServe's default
// for a Koatty app), over HTTP/2 (TLS, h2load), WebSocket (echo controller, ws-load) and gRPC
// (unary controller, grpc-load). bench/run.js measures the HTTP/1.1 rows (groups koatty, koatty-info).
//
//   node bench/koatty-protocols.js [options]      (see --help)
//
// Every run: a fresh app process (node spawned directly, so /proc/PID is the server and
// /proc/PID/task/PID its JS thread), proof of which server answered (the app's ready line: koatty's
// own resolution of koatty_serve, the server class, runtimeInfo and native trace mode), one probe
// checking the answer (h2 GET / → 200 text/plain "hello" over ALPN h2; ws message → the same text
// back; gRPC SayHello{name:"world"} → "Hello world"), a warm-up load, the measured load. Rounds are
// interleaved (each round runs every group's two servers back to back, the order rotating).
// Before each run it waits for an idle machine; a run during which other processes used more than
// 15 % of a CPU is measured again (--retry-noisy) and flagged when it stays noisy.
// Writes bench/results/koatty-protocols-<timestamp>.json and .md (also printed).
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const {
  sleep, dieWith, nproc, findInPath, readCpu, readMachine, readMem, waitIdle, runTool, parseH2load: parseH2loadSummary, logPercentiles,
  freePort, startReadyChild, stopChild, getOnceH2, median, stat, fmt, table, gitState,
} = require('./lib/measure');

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const RESULTS_DIR = path.join(BENCH, 'results');
const LOADGEN = path.resolve(ROOT, '..', 'shared', 'tools', 'loadgen');
const PROTO = path.join(BENCH, 'koatty-app', 'src', 'proto', 'bench.proto');
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

// ---------------------------------------------------------------- options
const PROTOCOLS = {
  http2: { unit: 'req', rate: 'req/s', tool: 'h2load', serverClass: 'Http2Server', desc: 'HTTP/2 over TLS (ALPN h2), GET / → "hello" (the HTTP/1.1 rows\' controller)' },
  ws: { unit: 'msg', rate: 'msgs/s', tool: 'ws-load', serverClass: 'WsServer', desc: 'WebSocket, every message routed to the /ws/echo controller, reply = the message' },
  grpc: { unit: 'call', rate: 'calls/s', tool: 'grpc-load', serverClass: 'GrpcServer', desc: 'gRPC unary /benchkoatty.Greeter/SayHello → { message: "Hello " + name }, the unmodified app: koatty_core 1.11.4 keeps every call\'s handler in app.middleware (koatty-contract.md §5.4), so each call costs more than the one before' },
  // The same app with that accumulation undone (main.js, BENCH_GRPC_NO_ACCUMULATE): what the server
  // changes for a Koatty gRPC app once koatty_core stops growing app.middleware per call.
  'grpc-fixed': { kind: 'grpc', unit: 'call', rate: 'calls/s', tool: 'grpc-load', serverClass: 'GrpcServer', env: { BENCH_GRPC_NO_ACCUMULATE: '1' }, desc: 'the same gRPC app with koatty_core\'s per-call app.middleware growth undone in the app (BENCH_GRPC_NO_ACCUMULATE=1, bench/koatty-app/main.js)' },
};
for (const [k, p] of Object.entries(PROTOCOLS)) p.kind = p.kind || k;
const HELP = `Usage: node bench/koatty-protocols.js [options]

  --protocols a,b    http2, ws, grpc, grpc-fixed        (default all four; grpc-fixed = the gRPC app
                     with koatty_core's per-call app.middleware growth undone)
  --logs a,b         Koatty logs_level rows: warning (main row, no access log), info
                                                        (default warning)
  --rounds N         interleaved rounds                  (default 5)
  --duration S       seconds of each measured load run   (default 10)
  --warmup S         seconds of the warm-up load run     (default 3)
  --pause S          seconds between runs                (default 1)
  --wait-idle S      before each run wait up to S s for < 10 % of a CPU busy (1 s, twice)
                                                        (default 180; 0 = off)
  --retry-noisy N    measure a run again (up to N times) when other processes used more
                     than 15 % of a CPU during it        (default 2)
  --h2-clients N     h2load -c                           (default 16)
  --h2-streams N     h2load -m                           (default 32)
  --ws-conns N       ws-load -c                          (default 64)
  --ws-message M     the message ws-load sends (digits: the controller returns Number(message))
                                                        (default 12345)
  --grpc-c N         grpc-load -c (connections)          (default 8)
  --grpc-m N         grpc-load -m (streams per connection) (default 16)
  --ws-load PATH     (env WS_LOAD)   default: the first built one of target/loadgen-grpc/release,
                     target/loadgen/release, /tmp/loadgen-target/release; else built with nice cargo
  --grpc-load PATH   (env GRPC_LOAD) likewise
  --keep-logs        keep each app's stdout/stderr
  --quick            smoke run: 1 round, 3 s, 1 s warm-up, no idle wait, no retries

The native addon must be a release build (runtimeInfo().buildProfile === 'release'); there is no
override. Apps: bench/setup.js installs bench/apps/koatty-js and koatty-native when needed.`;

function parseArgs(argv) {
  const o = {
    protocols: Object.keys(PROTOCOLS), logs: ['warning'], rounds: 5, duration: 10, warmup: 3, pause: 1,
    waitIdle: 180, retryNoisy: 2, h2Clients: 16, h2Streams: 32, wsConns: 64, wsMessage: '12345', grpcC: 8, grpcM: 16,
    threads: 1, wsLoad: process.env.WS_LOAD || null, grpcLoad: process.env.GRPC_LOAD || null, keepLogs: false,
  };
  const num = (k, v) => { const n = Number(v); if (!Number.isFinite(n) || n < 0) die(`bad value for ${k}: ${v}`); return n; };
  const seen = new Set();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    seen.add(a);
    switch (a) {
      case '--protocols': o.protocols = v().split(','); break;
      case '--logs': o.logs = v().split(','); break;
      case '--rounds': o.rounds = Math.max(1, Math.floor(num(a, v()))); break;
      case '--duration': o.duration = num(a, v()); break;
      case '--warmup': o.warmup = num(a, v()); break;
      case '--pause': o.pause = num(a, v()); break;
      case '--wait-idle': o.waitIdle = num(a, v()); break;
      case '--retry-noisy': o.retryNoisy = Math.floor(num(a, v())); break;
      case '--h2-clients': o.h2Clients = num(a, v()); break;
      case '--h2-streams': o.h2Streams = num(a, v()); break;
      case '--ws-conns': o.wsConns = num(a, v()); break;
      case '--ws-message': o.wsMessage = v(); break;
      case '--grpc-c': o.grpcC = num(a, v()); break;
      case '--grpc-m': o.grpcM = num(a, v()); break;
      case '--ws-load': o.wsLoad = path.resolve(v()); break;
      case '--grpc-load': o.grpcLoad = path.resolve(v()); break;
      case '--keep-logs': o.keepLogs = true; break;
      case '--quick': o.quick = true; break;
      case '-h': case '--help': console.log(HELP); process.exit(0); break;
      default: die(`unknown option ${a}\n\n${HELP}`);
    }
  }
  if (o.quick) {
    if (!seen.has('--rounds')) o.rounds = 1;
    if (!seen.has('--duration')) o.duration = 3;
    if (!seen.has('--warmup')) o.warmup = 1;
    if (!seen.has('--wait-idle')) o.waitIdle = 0;
    if (!seen.has('--retry-noisy')) o.retryNoisy = 0;
  }
  for (const p of o.protocols) if (!PROTOCOLS[p]) die(`unknown protocol ${p}; known: ${Object.keys(PROTOCOLS).join(', ')}`);
  for (const l of o.logs) if (!['warning', 'info'].includes(l)) die(`--logs takes warning and/or info, not ${l}`);
  if (!Number.isInteger(o.duration) || o.duration < 1 || !Number.isInteger(o.warmup)) die('--duration and --warmup are whole seconds (h2load -D)');
  if (!/^\d{1,15}$/.test(o.wsMessage)) die('--ws-message must be digits (the echo controller returns Number(message), which koatty\'s util.inspect reply writes back as the same digits)');
  return o;
}

const die = dieWith('koatty-protocols');

// ---------------------------------------------------------------- /proc
function readHwmMB(pid) {
  const { vmHwmKB } = readMem(pid);
  return vmHwmKB == null ? null : vmHwmKB / 1024;
}
const NPROC = nproc();

// ---------------------------------------------------------------- tools
function loadgenBinary(name, given) {
  if (given) {
    if (!fs.existsSync(given)) die(`${name} not found at ${given}`);
    return given;
  }
  const candidates = [path.join(ROOT, 'target', 'loadgen-grpc', 'release', name), path.join(ROOT, 'target', 'loadgen', 'release', name), path.join('/tmp/loadgen-target/release', name)];
  const found = candidates.find((c) => fs.existsSync(c));
  if (found) return found;
  const targetDir = path.join(ROOT, 'target', 'loadgen-grpc');
  console.log(`koatty-protocols: building ${name} (nice cargo build --release) into ${path.relative(ROOT, targetDir)} …`);
  const r = spawnSync('nice', ['-n', '10', 'cargo', 'build', '--release', '--manifest-path', path.join(LOADGEN, 'Cargo.toml'), '-p', name, '--target-dir', targetDir], { stdio: 'inherit' });
  const bin = path.join(targetDir, 'release', name);
  if (r.status !== 0 || !fs.existsSync(bin)) die(`building ${name} failed`, 1);
  return bin;
}

// h2load: finished line, request counts, status codes (3xx, 4xx and 5xx count as errors), ALPN;
// percentiles from --log-file.
function parseH2load(out) {
  const p = parseH2loadSummary(out);
  const failed = p.req ? p.req.failed + p.req.errored + p.req.timeout : 0;
  const non2xx = p.codes.s3xx + p.codes.s4xx + p.codes.s5xx;
  return {
    seconds: p.loadSeconds, rate: p.reqPerSec, units: p.requests, errors: failed + non2xx, errorDetail: `failed+errored+timeout ${failed}, non-2xx ${non2xx}`,
    alpn: p.alpn, cipher: p.cipher, tlsProtocol: p.tlsProtocol,
  };
}
function resultLine(out) {
  const line = out.split('\n').find((l) => l.startsWith('RESULT ')) || '';
  const r = {};
  for (const [, k, v] of line.matchAll(/(\w+)=([\d.]+)/g)) r[k] = Number(v);
  return line ? r : null;
}

async function runLoad(ctx, run, seconds, measured) {
  const o = ctx.opts;
  const { port } = run;
  if (run.kind === 'http2') {
    const logFile = measured ? path.join(ctx.tmp, 'h2load-requests.log') : null;
    const args = [`-t${o.threads}`, `-c${o.h2Clients}`, `-m${o.h2Streams}`, `-D${seconds}`];
    if (logFile) { fs.rmSync(logFile, { force: true }); args.push(`--log-file=${logFile}`); }
    args.push(`https://127.0.0.1:${port}/`);
    const t = await runTool(ctx.tools.h2load, args);
    const r = parseH2load(t.out);
    if (t.code !== 0 || r.rate == null || !r.units) throw new Error(`h2load (exit ${t.code}) completed nothing:\n${t.out}${t.err}`);
    if (r.alpn !== 'h2') throw new Error(`h2load negotiated ${JSON.stringify(r.alpn)}, not h2`);
    const pct = logFile ? logPercentiles(logFile) : null;
    if (logFile) fs.rmSync(logFile, { force: true });
    return { ...r, p50Ms: pct && pct.p50Ms, p99Ms: pct && pct.p99Ms, loadCpuSeconds: t.cpuSeconds, cmd: `h2load ${args.map((a) => (a.startsWith('--log-file=') ? '--log-file=<tmp>' : a)).join(' ')}` };
  }
  if (run.kind === 'ws') {
    const args = ['-c', o.wsConns, '-d', seconds, '-w', 0, '-t', o.threads, '-m', o.wsMessage, `ws://127.0.0.1:${port}/ws/echo`].map(String);
    const t = await runTool(ctx.tools.wsLoad, args);
    const r = resultLine(t.out);
    if (!r || !r.msgs) throw new Error(`ws-load (exit ${t.code}) completed nothing:\n${t.out}${t.err.slice(0, 2000)}`);
    if (r.conns < o.wsConns) throw new Error(`ws-load connected ${r.conns} of ${o.wsConns}:\n${t.out}`);
    return {
      rate: r.msgs_per_sec, units: r.msgs, seconds: r.secs, p50Ms: r.p50_ms, p99Ms: r.p99_ms,
      errors: r.errors + r.mismatched, errorDetail: `errors ${r.errors}, replies differing from the message ${r.mismatched}`,
      loadCpuSeconds: t.cpuSeconds, cmd: `ws-load ${args.join(' ')}`,
    };
  }
  const args = ['-c', o.grpcC, '-m', o.grpcM, '-d', seconds, '-w', 0, '-t', o.threads, '-b', ctx.grpcBody, '-p', '/benchkoatty.Greeter/SayHello', `127.0.0.1:${port}`].map(String);
  const t = await runTool(ctx.tools.grpcLoad, args);
  const r = resultLine(t.out);
  if (!r || !r.ok) throw new Error(`grpc-load (exit ${t.code}) completed no call:\n${t.out}${t.err.slice(0, 2000)}`);
  const first = (t.out.match(/first error: (.*)/) || [])[1];
  return {
    rate: r.rps, units: r.ok, seconds: r.secs, p50Ms: r.p50_ms, p99Ms: r.p99_ms,
    errors: r.failed, errorDetail: `failed ${r.failed}${first ? ` (first: ${first})` : ''}`,
    loadCpuSeconds: t.cpuSeconds, cmd: `grpc-load ${args.map((a) => (a === ctx.grpcBody ? '<SayHello{name:"world"}>' : a)).join(' ')}`,
  };
}

// ---------------------------------------------------------------- probes (correct answers)
async function probeH2(port, ca) {
  const r = await getOnceH2(port, ca);
  const ok = r.status === 200 && r.body === 'hello' && /^text\/plain/.test(r.headers['content-type'] || '') && r.tls.alpn === 'h2';
  if (!ok) throw new Error(`GET / over h2 answered ${r.status} ${JSON.stringify(r.headers['content-type'])} ${JSON.stringify(r.body.slice(0, 200))} (ALPN ${r.tls.alpn}), expected 200 text/plain "hello" over h2`);
  return `200 text/plain "hello", ALPN h2, x-request-id ${r.headers['x-request-id'] ? 'present' : 'absent'}`;
}

function probeWs(port, message) {
  const WebSocket = require(require.resolve('ws', { paths: [ROOT] }));
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/echo`);
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('timeout')); }, 5000);
    const replies = [];
    ws.on('open', () => ws.send(message));
    ws.on('message', (data, isBinary) => {
      replies.push(isBinary ? data : data.toString());
      if (replies.length === 1) {
        // a second message on the same connection (each message is a request of its own)
        ws.send(message);
      } else {
        clearTimeout(timer);
        ws.close();
        if (replies.every((r) => r === message)) resolve(`two messages "${message}" on one connection echoed as text`);
        else reject(new Error(`ws /ws/echo replied ${JSON.stringify(replies)}, expected ${JSON.stringify(message)} twice`));
      }
    });
    ws.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

function probeGrpc(port) {
  const grpc = require(require.resolve('@grpc/grpc-js', { paths: [ROOT] }));
  const protoLoader = require(require.resolve('@grpc/proto-loader', { paths: [ROOT] }));
  const { Greeter } = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, { keepCase: true, defaults: true })).benchkoatty;
  const c = new Greeter(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    c.SayHello({ name: 'world' }, { deadline: Date.now() + 5000 }, (e, v) => {
      c.close();
      if (e) return reject(e);
      if (!v || v.message !== 'Hello world') return reject(new Error(`SayHello replied ${JSON.stringify(v)}, expected { message: "Hello world" }`));
      resolve('SayHello{name:"world"} → "Hello world", status OK');
    });
  });
}

function grpcBodyFile(dir) {
  const protobuf = require(require.resolve('protobufjs', { paths: [require.resolve('@grpc/proto-loader', { paths: [ROOT] })] }));
  const root = protobuf.loadSync(PROTO);
  const T = root.lookupType('benchkoatty.HelloRequest');
  const msg = Buffer.from(T.encode(T.create({ name: 'world' })).finish());
  const framed = Buffer.alloc(5 + msg.length);
  framed.writeUInt32BE(msg.length, 1);
  msg.copy(framed, 5);
  const file = path.join(dir, 'sayhello.bin');
  fs.writeFileSync(file, framed);
  return file;
}

// ---------------------------------------------------------------- apps
let current = null;

function startApp(ctx, run, port, logFile) {
  const env = { ...process.env };
  delete env.PORT; delete env.APP_PORT; delete env.IP; delete env.KOATTY_SERVE_TRACE; delete env.KOATTY_SERVE_OPTIONS; delete env.BENCH_GRPC_NO_ACCUMULATE;
  Object.assign(env, {
    NODE_ENV: 'production', BENCH_READY_FD: '3', BENCH_PORT: String(port), BENCH_PROTOCOL: run.kind, BENCH_LOGS_LEVEL: run.logs,
  }, PROTOCOLS[run.protocol].env);
  delete env.BENCH_TLS_KEY; delete env.BENCH_TLS_CERT;
  if (run.kind === 'http2') { env.BENCH_TLS_KEY = ctx.tls.keyPath; env.BENCH_TLS_CERT = ctx.tls.certPath; }
  const cwd = path.join(BENCH, 'apps', run.app);
  const h = startReadyChild([path.join(cwd, 'app', 'main.js')], { cwd, env, logFile });
  current = h.child;
  return h;
}

async function stopApp(h) {
  await stopChild(h, 8000);
  if (current === h.child) current = null;
}

// Which server answered: the app reports koatty's own resolution of koatty_serve, the class of
// app.server, runtimeInfo() of that koatty_serve and whether the native tracer is installed.
function identityProblem(ctx, run, info, pid) {
  const want = PROTOCOLS[run.protocol].serverClass;
  if (info.error) return info.error;
  if (info.pid !== pid) return `ready line from pid ${info.pid}, spawned ${pid}`;
  if (info.koatty !== '3.11.8' || !/^1\.11\./.test(info.koattyCore || '')) return `koatty ${info.koatty} / koatty_core ${info.koattyCore}, expected 3.11.8 / 1.11.x`;
  if (info.protocol !== run.kind || info.serverCtor !== want) return `protocol ${info.protocol}, server ${info.serverCtor}; expected ${run.kind}, ${want}`;
  if (info.grpcNoAccumulate !== (run.protocol === 'grpc-fixed')) return `app.middleware growth workaround ${info.grpcNoAccumulate ? 'on' : 'off'}, expected ${run.protocol === 'grpc-fixed' ? 'on' : 'off'}`;
  if (info.logsLevel !== run.logs) return `logs_level ${info.logsLevel}, expected ${run.logs}`;
  if (run.native) {
    if (!info.koattyServe || info.koattyServe.root !== ctx.rootReal) return `koatty loaded koatty_serve from ${info.koattyServe && info.koattyServe.root}, not this repo`;
    if (!info.runtimeInfo || info.runtimeInfo.native !== true) return `koatty_serve runtimeInfo ${JSON.stringify(info.runtimeInfo)}: not the native addon`;
    if (info.buildProfile !== 'release') return `native buildProfile ${JSON.stringify(info.buildProfile)}, not 'release' (decisions.md §19)`;
    if (info.nativeTrace !== true) return 'native trace mode is not installed on the app (app[Symbol.for(\'koatty_serve.tracer\')])';
  } else {
    if (!info.koattyServe || info.koattyServe.version !== '2.3.0' || info.runtimeInfo) return `koatty loaded koatty_serve ${info.koattyServe && info.koattyServe.version} at ${info.koattyServe && info.koattyServe.root}, expected the JS 2.3.0`;
    if (info.nativeTrace) return 'the JS app has the native tracer installed';
    if (info.koattyTrace !== '1.13.1') return `koatty_trace ${info.koattyTrace}, expected 1.13.1`;
  }
  return null;
}

// ---------------------------------------------------------------- one run
async function runOne(ctx, run) {
  const logFile = path.join(ctx.tmp, `${run.name.replace(/\//g, '-')}-r${run.round}.log`);
  // gRPC on 2.3.0 drops the bound port (bindAsync's callback), so every app gets a free port.
  const port = await freePort();
  const h = startApp(ctx, run, port, logFile);
  const fail = async (msg) => {
    await stopApp(h);
    let t = '';
    try { t = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => !/ DEBUG /.test(l)).join('\n').slice(-3000); } catch { /* none */ }
    throw new Error(`${run.name} round ${run.round}: ${msg}${t ? `\n--- app log (tail, DEBUG lines left out) ---\n${t}` : ''}`);
  };
  let info;
  try { info = await h.ready; } catch (e) { return fail(`did not start: ${e.message}`); }
  const bad = identityProblem(ctx, run, info, h.child.pid);
  if (bad) return fail(bad);
  if (info.port !== port) return fail(`listening on ${info.port}, configured ${port}`);
  let probe;
  try {
    probe = run.kind === 'http2' ? await probeH2(port, ctx.tls.cert) : run.kind === 'ws' ? await probeWs(port, ctx.opts.wsMessage) : await probeGrpc(port);
  } catch (e) {
    return fail(`probe failed: ${e.message}`);
  }
  let load;
  let c0;
  let c1;
  let m0;
  let m1;
  let warm = null;
  let logBytes0 = 0;
  try {
    if (ctx.opts.warmup > 0) warm = await runLoad(ctx, { ...run, port }, ctx.opts.warmup, false);
    logBytes0 = fs.statSync(logFile).size;
    c0 = readCpu(h.child.pid);
    m0 = readMachine();
    load = await runLoad(ctx, { ...run, port }, ctx.opts.duration, true);
    m1 = readMachine();
    c1 = readCpu(h.child.pid);
  } catch (e) {
    return fail(e.message);
  }
  const hwm = readHwmMB(h.child.pid);
  const logBytes = fs.statSync(logFile).size - logBytes0;
  if (h.child.exitCode !== null) return fail(`exited during the load (code ${h.child.exitCode})`);
  await stopApp(h);
  if (!ctx.opts.keepLogs) fs.rmSync(logFile, { force: true });

  const usPerTick = 1e6 / CLK_TCK;
  const secs = load.seconds;
  const procUs = (c1.proc - c0.proc) * usPerTick;
  const jsUs = (c1.js - c0.js) * usPerTick;
  const machinePct = (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total) * NPROC * 100;
  // The CPU shares use the generator's whole run (its start and stop included) as the window.
  const wall = (m1.total - m0.total) / NPROC / CLK_TCK;
  const serverPct = procUs / 1e4 / wall;
  const loadPct = load.loadCpuSeconds != null ? load.loadCpuSeconds * 100 / wall : null;
  return {
    name: run.name, group: run.group, protocol: run.protocol, logs: run.logs, native: run.native, round: run.round,
    pid: h.child.pid, port, info: run.round === 1 ? info : undefined, probe,
    loadCmd: load.cmd, warmupRate: warm && warm.rate,
    rate: load.rate, units: load.units, seconds: secs,
    p50Ms: load.p50Ms, p99Ms: load.p99Ms, errors: load.errors, errorDetail: load.errorDetail,
    tls: load.cipher ? `${load.tlsProtocol} ${load.cipher} ALPN ${load.alpn}` : undefined,
    cpuUsPerUnit: procUs / load.units, jsUsPerUnit: jsUs / load.units,
    serverPct, jsPct: jsUs / 1e4 / wall, loadPct,
    otherPct: loadPct != null ? Math.max(0, machinePct - serverPct - loadPct) : null,
    machinePct, threads: c1.threads, peakRssMB: hwm, logBytesPerUnit: logBytes / load.units,
  };
}

// ---------------------------------------------------------------- stats and output
const cell = (s, d) => (!s || s.median == null ? '–' : s.n < 2 ? fmt(s.median, d) : `${fmt(s.median, d)} (${fmt(s.min, d)}–${fmt(s.max, d)})`);
const rcell = (s) => (!s || s.median == null ? '–' : s.n < 2 ? `${fmt(s.median, 2)}×` : `${fmt(s.median, 2)}× (${fmt(s.min, 2)}–${fmt(s.max, 2)})`);

function summarize(runs, groups) {
  const out = [];
  for (const g of groups) {
    const js = runs.filter((r) => r.group === g.name && !r.native);
    const nat = runs.filter((r) => r.group === g.name && r.native);
    const row = (rs) => ({
      rounds: rs.length, rate: stat(rs.map((r) => r.rate)), p99Ms: stat(rs.map((r) => r.p99Ms)), errors: rs.reduce((t, r) => t + r.errors, 0),
      cpu: stat(rs.map((r) => r.cpuUsPerUnit)), js: stat(rs.map((r) => r.jsUsPerUnit)), rss: stat(rs.map((r) => r.peakRssMB)),
      serverPct: stat(rs.map((r) => r.serverPct)), jsPct: stat(rs.map((r) => r.jsPct)), loadPct: stat(rs.map((r) => r.loadPct)), otherPct: stat(rs.map((r) => r.otherPct)),
      logB: stat(rs.map((r) => r.logBytesPerUnit)),
    });
    const pairs = nat.map((n) => [n, js.find((j) => j.round === n.round)]).filter(([, j]) => j);
    const ratio = (k) => stat(pairs.map(([n, j]) => (j[k] ? n[k] / j[k] : null)));
    out.push({
      ...g, js: row(js), native: row(nat), pairs: pairs.length,
      ratio: { rate: ratio('rate'), cpu: ratio('cpuUsPerUnit'), js: ratio('jsUsPerUnit'), p99Ms: ratio('p99Ms'), rss: ratio('peakRssMB') },
    });
  }
  return out;
}

function markdown(ctx, sum, failures, noisy) {
  const o = ctx.opts;
  const m = ctx.machine;
  const L = [];
  L.push(`### Run ${ctx.startedAt}${o.quick ? ' (quick smoke run)' : ''}`);
  L.push('');
  L.push(`- Command: \`${ctx.command}\``);
  L.push(`- Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.kernel}; Node ${m.node}; ${m.h2load || 'no h2load'}; ${m.openssl || ''}; load average at start ${m.loadavg.join(' ')}`);
  L.push(`- Native addon: buildProfile \`${ctx.native.buildProfile}\`, ${ctx.native.file} sha256 ${ctx.native.sha256.slice(0, 12)}… (built ${ctx.native.mtime}); repo at ${ctx.git}${ctx.native.changed ? `; **the addon changed during the run** (${ctx.native.changed})` : ''}`);
  L.push(`- Apps: ${Object.values(ctx.apps).map((a) => `${a.name}: koatty ${a.koatty}, koatty_core ${a.koattyCore}, koatty_serve ${a.koattyServe.version}${a.koattyServe.path === ctx.rootReal ? ' (this repo)' : ''}`).join('; ')}; NODE_ENV=production`);
  const loads = [];
  const kinds = new Set(o.protocols.map((p) => PROTOCOLS[p].kind));
  if (kinds.has('http2')) loads.push(`http2: \`h2load -t${o.threads} -c${o.h2Clients} -m${o.h2Streams} -D${o.duration} --log-file=<tmp> https://127.0.0.1:PORT/\` (TLS ${ctx.tlsSeen.join(', ') || '–'}; key/cert: \`${ctx.tls.cmd}\`, read by Koatty from key_file/crt_file)`);
  if (kinds.has('ws')) loads.push(`ws: \`ws-load -c ${o.wsConns} -d ${o.duration} -w 0 -t ${o.threads} -m ${o.wsMessage} ws://127.0.0.1:PORT/ws/echo\` (each connection sends the message and awaits the reply, in a loop; every reply is compared with the message)`);
  if (kinds.has('grpc')) loads.push(`grpc: \`grpc-load -c ${o.grpcC} -m ${o.grpcM} -d ${o.duration} -w 0 -t ${o.threads} -b <SayHello{name:"world"}> -p /benchkoatty.Greeter/SayHello 127.0.0.1:PORT\` (a call counts only with :status 200 and grpc-status 0)`);
  L.push(`- Load: ${loads.join('; ')}. Each measured run follows a ${o.warmup} s warm-up run of the same generator against the same fresh process; ${o.rounds} interleaved round${o.rounds > 1 ? 's' : ''}; before each run the harness waited for < 10 % of a CPU busy${o.waitIdle ? ` (up to ${o.waitIdle} s)` : ' (off)'}`);
  L.push('');
  for (const g of sum) {
    if (!g.js.rounds && !g.native.rounds) continue;
    const p = PROTOCOLS[g.protocol];
    L.push(`**${g.protocol}, logs_level ${g.logs}** — ${p.desc}`);
    L.push('');
    const hdr = ['server', p.rate, '× JS', `p99 ms`, 'errors', `CPU µs/${p.unit}`, '× JS', `JS-thread µs/${p.unit}`, '× JS', 'peak RSS MB', `CPU % server (JS thread)/${p.tool}/other`];
    const rows = [['koatty-js', g.js], ['koatty-native', g.native]].filter(([, r]) => r.rounds).map(([name, r]) => {
      const base = name === 'koatty-js';
      return [name, cell(r.rate, 0), base ? 'base' : rcell(g.ratio.rate), cell(r.p99Ms, 2), String(r.errors), cell(r.cpu, 1), base ? 'base' : rcell(g.ratio.cpu),
        cell(r.js, 1), base ? 'base' : rcell(g.ratio.js), cell(r.rss, 1), `${fmt(r.serverPct.median, 0)} (${fmt(r.jsPct.median, 0)})/${fmt(r.loadPct.median, 0)}/${fmt(r.otherPct.median, 0)}`];
    });
    L.push(table(hdr, rows));
    L.push('');
  }
  L.push(`Cells: median (min–max) over rounds; \`× JS\`: native ÷ JS paired within each round, median (min–max) of the per-round ratios (throughput: higher is better; CPU: the fraction of the JS server's CPU per ${o.protocols.length > 1 ? 'request/message/call' : 'unit'}, lower is better). CPU = utime+stime of the app process (all threads) over the measured run ÷ completed units; JS-thread = the same for the main thread alone; peak RSS = VmHWM after the run (warm-up included). CPU % = share of one CPU during the measured run. errors = h2load failed+errored+timeout+non-2xx, ws-load errors + replies differing from the message, grpc-load failed calls, summed over rounds.`);
  const waited = ctx.idleWaits.reduce((a, b) => a + b, 0);
  if (waited >= 1 || ctx.retried.length) {
    L.push('');
    L.push(`Shared machine: waited ${fmt(waited, 0)} s in all for idle CPUs${ctx.retried.length ? `; measured again because other processes used > 15 % of a CPU: ${ctx.retried.map((x) => `${x.name} r${x.round} (${fmt(x.otherPct, 0)} %)`).join(', ')} (only the last attempt counts)` : ''}.`);
  }
  if (noisy.length) { L.push(''); L.push(`**Not clean:** other processes used more than 15 % of a CPU during ${noisy.map((x) => `${x.name} r${x.round} (${fmt(x.otherPct, 0)} %)`).join(', ')}.`); }
  for (const f of failures) { L.push(''); L.push(`- FAILED ${f.name} round ${f.round}: ${f.message.split('\n')[0]}`); }
  return L.join('\n') + '\n';
}

// ---------------------------------------------------------------- native addon
function nativeState() {
  const r = spawnSync(process.execPath, ['-e', `const m = require(${JSON.stringify(ROOT)}); process.stdout.write(JSON.stringify(m.runtimeInfo()))`], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  let info;
  try { info = JSON.parse(r.stdout); } catch { die(`cannot load the native addon from ${ROOT}: ${(r.stderr || '').split('\n').slice(0, 5).join(' ')}`, 1); }
  const file = fs.readdirSync(ROOT).filter((f) => f.endsWith('.node')).sort()[0];
  const sha = crypto.createHash('sha256').update(fs.readFileSync(path.join(ROOT, file))).digest('hex');
  const js = crypto.createHash('sha256');
  for (const f of ['index.js', 'binding.js', ...fs.readdirSync(path.join(ROOT, 'js')).sort().map((x) => `js/${x}`)]) {
    try { js.update(f).update(fs.readFileSync(path.join(ROOT, f))); } catch { /* absent */ }
  }
  return { buildProfile: info.buildProfile, native: info.native, version: info.version, file, sha256: sha, jsSha256: js.digest('hex'), mtime: fs.statSync(path.join(ROOT, file)).mtime.toISOString() };
}

// ---------------------------------------------------------------- main
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (process.platform !== 'linux') die('reads /proc: Linux only');
  const h2load = findInPath('h2load');
  const openssl = findInPath('openssl');
  const kinds = new Set(opts.protocols.map((p) => PROTOCOLS[p].kind));
  if (kinds.has('http2') && (!h2load || !openssl)) die('http2 needs h2load and openssl (Debian/Ubuntu: apt-get install -y nghttp2-client openssl)');
  const native = nativeState();
  if (native.buildProfile !== 'release' || native.native !== true) die(`REFUSING: the native addon's runtimeInfo() says buildProfile ${JSON.stringify(native.buildProfile)}, not 'release' (decisions.md §19); build with \`npm run build\``, 1);
  const tools = {
    h2load,
    wsLoad: kinds.has('ws') ? loadgenBinary('ws-load', opts.wsLoad) : null,
    grpcLoad: kinds.has('grpc') ? loadgenBinary('grpc-load', opts.grpcLoad) : null,
  };
  const { ensureApps } = require('./setup');
  const apps = ensureApps(['koatty-js', 'koatty-native'], { install: true });
  for (const a of Object.values(apps)) if (!a.ok) die(`${a.name}: ${a.problems.join('; ')}`, 1);

  const startedAt = new Date().toISOString();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-protocols-'));
  const ctx = {
    opts, tools, apps, native, tmp, startedAt, rootReal: fs.realpathSync(ROOT), git: gitState(ROOT),
    command: ['node', 'bench/koatty-protocols.js', ...process.argv.slice(2)].join(' '),
    machine: {
      nproc: NPROC, cpuModel: (os.cpus()[0] || {}).model, kernel: `${os.type()} ${os.release()}`, node: process.version,
      h2load: h2load ? (spawnSync(h2load, ['--version'], { encoding: 'utf8' }).stdout || '').split('\n')[0].trim() : null,
      openssl: openssl ? spawnSync(openssl, ['version'], { encoding: 'utf8' }).stdout.trim().replace(/\s*\(Library:.*\)$/, '') : null,
      loadavg: os.loadavg().map((x) => +x.toFixed(2)),
    },
    idleWaits: [], retried: [], tlsSeen: [],
  };
  if (kinds.has('http2')) {
    const keyPath = path.join(tmp, 'bench-key.pem');
    const certPath = path.join(tmp, 'bench-cert.pem');
    const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'];
    const r = spawnSync(openssl, [...args, '-keyout', keyPath, '-out', certPath], { encoding: 'utf8' });
    if (r.status !== 0) die(`openssl failed: ${r.stderr}`, 1);
    ctx.tls = { keyPath, certPath, cert: fs.readFileSync(certPath, 'utf8'), cmd: `openssl ${args.join(' ')} -keyout … -out …` };
  }
  if (kinds.has('grpc')) ctx.grpcBody = grpcBodyFile(tmp);
  process.on('SIGINT', () => { if (current) { try { process.kill(current.pid, 'SIGKILL'); } catch { /* gone */ } } process.exit(130); });

  const groups = [];
  for (const protocol of opts.protocols) for (const logs of opts.logs) groups.push({ name: `${protocol}${logs === 'info' ? '-info' : ''}`, protocol, kind: PROTOCOLS[protocol].kind, logs });
  console.log(`koatty-protocols: ${NPROC} CPUs (${ctx.machine.cpuModel}), Node ${process.version}; native ${native.file} ${native.buildProfile} sha256 ${native.sha256.slice(0, 12)}… (${ctx.git})`);
  console.log(`koatty-protocols: ${opts.rounds} round(s) × groups ${groups.map((g) => g.name).join(', ')}; ${opts.duration} s measured after ${opts.warmup} s warm-up; tools ${[tools.h2load, tools.wsLoad, tools.grpcLoad].filter(Boolean).join(', ')}`);

  const runs = [];
  const failures = [];
  const noisy = [];
  const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length]);
  for (let r = 0; r < opts.rounds; r++) {
    const order = rotate(groups, r).flatMap((g) => rotate([
      { name: `koatty-js${g.logs === 'info' ? '-info' : ''}`, app: 'koatty-js', native: false },
      { name: `koatty-native${g.logs === 'info' ? '-info' : ''}`, app: 'koatty-native', native: true },
    ], r).map((s) => ({ ...s, name: `${g.protocol}/${s.name}`, group: g.name, protocol: g.protocol, kind: g.kind, logs: g.logs, round: r + 1 })));
    console.log(`\nround ${r + 1}/${opts.rounds}: ${order.map((x) => x.name).join(', ')}`);
    for (const run of order) {
      if (failures.some((f) => f.name === run.name)) continue;
      await sleep(opts.pause * 1000);
      try {
        let res;
        for (let attempt = 0; ; attempt++) {
          if (opts.waitIdle > 0) {
            const w = await waitIdle(opts.waitIdle);
            if (w.waited >= 1) { ctx.idleWaits.push(+w.waited.toFixed(1)); console.log(`  (waited ${fmt(w.waited, 0)} s for other load to stop${w.notIdle ? `; still ${fmt(w.busy, 0)} % busy, running anyway` : ''})`); }
          }
          res = await runOne(ctx, run);
          if (!(res.otherPct > 15) || attempt >= opts.retryNoisy) { res.retries = attempt; break; }
          console.warn(`  ${run.name}: other processes used ${fmt(res.otherPct, 0)} % of a CPU: measuring again`);
          ctx.retried.push({ name: run.name, round: run.round, otherPct: res.otherPct });
        }
        runs.push(res);
        if (res.tls && !ctx.tlsSeen.includes(res.tls)) ctx.tlsSeen.push(res.tls);
        const p = PROTOCOLS[run.protocol];
        console.log(`  ${run.name.padEnd(26)} ${fmt(res.rate, 0).padStart(7)} ${p.rate.padEnd(7)} p99 ${fmt(res.p99Ms, 2).padStart(6)} ms  CPU ${fmt(res.cpuUsPerUnit, 1).padStart(6)} µs/${p.unit}  JS ${fmt(res.jsUsPerUnit, 1).padStart(6)} µs/${p.unit}  RSS ${fmt(res.peakRssMB, 0)} MB  (server ${fmt(res.serverPct, 0)} %, JS thread ${fmt(res.jsPct, 0)} %, ${p.tool} ${fmt(res.loadPct, 0)} %, other ${fmt(res.otherPct, 0)} %; log ${fmt(res.logBytesPerUnit, 1)} B/${p.unit}; errors ${res.errors})`);
        if (res.otherPct > 15) { noisy.push({ name: run.name, round: run.round, otherPct: res.otherPct }); console.warn(`  WARNING ${run.name}: not a clean measurement`); }
        if (run.logs === 'warning' && res.logBytesPerUnit > 5) console.warn(`  WARNING ${run.name}: ${fmt(res.logBytesPerUnit, 1)} log bytes per ${p.unit} at logs_level warning`);
        if (run.logs === 'info' && res.logBytesPerUnit < 20) console.warn(`  WARNING ${run.name}: only ${fmt(res.logBytesPerUnit, 1)} log bytes per ${p.unit}: is the access log on?`);
        if (r === 0) console.log(`    probe: ${res.probe}; server ${res.info.serverCtor} from koatty_serve ${res.info.koattyServe.version} (${res.info.koattyServe.root})${run.native ? `, runtimeInfo ${JSON.stringify(res.info.runtimeInfo)}, native trace mode on` : ', koatty_trace ' + res.info.koattyTrace}`);
      } catch (e) {
        failures.push({ name: run.name, round: run.round, message: e.message });
        console.error(`  ${run.name}: FAILED (skipped in later rounds): ${e.message}`);
      }
    }
  }
  const after = nativeState();
  if (after.sha256 !== native.sha256 || after.jsSha256 !== native.jsSha256) native.changed = `binary now ${after.sha256.slice(0, 12)}… ${after.mtime}${after.jsSha256 !== native.jsSha256 ? ', JS edited' : ''}`;
  const sum = summarize(runs, groups);
  const md = markdown(ctx, sum, failures, noisy);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  const base = path.join(RESULTS_DIR, `koatty-protocols-${stamp}`);
  fs.writeFileSync(`${base}.json`, JSON.stringify({
    startedAt, finishedAt: new Date().toISOString(), command: ctx.command, options: opts, machine: ctx.machine, native, git: ctx.git,
    apps, tools, tls: ctx.tls ? { cmd: ctx.tls.cmd, negotiated: ctx.tlsSeen } : null, idleWaits: ctx.idleWaits, retried: ctx.retried, noisy, failures, summary: sum, runs,
  }, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, md);
  if (!opts.keepLogs) fs.rmSync(tmp, { recursive: true, force: true });
  else console.log(`\napp logs kept in ${tmp}`);
  console.log(`\n${md}`);
  console.log(`results: ${path.relative(process.cwd(), base)}.json / .md`);
  if (native.changed) console.error(`WARNING: the native addon or its JS changed during the run (${native.changed})`);
  process.exit(failures.length ? 1 : 0);
}

main().catch((e) => {
  if (current) { try { process.kill(current.pid, 'SIGKILL'); } catch { /* gone */ } }
  console.error(e && e.stack || e);
  process.exit(1);
});
