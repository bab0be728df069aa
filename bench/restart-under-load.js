#!/usr/bin/env node
'use strict';
// Zero-downtime restart under load (issue 8): a native HttpServer (or HttpsServer) serves a tiny
// 'hello' handler while a load loop sends requests, each on a new connection, for a bounded time.
// During the run the server is restarted 10 times through updateConfig, evenly spread:
// port changes (a new free port) alternating with same-port restarts (reusePort toggled, so the
// old socket is handed over). Each request is aimed at server.server.address().port as it is when
// the request starts, as a client that follows the server's reported address would.
//
// Prints requests sent, failed (any outcome but HTTP 200, by kind), and latency percentiles for
// the whole run and for the requests in flight during a restart window (from the updateConfig call
// to `--window` ms after it resolved), as a markdown snippet with the exact command.
//
//   node bench/restart-under-load.js [--duration 10000] [--concurrency 8] [--restarts 10]
//                                    [--window 200] [--protocol http|https] [--allow-debug]
//
// Server and load share one process (and one event loop): latencies include the client's own
// work. The addon must be a release build (decisions.md §19) unless --allow-debug.
const http = require('http');
const https = require('https');
const net = require('net');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');

function parseArgs(argv) {
  const opts = { duration: 10000, concurrency: 8, restarts: 10, window: 200, protocol: 'http', allowDebug: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [key, inline] = a.startsWith('--') ? a.slice(2).split('=', 2) : [null, null];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (key) {
      case 'duration': opts.duration = Number(value()); break;
      case 'concurrency': opts.concurrency = Number(value()); break;
      case 'restarts': opts.restarts = Number(value()); break;
      case 'window': opts.window = Number(value()); break;
      case 'protocol': opts.protocol = value(); break;
      case 'allow-debug': opts.allowDebug = true; break;
      case 'help':
        console.log(require('fs').readFileSync(__filename, 'utf8').split('\n').slice(2, 18).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
        process.exit(0);
        break;
      default:
        console.error(`unknown argument ${a} (see --help)`);
        process.exit(2);
    }
  }
  for (const k of ['duration', 'concurrency', 'restarts', 'window']) {
    if (!Number.isFinite(opts[k]) || opts[k] < (k === 'window' || k === 'restarts' ? 0 : 1)) {
      console.error(`--${k} must be a number ≥ ${k === 'window' || k === 'restarts' ? 0 : 1}`);
      process.exit(2);
    }
  }
  if (!['http', 'https'].includes(opts.protocol)) {
    console.error('--protocol must be http or https');
    process.exit(2);
  }
  return opts;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function summarise(samples) {
  const ok = samples.filter((s) => s.status === 200);
  const lat = ok.map((s) => s.ms).sort((a, b) => a - b);
  const byKind = {};
  for (const s of samples) {
    if (s.status === 200) continue;
    const k = s.error ?? `HTTP ${s.status}`;
    byKind[k] = (byKind[k] ?? 0) + 1;
  }
  return {
    sent: samples.length,
    failed: samples.length - ok.length,
    byKind,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    max: lat.length ? lat[lat.length - 1] : NaN,
  };
}

const fmt = (n) => (Number.isFinite(n) ? n.toFixed(2) : '–');

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const serve = require(ROOT);
  const info = serve.runtimeInfo();
  if (info.buildProfile !== 'release' && !opts.allowDebug) {
    console.error(`native addon buildProfile is ${JSON.stringify(info.buildProfile)}, not 'release' (decisions.md §19); `
      + 'build with `npm run build`, or pass --allow-debug');
    process.exit(1);
  }

  const app = {
    callback: () => (req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      res.end('hello');
    },
  };
  const Server = opts.protocol === 'https' ? serve.HttpsServer : serve.HttpServer;
  const firstPort = await freePort();
  // https: no ssl given → the server generates a self-signed development certificate.
  const server = new Server(app, { hostname: '127.0.0.1', port: firstPort, protocol: opts.protocol });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(resolve);
  });

  const mod = opts.protocol === 'https' ? https : http;
  const send = (port) => new Promise((resolve, reject) => {
    const req = mod.request({
      host: '127.0.0.1', port, path: '/', agent: false, rejectUnauthorized: false,
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', reject);
    });
    req.setTimeout(10000, () => req.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })));
    req.on('error', reject);
    req.end();
  });

  // The load loop: `concurrency` workers, one request after another, each on a new connection.
  const samples = [];
  const t0 = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - t0) / 1e6;
  let stop = false;
  const worker = async () => {
    while (!stop && now() < opts.duration) {
      const port = server.server.address().port;
      const start = now();
      const sample = { start, port };
      try {
        sample.status = await send(port);
      } catch (err) {
        sample.error = err.code || String(err.message).slice(0, 40);
        await new Promise((r) => setImmediate(r));
      }
      sample.ms = now() - start;
      samples.push(sample);
    }
  };
  const load = Promise.all(Array.from({ length: opts.concurrency }, worker));

  // The restarts: evenly spread, alternating a port change and a same-port restart.
  const restarts = [];
  let reusePort = false;
  for (let i = 0; i < opts.restarts; i++) {
    const at = ((i + 1) * opts.duration) / (opts.restarts + 1);
    while (now() < at) await new Promise((r) => setTimeout(r, Math.max(1, at - now())));
    const kind = i % 2 === 0 ? 'port change' : 'same port';
    const before = server.server.address().port;
    let change;
    if (kind === 'port change') change = { port: await freePort() };
    else change = { reusePort: (reusePort = !reusePort) };
    const started = now();
    let error = null;
    let result = null;
    try {
      result = await server.updateConfig(change);
    } catch (err) {
      error = err.code || err.message;
    }
    const resolved = now();
    restarts.push({ kind, before, after: server.server.address().port, started, resolved, ms: resolved - started, restarted: result?.restarted, error });
  }
  await load;
  stop = true;
  const elapsed = now();
  await server.gracefulShutdown({ drainDelay: 0, timeout: 5000 });

  // A request belongs to a restart window when it was in flight at some point of it: started
  // before the window ended and ended after the window began.
  const overlaps = (s, r) => s.start <= r.resolved + opts.window && s.start + s.ms >= r.started;
  const inWindow = (s) => restarts.some((r) => overlaps(s, r));
  const all = summarise(samples);
  const during = summarise(samples.filter(inWindow));
  const perKind = {};
  for (const kind of ['port change', 'same port']) {
    const ws = restarts.filter((r) => r.kind === kind);
    perKind[kind] = summarise(samples.filter((s) => ws.some((r) => overlaps(s, r))));
  }

  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  const command = `node bench/restart-under-load.js ${process.argv.slice(2).join(' ')}`.trim();
  const kinds = (k) => (Object.keys(k).length ? Object.entries(k).map(([n, c]) => `${n} ${c}`).join(', ') : 'none');
  const restartMs = (kind) => restarts.filter((r) => r.kind === kind).map((r) => r.ms.toFixed(1)).join(', ');
  const failedRestarts = restarts.filter((r) => r.error || r.restarted !== true);
  const lines = [
    `### Restart under load (${opts.protocol}, new connection per request)`,
    '',
    `\`${command}\` — ${new Date().toISOString().slice(0, 10)}, ${cpu} × ${os.cpus().length}, ${os.type()} ${os.release()}, `
      + `node ${process.version}, addon ${info.buildProfile} build, ${info.workerThreads} tokio worker(s); server and load in one process, `
      + `${opts.concurrency} workers, ${(elapsed / 1000).toFixed(1)} s, ${restarts.length} restarts `
      + `(${restarts.filter((r) => r.kind === 'port change').length} port changes, ${restarts.filter((r) => r.kind === 'same port').length} same-port).`,
    '',
    '| window | requests sent | failed | failures by kind | p50 ms | p99 ms | max ms |',
    '|---|---:|---:|---|---:|---:|---:|',
    `| whole run | ${all.sent} | ${all.failed} | ${kinds(all.byKind)} | ${fmt(all.p50)} | ${fmt(all.p99)} | ${fmt(all.max)} |`,
    `| in flight during a restart (call → resolve + ${opts.window} ms) | ${during.sent} | ${during.failed} | ${kinds(during.byKind)} | ${fmt(during.p50)} | ${fmt(during.p99)} | ${fmt(during.max)} |`,
    `| — port changes | ${perKind['port change'].sent} | ${perKind['port change'].failed} | ${kinds(perKind['port change'].byKind)} | ${fmt(perKind['port change'].p50)} | ${fmt(perKind['port change'].p99)} | ${fmt(perKind['port change'].max)} |`,
    `| — same-port restarts | ${perKind['same port'].sent} | ${perKind['same port'].failed} | ${kinds(perKind['same port'].byKind)} | ${fmt(perKind['same port'].p50)} | ${fmt(perKind['same port'].p99)} | ${fmt(perKind['same port'].max)} |`,
    '',
    `updateConfig took (ms): port changes ${restartMs('port change')}; same-port ${restartMs('same port')}.`
      + (failedRestarts.length ? ` Restarts that failed: ${JSON.stringify(failedRestarts)}.` : ''),
    'Latency percentiles are over the requests answered with 200 (failed ones are counted, not timed).',
  ];
  console.log(lines.join('\n'));
  process.exitCode = failedRestarts.length ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
