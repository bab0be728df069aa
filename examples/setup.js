'use strict';
// Installs the demo app's dependencies (examples/koatty-demo: koatty@3.11.8, reflect-metadata, and this
// repository as `koatty_serve` through npm `overrides`). Idempotent: returns at once when node_modules is
// already in the state package.json / package-lock.json ask for. Runs non-interactively (CI=true, no stdin).
// Then checks that the native addon loads, since the demo cannot run without it.
//
// Usage: node examples/setup.js [--force]        (`npm run demo` runs it before the demo)
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');
const APP_DIR = path.join(__dirname, 'koatty-demo');
const STAMP = path.join(APP_DIR, 'node_modules', '.koatty-demo-setup.json');
const TAG = '[demo setup]';

function readJson(file) {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')); } catch { return null; }
}

function fingerprint() {
  const hash = crypto.createHash('sha256');
  hash.update(fs.readFileSync(path.join(APP_DIR, 'package.json')));
  // A changed lock file (e.g. after a pull) means a reinstall too.
  try { hash.update(fs.readFileSync(path.join(APP_DIR, 'package-lock.json'))); } catch { /* no lock yet */ }
  // The linked package's own dependency lists matter too (npm installs them for the link).
  const root = readJson(path.join(REPO_ROOT, 'package.json')) || {};
  hash.update(JSON.stringify([root.dependencies, root.optionalDependencies, root.peerDependencies]));
  hash.update(process.version.split('.')[0]);
  return hash.digest('hex');
}

function realpath(p) {
  try { return fs.realpathSync(p); } catch { return null; }
}

// Returns null when the install is usable, else the reason it is not.
function problem() {
  const nm = path.join(APP_DIR, 'node_modules');
  const stamp = readJson(STAMP);
  if (!stamp) return 'not installed yet';
  if (stamp.fingerprint !== fingerprint()) return 'package.json or package-lock.json changed since the last install';
  const koatty = readJson(path.join(nm, 'koatty', 'package.json'));
  if (!koatty || koatty.version !== '3.11.8') return `koatty is ${koatty ? koatty.version : 'missing'}, want 3.11.8`;
  if (!readJson(path.join(nm, 'reflect-metadata', 'package.json'))) return 'reflect-metadata missing';
  const core = readJson(path.join(nm, 'koatty_core', 'package.json'));
  if (!core || !/^1\.11\./.test(core.version)) return `koatty_core is ${core ? core.version : 'missing'}, want 1.11.x`;
  const repo = realpath(REPO_ROOT);
  if (realpath(path.join(nm, 'koatty_serve')) !== repo) return 'node_modules/koatty_serve is not a link to this repository';
  // What koatty itself resolves for `require('koatty_serve')` (the overrides must point it here too).
  let fromKoatty = null;
  try {
    fromKoatty = path.dirname(require.resolve('koatty_serve/package.json', { paths: [path.join(nm, 'koatty')] }));
  } catch { /* not resolvable */ }
  if (realpath(fromKoatty) !== repo) return `koatty resolves koatty_serve to ${fromKoatty}, not this repository`;
  return null;
}

function install() {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  // --ignore-scripts: the linked repository's `prepare` would otherwise start a cargo build.
  const args = ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'];
  console.log(`${TAG} npm ${args.join(' ')} (in ${path.relative(process.cwd(), APP_DIR) || '.'})`);
  const r = spawnSync(npm, args, {
    cwd: APP_DIR,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CI: 'true', npm_config_yes: 'true', npm_config_update_notifier: 'false' },
  });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`${TAG} npm install failed with status ${r.status}`);
    process.exit(r.status || 1);
  }
}

function checkAddon() {
  try {
    const info = require(REPO_ROOT).runtimeInfo();
    if (!info || info.native !== true) throw new Error(`runtimeInfo() = ${JSON.stringify(info)}`);
    console.log(`${TAG} native addon: koatty_serve ${info.version}, ${info.buildProfile} build`);
  } catch (err) {
    console.error(`${TAG} the native addon does not load from ${REPO_ROOT}: ${err && err.message || err}`);
    console.error(`${TAG} build it first: npm run build (release) or npm run build:debug`);
    process.exit(1);
  }
}

function main() {
  const force = process.argv.includes('--force');
  const before = force ? 'forced' : problem();
  if (!before) {
    console.log(`${TAG} demo dependencies are up to date`);
  } else {
    console.log(`${TAG} installing the demo's dependencies: ${before}`);
    install();
    fs.writeFileSync(STAMP, JSON.stringify({ fingerprint: fingerprint(), at: new Date().toISOString() }) + '\n');
    const after = problem();
    if (after) {
      console.error(`${TAG} the demo install is still not usable: ${after}`);
      process.exit(1);
    }
  }
  checkAddon();
}

main();
