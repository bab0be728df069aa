#!/usr/bin/env node
'use strict';
// Side-by-side "hello" benchmark: node:http, koatty_serve 2.3.0 (JS), this
// package (native), and one minimal Koatty 3.11.8 app on each server (HTTP/1.1,
// wrk); node:https vs the native HttpsServer (HTTP/1.1 over TLS, wrk); node:http2
// (compat and stream API) vs the native Http2Server (h2 over TLS, h2load).
//
//   node bench/run.js [options]          (npm run bench -- [options])
//
// Every server runs in its own child process (node spawned directly, so the
// pid read from /proc is the server itself), started fresh for each round.
// Rounds are interleaved (every round runs each group's servers back to back,
// the order of the groups and of the servers in a group rotating every round);
// each measurement is preceded by a warm-up run of the load generator against
// the same process.
// See --help, and bench/RESULTS.md for the method.
const { spawnSync } = require('child_process');
const fs = require('fs');
const http = require('http');
const https = require('https');
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const measure = require('./lib/measure');

const {
  sleep, findInPath, readCpu, readMachine, readMem, toMs, logPercentiles, startReadyChild, stopChild, getOnceH2, fmt, gitState,
} = measure;

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const RESULTS_DIR = path.join(BENCH, 'results');
let BASH = null; // set in main()

// ---------------------------------------------------------------- servers
// group: rows are compared with the baseline row of their group (and with the
// rows named in `compare`). proto: http (wrk), https (wrk over TLS), h2 (h2load).
const SERVERS = [
  { name: 'node-http-bare', group: 'bare', script: 'servers/node-http-bare.js', baseline: true, desc: 'node:http, res.end(\'hello\')' },
  { name: 'js-serve-bare', group: 'bare', script: 'servers/js-serve-bare.js', desc: 'koatty_serve 2.3.0 NewServe, fake app' },
  { name: 'native-bare', group: 'bare', script: 'servers/native-bare.js', native: true, desc: 'native HttpServer, fake app' },
  { name: 'koatty-js', group: 'koatty', app: 'koatty-js', logs: 'warning', baseline: true, desc: 'Koatty 3.11.8 on koatty_serve 2.3.0, logs_level warning' },
  { name: 'koatty-native', group: 'koatty', app: 'koatty-native', logs: 'warning', native: true, desc: 'Koatty 3.11.8 on native koatty_serve, logs_level warning' },
  { name: 'koatty-js-info', group: 'koatty-info', app: 'koatty-js', logs: 'info', baseline: true, desc: 'as koatty-js, access log at info' },
  { name: 'koatty-native-info', group: 'koatty-info', app: 'koatty-native', logs: 'info', native: true, desc: 'as koatty-native, access log at info' },
  { name: 'node-https-bare', group: 'https', proto: 'https', script: 'servers/node-https-bare.js', baseline: true, desc: 'node:https createServer({key, cert}), same hello handler' },
  { name: 'native-https-bare', group: 'https', proto: 'https', script: 'servers/native-https-bare.js', native: true, desc: 'native HttpsServer (HTTP/1.1 over rustls), fake app' },
  { name: 'node-h2-compat', group: 'h2', proto: 'h2', script: 'servers/node-h2-compat.js', baseline: true, desc: 'node:http2 createSecureServer({key, cert, allowHTTP1:true}), hello on \'request\' (compat API)' },
  { name: 'node-h2-stream', group: 'h2', proto: 'h2', script: 'servers/node-h2-stream.js', desc: 'the same server, hello on \'stream\' (stream.respond + stream.end)' },
  { name: 'native-h2-bare', group: 'h2', proto: 'h2', script: 'servers/native-h2-bare.js', native: true, compare: ['node-h2-stream'], desc: 'native Http2Server (h2 via ALPN), compat-style hello handler, fake app' },
  // Issue 7: the cost of per-request metrics (KOATTY_SERVE_METRICS=off skips them), and the native
  // /healthz (answered in Rust) against node:http's hello, judged by CPU per request (decisions §20).
  { name: 'native-bare-nometrics', group: 'bookkeeping', script: 'servers/native-bare.js', native: true, baseline: true, env: { KOATTY_SERVE_METRICS: 'off' }, desc: 'native HttpServer, fake app, per-request metrics off (KOATTY_SERVE_METRICS=off)' },
  { name: 'native-bare-metrics', group: 'bookkeeping', script: 'servers/native-bare.js', native: true, desc: 'the same with per-request metrics (the default)' },
  { name: 'node-http-hello', group: 'healthz', script: 'servers/node-http-bare.js', baseline: true, desc: 'node:http, res.end(\'hello\')' },
  { name: 'native-healthz', group: 'healthz', script: 'servers/native-healthz.js', native: true, path: '/healthz', body: 'ok', desc: 'native HttpServer with nativeEndpoints, GET /healthz (Rust, no JS)' },
  // Issue 19: frameworks on node:http vs on createServer (same script, same route), and what the
  // swap-safe request/response objects of createServer cost against HttpServer's lean ones.
  { name: 'native-lean-bare', group: 'swap-safe', script: 'servers/native-bare.js', native: true, baseline: true, desc: 'native HttpServer (lean req/res), fake app' },
  { name: 'native-create-bare', group: 'swap-safe', script: 'servers/framework.js', native: true, env: { BENCH_ON: 'native', BENCH_FRAMEWORK: 'bare' }, desc: 'native createServer (swap-safe req/res), same hello handler' },
  ...['express4', 'express5', 'koa', 'fastify'].flatMap((framework) => [
    { name: `node-${framework}`, group: framework, script: 'servers/framework.js', baseline: true, env: { BENCH_ON: 'node', BENCH_FRAMEWORK: framework }, desc: `${framework}, one hello route, on node:http` },
    { name: `native-${framework}`, group: framework, script: 'servers/framework.js', native: true, env: { BENCH_ON: 'native', BENCH_FRAMEWORK: framework }, desc: `the same app on native createServer` },
  ]),
];
for (const s of SERVERS) s.proto = s.proto || 'http';
const GROUP_TITLES = {
  bare: 'bare servers (ratios vs node-http-bare)',
  koatty: 'Koatty app, NODE_ENV=production, logs_level warning (ratios vs koatty-js)',
  'koatty-info': 'Koatty app, access log at info (ratios vs koatty-js-info)',
  https: 'HTTPS, HTTP/1.1 over TLS, bare servers (ratios vs node-https-bare)',
  h2: 'HTTP/2 over TLS, bare servers (ratios vs node-h2-compat)',
  bookkeeping: 'metrics bookkeeping: native bare with per-request metrics vs without (ratios vs native-bare-nometrics)',
  healthz: 'native /healthz vs node:http hello (ratios vs node-http-hello; judged by CPU µs/req)',
  'swap-safe': 'createServer\'s swap-safe req/res vs HttpServer\'s lean ones, bare hello (ratios vs native-lean-bare)',
  express4: 'Express 4 hello route: node:http vs createServer (ratios vs node-express4)',
  express5: 'Express 5 hello route: node:http vs createServer (ratios vs node-express5)',
  koa: 'Koa 2 hello: node:http vs createServer (ratios vs node-koa)',
  fastify: 'Fastify hello route (serverFactory): node:http vs createServer (ratios vs node-fastify)',
};
const GROUPS = Object.keys(GROUP_TITLES);
// --group accepts group names and these aliases.
const GROUP_ALIASES = { http1: ['bare', 'koatty', 'koatty-info'], tls: ['https', 'h2'], pool: ['bookkeeping', 'healthz'], frameworks: ['swap-safe', 'express4', 'express5', 'koa', 'fastify'], all: GROUPS };
// Targets checked in the markdown (issue 4): row ÷ base, paired per round, median.
const TARGETS = [
  { issue: 4, server: 'native-https-bare', vs: 'node-https-bare', metric: 'reqPerSec', min: 1.5 },
  { issue: 4, server: 'native-h2-bare', vs: 'node-h2-compat', metric: 'reqPerSec', min: 3 },
  { issue: 4, server: 'native-h2-bare', vs: 'node-h2-stream', metric: 'reqPerSec', min: 1.5 },
  { issue: 7, server: 'native-bare-metrics', vs: 'native-bare-nometrics', metric: 'reqPerSec', min: 0.97 },
  { issue: 7, server: 'native-healthz', vs: 'node-http-hello', metric: 'cpuUsPerReq', max: 0.5 },
];

