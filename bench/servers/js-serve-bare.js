'use strict';
// b. koatty_serve 2.3.0 (installed in the repo root as the alias
// koatty_serve_js) serving the plain "hello" handler through a fake app.
const fs = require('fs');
const path = require('path');
const { fakeApp, port, report, fail } = require('./_common');

let NewServe;
let version;
try {
  const entry = require.resolve('koatty_serve_js');
  ({ NewServe } = require(entry));
  // package root = dist/.. (the package's exports map hides ./package.json)
  version = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), '..', 'package.json'), 'utf8')).version;
} catch (e) {
  fail('cannot load koatty_serve_js (npm:koatty_serve@2.3.0) from the repo root: ' + e.message);
}

const server = NewServe(fakeApp(), { hostname: '127.0.0.1', port: port(), protocol: 'http' });
server.server.on('error', (e) => fail('koatty_serve 2.3.0 listen failed: ' + e.message));
server.Start(() => {
  report({ port: server.server.address().port, impl: 'koatty_serve ' + version, serverCtor: server.constructor.name });
});
