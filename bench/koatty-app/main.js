'use strict';
// Minimal Koatty 3.11.8 app used by the benchmark (plain JS, no TypeScript).
// This file is the shared source; bench/setup.js copies the whole folder into
// bench/apps/koatty-js/app and bench/apps/koatty-native/app, so every
// require('koatty') below resolves from that variant's own node_modules.
//
// Env (set by bench/run.js and bench/koatty-protocols.js):
//   BENCH_PORT        port to bind (0 = ephemeral, the default)
//   BENCH_PROTOCOL    Koatty `protocol` (default 'http'; also http2, ws, grpc: src/config/)
//   BENCH_TLS_KEY/CERT  key_file / crt_file (http2)
//   BENCH_LOGS_LEVEL  Koatty `logs_level` (default 'warning': no access log)
//   BENCH_READY_FD    fd on which to write one JSON line once listening
process.env.NODE_ENV = process.env.NODE_ENV || 'production';
require('reflect-metadata');
const fs = require('fs');
const path = require('path');
const { Koatty, ExecBootStrap } = require('koatty');

function pkgRootOf(file, name) {
  const seg = path.sep + 'node_modules' + path.sep + name + path.sep;
  const i = file.lastIndexOf(seg);
  if (i >= 0) return file.slice(0, i + seg.length - 1);
  // a linked package (realpath outside node_modules): nearest package.json with that name
  let dir = path.dirname(file);
  for (;;) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p)) {
      try { if (JSON.parse(fs.readFileSync(p, 'utf8')).name === name) return dir; } catch { /* keep walking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

function pkgInfo(name, fromDir) {
  try {
    const file = require.resolve(name, { paths: [fromDir] });
    const root = pkgRootOf(file, name);
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    return { file, root: fs.realpathSync(root), version: pkg.version };
  } catch (e) {
    return { error: String(e && e.message || e) };
  }
}

function report(obj) {
  const line = JSON.stringify({ pid: process.pid, ...obj }) + '\n';
  const fd = Number(process.env.BENCH_READY_FD);
  if (fd) { fs.writeSync(fd, line); fs.closeSync(fd); } else process.stdout.write(line);
}

function reportReady(app) {
  const koatty = pkgInfo('koatty', __dirname);
  const koattyDir = koatty.root || __dirname;
  // What koatty itself loads (its own resolution), not what this file would load.
  const serve = pkgInfo('koatty_serve', koattyDir);
  const core = pkgInfo('koatty_core', koattyDir);
  const trace = pkgInfo('koatty_trace', koattyDir);
  let runtimeInfo;
  if (serve.root) {
    try {
      const m = require(serve.root);
      if (typeof m.runtimeInfo === 'function') runtimeInfo = m.runtimeInfo();
    } catch (e) { runtimeInfo = { error: String(e && e.message || e) }; }
  }
  let port;
  try { port = app.server.server.address().port; } catch (e) {
    // koatty_serve 2.3.0: a WsServer's `server` is a noServer WebSocketServer (the listening
    // http.Server is `httpServer`); a GrpcServer's is a grpc-js Server without address() (2.3.0
    // drops the bound port, so bench/koatty-protocols.js gives it a fixed port).
    try { port = app.server.httpServer.address().port; } catch { port = Number(app.config('app_port')) || null; }
    if (!port) {
      report({ error: 'cannot read app.server.server.address().port: ' + (e && e.message || e) });
      process.exit(3);
    }
  }
  report({
    port,
    impl: 'koatty',
    nodeEnv: process.env.NODE_ENV,
    logsLevel: app.config('logs_level'),
    serverCtor: app.server && app.server.constructor && app.server.constructor.name,
    protocol: app.config('protocol'),
    // the native server's trace mode installed its tracer on the app (js/trace/)
    nativeTrace: app[Symbol.for('koatty_serve.tracer')] === true,
    grpcNoAccumulate: process.env.BENCH_GRPC_NO_ACCUMULATE === '1',
    koatty: koatty.version,
    koattyCore: core.version,
    koattyTrace: trace.version,
    koattyServe: serve,
    runtimeInfo,
    buildProfile: runtimeInfo && runtimeInfo.buildProfile,
  });
}

class App extends Koatty {
  init() {
    this.rootPath = __dirname;
    this.appPath = path.join(__dirname, 'src');
    // 'appStart' is emitted from the server's listen callback.
    this.once('appStart', () => reportReady(this));
    if (process.env.BENCH_GRPC_NO_ACCUMULATE === '1') undoHandlerAccumulation(this);
  }
}

// koatty_core 1.11.4's app.callback(protocol, reqHandler) pushes reqHandler onto app.middleware for
// good, and koatty_router 1.10.1 calls it once per gRPC call with a new handler, so the array grows
// by one per call and every later call composes (copies and checks) all of it
// (koatty-contract.md §5.4). With BENCH_GRPC_NO_ACCUMULATE=1 (bench/koatty-protocols.js, group
// grpc-fixed) the handler is taken out again right after koa-compose has copied the array: the
// composed function still runs it, the app's middleware stays as it was. Same for either server.
function undoHandlerAccumulation(app) {
  const callback = app.callback;
  app.callback = function (protocol, reqHandler) {
    const fn = callback.call(this, protocol, reqHandler);
    if (reqHandler) {
      const i = this.middleware.lastIndexOf(reqHandler);
      if (i >= 0) this.middleware.splice(i, 1);
    }
    return fn;
  };
}

module.exports = ExecBootStrap()(App);
module.exports.catch((e) => {
  report({ error: 'bootstrap failed: ' + (e && e.stack || e) });
  process.exit(3);
});
