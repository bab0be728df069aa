'use strict';
// Shared bits of the bare servers: one handler, one fake Koatty app, and the
// readiness report that bench/run.js waits for.
const fs = require('fs');

// The same "hello" answer for every bare server.
function handler(req, res) {
  res.setHeader('Content-Type', 'text/plain');
  res.end('hello');
}

// What koatty_serve 2.3.0's NewServe/HttpServer touch on `app` for protocol
// 'http': only `app.callback()` (called once per request by 2.3.0). `config` is
// read only for https/http2/wss (key_file, crt_file) and grpc (protoFile).
function fakeApp() {
  return { callback: () => handler, config: () => undefined };
}

function port() { return Number(process.env.BENCH_PORT || 0); }

// The key and certificate that bench/run.js generates once per run (EC P-256,
// self-signed for 127.0.0.1), as paths and as PEM text.
function tls() {
  const keyPath = process.env.BENCH_TLS_KEY;
  const certPath = process.env.BENCH_TLS_CERT;
  if (!keyPath || !certPath) fail('BENCH_TLS_KEY / BENCH_TLS_CERT not set (bench/run.js generates them)');
  try {
    return { keyPath, certPath, key: fs.readFileSync(keyPath, 'utf8'), cert: fs.readFileSync(certPath, 'utf8') };
  } catch (e) {
    return fail('cannot read the TLS key/cert: ' + e.message);
  }
}

// One JSON line to fd BENCH_READY_FD (a pipe from bench/run.js), or stdout
// when run by hand.
function report(obj) {
  const line = JSON.stringify({ pid: process.pid, ...obj }) + '\n';
  const fd = Number(process.env.BENCH_READY_FD);
  if (fd) { fs.writeSync(fd, line); fs.closeSync(fd); } else process.stdout.write(line);
}

function fail(message, code = 3) {
  report({ error: message });
  process.exit(code);
}

module.exports = { handler, fakeApp, port, tls, report, fail };
