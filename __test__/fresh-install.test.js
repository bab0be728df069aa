'use strict';
// Fresh install: the package as npm users get it. Packs the root (`npm pack --ignore-scripts`) and the
// linux-x64-gnu platform package (npm/linux-x64-gnu with the built binary copied in, staged in a temp
// directory), installs both tarballs into a new temporary project (offline: they need nothing from a
// registry), and checks there that the tarball holds only what users need, that `require` loads the
// binary from the platform package (never from this repository), that an HttpServer serves, that ESM
// named imports work, that a strict TypeScript consumer of every export compiles against the installed
// typings, and that without the platform package the loader throws ERR_KOATTY_SERVE_NATIVE_MISSING.
// Everything that loads the package runs in a child process whose cwd is the temporary project.
//
// Skipped when the binary has not been built. KOATTY_SERVE_KEEP_FRESH_INSTALL=1 keeps the temp dir.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { packPlatform } = require('../scripts/pack-platform');

const REPO_ROOT = fs.realpathSync(path.join(__dirname, '..'));
const PKG = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
const BINARY_NAME = PKG.napi.binaryName;
const PLATFORM = 'linux-x64-gnu';
const PLATFORM_PKG = `${BINARY_NAME}-${PLATFORM}`;
const BINARY_FILE = `${BINARY_NAME}.${PLATFORM}.node`;
const BINARY = path.join(REPO_ROOT, BINARY_FILE);
const TSC = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsc');
const TYPESCRIPT = path.join(REPO_ROOT, 'node_modules', 'typescript');
const TYPE_ROOTS = path.join(REPO_ROOT, 'node_modules', '@types');
const TS_CONSUMER = path.join(__dirname, 'ts-consumer', 'index.ts');

const SKIP = fs.existsSync(BINARY)
  ? false
  : `no built binary at ${BINARY}: run \`npm run build\` (or build:debug) to test a fresh install`;

// What the published root tarball may contain (paths inside the package), and what it must contain.
const ALLOWED = [
  /^index\.js$/, /^index\.d\.ts$/, /^config\.js$/, /^config\.d\.ts$/, /^binding\.js$/, /^package\.json$/,
  /^js\/.+\.js$/, /^README(\.md)?$/i, /^LICEN[CS]E(\.\w+)?$/i, /^CHANGELOG\.md$/i,
];
const REQUIRED = ['index.js', 'index.d.ts', 'config.js', 'config.d.ts', 'binding.js', 'package.json', 'README.md',
  ...fs.readdirSync(path.join(REPO_ROOT, 'js')).filter((f) => f.endsWith('.js')).map((f) => `js/${f}`)];
const NEVER = /^(src|crates|__test__|bench|target|npm|examples|scripts|\.ci|node_modules)\/|\.node$|^Cargo\.|^build\.rs$/;

/** Environment for npm and node children: no native-library override, nothing from this repo's npm run. */
function childEnv(extra = {}) {
  const env = { ...process.env, CI: 'true', ...extra };
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  delete env.NODE_PATH;
  for (const key of Object.keys(env)) {
    if (/^npm_(lifecycle|package)_/.test(key) || /^npm_config_(local|global)_prefix$/.test(key)) delete env[key];
  }
  return env;
}

function run(cmd, args, { cwd, timeout = 30000, env = childEnv(), input } = {}) {
  const r = spawnSync(cmd, args, { cwd, env, input, encoding: 'utf8', timeout, maxBuffer: 16 << 20 });
  if (r.error) throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, output: `${r.stdout}${r.stderr}` };
}

/** Runs `code` with node in `cwd` and returns the JSON object it prints on its last stdout line. */
function nodeJson(cwd, code, { args = [], timeout = 20000, env } = {}) {
  const r = run(process.execPath, [...args, '-e', code], { cwd, timeout, env });
  const what = `node in ${cwd} (exit ${r.status}, signal ${r.signal})`;
  assert.equal(r.signal, null, `${what} was killed after ${timeout} ms: it did not exit on its own\n${r.output}`);
  assert.equal(r.status, 0, `${what} failed\n${r.output}`);
  const last = r.stdout.trim().split('\n').pop();
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`${what} printed no JSON result\n${r.output}`);
  }
}

