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
  let json;
  try {
    json = JSON.stringify(rest);
  } catch (e) {
    throw invalidConfig('options', `not serialisable: ${e.message}`);
  }
  const result = resolveConfig(protocol, json, environment());
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

module.exports = { ConfigHelper, invalidConfig };