// ---------------------------------------------------------------- options
const HELP = `Usage: node bench/run.js [options]      (or: npm run bench -- [options])

  --rounds N        interleaved rounds                  (env BENCH_ROUNDS, default 5)
  --duration S      seconds of each measured load run   (env BENCH_DURATION, default 10)
  --warmup S        seconds of the warm-up load run     (env BENCH_WARMUP, default 3)
  --connections N   wrk -c                              (env BENCH_CONNECTIONS, default 64)
  --threads N       wrk -t and h2load -t                (env BENCH_THREADS, default 1)
  --h2-clients N    h2load -c (connections)             (env BENCH_H2_CLIENTS, default 16)
  --h2-streams N    h2load -m (streams per connection)  (env BENCH_H2_STREAMS, default 32)
  --no-h2-log       no h2load --log-file (then no p50/p99 for h2 rows; saves h2load ~1 µs/req)
                                                        (env BENCH_NO_H2_LOG=1)
  --pause S         idle seconds between runs           (env BENCH_PAUSE, default 1)
  --wait-idle S     before each run, wait up to S seconds for the machine to be idle
                    (< 10 % busy for 1 s, twice)       (env BENCH_WAIT_IDLE, default 0 = off)
  --retry-noisy N   measure a run again (up to N times) when other processes used
                    more than 15 % of a CPU during it   (env BENCH_RETRY_NOISY, default 0)
  --quick           smoke run: 1 round, -d3s, 1 s warm-up (env BENCH_QUICK=1); explicit options win
  --group a,b       only these groups                   (env BENCH_GROUP, default all)
                    groups: ${GROUPS.join(', ')}
                    aliases: http1 = bare,koatty,koatty-info; tls = https,h2; pool = bookkeeping,healthz;
                    frameworks = swap-safe,express4,express5,koa,fastify; all
  --only a,b        only these servers                  (env BENCH_ONLY)
  --skip a,b        not these servers                   (env BENCH_SKIP)
  --allow-debug     run the native rows even if the addon is not a release build (loud warning)
  --no-setup        do not npm-install the Koatty sub-packages (bench/setup.js); skip them if missing
  --keep-logs       keep each server's stdout/stderr log (otherwise deleted after each run)
  --no-snapshot     bare native rows load the repo root itself instead of a copy of the package
                    taken at the start (the copy keeps a rebuild during the run out of the figures)
                                                        (env BENCH_NO_SNAPSHOT=1)
  --help

Servers: ${GROUPS.map((g) => `${g}: ${SERVERS.filter((s) => s.group === g).map((s) => s.name).join(', ')}`).join('\n         ')}

The https and h2 groups use a key and a self-signed certificate (EC P-256) made
once per run with the openssl CLI in a temporary directory; the h2 group needs
h2load (Debian/Ubuntu: apt-get install -y nghttp2-client).
Writes bench/results/<timestamp>.json and bench/results/<timestamp>.md (a snippet for bench/RESULTS.md).`;