function listFiles(dir, base = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? listFiles(full, base) : [path.relative(base, full).split(path.sep).join('/')];
  });
}

const isInside = (file, dir) => {
  const rel = path.relative(dir, file);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
};

/** Names a .d.ts exports with an explicit `export` (and, separately, the ones exported only implicitly). */
function declaredExports(dtsFile) {
  const ts = require(TYPESCRIPT);
  const program = ts.createProgram([dtsFile], { noEmit: true, types: ['node'], typeRoots: [TYPE_ROOTS] });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(dtsFile));
  const explicit = [];
  const implicit = [];
  const values = [];
  for (const sym of checker.getExportsOfModule(moduleSymbol)) {
    const decls = sym.declarations || [];
    const exported = decls.some((d) => (ts.getCombinedModifierFlags(d) & ts.ModifierFlags.Export) !== 0);
    (exported ? explicit : implicit).push(sym.name);
    if (exported && sym.flags & ts.SymbolFlags.Value) values.push(sym.name);
  }
  return { explicit: explicit.sort(), implicit: implicit.sort(), values: values.sort() };
}

/** Names imported from `moduleName` in a TypeScript file (import { A, type B } and import type { C }). */
function importedNames(tsFile, moduleName) {
  const ts = require(TYPESCRIPT);
  const sf = ts.createSourceFile(tsFile, fs.readFileSync(tsFile, 'utf8'), ts.ScriptTarget.Latest, true);
  const names = new Set();
  for (const stmt of sf.statements) {
    if (!ts.isImportDeclaration(stmt) || stmt.moduleSpecifier.text !== moduleName) continue;
    const bindings = stmt.importClause && stmt.importClause.namedBindings;
    if (bindings && ts.isNamedImports(bindings)) {
      for (const el of bindings.elements) names.add((el.propertyName || el.name).text);
    }
  }
  return [...names].sort();
}

