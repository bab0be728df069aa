#!/usr/bin/env node
'use strict';
// Installs the two Koatty benchmark sub-packages idempotently and copies the
// shared app source into each:
//   bench/apps/koatty-js      koatty@3.11.8 (which pulls koatty_serve 2.3.0)
//   bench/apps/koatty-native  the same, with koatty_serve overridden to this repo (file: link)
// Then checks that koatty resolves koatty_core 1.11.x (decisions.md §1) and the
// expected koatty_serve in each.
//
//   node bench/setup.js            install if needed, copy the app, verify
//   node bench/setup.js --force    reinstall even when the stamp matches
//
// npm runs with --ignore-scripts: the koatty-native install links this repo,
// and its `prepare` script is a cargo release build, which must never start
// as a side effect of installing a benchmark (none of Koatty's dependencies
// needs an install script).
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const BENCH = __dirname;
const ROOT = path.resolve(BENCH, '..');
const APP_SRC = path.join(BENCH, 'koatty-app');
const APPS = {
  'koatty-js': { dir: path.join(BENCH, 'apps', 'koatty-js'), serve: 'js' },
  'koatty-native': { dir: path.join(BENCH, 'apps', 'koatty-native'), serve: 'native' },
};
const STAMP = '.bench-setup-stamp.json';
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function log(...a) { console.log('[bench/setup]', ...a); }

function sha(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function stampOf(dir) {
  return {
    packageJson: sha(path.join(dir, 'package.json')),
    lock: fs.existsSync(path.join(dir, 'package-lock.json')) ? sha(path.join(dir, 'package-lock.json')) : null,
  };
}

function isInstalled(dir) {
  const stampFile = path.join(dir, 'node_modules', STAMP);
  if (!fs.existsSync(stampFile) || !fs.existsSync(path.join(dir, 'node_modules', 'koatty', 'package.json'))) return false;
  try {
    const old = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
    const now = stampOf(dir);
    return old.packageJson === now.packageJson && old.lock === now.lock;
  } catch { return false; }
}

function install(name, { force = false } = {}) {
  const { dir } = APPS[name];
  if (!force && isInstalled(dir)) {
    log(`${name}: installed (stamp matches package.json/package-lock.json), skipping npm install`);
    return;
  }
  log(`${name}: npm install --no-audit --no-fund --ignore-scripts (in ${path.relative(ROOT, dir)})`);
  const r = spawnSync(NPM, ['install', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: dir, stdio: 'inherit' });
  if (r.error) throw new Error(`${name}: cannot run npm: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${name}: npm install failed with exit code ${r.status}`);
  fs.writeFileSync(path.join(dir, 'node_modules', STAMP), JSON.stringify(stampOf(dir), null, 2) + '\n');
}

// Fresh copy of the shared app source into <variant>/app, so that the app's
// require('koatty') resolves from that variant's node_modules (and not from
// the repo root's, which holds a different koatty_core).
function syncApp(name) {
  const dest = path.join(APPS[name].dir, 'app');
  fs.rmSync(dest, { recursive: true, force: true });
  fs.cpSync(APP_SRC, dest, { recursive: true });
  return dest;
}

function pkgVersionAt(dir) {
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
}

// Verification: `npm ls koatty_core` (what npm installed under koatty) and
// node's own resolution from koatty's folder (what koatty will load).
function verify(name) {
  const { dir, serve } = APPS[name];
  const problems = [];
  const r = spawnSync(NPM, ['ls', 'koatty_core', 'koatty_serve', '--json'], { cwd: dir, encoding: 'utf8' });
  let tree = {};
  try { tree = JSON.parse(r.stdout || '{}'); } catch { problems.push('`npm ls` printed no JSON'); }
  const kDeps = (((tree.dependencies || {}).koatty || {}).dependencies) || {};
  const npmLsCore = kDeps.koatty_core && kDeps.koatty_core.version;
  if (!npmLsCore || !/^1\.11\./.test(npmLsCore)) problems.push(`npm ls: koatty's koatty_core is ${npmLsCore || 'missing'}, expected 1.11.x`);

  const koattyDir = path.join(dir, 'node_modules', 'koatty');
  let koatty, core, servePath, serveVersion;
  try {
    koatty = pkgVersionAt(koattyDir);
    const coreEntry = require.resolve('koatty_core', { paths: [koattyDir] });
    core = pkgVersionAt(coreEntry.slice(0, coreEntry.lastIndexOf(path.sep + 'koatty_core' + path.sep) + '/koatty_core'.length));
    // resolve the package folder, not its entry (the native entry may not be built yet)
    const link = [path.join(koattyDir, 'node_modules', 'koatty_serve'), path.join(dir, 'node_modules', 'koatty_serve')].find((p) => fs.existsSync(p));
    if (!link) throw new Error('koatty_serve is not installed');
    servePath = fs.realpathSync(link);
    serveVersion = pkgVersionAt(servePath);
  } catch (e) {
    problems.push('resolution failed: ' + e.message);
  }
  if (koatty !== '3.11.8') problems.push(`koatty is ${koatty}, expected 3.11.8`);
  if (core && !/^1\.11\./.test(core)) problems.push(`koatty resolves koatty_core ${core}, expected 1.11.x`);
  if (serve === 'js' && serveVersion !== '2.3.0') problems.push(`koatty resolves koatty_serve ${serveVersion} at ${servePath}, expected 2.3.0`);
  if (serve === 'native' && servePath !== fs.realpathSync(ROOT)) problems.push(`koatty resolves koatty_serve at ${servePath}, expected this repo (${ROOT})`);
  return { name, ok: problems.length === 0, problems, koatty, koattyCore: core, npmLsKoattyCore: npmLsCore, koattyServe: { path: servePath, version: serveVersion } };
}

// Used by run.js: install (unless install=false), copy the app, verify.
function ensureApps(names, { install: doInstall = true, force = false } = {}) {
  const out = {};
  for (const name of names) {
    try {
      if (doInstall) install(name, { force });
      else if (!isInstalled(APPS[name].dir)) {
        out[name] = { name, ok: false, problems: [`not installed; run: node bench/setup.js`] };
        continue;
      }
      syncApp(name);
      out[name] = verify(name);
    } catch (e) {
      out[name] = { name, ok: false, problems: [e.message] };
    }
  }
  return out;
}

module.exports = { ensureApps, APPS };

if (require.main === module) {
  const force = process.argv.includes('--force');
  const res = ensureApps(Object.keys(APPS), { force });
  let bad = 0;
  for (const r of Object.values(res)) {
    if (r.ok) log(`${r.name}: OK koatty ${r.koatty}, koatty_core ${r.koattyCore} (npm ls: ${r.npmLsKoattyCore}), koatty_serve ${r.koattyServe.version} at ${r.koattyServe.path}`);
    else { bad++; log(`${r.name}: PROBLEM: ${r.problems.join('; ')}`); }
  }
  process.exit(bad ? 1 : 0);
}
