'use strict';
// NewServe: koatty_serve 2.3.0's lenient factory (koatty-contract.md §1.3), which Koatty 3.11.8 calls
// with { hostname, port, protocol } straight from its config (values may be undefined).
const fs = require('node:fs');
const { HttpServer, HttpsServer, Http2Server, WsServer, GrpcServer } = require('./server');
const { CreateTerminus } = require('./terminus');
const { isKoattyApp } = require('./trace');
const { invalidConfig } = require('./config');
const { isPlainObject } = require('./lifecycle');

const TLS_PROTOCOLS = new Set(['https', 'http2', 'wss']);

/**
 * Native trace mode for a Koatty app when nothing says otherwise (docs/TRACE.md: on, the
 * differential tests in __test__/trace-diff.test.js found no difference). Other apps: off.
 */
const TRACE_DEFAULT = true;
const ON = /^(1|true|on|yes)$/i;

/**
 * Native trace mode (js/trace) for the NewServe path: `opt.trace` when given as a boolean,
 * else the env `KOATTY_SERVE_TRACE` (1/true/on/yes, or 0/false/off/no), else the Koatty config key
 * `native_trace` (config.ts / config.yaml, or koatty_config's env override), else TRACE_DEFAULT
 * (Koatty apps only; trace: true on another app only echoes X-Request-Id, see README).
 */
function traceSwitch(app, opt) {
  if (opt && typeof opt.trace === 'boolean') return opt.trace;
  const env = process.env.KOATTY_SERVE_TRACE;
  if (env !== undefined && env.trim() !== '') return ON.test(env.trim());
  let configured;
  try {
    configured = app && typeof app.config === 'function' ? app.config('native_trace') : undefined;
  } catch {
    configured = undefined;
  }
  if (configured === undefined || configured === null || configured === '') return TRACE_DEFAULT && isKoattyApp(app);
  return configured === true || ON.test(String(configured).trim());
}

/**
 * Server options a Koatty app cannot pass through NewServe (Koatty hands over only hostname, port
 * and protocol): the Koatty config key `koatty_serve` (an object, e.g. `{ reusePort: true,
 * nativeEndpoints: true, connectionPool: { maxConnections: 5000 } }`), then the env
 * `KOATTY_SERVE_OPTIONS` (the same as JSON), which wins key by key. Koatty's hostname/port/protocol
 * win over both.
 */
function extraOptions(app) {
  let configured;
  try {
    configured = app && typeof app.config === 'function' ? app.config('koatty_serve') : undefined;
  } catch {
    configured = undefined;
  }
  if (configured !== undefined && configured !== null && !isPlainObject(configured)) {
    throw invalidConfig('koatty_serve', 'the Koatty config key must be an object of server options');
  }
  let fromEnv;
  const env = process.env.KOATTY_SERVE_OPTIONS;
  if (env !== undefined && env.trim() !== '') {
    try {
      fromEnv = JSON.parse(env);
    } catch (err) {
      throw invalidConfig('KOATTY_SERVE_OPTIONS', `not valid JSON (${err.message})`);
    }
    if (!isPlainObject(fromEnv)) throw invalidConfig('KOATTY_SERVE_OPTIONS', 'must be a JSON object of server options');
  }
  return { ...configured, ...fromEnv };
}

const SERVERS = {
  http: HttpServer,
  https: HttpsServer,
  http2: Http2Server,
  ws: WsServer,
  wss: WsServer,
  grpc: GrpcServer,
};

function NewServe(app, opt) {
  const options = {
    hostname: process.env.IP || '127.0.0.1',
    port: process.env.PORT || process.env.APP_PORT || 3000,
    protocol: 'http',
    ext: { key: '', cert: '', protoFile: '', server: null },
    ...extraOptions(app),
    ...opt,
  };
  options.trace = traceSwitch(app, opt);
  const protocol = options.protocol;
  if (TLS_PROTOCOLS.has(protocol)) {
    options.ext.key = fs.readFileSync(app.config('key_file') ?? '', 'utf-8');
    options.ext.cert = fs.readFileSync(app.config('crt_file') ?? '', 'utf-8');
    if (protocol !== 'wss' && options.port === 80) options.port = 443;
  } else if (protocol === 'grpc') {
    options.ext.protoFile = app.config('protoFile', 'router');
  }
  // Unknown protocols serve HTTP, as 2.3.0 does; options.protocol keeps the given value.
  const Server = SERVERS[protocol] ?? HttpServer;
  const server = new Server(app, options);
  CreateTerminus(server);
  return server;
}

module.exports = { NewServe, traceSwitch, extraOptions };
