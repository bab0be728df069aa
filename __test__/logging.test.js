'use strict';
// Structured logging: the native core's tracing events reach the JavaScript logger (JSON lines on
// stderr, or Koatty's logger for a Koatty app), filtered by one level that setLogLevel changes at
// run time. Servers run in child processes so that stderr is theirs.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('child_process');
const path = require('path');
const { startKoattyApp, withTimeout } = require('./helpers');

const ROOT = path.join(__dirname, '..');

/** Runs `script` (a function body) in a child with `env`; resolves with its stdout/stderr. */
function runChild(script, env = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  }), 20000, 'logging child');
}

const jsonLines = (text) => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

// Starts an HttpServer and a GrpcServer with no service (a native warning), logs one JS error, stops.
const SCRIPT = `
const serve = require('.');
if (process.env.LEVEL_AT_RUNTIME) serve.setLogLevel(process.env.LEVEL_AT_RUNTIME);
const app = { callback: () => (req, res) => res.end('ok') };
const http = new serve.HttpServer(app, { hostname: '127.0.0.1', port: 0 });
const grpc = new serve.GrpcServer(app, { hostname: '127.0.0.1', port: 0 });
let listening = 0;
const started = () => { if (++listening === 2) setTimeout(stop, 200); };
http.Start(started);
grpc.Start(started);
async function stop() {
  await Promise.all([http.gracefulShutdown({ drainDelay: 0, timeout: 500 }), grpc.gracefulShutdown({ drainDelay: 0, timeout: 500 })]);
  console.log('stopped');
}
`;

describe('native log events reach the JavaScript logger', () => {
  it('at the default level (warn): the native gRPC warning as a JSON line, nothing at info', async () => {
    const r = await runChild(SCRIPT, { KOATTY_SERVE_LOG_LEVEL: '' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stopped/);
    const lines = jsonLines(r.stderr);
    const warning = lines.find((l) => l.msg === 'gRPC server listening with no registered method');
    assert.ok(warning, `the native warning was forwarded: ${r.stderr}`);
    assert.equal(warning.level, 'warn');
    assert.equal(warning.name, 'koatty_serve');
    assert.equal(warning.target, 'koatty_serve_core::server');
    assert.match(warning.fields, /^local_addr=127\.0\.0\.1:\d+$/);
    assert.ok(!Number.isNaN(Date.parse(warning.time)));
    assert.equal(lines.filter((l) => l.level === 'info').length, 0, 'no info records at warn');
  });

  it('KOATTY_SERVE_LOG_LEVEL=info adds the native "listening" records and the shutdown steps', async () => {
    const r = await runChild(SCRIPT, { KOATTY_SERVE_LOG_LEVEL: 'info' });
    assert.equal(r.code, 0, r.stderr);
    const lines = jsonLines(r.stderr);
    const listening = lines.filter((l) => l.msg === 'listening' && l.target === 'koatty_serve_core::server');
    assert.equal(listening.length, 1, `the HTTP server's native record: ${r.stderr}`);
    assert.match(listening[0].fields, /protocol=http local_addr=127\.0\.0\.1:\d+ h2c=false native_endpoints=false/);
    assert.ok(lines.some((l) => l.level === 'info' && /^\[shutdown [0-9a-f-]{36}\] stopAcceptingNewConnections/.test(l.msg)), 'JS records with the shutdown trace id');
  });

  it('setLogLevel("off") at run time silences native and JS records; a bad level is ERR_INVALID_CONFIG', async () => {
    const r = await runChild(SCRIPT, { KOATTY_SERVE_LOG_LEVEL: 'info', LEVEL_AT_RUNTIME: 'off' });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(jsonLines(r.stderr), []);
    const { setLogLevel } = require('..');
    assert.throws(() => setLogLevel('verbose'), (e) => e.code === 'ERR_INVALID_CONFIG');
  });

  it('a Koatty app: native records are written by Koatty\'s own logger', async () => {
    const app = await startKoattyApp({ env: { KOATTY_SERVE_LOG_LEVEL: 'info', LOGS_LEVEL: 'info' } });
    try {
      await withTimeout((async () => {
        while (!/\[koatty_serve\] koatty_serve_core::server: listening protocol=http/.test(app.output())) {
          await new Promise((r) => setTimeout(r, 50));
        }
      })(), 5000, 'the native record in the Koatty log').catch((e) => assert.fail(`${e.message}\n${app.output()}`));
      assert.doesNotMatch(app.output(), /"name":"koatty_serve"/, 'not as a JSON line on stderr');
    } finally {
      await app.stop();
    }
  });
});

describe('per-request trace ids on log lines', () => {
  it('a failing handler is logged with the request\'s trace id (X-Request-Id)', async () => {
    const script = `
const http = require('http');
const serve = require('.');
const server = new serve.HttpServer({ callback: () => () => { throw new Error('boom'); } }, { hostname: '127.0.0.1', port: 0 });
server.Start(() => {
  const req = http.get({ port: server.server.address().port, host: '127.0.0.1', headers: { 'X-Request-Id': 'req-42' } }, (res) => {
    res.resume();
    res.on('end', () => server.gracefulShutdown({ drainDelay: 0, timeout: 500 }).then(() => console.log('status', res.statusCode)));
  });
  req.end();
});
`;
    const r = await runChild(script);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /status 500/);
    const line = jsonLines(r.stderr).find((l) => l.level === 'error');
    assert.ok(line, r.stderr);
    assert.equal(line.msg, 'request handler failed [trace req-42]');
    assert.match(line.error, /Error: boom/);
  });
});
