#!/usr/bin/env node
'use strict';
// Latency at concurrency 1 (issue 18): one client sends a request, waits for the whole answer, sends
// the next; p50 and p99 of the round trip, native server vs its peer, each server in its own child
// process (the client process is neither server's JS thread).
//
//   node bench/latency.js [--rounds 3] [--count 2000] [--warmup 300] [--only http,h2,ws,grpc] [--pin]
//
// --pin: the client runs on the last CPU and the servers on the others (taskset), as a client on
// another machine would be. Without it the scheduler places them: a single-threaded peer server
// often shares a CPU with the client, and a wake-up on the same CPU costs a few µs where one
// across CPUs costs tens of µs on a virtual machine (bench/wake-cost), which the native server,
// whose I/O thread hands each request to the JS thread, pays on every crossing.
//
// Workloads (the same handler on both sides):
//   http  node:http vs native HttpServer: GET / → 'hello' (node's http client, keep-alive agent, 1 socket)
//   h2    node:http2 compat (TLS) vs native Http2Server: GET / → 'hello' (node's http2 client, 1 session)
//   ws    ws 8 vs native WsServer: echo of 'hello' (the `ws` client; bench/ws/echo-server.js)
//   grpc  @grpc/grpc-js server vs native GrpcServer (echo.proto): unary, client streaming (one message
//         then end), bidi (one message echoed then end), with the @grpc/grpc-js client
// Rounds are interleaved (native, peer, native, peer, …), a fresh server per run.
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const ECHO_PROTO = path.join(ROOT, '__test__', 'protos', 'echo.proto');

// ------------------------------------------------------------------ servers (child mode)
function hello(req, res) {
  res.setHeader('Content-Type', 'text/plain');
  res.end('hello');
}
const fakeApp = { callback: () => hello, config: () => undefined };

function grpcImpl() {
  return {
    Unary(call, cb) { cb(null, { message: call.request.message }); },
    ClientStream(call, cb) { call.on('data', () => {}); call.on('end', () => cb(null, {})); },
    Bidi(call) { call.on('data', (m) => call.write(m)); call.on('end', () => call.end()); },
    ServerStream(call) { call.end(); },
  };
}

function echoService() {
  const grpc = require('@grpc/grpc-js');
  const loader = require('@grpc/proto-loader');
  return grpc.loadPackageDefinition(loader.loadSync(ECHO_PROTO, { keepCase: true, longs: String, defaults: true })).koatty.test.Echo;
}

function serve(kind, impl) {
  const ready = (port) => process.stdout.write(JSON.stringify({ port }) + '\n');
  const tls = () => ({ key: fs.readFileSync(process.env.LAT_KEY), cert: fs.readFileSync(process.env.LAT_CERT) });
  // BENCH_NATIVE_ROOT: another build of the package, for before/after runs.
  const native = impl === 'native' ? require(process.env.BENCH_NATIVE_ROOT || ROOT) : null;
  if (native && native.runtimeInfo().buildProfile !== 'release') throw new Error('the addon is not a release build (npm run build)');
  if (kind === 'http' && impl === 'peer') {
    const s = require('node:http').createServer(hello);
    s.listen(0, '127.0.0.1', () => ready(s.address().port));
  } else if (kind === 'h2' && impl === 'peer') {
    const s = require('node:http2').createSecureServer({ ...tls(), allowHTTP1: true }, hello);
    s.listen(0, '127.0.0.1', () => ready(s.address().port));
  } else if (kind === 'http' || kind === 'h2') {
    const opts = kind === 'http'
      ? { hostname: '127.0.0.1', port: 0, protocol: 'http' }
      : { hostname: '127.0.0.1', port: 0, protocol: 'http2', ssl: { mode: 'manual', key: process.env.LAT_KEY, cert: process.env.LAT_CERT } };
    const s = new (kind === 'http' ? native.HttpServer : native.Http2Server)(fakeApp, opts);
    s.Start(() => ready(s.server.address().port));
  } else if (kind === 'grpc' && impl === 'peer') {
    const grpc = require('@grpc/grpc-js');
    const s = new grpc.Server();
    s.addService(echoService().service, grpcImpl());
    s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, port) => ready(port));
  } else if (kind === 'grpc') {
    const s = new native.GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' });
    s.RegisterService({ service: echoService().service, implementation: grpcImpl() });
    s.Start(() => ready(s.server.address().port));
  } else {
    throw new Error(`unknown server ${kind} ${impl}`);
  }
}