describe('fresh install from the packed tarballs', { skip: SKIP }, () => {
  let tmp;
  let packs;
  let appDir;
  let installedRoot;
  let installedPlatform;
  let rootPack;
  let platformPack;
  let binarySize;

  before(() => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-serve-fresh-install-')));
    packs = path.join(tmp, 'packs');
    fs.mkdirSync(packs);

    // The root package, exactly as `npm publish` would pack it (without the prepare build).
    const r = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packs], { cwd: REPO_ROOT, timeout: 60000 });
    assert.equal(r.status, 0, `npm pack of the root failed\n${r.output}`);
    const [info] = JSON.parse(r.stdout);
    rootPack = { tarball: path.join(packs, info.filename), files: info.files.map((f) => f.path) };

    // The platform package with the built binary (npm/ itself is never written to).
    binarySize = fs.statSync(BINARY).size;
    platformPack = packPlatform({ platform: PLATFORM, binary: BINARY, dest: packs, env: childEnv() });

    appDir = path.join(tmp, 'app');
    fs.mkdirSync(appDir);
    fs.writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({
      name: 'koatty-serve-fresh-install', version: '1.0.0', private: true, description: 'fresh-install test', license: 'MIT',
    }, null, 2));
    const installArgs = ['install', '--no-audit', '--no-fund', '--ignore-scripts', rootPack.tarball, platformPack.tarball];
    // Offline first: the tarballs need nothing from a registry (optional dependencies on other
    // platforms' packages are skipped). Fall back to the cache-then-network mode if npm disagrees.
    let install = run('npm', [...installArgs, '--offline'], { cwd: appDir, timeout: 60000 });
    if (install.status !== 0) install = run('npm', [...installArgs, '--prefer-offline'], { cwd: appDir, timeout: 60000 });
    assert.equal(install.status, 0, `npm install of the tarballs failed\n${install.output}`);
    installedRoot = path.join(appDir, 'node_modules', PKG.name);
    installedPlatform = path.join(appDir, 'node_modules', PLATFORM_PKG);
  });

  after(() => {
    if (!tmp) return;
    if (process.env.KOATTY_SERVE_KEEP_FRESH_INSTALL) console.log(`fresh install kept in ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the root tarball holds only what users need (no sources, tests, benchmarks or binaries)', () => {
    const installed = listFiles(installedRoot).sort();
    assert.deepEqual(installed, [...rootPack.files].sort(), 'the installed package is the tarball');
    const never = installed.filter((f) => NEVER.test(f));
    assert.deepEqual(never, [], `files users never need: ${never.join(', ')}`);
    const unexpected = installed.filter((f) => !ALLOWED.some((re) => re.test(f)));
    assert.deepEqual(unexpected, [], `files outside the allowed set: ${unexpected.join(', ')}`);
    const missing = REQUIRED.filter((f) => !installed.includes(f));
    assert.deepEqual(missing, [], `files users need but the tarball lacks: ${missing.join(', ')}`);

    // Every entry point the manifest names is in the tarball.
    const manifest = JSON.parse(fs.readFileSync(path.join(installedRoot, 'package.json'), 'utf8'));
    assert.equal(manifest.version, PKG.version);
    const targets = [manifest.main, manifest.types];
    for (const entry of Object.values(manifest.exports)) {
      targets.push(...(typeof entry === 'string' ? [entry] : Object.values(entry)));
    }
    for (const t of targets) assert.ok(installed.includes(path.posix.normalize(t)), `${t} (named in package.json) is in the tarball`);
  });

  it(`the platform tarball holds ${BINARY_FILE}, and its version matches the root package`, () => {
    assert.deepEqual([...platformPack.files].sort(), [BINARY_FILE, 'README.md', 'package.json'].sort());
    const manifest = JSON.parse(fs.readFileSync(path.join(installedPlatform, 'package.json'), 'utf8'));
    assert.equal(manifest.name, PLATFORM_PKG);
    assert.equal(manifest.version, PKG.version, 'the loader expects the platform package at the root version');
    assert.equal(manifest.main, BINARY_FILE);
    assert.equal(fs.statSync(path.join(installedPlatform, BINARY_FILE)).size, binarySize);
  });

  it('require() loads the binary from the installed platform package, never from this repository', () => {
    const result = nodeJson(appDir, `
      const serve = require(${JSON.stringify(PKG.name)});
      console.log(JSON.stringify({
        main: require.resolve(${JSON.stringify(PKG.name)}),
        platform: require.resolve(${JSON.stringify(PLATFORM_PKG)}),
        loaded: Object.keys(require.cache),
        info: serve.runtimeInfo(),
      }));`);
    assert.equal(result.main, path.join(installedRoot, 'index.js'));
    assert.equal(result.platform, path.join(installedPlatform, BINARY_FILE));
    const natives = result.loaded.filter((f) => f.endsWith('.node'));
    assert.deepEqual(natives, [path.join(installedPlatform, BINARY_FILE)], 'the one native module loaded is the platform package\'s');
    const fromRepo = result.loaded.filter((f) => isInside(f, REPO_ROOT));
    assert.deepEqual(fromRepo, [], 'no module is loaded from the repository');
    assert.ok(result.loaded.every((f) => isInside(f, appDir)), `every module comes from the temp project:\n${result.loaded.join('\n')}`);
    assert.equal(result.info.native, true);
    assert.equal(result.info.version, PKG.version);
  });

  it('an HttpServer starts on port 0, answers 200, stops, and the process exits by itself', () => {
    const result = nodeJson(appDir, `
      const http = require('http');
      const { HttpServer } = require(${JSON.stringify(PKG.name)});
      const app = { callback: () => (req, res) => {
        res.setHeader('Content-Type', 'text/plain');
        res.end('fresh ' + req.method + ' ' + req.url);
      } };
      const server = new HttpServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'http' });
      server.on('error', (err) => { console.error('server error', err); process.exit(2); });
      server.Start(() => {
        const { port } = server.server.address();
        http.get({ host: '127.0.0.1', port, path: '/hello?x=1', agent: false }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d) => { body += d; });
          res.on('end', () => {
            const t0 = Date.now();
            server.Stop(() => console.log(JSON.stringify({
              port, status: res.statusCode, body, type: res.headers['content-type'],
              listening: server.server.listening, stopMs: Date.now() - t0, ctor: server.constructor.name,
            })));
          });
        }).on('error', (err) => { console.error('client error', err); process.exit(3); });
      });`, { timeout: 20000 });
    assert.ok(Number.isInteger(result.port) && result.port > 0, `bound port ${result.port}`);
    assert.equal(result.status, 200);
    assert.equal(result.body, 'fresh GET /hello?x=1');
    assert.equal(result.type, 'text/plain');
    assert.equal(result.ctor, 'HttpServer');
    assert.equal(result.listening, false, 'the listener is closed after Stop');
  });

  it("ESM: import('koatty_serve') and static named imports give every export", () => {
    const cjs = nodeJson(appDir, `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(PKG.name)})).sort()))`);
    const esm = nodeJson(appDir, `
      import { NewServe, HttpServer, ConfigHelper, runtimeInfo } from ${JSON.stringify(PKG.name)};
      import { ConfigHelper as FromConfig } from ${JSON.stringify(`${PKG.name}/config`)};
      const ns = await import(${JSON.stringify(PKG.name)});
      console.log(JSON.stringify({
        named: Object.keys(ns).filter((k) => k !== 'default').sort(),
        types: [typeof NewServe, typeof HttpServer, typeof ConfigHelper.createHttpConfig, typeof FromConfig.createHttpConfig],
        sameHelper: ConfigHelper === FromConfig,
        sameClass: ns.HttpServer === HttpServer,
        native: runtimeInfo().native,
      }));`, { args: ['--input-type=module'] });
    assert.deepEqual(esm.named, cjs, 'every CommonJS export is an ESM named export');
    assert.deepEqual(esm.types, ['function', 'function', 'function', 'function']);
    assert.equal(esm.sameHelper, true);
    assert.equal(esm.sameClass, true);
    assert.equal(esm.native, true);
  });

  it('the TypeScript consumer imports every export of index.d.ts, and the runtime exports match the typings', (t) => {
    const declared = declaredExports(path.join(installedRoot, 'index.d.ts'));
    const imported = importedNames(TS_CONSUMER, PKG.name);
    const notUsed = declared.explicit.filter((n) => !imported.includes(n));
    assert.deepEqual(notUsed, [], `exports of index.d.ts that __test__/ts-consumer/index.ts does not import: ${notUsed.join(', ')}`);
    const unknown = imported.filter((n) => !declared.explicit.includes(n));
    assert.deepEqual(unknown, [], `imported but not exported: ${unknown.join(', ')}`);
    if (declared.implicit.length) {
      t.diagnostic(`index.d.ts exports without the export keyword (a .d.ts without \`export {}\` exports every declaration): ${declared.implicit.join(', ')}`);
    }
    const runtime = nodeJson(appDir, `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(PKG.name)})).sort()))`);
    assert.deepEqual(runtime, declared.values, 'the values index.js exports are the ones index.d.ts declares');
  });

  it('a strict TypeScript consumer of every export compiles against the installed typings', () => {
    assert.ok(fs.existsSync(TSC), `typescript is installed at ${TSC} (npm install in the repository)`);
    const dir = path.join(appDir, 'ts-consumer');
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(TS_CONSUMER, path.join(dir, 'index.ts'));
    // A second, small consumer compiled as an ES module (.mts): the `exports` map's types under `import`.
    fs.writeFileSync(path.join(dir, 'esm.mts'), [
      `import { HttpServer, ConfigHelper, type ShutdownReport } from '${PKG.name}';`,
      `import { ConfigHelper as FromConfig, type HttpServerOptions } from '${PKG.name}/config';`,
      'const options: HttpServerOptions = FromConfig.createHttpConfig({ port: 0 });',
      'const server = new HttpServer({ callback: () => (_req: unknown, res: { end(body: string): void }) => res.end("ok") }, options);',
      'export async function stop(): Promise<ShutdownReport> {',
      '  server.Start();',
      '  return server.gracefulShutdown({ drainDelay: 0 });',
      '}',
      'export const sameHelper: boolean = ConfigHelper === FromConfig;',
      '',
    ].join('\n'));
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'node16',
        moduleResolution: 'node16',
        strict: true,
        noEmit: true,
        esModuleInterop: true,
        noUnusedLocals: true,
        // The installed package's own .d.ts files are checked too.
        skipLibCheck: false,
        // @types/node from the repository's devDependencies (the temp project has no node_modules/@types).
        typeRoots: [TYPE_ROOTS],
        types: ['node'],
      },
      files: ['index.ts', 'esm.mts'],
    }, null, 2));
    const r = run(TSC, ['--strict', '--noEmit', '-p', 'ts-consumer', '--listFiles', '--pretty', 'false'], { cwd: appDir, timeout: 60000 });
    assert.equal(r.status, 0, `tsc failed in ${dir}\n${r.output}`);
    const files = r.stdout.split('\n').map((l) => l.trim()).filter((l) => path.isAbsolute(l)).map((f) => path.resolve(f));
    for (const dts of ['index.d.ts', 'config.d.ts']) {
      assert.ok(files.includes(path.join(installedRoot, dts)), `${dts} comes from the installed package:\n${files.join('\n')}`);
    }
    const fromRepo = files.filter((f) => isInside(f, REPO_ROOT) && !isInside(f, path.join(REPO_ROOT, 'node_modules')));
    assert.deepEqual(fromRepo, [], 'no typings are taken from the repository itself');
  });

  it('without the platform package, require() throws ERR_KOATTY_SERVE_NATIVE_MISSING', () => {
    // A second project holding only the root package (as after an install that skipped the optional
    // platform dependency).
    const bare = path.join(tmp, 'bare');
    fs.mkdirSync(path.join(bare, 'node_modules'), { recursive: true });
    fs.writeFileSync(path.join(bare, 'package.json'), JSON.stringify({ name: 'koatty-serve-bare', version: '1.0.0', private: true }));
    fs.cpSync(installedRoot, path.join(bare, 'node_modules', PKG.name), { recursive: true });
    const result = nodeJson(bare, `
      try {
        require(${JSON.stringify(PKG.name)});
        console.log(JSON.stringify({ loaded: true }));
      } catch (err) {
        const causes = [];
        for (let c = err.cause; c && causes.length < 20; c = c.cause) causes.push(String(c.message));
        console.log(JSON.stringify({ loaded: false, isError: err instanceof Error, code: err.code, message: err.message, causes }));
      }`);
    assert.equal(result.loaded, false, 'the package must not load without a binary');
    assert.equal(result.isError, true);
    assert.equal(result.code, 'ERR_KOATTY_SERVE_NATIVE_MISSING');
    assert.match(result.message, new RegExp(`${process.platform}-${process.arch}`), 'the message names the platform');
    assert.match(result.message, /platform package/);
    assert.ok(result.causes.some((m) => m.includes(PLATFORM_PKG)), `the cause chain names ${PLATFORM_PKG}:\n${result.causes.join('\n')}`);
  });
});