function parseArgs(argv) {
  const env = process.env;
  const o = {
    rounds: null, duration: null, warmup: null, pause: null,
    connections: Number(env.BENCH_CONNECTIONS || 64),
    threads: Number(env.BENCH_THREADS || 1),
    quick: /^(1|true|yes)$/i.test(env.BENCH_QUICK || ''),
    waitIdle: Number(env.BENCH_WAIT_IDLE || 0),
    retryNoisy: Number(env.BENCH_RETRY_NOISY || 0),
    h2Clients: Number(env.BENCH_H2_CLIENTS || 16),
    h2Streams: Number(env.BENCH_H2_STREAMS || 32),
    h2Log: !/^(1|true|yes)$/i.test(env.BENCH_NO_H2_LOG || ''),
    group: env.BENCH_GROUP ? env.BENCH_GROUP.split(',') : null,
    only: env.BENCH_ONLY ? env.BENCH_ONLY.split(',') : null,
    skip: env.BENCH_SKIP ? env.BENCH_SKIP.split(',') : [],
    allowDebug: /^(1|true|yes)$/i.test(env.BENCH_ALLOW_DEBUG || ''),
    setup: !/^(1|true|yes)$/i.test(env.BENCH_NO_SETUP || ''),
    keepLogs: false,
    snapshot: !/^(1|true|yes)$/i.test(env.BENCH_NO_SNAPSHOT || ''),
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
      case '--wait-idle': o.waitIdle = num('wait-idle', val()); break;
      case '--retry-noisy': o.retryNoisy = Math.floor(num('retry-noisy', val())); break;
      case '--h2-clients': o.h2Clients = num('h2-clients', val()); break;
      case '--h2-streams': o.h2Streams = num('h2-streams', val()); break;
      case '--no-h2-log': o.h2Log = false; break;
      case '--group': o.group = val().split(','); break;
      case '--only': o.only = val().split(','); break;
      case '--skip': o.skip = val().split(','); break;
      case '--allow-debug': o.allowDebug = true; break;
      case '--no-setup': o.setup = false; break;
      case '--keep-logs': o.keepLogs = true; break;
      case '--no-snapshot': o.snapshot = false; break;
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
  // wrk and h2load take whole seconds only
  if (!Number.isInteger(o.duration) || o.duration < 1) die('--duration must be a whole number of seconds, at least 1');
  if (!Number.isInteger(o.warmup)) die('--warmup must be a whole number of seconds (0 = no warm-up)');
  if (!(o.h2Clients >= 1 && o.h2Streams >= 1)) die('--h2-clients and --h2-streams must be at least 1');
  if (o.h2Clients % o.threads) die('--h2-clients must be a multiple of --threads (h2load)');
  const known = new Set(SERVERS.map((s) => s.name));
  for (const n of [...(o.only || []), ...o.skip]) if (!known.has(n)) die(`unknown server "${n}"; known: ${[...known].join(', ')}`);
  if (o.group) {
    const groups = new Set();
    for (const g of o.group) {
      if (GROUP_ALIASES[g]) GROUP_ALIASES[g].forEach((x) => groups.add(x));
      else if (GROUPS.includes(g)) groups.add(g);
      else die(`unknown group "${g}"; known: ${GROUPS.join(', ')} (aliases: ${Object.keys(GROUP_ALIASES).join(', ')})`);
    }
    o.groups = [...groups];
  } else o.groups = GROUPS;
  return o;
}

const die = measure.dieWith('bench');

// ---------------------------------------------------------------- machine
function clockTicks() {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number((r.stdout || '').trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
}

function firstLine(cmd, args) {
  if (!cmd) return null;
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return ((r.stdout || '') + (r.stderr || '')).split('\n')[0].trim() || null;
}

function machineInfo(wrkPath, h2loadPath, opensslPath) {
  const wrkVersion = firstLine(wrkPath, ['-v']).replace(/\s*Copyright.*$/, '');
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    nproc: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    cpuModel: cpus[0] ? cpus[0].model : 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    memTotalMB: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    wrk: wrkVersion,
    h2load: firstLine(h2loadPath, ['--version']),
    openssl: (firstLine(opensslPath, ['version']) || '').replace(/\s*\(Library:.*\)$/, '') || null,
    clkTck: clockTicks(),
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

// ---------------------------------------------------------------- wrk
function parseWrk(out) {
  const r = {};
  let m = out.match(/Requests\/sec:\s+([\d.]+)/);
  r.reqPerSec = m ? Number(m[1]) : null;
  m = out.match(/(\d+) requests in ([\d.]+)(us|ms|s|m|h)/);
  r.requests = m ? Number(m[1]) : null;
  r.loadSeconds = m ? toMs(m[2], m[3]) / 1000 : null;
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

// Runs a load generator; through bash when there is one, so that its `times`
// builtin reports the generator's own user+sys CPU. Rejects when it exits non-zero.
async function runTool(name, toolPath, args) {
  const r = await measure.runTool(toolPath, args, BASH);
  if (r.code !== 0) throw new Error(`${name} exited ${r.code}: ${r.out}${r.err}`);
  return { out: r.out, err: r.err, cpuSeconds: r.cpuSeconds };
}

async function runWrk(wrkPath, url, seconds, opts, latency) {
  const args = [`-t${opts.threads}`, `-c${opts.connections}`, `-d${seconds}s`];
  if (latency) args.push('--latency');
  args.push(url);
  const { out, err, cpuSeconds } = await runTool('wrk', wrkPath, args);
  const r = parseWrk(out);
  if (r.reqPerSec === null || r.requests === null) throw new Error(`cannot parse wrk output:\n${out}${err}`);
  return { ...r, loadCpuSeconds: cpuSeconds, cmd: `wrk ${args.join(' ')}`, raw: out };
}

// ---------------------------------------------------------------- h2load
// h2load's summary; 4xx and 5xx count as errors (3xx do not).
function parseH2load(out) {
  const p = measure.parseH2load(out);
  const failed = p.req ? p.req.failed : 0;
  const errored = p.req ? p.req.errored : 0;
  const timeout = p.req ? p.req.timeout : 0;
  const { s4xx, s5xx } = p.codes;
  return {
    loadSeconds: p.loadSeconds, reqPerSec: p.reqPerSec, requests: p.requests,
    errors: { failed, errored, timeout, non2xx: s4xx + s5xx, total: failed + errored + timeout + s4xx + s5xx },
    latencyAvgMs: p.latencyAvgMs, latencyMaxMs: p.latencyMaxMs, latencySdMs: p.latencySdMs, alpn: p.alpn, tlsProtocol: p.tlsProtocol, cipher: p.cipher,
  };
}

async function runH2load(h2loadPath, url, seconds, opts, logFile) {
  const args = [`-t${opts.threads}`, `-c${opts.h2Clients}`, `-m${opts.h2Streams}`, `-D${seconds}`];
  if (logFile) {
    fs.rmSync(logFile, { force: true }); // h2load appends
    args.push(`--log-file=${logFile}`);
  }
  args.push(url);
  const { out, err, cpuSeconds } = await runTool('h2load', h2loadPath, args);
  const r = parseH2load(out);
  if (r.reqPerSec === null || r.requests === null) throw new Error(`cannot parse h2load output:\n${out}${err}`);
  if (r.alpn !== 'h2') throw new Error(`h2load did not negotiate h2 (application protocol ${JSON.stringify(r.alpn)}):\n${out}${err}`);
  if (!r.requests) throw new Error(`h2load completed no request:\n${out}${err}`);
  let pct = null;
  if (logFile) {
    pct = logPercentiles(logFile);
    fs.rmSync(logFile, { force: true });
  }
  const shown = args.map((a) => (a.startsWith('--log-file=') ? '--log-file=<tmp>' : a));
  return {
    ...r, p50Ms: pct ? pct.p50Ms : null, p75Ms: pct ? pct.p75Ms : null, p90Ms: pct ? pct.p90Ms : null, p99Ms: pct ? pct.p99Ms : null,
    latencyLogCount: pct ? pct.n : null, loadCpuSeconds: cpuSeconds, cmd: `h2load ${shown.join(' ')}`, raw: out,
  };
}

// ---------------------------------------------------------------- TLS material
// One key and self-signed certificate per run: EC P-256, valid for 127.0.0.1 and localhost.
const OPENSSL_ARGS = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
  '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'];
function makeTls(opensslPath, dir) {
  const keyPath = path.join(dir, 'bench-key.pem');
  const certPath = path.join(dir, 'bench-cert.pem');
  const r = spawnSync(opensslPath, [...OPENSSL_ARGS, '-keyout', keyPath, '-out', certPath], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl req failed (${r.status}): ${(r.stderr || '').trim().slice(0, 500)}`);
  return { keyPath, certPath, cert: fs.readFileSync(certPath, 'utf8'), cmd: `openssl ${OPENSSL_ARGS.join(' ')} -keyout … -out …` };
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

function startServer(server, logFile, ctx) {
  let args;
  let cwd;
  const extra = {};
  if (server.proto !== 'http') { extra.BENCH_TLS_KEY = ctx.tls.keyPath; extra.BENCH_TLS_CERT = ctx.tls.certPath; }
  if (server.native && ctx.nativeRoot) extra.BENCH_NATIVE_ROOT = ctx.nativeRoot;
  Object.assign(extra, server.env);
  if (server.script) {
    args = [path.join(BENCH, server.script)];
    cwd = BENCH;
  } else {
    cwd = path.join(BENCH, 'apps', server.app);
    args = [path.join(cwd, 'app', 'main.js')];
    extra.BENCH_LOGS_LEVEL = server.logs;
  }
  const h = startReadyChild(args, { cwd, env: childEnv(extra), logFile });
  current = h.child;
  return h;
}

async function stopServer(h) {
  await stopChild(h, 5000);
  if (current === h.child) current = null;
}

function getOnce(port, urlPath = '/') {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// HTTPS GET / without ALPN (as wrk), the certificate verified against the run's own.
function getOnceTls(port, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000, ca }, (res) => {
      const sock = res.socket;
      const tlsInfo = { protocol: sock.getProtocol(), cipher: sock.getCipher().name, alpn: sock.alpnProtocol || null };
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, tls: tlsInfo }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// One h2 GET / over TLS (ALPN h2), the certificate verified against the run's own.
// ---------------------------------------------------------------- one run
async function runOne(server, round, ctx) {
  const logFile = path.join(ctx.logDir, `${server.name}-r${round + 1}.log`);
  const h = startServer(server, logFile, ctx);
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
  if (server.native && server.script && info.root !== (ctx.nativeRoot || ROOT)) {
    return fail(`${server.name}: loaded the native package from ${info.root}, expected ${ctx.nativeRoot || ROOT}`);
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
  const probeFn = { http: () => getOnce(info.port, server.path), https: () => getOnceTls(info.port, ctx.tls.cert), h2: () => getOnceH2(info.port, ctx.tls.cert) }[server.proto];
  try { probe = await probeFn(); } catch (e) { return fail(`${server.name}: GET / (${server.proto}) failed: ${e.message}`); }
  const expectBody = server.body || 'hello';
  if (probe.status !== 200 || probe.body !== expectBody || !/^text\/plain/.test(probe.headers['content-type'] || '')) {
    return fail(`${server.name}: GET ${server.path || '/'} answered ${probe.status} ${JSON.stringify(probe.headers['content-type'])} ${JSON.stringify(probe.body.slice(0, 200))}, expected 200 text/plain "${expectBody}"`);
  }
  if (server.proto === 'h2' && probe.tls.alpn !== 'h2') return fail(`${server.name}: ALPN negotiated ${JSON.stringify(probe.tls.alpn)}, expected h2`);

  const url = `${server.proto === 'http' ? 'http' : 'https'}://127.0.0.1:${info.port}${server.path || '/'}`;
  const h2LogFile = server.proto === 'h2' && ctx.opts.h2Log ? path.join(ctx.logDir, 'h2load-requests.log') : null;
  const load = (secs, measured) => (server.proto === 'h2'
    ? runH2load(ctx.h2loadPath, url, secs, ctx.opts, measured ? h2LogFile : null)
    : runWrk(ctx.wrkPath, url, secs, ctx.opts, measured));
  let warm = null;
  let wrk;
  let cpu0;
  let cpu1;
  let mem;
  let mach0;
  let mach1;
  const loadavg = os.loadavg().map((x) => +x.toFixed(2));
  try {
    if (ctx.opts.warmup > 0) warm = await load(ctx.opts.warmup, false);
    cpu0 = readCpu(h.child.pid);
    mach0 = readMachine();
    wrk = await load(ctx.opts.duration, true);
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
  const mainUs = (cpu1.js - cpu0.js) * tickUs;
  const n = wrk.requests;
  const secs = wrk.loadSeconds;
  // Busy share of the whole machine during the measured run, in % of one CPU
  // (nproc × 100 = all busy), and what neither the server nor wrk used.
  const machinePercent = (mach1.busy - mach0.busy) / Math.max(1, mach1.total - mach0.total) * ctx.machine.nproc * 100;
  const serverPercent = secs ? (procUs / 1e4) / secs : null;
  const wrkPercent = wrk.loadCpuSeconds != null && secs ? wrk.loadCpuSeconds * 100 / secs : null;
  const otherPercent = serverPercent != null && wrkPercent != null ? Math.max(0, machinePercent - serverPercent - wrkPercent) : null;
  return {
    server: server.name,
    round: round + 1,
    pid: h.child.pid,
    port: info.port,
    info: round === 0 ? info : undefined,
    probeHeaders: round === 0 ? probe.headers : undefined,
    tls: probe.tls ? { probe: probe.tls, load: wrk.cipher ? { protocol: wrk.tlsProtocol, cipher: wrk.cipher, alpn: wrk.alpn } : null } : undefined,
    loadavgBefore: loadavg,
    warmupReqPerSec: warm ? warm.reqPerSec : null,
    loadCmd: wrk.cmd,
    reqPerSec: wrk.reqPerSec,
    requests: n,
    loadSeconds: secs,
    latencyAvgMs: wrk.latencyAvgMs,
    latencyMaxMs: wrk.latencyMaxMs,
    p50Ms: wrk.p50Ms,
    p99Ms: wrk.p99Ms,
    latencyLogCount: wrk.latencyLogCount,
    errors: wrk.errors,
    cpuUsPerReq: n ? procUs / n : null,
    jsCpuUsPerReq: n ? mainUs / n : null,
    cpuPercent: serverPercent,
    jsCpuPercent: secs ? (mainUs / 1e4) / secs : null,
    loadCpuPercent: wrkPercent,
    machineCpuPercent: machinePercent,
    otherCpuPercent: otherPercent,
    cpuTicks: { proc: cpu1.proc - cpu0.proc, main: cpu1.js - cpu0.js },
    threads: cpu1.threads,
    peakRssMB: mem.vmHwmKB != null ? mem.vmHwmKB / 1024 : null,
    endRssMB: mem.vmRssKB != null ? mem.vmRssKB / 1024 : null,
    logBytes,
    logBytesPerReq: logBytes != null && n ? logBytes / n : null,
    loadOutput: wrk.raw,
  };
}

// ---------------------------------------------------------------- stats
// n counts every non-null value (also non-finite ones).
const stat = (xs) => measure.stat(xs, { countNonFinite: true });

const METRICS = ['reqPerSec', 'p99Ms', 'latencyAvgMs', 'cpuUsPerReq', 'jsCpuUsPerReq', 'peakRssMB', 'cpuPercent', 'jsCpuPercent', 'loadCpuPercent', 'machineCpuPercent', 'otherCpuPercent', 'logBytesPerReq'];

function summarize(runs, servers) {
  const byServer = {};
  for (const s of servers) {
    const rs = runs.filter((r) => r.server === s.name);
    if (!rs.length) continue;
    const sum = { server: s.name, group: s.group, rounds: rs.length, errorsTotal: rs.reduce((t, r) => t + r.errors.total, 0) };
    for (const m of METRICS) sum[m] = stat(rs.map((r) => r[m]));
    byServer[s.name] = sum;
  }
  // Ratios vs the group's baseline (and the rows in `compare`), paired within
  // each round; median and spread of the per-round ratios.
  const ratios = (name, baseName) => {
    const pairs = runs.filter((r) => r.server === name)
      .map((r) => [r, runs.find((b) => b.server === baseName && b.round === r.round)])
      .filter(([, b]) => b);
    if (!pairs.length) return null;
    const ratio = (f) => stat(pairs.map(([r, b]) => (b[f] && r[f] != null ? r[f] / b[f] : null)));
    return { reqPerSec: ratio('reqPerSec'), cpuUsPerReq: ratio('cpuUsPerReq'), jsCpuUsPerReq: ratio('jsCpuUsPerReq'), p99Ms: ratio('p99Ms'), peakRssMB: ratio('peakRssMB') };
  };
  for (const s of servers) {
    const sum = byServer[s.name];
    if (!sum) continue;
    const base = servers.find((b) => b.group === s.group && b.baseline);
    if (base && base.name !== s.name && byServer[base.name]) {
      sum.vs = base.name;
      sum.ratio = ratios(s.name, base.name);
    }
    for (const other of s.compare || []) {
      if (!byServer[other]) continue;
      (sum.extraRatios = sum.extraRatios || {})[other] = ratios(s.name, other);
    }
  }
  return byServer;
}

// ---------------------------------------------------------------- output
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

const table = (header, rows) => measure.table(header, rows, { pad: true });

function markdown(ctx, summary, skipped, failures, noisy) {
  const o = ctx.opts;
  const m = ctx.machine;
  const out = [];
  const protos = new Set(ctx.servers.map((s) => s.proto));
  const wrkLoad = `\`wrk -t${o.threads} -c${o.connections} -d${o.duration}s --latency\``;
  const h2Load = `\`h2load -t${o.threads} -c${o.h2Clients} -m${o.h2Streams} -D${o.duration}${o.h2Log ? ' --log-file=<tmp>' : ''}\``;
  out.push(`### Run ${ctx.startedAt}${o.quick ? ' (quick smoke run)' : ''}`);
  out.push('');
  out.push(`- Command: \`${ctx.command}\``);
  const tools = [m.wrk, protos.has('h2') ? m.h2load : null, protos.has('https') || protos.has('h2') ? m.openssl : null].filter(Boolean).join('; ');
  out.push(`- Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.kernel}, ${m.memTotalMB} MB; Node ${m.node}; ${tools}; load average at start ${m.loadavgAtStart.join(' ')}`);
  const loads = [];
  if (protos.has('http')) loads.push(`HTTP/1.1: ${wrkLoad} on http://`);
  if (protos.has('https')) loads.push(`HTTPS: ${wrkLoad} on https://`);
  if (protos.has('h2')) loads.push(`HTTP/2: ${h2Load} on https:// (ALPN h2)`);
  out.push(`- Load: ${loads.join('; ')}; each after a ${o.warmup} s warm-up run of the same generator, ${o.rounds} interleaved round${o.rounds > 1 ? 's' : ''}, a fresh server process per run; cells are median (min–max) over rounds, ratios are paired within each round`);
  if (ctx.tls) out.push(`- TLS: key and self-signed certificate made once for the run: \`${ctx.tls.cmd}\`; negotiated: ${ctx.tlsSeen.join('; ')}`);
  if (ctx.native) out.push(`- Native addon: ${ctx.native.ok ? `buildProfile \`${ctx.native.buildProfile}\`` : `not measured (${ctx.native.reason})`}${ctx.native.binary ? `, ${path.basename(ctx.native.binary.path)} sha256 ${ctx.native.binary.sha256.slice(0, 12)}… (built ${ctx.native.binary.mtime})` : ''}${ctx.git ? `; repo at ${ctx.git}` : ''}${ctx.native.snapshot ? '; the bare native rows load a copy of the package taken at the start of the run' : ''}`);
  if (ctx.native && ctx.native.changed) {
    out.push(ctx.native.changedAffects.length
      ? `- **The native addon or js/ changed during the run** (${ctx.native.changed}): ${ctx.native.changedAffects.join(', ')} may mix two builds.`
      : `- The repo's native package changed during the run (${ctx.native.changed}); not measured here: the native rows used the copy taken at the start.`);
  }
  for (const a of Object.values(ctx.apps || {})) {
    if (a.ok) out.push(`- ${a.name}: koatty ${a.koatty}, koatty_core ${a.koattyCore}, koatty_serve ${a.koattyServe.version}${a.koattyServe.path === ctx.rootReal ? ' (this repo)' : ''}`);
  }
  out.push('');
  for (const g of GROUPS) {
    const inGroup = ctx.servers.filter((s) => s.group === g && summary[s.name]);
    if (!inGroup.length) continue;
    const h2 = inGroup[0].proto === 'h2';
    const gen = h2 ? 'h2load' : 'wrk';
    const header = ['server', 'req/s', '× base', 'p99 ms', 'errors', 'CPU µs/req', '× base', 'JS-thread µs/req', '× base', 'peak RSS MB', `CPU % server/${gen}/other`];
    if (h2) header.splice(4, 0, 'mean ms');
    const rows = inGroup.map((s) => {
      const r = summary[s.name];
      const row = [
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
        `${fmt(r.cpuPercent.median, 0)}/${fmt(r.loadCpuPercent.median, 0)}/${fmt(r.otherCpuPercent.median, 0)}`,
      ];
      if (h2) row.splice(4, 0, cell(r.latencyAvgMs, 2));
      return row;
    });
    out.push(`**${GROUP_TITLES[g]}**`);
    out.push('');
    out.push(table(header, rows));
    out.push('');
    const extra = [];
    for (const s of inGroup) {
      for (const [other, q] of Object.entries(summary[s.name].extraRatios || {})) {
        if (!q) continue;
        extra.push([s.name, other, ratioCell(q.reqPerSec), ratioCell(q.p99Ms), ratioCell(q.cpuUsPerReq), ratioCell(q.jsCpuUsPerReq), ratioCell(q.peakRssMB)]);
      }
    }
    if (extra.length) {
      out.push('Also paired with:');
      out.push('');
      out.push(table(['server', 'vs', 'req/s ×', 'p99 ×', 'CPU µs/req ×', 'JS-thread µs/req ×', 'peak RSS ×'], extra));
      out.push('');
    }
  }
  const targets = TARGETS.filter((t) => summary[t.server] && summary[t.vs]);
  if (targets.length) {
    out.push('**Targets**');
    out.push('');
    out.push(table(['target', 'measured (median, spread of paired ratios)', 'verdict'], targets.map((t) => {
      const sum = summary[t.server];
      const q = sum.vs === t.vs ? sum.ratio : (sum.extraRatios || {})[t.vs];
      const st = q && q[t.metric];
      // `min`: the ratio must reach it (throughput); `max`: stay under it (CPU per request).
      const ok = (x) => (t.max != null ? x <= t.max : x >= t.min);
      const worst = t.max != null ? st && st.max : st && st.min;
      const verdict = !st || st.median == null ? 'no data' : ok(st.median) ? (ok(worst) ? 'met' : 'met on the median (not every round)') : 'missed';
      const bound = t.max != null ? `≤ ${t.max}×` : `≥ ${t.min}×`;
      return [`issue ${t.issue}: ${t.server} ${bound} ${t.vs} ${t.metric === 'reqPerSec' ? 'req/s' : t.metric}`, ratioCell(st), verdict];
    })));
    out.push('');
  }
  out.push('`× base` for req/s: higher is faster; for CPU: the fraction of the baseline\'s CPU per request (lower is better). CPU = utime+stime of the server process (all threads) over the measured run ÷ requests; JS-thread = the same for the main thread alone; peak RSS = VmHWM after the run; CPU % = medians in % of one CPU during the measured run for the server, the load generator, and everything else on the machine. errors = wrk socket errors + non-2xx/3xx, or h2load failed + errored + timeout + 4xx/5xx, summed over rounds.' + (protos.has('h2') ? ` h2 rows: p99 from h2load's per-request log${o.h2Log ? '' : ' (off: --no-h2-log)'}, mean = h2load's "time for request" mean.` : ''));
  if (ctx.retried.length || ctx.idleWaits.length) {
    out.push('');
    const parts = [];
    if (ctx.idleWaits.length) parts.push(`waited for other load to stop before ${ctx.idleWaits.length} run${ctx.idleWaits.length > 1 ? 's' : ''} (${ctx.idleWaits.reduce((a, b) => a + b, 0).toFixed(0)} s in all)`);
    if (ctx.retried.length) parts.push(`measured again because of other load: ${ctx.retried.map((x) => `${x.server} r${x.round} (${fmt(x.otherCpuPercent, 0)} %)`).join(', ')}; only the final attempt counts`);
    out.push(`Shared machine: ${parts.join('; ')}.`);
  }
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
function nativeCheck(root = ROOT) {
  const code = `try { const m = require(${JSON.stringify(root)}); const i = typeof m.runtimeInfo === 'function' ? m.runtimeInfo() : null;
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

// What the native rows load: the addon binary(ies) in the repo root and the JS
// wrapper (index.js, js/). Compared at the end to catch a rebuild or an edit
// in the middle of a run.
function nativeFingerprint(root = ROOT) {
  const files = [path.join(root, 'index.js'), path.join(root, 'binding.js')];
  try { for (const f of fs.readdirSync(path.join(root, 'js')).sort()) if (f.endsWith('.js')) files.push(path.join(root, 'js', f)); } catch { /* none */ }
  const nodes = fs.readdirSync(root).filter((f) => f.endsWith('.node')).sort();
  const hashFile = (f) => { try { return crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex'); } catch { return 'missing'; } };
  const js = crypto.createHash('sha256');
  for (const f of files) js.update(`${path.relative(root, f)}\0${hashFile(f)}\n`);
  const bin = nodes.length ? path.join(root, nodes[0]) : null;
  return {
    binary: bin ? { path: bin, sha256: hashFile(bin), mtime: fs.statSync(bin).mtime.toISOString() } : null,
    jsSha256: js.digest('hex'),
  };
}

// A private copy of the package as it is now (package.json, index.js,
// config.js, binding.js, js/, the .node binary: the package needs no
// node_modules), so that a rebuild in the repo during a long run cannot change
// what the bare native rows load. The Koatty app rows still use the repo.
function snapshotPackage(dest) {
  fs.mkdirSync(dest, { recursive: true });
  for (const f of fs.readdirSync(ROOT)) {
    if (['package.json', 'index.js', 'config.js', 'binding.js'].includes(f) || f.endsWith('.node')) {
      fs.copyFileSync(path.join(ROOT, f), path.join(dest, f));
      const st = fs.statSync(path.join(ROOT, f));
      fs.utimesSync(path.join(dest, f), st.atime, st.mtime); // keep the build time
    }
  }
  fs.cpSync(path.join(ROOT, 'js'), path.join(dest, 'js'), { recursive: true });
  return dest;
}

// Before a run: wait (at most maxSeconds) until the machine has been nearly idle
// (< 10 % of one CPU busy) for a whole second; another build or test on the
// shared CPUs would otherwise end up in the figures.
async function waitIdle(maxSeconds, ctx) {
  const w = await measure.waitIdle(maxSeconds, ctx.machine.nproc);
  if (w.notIdle) console.warn(`  WARNING machine still ${fmt(w.busy, 0)}% busy after waiting ${maxSeconds} s; running anyway`);
  const waited = w.notIdle ? w.waited - 3 : w.waited;
  if (waited >= 1) {
    console.log(`  (waited ${fmt(waited, 0)} s for other load to stop)`);
    ctx.idleWaits.push(+waited.toFixed(1));
  }
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
  const h2loadPath = findInPath('h2load');
  const opensslPath = findInPath('openssl');
  if (!wrkPath) die('wrk not found in PATH. Install it (Debian/Ubuntu: apt-get install -y wrk) and run again.');
  if (process.platform !== 'linux') die('this benchmark reads /proc and needs Linux');

  const startedAt = new Date().toISOString();
  const machine = machineInfo(wrkPath, h2loadPath, opensslPath);
  const ctx = {
    opts, wrkPath, h2loadPath, machine, startedAt,
    command: ['node', path.relative(process.cwd(), __filename) || 'bench/run.js', ...process.argv.slice(2)].join(' '),
    rootReal: fs.realpathSync(ROOT),
  };
  let servers = SERVERS.filter((s) => opts.groups.includes(s.group) && (!opts.only || opts.only.includes(s.name)) && !opts.skip.includes(s.name));
  const skipped = [];
  const skip = (pred, reason) => {
    for (const s of servers.filter(pred)) skipped.push({ server: s.name, reason });
    servers = servers.filter((s) => !pred(s));
  };
  if (!h2loadPath) skip((s) => s.proto === 'h2', 'h2load not found in PATH (Debian/Ubuntu: apt-get install -y nghttp2-client)');
  if (!opensslPath) skip((s) => s.proto !== 'http', 'openssl not found in PATH (needed to make the key and certificate)');

  console.log(`bench: ${machine.nproc} CPUs (${machine.cpuModel}), Node ${machine.node}, ${machine.wrk}${h2loadPath ? `, ${machine.h2load}` : ''}`);
  console.log(`bench: ${opts.rounds} round(s), wrk -t${opts.threads} -c${opts.connections} -d${opts.duration}s / h2load -t${opts.threads} -c${opts.h2Clients} -m${opts.h2Streams} -D${opts.duration}, warm-up ${opts.warmup}s${opts.quick ? ' (quick)' : ''}`);
  console.log(`bench: groups ${opts.groups.join(', ')}`);
  if (machine.loadavgAtStart[0] > 0.5) {
    console.warn(`bench: WARNING load average is ${machine.loadavgAtStart.join(' ')}: something else is using the CPUs; figures will be noisy`);
  }

  ctx.logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-serve-bench-'));
  if (servers.some((s) => s.native)) {
    if (opts.snapshot && servers.some((s) => s.native && s.script)) {
      const repoBefore = nativeFingerprint();
      ctx.nativeRoot = snapshotPackage(path.join(ctx.logDir, 'native-package'));
      const snap = nativeFingerprint(ctx.nativeRoot);
      if (JSON.stringify(snap.binary && snap.binary.sha256) !== JSON.stringify(repoBefore.binary && repoBefore.binary.sha256) || snap.jsSha256 !== repoBefore.jsSha256) {
        die('the native package changed while it was being copied (a build running?); try again', 1);
      }
      console.log(`bench: bare native rows load a snapshot of the package: ${ctx.nativeRoot}`);
    }
    ctx.native = nativeCheck(ctx.nativeRoot || ROOT);
    if (!ctx.native.ok) {
      console.warn(`bench: SKIPPING native rows: ${ctx.native.reason}`);
      skip((s) => s.native, ctx.native.reason);
    } else {
      console.log(`bench: native runtimeInfo().buildProfile = ${JSON.stringify(ctx.native.buildProfile)}`);
      Object.assign(ctx.native, nativeFingerprint(ctx.nativeRoot || ROOT), { snapshot: !!ctx.nativeRoot });
      ctx.git = gitState(ROOT);
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

  if (servers.some((s) => s.proto !== 'http')) {
    try {
      ctx.tls = makeTls(opensslPath, ctx.logDir);
      console.log(`bench: TLS key and certificate (EC P-256) in ${ctx.logDir}`);
    } catch (e) {
      skip((s) => s.proto !== 'http', e.message);
      ctx.servers = servers;
      if (!servers.length) die('no server left to run', 1);
    }
  }
  ctx.tlsSeen = [];
  ctx.retried = [];
  ctx.idleWaits = [];
  process.on('SIGINT', () => {
    if (current) { try { process.kill(current.pid, 'SIGKILL'); } catch { /* gone */ } }
    process.exit(130);
  });

  const runs = [];
  const failures = [];
  const noisy = [];
  const dead = new Set();
  // Each round runs every group's servers back to back (so a row and its
  // baseline are measured minutes apart at most); the order of the groups and
  // the order inside each group rotate by one every round.
  const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length]);
  for (let r = 0; r < opts.rounds; r++) {
    const live = servers.filter((s) => !dead.has(s.name));
    if (!live.length) break;
    const groups = rotate(GROUPS.filter((g) => live.some((s) => s.group === g)), r);
    const order = groups.flatMap((g) => rotate(live.filter((s) => s.group === g), r));
    console.log(`\nround ${r + 1}/${opts.rounds}: ${order.map((s) => s.name).join(', ')}`);
    for (const s of order) {
      if (runs.length || failures.length) await sleep(opts.pause * 1000);
      try {
        let res;
        for (let attempt = 0; ; attempt++) {
          if (opts.waitIdle > 0) await waitIdle(opts.waitIdle, ctx);
          res = await runOne(s, r, ctx);
          if (!(res.otherCpuPercent > 15) || attempt >= opts.retryNoisy) { res.retries = attempt; break; }
          console.warn(`  ${s.name}: other processes used ${fmt(res.otherCpuPercent, 0)}% of a CPU: measuring again (retry ${attempt + 1}/${opts.retryNoisy})`);
          ctx.retried.push({ server: s.name, round: r + 1, otherCpuPercent: +res.otherCpuPercent.toFixed(1) });
          await sleep(opts.pause * 1000);
        }
        runs.push(res);
        const e = res.errors.total ? `, ${res.errors.total} errors` : '';
        console.log(`  ${s.name.padEnd(19)} ${fmt(res.reqPerSec, 0).padStart(8)} req/s  p99 ${fmt(res.p99Ms, 2).padStart(6)} ms  CPU ${fmt(res.cpuUsPerReq, 1).padStart(6)} µs/req  JS ${fmt(res.jsCpuUsPerReq, 1).padStart(6)} µs/req  RSS ${fmt(res.peakRssMB, 1)} MB  (server ${fmt(res.cpuPercent, 0)}%, ${s.proto === 'h2' ? 'h2load' : 'wrk'} ${fmt(res.loadCpuPercent, 0)}%, other ${fmt(res.otherCpuPercent, 0)}% CPU; ${res.threads} threads; log ${fmt(res.logBytesPerReq, 1)} B/req${e})`);
        if (res.tls) {
          const t = res.tls.load || res.tls.probe;
          const seen = `${s.name} ${t.protocol} ${t.cipher}${s.proto === 'h2' ? ` ALPN ${t.alpn}` : ''}${res.tls.load ? ' (h2load)' : ' (node client, as wrk: no ALPN)'}`;
          if (!ctx.tlsSeen.includes(seen)) ctx.tlsSeen.push(seen);
        }
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

  if (ctx.native && ctx.native.ok) {
    const now = nativeFingerprint();
    const changes = [];
    if (!now.binary || !ctx.native.binary || now.binary.sha256 !== ctx.native.binary.sha256) changes.push(`repo binary now ${now.binary ? `${now.binary.sha256.slice(0, 12)}… ${now.binary.mtime}` : 'missing'}`);
    if (now.jsSha256 !== ctx.native.jsSha256) changes.push('repo index.js/binding.js/js/*.js edited');
    if (changes.length) {
      ctx.native.changed = changes.join('; ');
      // The snapshot shields the bare native rows; the Koatty app rows load the repo.
      ctx.native.changedAffects = servers.filter((s) => s.native && (!ctx.nativeRoot || s.app)).map((s) => s.name);
      if (ctx.native.changedAffects.length) banner([`The native addon or its JS changed during the run: ${ctx.native.changed}`, `affected rows: ${ctx.native.changedAffects.join(', ')}`]);
      else console.log(`bench: the repo's native package changed during the run (${ctx.native.changed}); the native rows used the snapshot taken at the start`);
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
    servers: servers.map(({ name, group, proto, desc, baseline, native, compare }) => ({ name, group, proto, desc, baseline: !!baseline, native: !!native, compare })),
    tls: ctx.tls ? { cmd: ctx.tls.cmd, negotiated: ctx.tlsSeen } : null, git: ctx.git || null,
    skipped, failures, noisy, retried: ctx.retried, idleWaits: ctx.idleWaits, summary, runs,
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
