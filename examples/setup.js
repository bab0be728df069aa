'use strict';
// Installs the demo app's dependencies (examples/koatty-demo: koatty@3.11.8, reflect-metadata, and this
// repository as `koatty_serve` through npm `overrides`). Idempotent: returns at once when node_modules is
// already in the state package.json / package-lock.json ask for. Runs non-interactively (CI=true, no stdin).
// Then checks that the native addon loads, since the demo cannot run without it.
// The install and its checks live in scripts/koatty-app-install.js (shared with __test__/setup.js).
//
// Usage: node examples/setup.js [--force]        (`npm run demo` runs it before the demo)
const path = require('path');
const { ensureKoattyAppOrExit, REPO_ROOT } = require('../scripts/koatty-app-install');

const TAG = '[demo setup]';

ensureKoattyAppOrExit({
  appDir: path.join(__dirname, 'koatty-demo'),
  stampName: '.koatty-demo-setup.json',
  what: 'demo',
  tag: TAG,
  // A changed lock file (e.g. after a pull) means a reinstall too.
  fingerprintFiles: ['package.json', { file: 'package-lock.json', optional: true }],
});

try {
  const info = require(REPO_ROOT).runtimeInfo();
  if (!info || info.native !== true) throw new Error(`runtimeInfo() = ${JSON.stringify(info)}`);
  console.log(`${TAG} native addon: koatty_serve ${info.version}, ${info.buildProfile} build`);
} catch (err) {
  console.error(`${TAG} the native addon does not load from ${REPO_ROOT}: ${err && err.message || err}`);
  console.error(`${TAG} build it first: npm run build (release) or npm run build:debug`);
  process.exit(1);
}
