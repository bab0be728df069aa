'use strict';
// Installs the Koatty fixture app's dependencies (koatty@3.11.8, reflect-metadata, and this repository
// as `koatty_serve` through npm `overrides`). Idempotent: returns at once when node_modules is already
// in the state package.json asks for. Runs non-interactively (CI=true, no stdin).
// The install and its checks live in scripts/koatty-app-install.js (shared with examples/setup.js).
//
// Usage: node __test__/setup.js [--force]
const fs = require('fs');
const path = require('path');
const { ensureKoattyAppOrExit, REPO_ROOT } = require('../scripts/koatty-app-install');

ensureKoattyAppOrExit({
  appDir: path.join(__dirname, 'fixtures', 'koatty-app'),
  stampName: '.koatty-test-setup.json',
  what: 'Koatty fixture app',
  tag: '[setup]',
  fingerprintFiles: ['package.json'],
});

// A hint, not a failure: the tests need the addon built (npm run build / build:debug).
const hasAddon = fs.readdirSync(REPO_ROOT).some((f) => f.endsWith('.node'))
  || (fs.existsSync(path.join(REPO_ROOT, 'npm')) && fs.readdirSync(path.join(REPO_ROOT, 'npm'))
    .some((d) => { try { return fs.readdirSync(path.join(REPO_ROOT, 'npm', d)).some((f) => f.endsWith('.node')); } catch { return false; } }));
if (!hasAddon) console.warn('[setup] warning: no built .node addon found; run `npm run build:debug` first');
