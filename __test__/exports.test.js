'use strict';
// The module surface: CommonJS and ESM named exports (Koatty's ESM build does
// `import { NewServe } from 'koatty_serve'`, contract §1.1), the `koatty_serve/config` subpath,
// and runtimeInfo().
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('child_process');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');

describe('module exports', () => {
  it('CommonJS: server classes, NewServe, ConfigHelper (root and koatty_serve/config), runtimeInfo', () => {
    const serve = require('..');
    for (const name of ['HttpServer', 'NewServe', 'ConfigHelper', 'runtimeInfo']) {
      assert.ok(serve[name], `exports.${name}`);
    }
    assert.equal(typeof serve.HttpServer, 'function');
    assert.equal(typeof serve.NewServe, 'function');
    assert.equal(typeof serve.ConfigHelper.createHttpConfig, 'function');
    const { ConfigHelper } = require('../config');
    assert.equal(typeof ConfigHelper.createHttpConfig, 'function');
  });

  it('runtimeInfo() says native, with a build profile and worker threads', () => {
    const info = require('..').runtimeInfo();
    assert.equal(info.native, true);
    assert.ok(['release', 'debug'].includes(info.buildProfile), `buildProfile ${info.buildProfile}`);
    assert.ok(Number.isInteger(info.workerThreads) && info.workerThreads >= 1, `workerThreads ${info.workerThreads}`);
  });

  it('ESM: named imports from koatty_serve and koatty_serve/config work', () => {
    const code = [
      "import { NewServe, HttpServer, ConfigHelper } from 'koatty_serve';",
      "import { ConfigHelper as FromConfig } from 'koatty_serve/config';",
      'console.log(JSON.stringify([typeof NewServe, typeof HttpServer, typeof ConfigHelper.createHttpConfig, typeof FromConfig.createHttpConfig]));',
    ].join('\n');
    // cwd inside the package: 'koatty_serve' resolves to this repository by package self-reference.
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 0, `node exited ${r.status}\n${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()), ['function', 'function', 'function', 'function']);
  });
});

describe('option names are checked (decisions.md §4, §9)', () => {
  const serve = require('..');
  const app = { callback: () => (_req, res) => res.end('ok') };
  const rejects = (fn, key) => assert.throws(fn, (e) => e.code === 'ERR_INVALID_CONFIG' && e.message.includes(key), key);

  it('server constructors reject misspelt keys at every level, naming the key', () => {
    rejects(() => new serve.HttpServer(app, { hostname: '127.0.0.1', port: 0, prot: 'http' }), 'prot');
    rejects(() => new serve.HttpServer(app, { port: 0, connectionPool: { maxConnection: 5 } }), 'connectionPool.maxConnection');
    rejects(() => new serve.HttpServer(app, { port: 0, connectionPool: { health: { degradedUtilization: 0.5 } } }), 'connectionPool.health.degradedUtilization');
    rejects(() => new serve.Http2Server(app, { port: 0, h2c: true, connectionPool: { protocolSpecific: { maxConcurrentStream: 5 } } }), 'connectionPool.protocolSpecific.maxConcurrentStream');
    rejects(() => new serve.HttpsServer(app, { port: 0, ssl: { mode: 'auto', keyfile: 'x' } }), 'ssl.keyfile');
  });

  it('ConfigHelper rejects a misspelt health threshold too', () => {
    rejects(() => serve.ConfigHelper.createHttpConfig({ connectionPool: { health: { overloadedErrorrate: 0.3 } } }), 'connectionPool.health.overloadedErrorrate');
    const ok = serve.ConfigHelper.createHttpConfig({ connectionPool: { health: { overloadedErrorRate: 0.3 } } });
    assert.equal(ok.connectionPool.health.overloadedErrorRate, 0.3);
  });

  it('health thresholds are checked by value too (a string threshold or a window of -5 s was reported back as given)', () => {
    rejects(() => new serve.HttpServer(app, { port: 0, connectionPool: { health: { degradedErrorRate: 'a' } } }), 'connectionPool.health.degradedErrorRate: must be a non-negative number');
    rejects(() => serve.ConfigHelper.createHttpConfig({ connectionPool: { health: { windowSeconds: -5 } } }), 'connectionPool.health.windowSeconds');
    rejects(() => serve.ConfigHelper.createHttpConfig({ connectionPool: { health: { windowSeconds: { a: 1 } } } }), 'connectionPool.health.windowSeconds');
    assert.equal(serve.ConfigHelper.createHttpConfig({ connectionPool: { health: { windowSeconds: 300, overloadedLatencyMs: 0 } } }).connectionPool.health.windowSeconds, 300);
  });

  it('NaN and Infinity are refused by name, not taken as "not set" (a NaN port bound the default port)', () => {
    rejects(() => serve.ConfigHelper.createHttpConfig({ port: NaN }), 'port: must be a finite number');
    rejects(() => new serve.HttpServer(app, { port: Number('nope') }), 'port: must be a finite number');
    rejects(() => new serve.HttpServer(app, { port: 0, connectionPool: { keepAliveTimeout: Infinity } }), 'connectionPool.keepAliveTimeout');
    rejects(() => serve.ConfigHelper.createWebSocketConfig({ connectionPool: { protocolSpecific: { maxPayload: -Infinity } } }), 'connectionPool.protocolSpecific.maxPayload');
  });

  it('NewServe stays lenient (2.3.0 semantics): undefined hostname/port and an unknown protocol still construct', () => {
    const server = serve.NewServe({ ...app, config: () => undefined }, { hostname: undefined, port: undefined, protocol: 'bogus' });
    assert.equal(server.constructor.name, 'HttpServer');
    assert.equal(server.options.protocol, 'bogus');
    server.gracefulShutdown({ timeout: 100, drainDelay: 0 });
  });
});