// ------------------------------------------------------------------ clients
function clientFor(kind, port) {
  if (kind === 'http') {
    const http = require('node:http');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const once = () => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.on('data', () => {});
        res.on('end', resolve);
      }).on('error', reject);
    });
    return { ops: { get: once }, close: () => agent.destroy() };
  }
  if (kind === 'h2') {
    const session = require('node:http2').connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    const once = () => new Promise((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      req.on('data', () => {});
      req.on('end', resolve);
      req.on('error', reject);
      req.end();
    });
    return { ops: { get: once }, close: () => session.close() };
  }
  if (kind === 'ws') {
    const WebSocket = require('ws');
    const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
    const opened = new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
    let waiting = null;
    socket.on('message', () => { const w = waiting; waiting = null; if (w) w(); });
    const once = () => new Promise((resolve) => { waiting = resolve; socket.send('hello'); });
    return { ready: opened, ops: { echo: once }, close: () => socket.terminate() };
  }
  if (kind === 'grpc') {
    const grpc = require('@grpc/grpc-js');
    const Echo = echoService();
    const client = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const settle = (resolve, reject) => (e) => (e ? reject(e) : resolve());
    return {
      ops: {
        unary: () => new Promise((resolve, reject) => client.Unary({ message: 'a' }, settle(resolve, reject))),
        clientStream: () => new Promise((resolve, reject) => {
          const call = client.ClientStream(settle(resolve, reject));
          call.write({ message: 'a' });
          call.end();
        }),
        bidi: () => new Promise((resolve, reject) => {
          const call = client.Bidi();
          call.on('data', () => {});
          call.on('end', resolve);
          call.on('error', reject);
          call.write({ message: 'a' });
          call.end();
        }),
      },
      close: () => client.close(),
    };
  }
  throw new Error(`unknown workload ${kind}`);
}

// ------------------------------------------------------------------ orchestration
function parseArgs(argv) {
  const o = { rounds: 3, count: 2000, warmup: 300, only: ['http', 'h2', 'ws', 'grpc'], pin: false };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--pin') {
      o.pin = true;
      i -= 1;
    } else if (k === '--rounds') o.rounds = Number(v);
    else if (k === '--count') o.count = Number(v);
    else if (k === '--warmup') o.warmup = Number(v);
    else if (k === '--only') o.only = v.split(',');
    else throw new Error(`unknown argument ${k}`);
  }
  return o;
}

// --pin: the CPUs of the servers and of the client (this process).
const lastCpu = os.cpus().length - 1;
const SERVER_CPUS = `0-${Math.max(0, lastCpu - 1)}`;

function startServer(kind, impl, env, pin) {
  const args = kind === 'ws'
    ? [path.join(__dirname, 'ws', 'echo-server.js'), impl === 'native' ? 'native' : 'ws']
    : [__filename, '--serve', kind, impl];
  const [command, commandArgs] = pin ? ['taskset', ['-c', SERVER_CPUS, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(command, commandArgs, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const info = JSON.parse(buf.slice(0, nl));
      if (info.error) reject(new Error(info.error));
      else resolve({ child, port: info.port });
    });
    child.once('exit', (code) => reject(new Error(`${kind} ${impl} server exited (${code})`)));
  });
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

async function measure(kind, impl, o, env) {
  const { child, port } = await startServer(kind, impl, env, o.pin);
  const client = clientFor(kind, port);
  if (client.ready) await client.ready;
  const out = {};
  for (const [name, op] of Object.entries(client.ops)) {
    for (let i = 0; i < o.warmup; i++) await op();
    const t = new Float64Array(o.count);
    for (let i = 0; i < o.count; i++) {
      const t0 = process.hrtime.bigint();
      await op();
      t[i] = Number(process.hrtime.bigint() - t0) / 1e3;
    }
    t.sort();
    out[name] = { p50: pct(t, 0.5), p99: pct(t, 0.99) };
  }
  client.close();
  child.kill('SIGKILL');
  return out;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.pin) {
    if (lastCpu < 1) throw new Error('--pin needs two CPUs');
    const r = spawnSync('taskset', ['-a', '-p', '-c', String(lastCpu), String(process.pid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error('taskset failed: ' + (r.stderr || r.error));
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-serve-lat-'));
  const env = { LAT_KEY: path.join(dir, 'key.pem'), LAT_CERT: path.join(dir, 'cert.pem') };
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-keyout', env.LAT_KEY, '-out', env.LAT_CERT], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error('openssl failed: ' + r.stderr);
  const peerName = { http: 'node:http', h2: 'node:http2 compat', ws: 'ws', grpc: '@grpc/grpc-js' };
  const rows = [];
  for (const kind of o.only) {
    const runs = { native: [], peer: [] };
    for (let round = 0; round < o.rounds; round++) {
      for (const impl of round % 2 ? ['peer', 'native'] : ['native', 'peer']) runs[impl].push(await measure(kind, impl, o, env));
    }
    for (const op of Object.keys(runs.native[0])) {
      const f = (impl, k) => runs[impl].map((x) => x[op][k].toFixed(0)).join(', ');
      const med = (impl, k) => runs[impl].map((x) => x[op][k]).sort((a, b) => a - b)[Math.floor(o.rounds / 2)];
      rows.push(`| ${kind} ${op} | ${peerName[kind]} | ${f('native', 'p50')} | ${f('peer', 'p50')} | ${(med('native', 'p50') / med('peer', 'p50')).toFixed(2)}× | ${f('native', 'p99')} | ${f('peer', 'p99')} | ${(med('native', 'p99') / med('peer', 'p99')).toFixed(2)}× |`);
      console.error(rows[rows.length - 1]);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`\n\`node bench/latency.js ${process.argv.slice(2).join(' ')}\` (${o.count} sequential operations after ${o.warmup} warm-up, ${o.rounds} interleaved rounds; µs)\n`);
  console.log('| workload | peer | native p50 | peer p50 | p50 ratio (medians) | native p99 | peer p99 | p99 ratio |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
}

if (process.argv[2] === '--serve') serve(process.argv[3], process.argv[4]);
else main().catch((e) => { console.error(e); process.exit(1); });
