'use strict';
// ConfigHelper: complete, validated option objects. Validation and defaults live in the Rust core
// (crates/core/src/config); this only carries values across and throws coded errors.
const { resolveConfig } = require('./binding');

function invalidConfig(key, message) {
  const err = new Error(`ERR_INVALID_CONFIG: ${key}: ${message}`);
  err.code = 'ERR_INVALID_CONFIG';
  err.key = key;
  return err;
}

/**
 * Options as JSON for the native side. NaN and ±Infinity are refused by name: JSON would turn them
 * into null, i.e. "not set", and a bad `Number(process.env.PORT)` would bind the default port
 * (node's listen throws ERR_SOCKET_BAD_PORT for NaN).
 */
function optionsJson(options) {
  const paths = new WeakMap();
  const replacer = function (key, value) {
    const base = paths.get(this);
    const path = base ? `${base}.${key}` : key;
    if (typeof value === 'number' && !Number.isFinite(value)) throw invalidConfig(path, `must be a finite number, got ${value}`);
    if (value !== null && typeof value === 'object') paths.set(value, path);
    return value;
  };
  try {
    return JSON.stringify(options, replacer);
  } catch (e) {
    if (e.code === 'ERR_INVALID_CONFIG') throw e;
    throw invalidConfig('options', `not serialisable: ${e.message}`);
  }
}

function environment() {
  const { IP, PORT, APP_PORT, NODE_ENV } = process.env;
  return { ip: IP, port: PORT, appPort: APP_PORT, nodeEnv: NODE_ENV };
}

function create(protocol, options) {
  if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) {
    throw invalidConfig('options', 'must be an object');
  }
  const { ext, handleProtocols, ...rest } = options ?? {};
  // A function (WebSocket's handleProtocols) stays in JavaScript; the native side checks `true`.
  if (handleProtocols !== undefined && handleProtocols !== null) {
    if (typeof handleProtocols !== 'function') throw invalidConfig('handleProtocols', 'must be a function');
    rest.handleProtocols = true;
  }
  const result = resolveConfig(protocol, optionsJson(rest), environment());
  if (result.options === undefined || result.options === null) throw invalidConfig(result.errorKey, result.errorMessage);
  const resolved = JSON.parse(result.options);
  if (ext !== undefined) resolved.ext = ext;
  if (resolved.handleProtocols === true) resolved.handleProtocols = handleProtocols;
  return resolved;
}

const ConfigHelper = {
  createHttpConfig: (options) => create('http', options),
  createHttpsConfig: (options) => create('https', options),
  createHttp2Config: (options) => create('http2', options),
  createGrpcConfig: (options) => create('grpc', options),
  createWebSocketConfig: (options) => create('ws', options),
};

/**
 * node's http.Server properties that map onto `connectionPool` keys: property → [pool key,
 * node's default]. `createServer`'s server has them, and so has `server.server` of the server
 * classes (with 2.3.0 it was node's server, and apps set them).
 */
const NODE_SERVER_LIMITS = {
  timeout: ['connectionTimeout', 0],
  keepAliveTimeout: ['keepAliveTimeout', 5000],
  headersTimeout: ['headersTimeout', 60000],
  requestTimeout: ['requestTimeout', 300000],
  maxHeadersCount: ['maxHeadersCount', null],
  maxRequestsPerSocket: ['maxRequestsPerSocket', 0],
  maxConnections: ['maxConnections', undefined],
};

/** A millisecond or count property as node reads it: a non-negative integer, anything else 0 (off). */
function nonNegative(value) {
  const n = Math.floor(Number(value));
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/**
 * A `maxConnections` given as node's servers take it, as the `connectionPool.maxConnections` it
 * stands for: `undefined` for no limit — node checks `if (maxConnections && …)`, so 0, NaN,
 * null, undefined and Infinity limit nothing — else a whole count (a negative one refuses every
 * connection, as node's does).
 */
function nodeMaxConnections(value) {
  const n = Number(value);
  if (!value || Number.isNaN(n) || n === Infinity) return undefined;
  // node refuses once `connections >= maxConnections`: 1.5 admits two.
  return Math.max(0, Math.ceil(n));
}

/**
 * One timer bounds both the wait for a request head and keep-alive idle time (README), so a
 * `keepAliveTimeout` above `headersTimeout` — the usual recipe behind a load balancer — is capped
 * by it: the warning to give when they are set so, else null.
 */
function idleCapWarning(keepAliveTimeout, headersTimeout) {
  if (!(keepAliveTimeout > 0 && headersTimeout > 0 && keepAliveTimeout > headersTimeout)) return null;
  return `keepAliveTimeout ${keepAliveTimeout} ms is above headersTimeout ${headersTimeout} ms: idle keep-alive connections close after ${headersTimeout} ms (one timer serves both; raise headersTimeout too)`;
}

module.exports = { ConfigHelper, invalidConfig, optionsJson, NODE_SERVER_LIMITS, nonNegative, nodeMaxConnections, idleCapWarning };
