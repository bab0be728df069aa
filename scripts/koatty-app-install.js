'use strict';
// Shared installer for the Koatty sub-packages that link this repository as `koatty_serve` through npm
// `overrides` (__test__/fixtures/koatty-app, examples/koatty-demo). Each needs koatty@3.11.8 (which brings
// koatty_core 1.11.x), reflect-metadata, and koatty_serve resolved to this repository, both from the app
// and from koatty itself.
//
// ensureKoattyApp() is idempotent: when node_modules holds a stamp whose fingerprint matches and every
// check passes, it returns at once; otherwise it runs `npm install` non-interactively (CI=true, no stdin),
// writes the stamp and checks again. It throws on failure (err.exitCode carries npm's exit status when
// npm itself failed); the callers print the message and exit.
//
// bench/setup.js does not use this: its koatty-js variant must resolve the published koatty_serve 2.3.0,
// and it verifies through `npm ls` with a different stamp.
const { spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');

function readJson(file) {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')); } catch { return null; }
}

function realpath(p) {
  try { return fs.realpathSync(p); } catch { return null; }
}

// fingerprintFiles: names inside appDir, hashed in order. A plain string must exist; { file, optional: true }
// is skipped while absent (e.g. a package-lock.json that npm has not written yet).
function normalizeFiles(fingerprintFiles) {
  return fingerprintFiles.map((f) => (typeof f === 'string' ? { file: f, optional: false } : { optional: false, ...f }));
}

function fingerprint(appDir, repoRoot, files) {
  const hash = crypto.createHash('sha256');
  for (const { file, optional } of files) {
    if (!optional) hash.update(fs.readFileSync(path.join(appDir, file)));
    else {
      try { hash.update(fs.readFileSync(path.join(appDir, file))); } catch { /* not there yet */ }
    }
  }
  // The linked package's own dependency lists matter too (npm installs them for the link).
  const root = readJson(path.join(repoRoot, 'package.json')) || {};
  hash.update(JSON.stringify([root.dependencies, root.optionalDependencies, root.peerDependencies]));
  hash.update(process.version.split('.')[0]);
  return hash.digest('hex');
}

// Returns null when the install is usable, else the reason it is not.
function problem({ appDir, repoRoot, stampFile, files }) {
  const nm = path.join(appDir, 'node_modules');
  const stamp = readJson(stampFile);
  if (!stamp) return 'not installed yet';
  if (stamp.fingerprint !== fingerprint(appDir, repoRoot, files)) {
    return `${files.map((f) => f.file).join(' or ')} changed since the last install`;
  }
  const koatty = readJson(path.join(nm, 'koatty', 'package.json'));
  if (!koatty || koatty.version !== '3.11.8') return `koatty is ${koatty ? koatty.version : 'missing'}, want 3.11.8`;
  if (!readJson(path.join(nm, 'reflect-metadata', 'package.json'))) return 'reflect-metadata missing';
  const core = readJson(path.join(nm, 'koatty_core', 'package.json'));
  if (!core || !/^1\.11\./.test(core.version)) return `koatty_core is ${core ? core.version : 'missing'}, want 1.11.x`;
  const repo = realpath(repoRoot);
  if (realpath(path.join(nm, 'koatty_serve')) !== repo) return 'node_modules/koatty_serve is not a link to this repository';
  // What koatty itself resolves for `require('koatty_serve')` (the overrides must point it here too).
  let fromKoatty = null;
  try {
    fromKoatty = path.dirname(require.resolve('koatty_serve/package.json', { paths: [path.join(nm, 'koatty')] }));
  } catch { /* not resolvable */ }
  if (realpath(fromKoatty) !== repo) return `koatty resolves koatty_serve to ${fromKoatty}, not this repository`;
  return null;
}

function npmInstall(appDir, tag) {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  // --ignore-scripts: the linked repository's `prepare` would otherwise start a cargo build.
  const args = ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'];
  console.log(`${tag} npm ${args.join(' ')} (in ${path.relative(process.cwd(), appDir) || '.'})`);
  const r = spawnSync(npm, args, {
    cwd: appDir,
    // Node refuses to spawn a .cmd file without a shell (CVE-2024-27980); the arguments hold no spaces.
    shell: process.platform === 'win32',
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CI: 'true', npm_config_yes: 'true', npm_config_update_notifier: 'false' },
  });
  if (r.error) throw Object.assign(new Error(`cannot run npm: ${r.error.message}`), { cause: r.error });
  if (r.status !== 0) throw Object.assign(new Error(`npm install failed with status ${r.status}`), { exitCode: r.status || 1 });
}

/**
 * Makes appDir's node_modules usable (see the top of this file), installing only when needed.
 *
 * @param {object} opts
 * @param {string} opts.appDir            the sub-package folder (holds package.json)
 * @param {string} opts.stampName         stamp file name, written to appDir/node_modules
 * @param {string} opts.what              what is installed, for messages ("demo", "Koatty fixture app")
 * @param {string} [opts.tag]             log prefix, e.g. "[setup]"
 * @param {Array<string|{file: string, optional?: boolean}>} [opts.fingerprintFiles]  default ['package.json']
 * @param {boolean} [opts.force]          reinstall even when up to date
 * @param {string} [opts.repoRoot]        the repository koatty_serve must link to (default: this one)
 * @returns {{ installed: boolean, reason: string|null }}  reason: why it (re)installed; null when up to date
 * @throws {Error} when npm fails (err.exitCode = npm's status) or the install is still not usable after it
 */
function ensureKoattyApp({
  appDir, stampName, what, tag = '[setup]', fingerprintFiles = ['package.json'], force = false, repoRoot = REPO_ROOT,
}) {
  if (!appDir || !stampName || !what) throw new TypeError('ensureKoattyApp: appDir, stampName and what are required');
  const state = { appDir, repoRoot, stampFile: path.join(appDir, 'node_modules', stampName), files: normalizeFiles(fingerprintFiles) };
  const before = force ? 'forced' : problem(state);
  if (!before) {
    console.log(`${tag} ${what} dependencies are up to date`);
    return { installed: false, reason: null };
  }
  console.log(`${tag} installing the ${what}'s dependencies: ${before}`);
  npmInstall(appDir, tag);
  fs.writeFileSync(state.stampFile, JSON.stringify({ fingerprint: fingerprint(appDir, repoRoot, state.files), at: new Date().toISOString() }) + '\n');
  const after = problem(state);
  if (after) throw new Error(`the ${what} install is still not usable: ${after}`);
  return { installed: true, reason: before };
}

// For the setup scripts run from the command line: ensureKoattyApp with --force from argv; on failure,
// prints the error under the tag and exits with npm's status (or 1).
function ensureKoattyAppOrExit(opts) {
  try {
    return ensureKoattyApp({ force: process.argv.includes('--force'), ...opts });
  } catch (err) {
    console.error(`${opts.tag || '[setup]'} ${err && err.message || err}`);
    process.exit(err && err.exitCode || 1);
  }
}

module.exports = { ensureKoattyApp, ensureKoattyAppOrExit, REPO_ROOT };
