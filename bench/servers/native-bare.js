'use strict';
// c. this package (the native addon, loaded from the repo root) serving the
// plain "hello" handler through the same fake app as js-serve-bare.
const { fakeApp, port, report, fail } = require('./_common');

let native;
try {
  native = require('../..');
} catch (e) {
  fail('cannot load the native koatty_serve from the repo root (build it first: npm run build): ' + e.message);
}
const { HttpServer } = native;
if (typeof HttpServer !== 'function') fail('the repo root does not export HttpServer');

let runtimeInfo;
try { runtimeInfo = native.runtimeInfo(); } catch (e) { runtimeInfo = { error: String(e && e.message || e) }; }

let server;
try {
  server = new HttpServer(fakeApp(), { hostname: '127.0.0.1', port: port(), protocol: 'http' });
} catch (e) {
  fail('new HttpServer(...) threw: ' + (e && e.stack || e));
}
if (typeof server.on === 'function') server.on('error', (e) => fail('native listen failed: ' + (e && e.message || e)));
try {
  server.Start(() => {
    report({
      port: server.server.address().port,
      impl: 'native',
      serverCtor: server.constructor && server.constructor.name,
      runtimeInfo,
      buildProfile: runtimeInfo && runtimeInfo.buildProfile,
    });
  });
} catch (e) {
  fail('server.Start(...) threw: ' + (e && e.stack || e));
}
