'use strict';
// Starts one of this package's servers (the native addon, loaded from the repo
// root) with the plain "hello" handler through the fake app, and reports the
// bound port and the addon's build profile to bench/run.js.
const { fakeApp, port, report, fail } = require('./_common');

function startNative(ctorName, options) {
  // bench/run.js points BENCH_NATIVE_ROOT at a copy of the package taken at the
  // start of the run (--no-snapshot: the repo root).
  const root = process.env.BENCH_NATIVE_ROOT || require('path').resolve(__dirname, '..', '..');
  let native;
  try {
    native = require(root);
  } catch (e) {
    fail(`cannot load the native koatty_serve from ${root} (build it first: npm run build): ` + e.message);
  }
  const Ctor = native[ctorName];
  if (typeof Ctor !== 'function') fail(`the repo root does not export ${ctorName}`);

  let runtimeInfo;
  try { runtimeInfo = native.runtimeInfo(); } catch (e) { runtimeInfo = { error: String(e && e.message || e) }; }

  let server;
  try {
    server = new Ctor(fakeApp(), { hostname: '127.0.0.1', port: port(), ...options });
  } catch (e) {
    fail(`new ${ctorName}(...) threw: ` + (e && e.stack || e));
  }
  if (typeof server.on === 'function') server.on('error', (e) => fail('native listen failed: ' + (e && e.message || e)));
  try {
    server.Start(() => {
      report({
        port: server.server.address().port,
        impl: 'native',
        root,
        serverCtor: server.constructor && server.constructor.name,
        runtimeInfo,
        buildProfile: runtimeInfo && runtimeInfo.buildProfile,
      });
    });
  } catch (e) {
    fail('server.Start(...) threw: ' + (e && e.stack || e));
  }
  return server;
}

module.exports = { startNative };
