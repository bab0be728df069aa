#!/usr/bin/env node
'use strict';
// Packs a napi-rs platform package (npm/<platform>) with its built binary, without writing into npm/:
// the package directory is copied to a temporary staging directory, the `.node` file copied in, and
// `npm pack --ignore-scripts` run there. Used by __test__/fresh-install.test.js; handy to try a
// platform tarball by hand before `napi prepublish` publishes the real ones.
//
// Usage: node scripts/pack-platform.js [--platform linux-x64-gnu] [--binary <file.node>] [--dest <dir>]
//   --platform  the npm/<platform> directory (default: this machine's, e.g. linux-x64-gnu)
//   --binary    the built addon (default: ./koatty_serve.<platform>.node in the repository root)
//   --dest      where the .tgz goes (default: the current directory)
// Prints the tarball's absolute path.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');
const ROOT_PKG = require(path.join(REPO_ROOT, 'package.json'));
const BINARY_NAME = (ROOT_PKG.napi && ROOT_PKG.napi.binaryName) || ROOT_PKG.name;

/** This machine's napi-rs platform name (linux-x64-gnu, linux-arm64-musl, darwin-arm64, win32-x64-msvc, …). */
function currentPlatform() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null;
    const glibc = Boolean(report && report.header && report.header.glibcVersionRuntime);
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/**
 * Packs npm/<platform> with `binary` copied in. Returns { tarball, files } (files: paths inside the
 * tarball, from `npm pack --json`). Throws with npm's output when packing fails.
 */
function packPlatform({ platform = currentPlatform(), binary, dest = process.cwd(), env = process.env } = {}) {
  const pkgDir = path.join(REPO_ROOT, 'npm', platform);
  const pkgJsonPath = path.join(pkgDir, 'package.json');
  if (!fs.existsSync(pkgJsonPath)) throw new Error(`no platform package at ${pkgDir}`);
  const pkg = JSON.parse(fs.readFileSync(pkgJsonPath, 'utf8'));
  const fileName = `${BINARY_NAME}.${platform}.node`;
  const source = binary || path.join(REPO_ROOT, fileName);
  if (!fs.existsSync(source)) throw new Error(`no built binary at ${source} (run \`npm run build\`)`);
  if (pkg.version !== ROOT_PKG.version) {
    throw new Error(`${pkg.name}@${pkg.version} does not match ${ROOT_PKG.name}@${ROOT_PKG.version}; the loader expects equal versions`);
  }
  if (pkg.main !== fileName) throw new Error(`${pkgJsonPath}: main is ${pkg.main}, expected ${fileName}`);

  fs.mkdirSync(dest, { recursive: true });
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), `koatty-serve-${platform}-`));
  try {
    fs.cpSync(pkgDir, staging, { recursive: true });
    fs.copyFileSync(source, path.join(staging, fileName));
    const r = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', path.resolve(dest)], {
      cwd: staging,
      env,
      encoding: 'utf8',
      timeout: 60000,
    });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`npm pack of ${pkg.name} exited ${r.status}\n${r.stdout}\n${r.stderr}`);
    const [info] = JSON.parse(r.stdout);
    return { tarball: path.resolve(dest, info.filename), files: info.files.map((f) => f.path) };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

module.exports = { packPlatform, currentPlatform };

if (require.main === module) {
  const args = process.argv.slice(2);
  const opts = {};
  for (let i = 0; i < args.length; i++) {
    const key = args[i].replace(/^--/, '');
    if (!['platform', 'binary', 'dest'].includes(key) || i + 1 >= args.length) {
      console.error('usage: node scripts/pack-platform.js [--platform <name>] [--binary <file.node>] [--dest <dir>]');
      process.exit(2);
    }
    opts[key] = args[++i];
  }
  try {
    console.log(packPlatform(opts).tarball);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
