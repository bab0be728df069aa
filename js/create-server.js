'use strict';
// node's `http.createServer` (and `https.createServer`, as `createSecureServer`) served by the Rust
// core: a server with node's http.Server surface — listen (bound before it returns), close,
// address, the timeout properties, the events — for Koa, Express, Fastify, test tools and process
// managers. Handlers get request/response objects that keep working when a framework swaps their
// prototype (Express does): js/request.js and js/response.js, `SwapSafe*`.
const { EventEmitter } = require('node:events');
const { constants: osConstants } = require('node:os');
const { inspect } = require('node:util');
const binding = require('./binding');
const { Bridge } = require('./bridge');
const { SwapSafeRequest } = require('./request');
const { SwapSafeResponse } = require('./response');
const { NativeSocket } = require('./socket');
const { codedError } = require('./errors');
const { optionsJson, NODE_SERVER_LIMITS, nonNegative, nodeMaxConnections, idleCapWarning } = require('./config');
const logger = require('./logger');
const { offeredProtocols } = require('./websocket');
const { createConnectionPool } = require('./pool');

const { NativeServer } = binding;

/** node's test for an `Expect: 100-continue` request. */
const CONTINUE_EXPECTATION = /(?:^|\W)100-continue(?:$|\W)/i;
/** A wait bounded only by the connections themselves, as node's close (setTimeout's largest delay). */
const UNBOUNDED_MS = 2 ** 31 - 1;

/** node's http.Server defaults for the properties that map onto native limits. */
const LIMIT_DEFAULTS = Object.fromEntries(Object.entries(NODE_SERVER_LIMITS).map(([property, [, byDefault]]) => [property, byDefault]));
/** createServer options that set those properties. */
const LIMIT_OPTIONS = ['keepAliveTimeout', 'headersTimeout', 'requestTimeout'];
/** node's TLS options this server passes on (the rest of `ssl` is this package's own). */
const TLS_OPTIONS = ['ca', 'passphrase', 'ciphers', 'honorCipherOrder', 'secureProtocol', 'requestCert', 'rejectUnauthorized'];

function notSupported(what) {
  return codedError('ERR_NOT_SUPPORTED', `ERR_NOT_SUPPORTED: ${what} is not supported by koatty_serve's createServer (README, "Use with Koa / Express / Fastify")`);
}

/** node's validatePort: 0–65535, as a number or a numeric string; else ERR_SOCKET_BAD_PORT. */
function validPort(port) {
  const ok = (typeof port === 'number' || (typeof port === 'string' && port.trim().length > 0)) && +port === +port >>> 0 && +port <= 0xffff;
  if (!ok) {
    const shown = typeof port === 'string' ? `type string ('${port}')` : typeof port === 'number' ? `type number (${port})` : `${port === null ? 'null' : `type ${typeof port}`}`;
    throw codedError('ERR_SOCKET_BAD_PORT', `options.port should be >= 0 and < 65536. Received ${shown}.`, RangeError);
  }
  return +port;
}

const isNumeric = (v) => (typeof v === 'number' || (typeof v === 'string' && v.trim() !== '')) && Number.isFinite(+v);

/**
 * node's listen argument forms: `(port[, host][, backlog][, cb])`, `(options[, cb])`, `(cb)`,
 * `()`. A path (Unix socket or Windows pipe) or a handle cannot be served: ERR_NOT_SUPPORTED.
 */
function listenArguments(args) {
  const callback = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : undefined;
  const first = args[0];
  if (first !== null && typeof first === 'object') {
    if (first._handle !== undefined || first.handle !== undefined || first.fd !== undefined) throw notSupported('listening on a handle or file descriptor');
    if (first.path !== undefined && first.path !== null) throw notSupported(`listening on a path (Unix socket or pipe '${first.path}')`);
    if (first.port === undefined || first.port === null) {
      if ('port' in first) return { options: { ...first, port: 0 }, callback };
      throw codedError('ERR_INVALID_ARG_VALUE', `The argument 'options' must have the property "port" or "path". Received ${inspect(first)}`, TypeError);
    }
    if (typeof first.port !== 'number' && typeof first.port !== 'string') {
      throw codedError('ERR_INVALID_ARG_VALUE', `The argument 'options' is invalid. Received ${inspect(first)}`, TypeError);
    }
    return { options: { ...first, port: validPort(first.port) }, callback };
  }
  if (first === undefined || first === null || typeof first === 'function') return { options: { port: 0 }, callback };
  if (typeof first === 'string' && !isNumeric(first)) throw notSupported(`listening on a path (Unix socket or pipe '${first}')`);
  const port = validPort(first);
  const host = typeof args[1] === 'string' ? args[1] : undefined;
  const backlog = [args[1], args[2]].find((v) => typeof v === 'number');
  return { options: { port, host, backlog }, callback };
}

/** A bind failure as node's: `listen EADDRINUSE: address already in use 127.0.0.1:3000`, with errno, syscall, address, port. */
function listenError(outcome, host, port) {
  const err = codedError(outcome.errorCode, outcome.errorMessage);
  const errno = osConstants.errno[outcome.errorCode];
  if (errno !== undefined) err.errno = -errno;
  if (outcome.errorCode === 'ENOTFOUND') {
    err.message = `getaddrinfo ENOTFOUND ${host}`;
    err.syscall = 'getaddrinfo';
    err.hostname = host;
  } else {
    err.syscall = 'listen';
    err.address = host ?? '::';
    // As node's: an ephemeral port is left out of the message and the error.
    if (port > 0) err.port = port;
    else err.message = err.message.replace(/:0$/, '');
  }
  return err;
}

/** PEM text from what node's tls options take: a string, a Buffer, or an array of them. */
function pem(value, name) {
  if (value === undefined || value === null) return undefined;
  if (Array.isArray(value)) return value.map((v) => pem(v, name)).join('\n');
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  if (typeof value === 'object' && value.pem !== undefined) return pem(value.pem, name);
  throw codedError('ERR_INVALID_ARG_TYPE', `The "options.${name}" property must be a string, a Buffer or an array of them`, TypeError);
}

/** node's minVersion/maxVersion as this package's secureProtocol (TLS 1.2 and 1.3 are served). */
function secureProtocolOf(options) {
  if (options.secureProtocol !== undefined) return options.secureProtocol;
  const { minVersion, maxVersion } = options;
  if (minVersion === 'TLSv1.3') return 'TLSv1_3_method';
  if (maxVersion === 'TLSv1.2') return 'TLSv1_2_method';
  return undefined;
}

/** node's tls options as this package's `ssl` section. */
function sslOf(options) {
  if (options.pfx !== undefined) throw notSupported('options.pfx (give key and cert as PEM)');
  if (options.SNICallback !== undefined) throw notSupported('options.SNICallback');
  const key = pem(options.key, 'key');
  const cert = pem(options.cert, 'cert');
  const ssl = { mode: key !== undefined && cert !== undefined ? 'manual' : 'auto', key, cert };
  for (const name of TLS_OPTIONS) if (options[name] !== undefined) ssl[name] = options[name];
  if (ssl.ca !== undefined) ssl.ca = pem(ssl.ca, 'ca');
  const secureProtocol = secureProtocolOf(options);
  if (secureProtocol !== undefined) ssl.secureProtocol = secureProtocol;
  if (typeof options.allowHTTP1 === 'boolean') ssl.allowHTTP1 = options.allowHTTP1;
  return ssl;
}

/**
 * A server with node's http.Server surface on the native core (see the module comment). Create it
 * with `createServer` or `createSecureServer`.
 */
class NodeHttpServer extends EventEmitter {
  constructor(options, requestListener, secure) {
    super();
    if (options !== undefined && options !== null && typeof options !== 'object') {
      throw codedError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be of type object.', TypeError);
    }
    options = options ?? {};
    if (options.IncomingMessage !== undefined || options.ServerResponse !== undefined) {
      throw notSupported('options.IncomingMessage / options.ServerResponse (the request and response are native-fed)');
    }
    logger.forwardNative(binding);
    this._limits = { ...LIMIT_DEFAULTS };
    for (const key of LIMIT_OPTIONS) if (options[key] !== undefined) this._limits[key] = options[key];
    this._warnIdleCap();
    this._pool = { ...options.connectionPool };
    if (options.maxHeaderSize !== undefined) this._pool.maxHeaderSize = nonNegative(options.maxHeaderSize);
    this._joinDuplicateHeaders = options.joinDuplicateHeaders === true;
    this._webSocket = options.webSocket ?? null;
    const http2 = secure && typeof options.allowHTTP1 === 'boolean';
    const protocol = this._webSocket ? (secure ? 'wss' : 'ws') : secure ? (http2 ? 'http2' : 'https') : 'http';
    const base = { protocol };
    if (secure) base.ssl = sslOf(options);
    if (secure && this._webSocket) {
      // ws/wss take the `enabled` form of ssl.
      const { key, cert, ca, passphrase, ciphers, honorCipherOrder, secureProtocol, requestCert, rejectUnauthorized } = base.ssl;
      base.ssl = { enabled: true, key, cert, ca, passphrase, ciphers, honorCipherOrder, secureProtocol, requestCert, rejectUnauthorized };
    }
    if (options.nativeEndpoints !== undefined) base.nativeEndpoints = options.nativeEndpoints;
    if (this._webSocket && typeof this._webSocket === 'object' && typeof this._webSocket.handleProtocols === 'function') base.handleProtocols = true;
    this._baseOptions = base;
    // Bad options or TLS material throw here, coded (ERR_INVALID_CONFIG, ERR_TLS_CONFIG), as
    // node's tls.createSecureContext throws from https.createServer.
    this._native = new NativeServer(this._nativeOptionsJson());
    if (this._native.generatedDevCertificate) {
      logger.warn('createSecureServer: no key/cert given; serving a generated self-signed development certificate');
    }
    this._bridge = new Bridge(
      this._native,
      (req, res) => this._dispatch(req, res),
      (err, req) => this.emit('handlerError', err, req) || logger.error(`request handler failed${req ? ` (${req.method} ${req.url})` : ''}`, err),
      (req, client) => this._onUpgrade(req, client),
    );
    // The same pool object as the other server classes: metrics per protocol, live connections,
    // history and health (the event-loop lag is sampled only between startMonitoring/stopMonitoring).
    this.connectionPool = createConnectionPool(protocol, this._native, base);
    this._bridge.Request = SwapSafeRequest;
    this._bridge.Response = SwapSafeResponse;
    this._bridge.onClientError = (code, address, port, message) => this._onClientError(code, address, port, message, secure);
    this._address = null;
    this._closing = null;
    this._referenced = true;
    this._limitsPending = false;
    if (typeof requestListener === 'function') this.on('request', requestListener);
  }

  _nativeOptionsJson() {
    const l = this._limits;
    const pool = { ...this._pool };
    pool.keepAliveTimeout = nonNegative(l.keepAliveTimeout);
    pool.headersTimeout = nonNegative(l.headersTimeout);
    pool.requestTimeout = nonNegative(l.requestTimeout);
    // node's socket timeout: a connection with no byte moving for that long goes (0: off).
    pool.connectionTimeout = nonNegative(l.timeout);
    if (l.maxHeadersCount !== null && l.maxHeadersCount !== undefined) pool.maxHeadersCount = nonNegative(l.maxHeadersCount);
    pool.maxRequestsPerSocket = nonNegative(l.maxRequestsPerSocket);
    const max = nodeMaxConnections(l.maxConnections);
    if (max !== undefined) pool.maxConnections = max;
    return optionsJson({ ...this._baseOptions, connectionPool: pool });
  }

  /** Says when the keep-alive time is capped by the headers timeout (`idleCapWarning`). */
  _warnIdleCap() {
    const warning = idleCapWarning(nonNegative(this._limits.keepAliveTimeout), nonNegative(this._limits.headersTimeout));
    if (warning !== null) logger.warn(`createServer: ${warning}`);
  }

  /** Property changes reach the native side together on the next tick (new requests use them). */
  _scheduleLimits() {
    if (this._limitsPending) return;
    this._limitsPending = true;
    process.nextTick(() => this._applyLimits());
  }

  _applyLimits() {
    if (!this._limitsPending) return;
    this._limitsPending = false;
    this._warnIdleCap();
    try {
      this._native.applyInPlace(this._nativeOptionsJson());
    } catch (err) {
      logger.warn('createServer: a limit property could not be applied', err);
    }
  }

  _dispatch(req, res) {
    if (this._joinDuplicateHeaders) req.joinDuplicateHeaders = true;
    // Header names arrive lower case; a scan is cheaper than building req.headers for every request.
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i] === 'expect') return this._expectation(req, res);
    }
    this.emit('request', req, res);
  }

  /**
   * node's handling of `Expect` (HTTP/1.1): 100-continue goes to a 'checkContinue' listener, else
   * to 'request' (the native side sends 100 Continue when the body is first read); any other
   * expectation goes to 'checkExpectation', else is answered 417.
   */
  _expectation(req, res) {
    if (req.httpVersion !== '1.1') return this.emit('request', req, res);
    if (CONTINUE_EXPECTATION.test(req.headers.expect)) {
      return this.emit(this.listenerCount('checkContinue') > 0 ? 'checkContinue' : 'request', req, res);
    }
    if (this.listenerCount('checkExpectation') > 0) return this.emit('checkExpectation', req, res);
    res.writeHead(417);
    res.end();
  }

  /**
   * node's 'clientError' `(err, socket)`: the native side already answered the request head
   * (400, 408, 431) and closed the connection, so the socket stands for it, already destroyed.
   */
  _onClientError(code, address, port, message, secure) {
    if (this.listenerCount('clientError') === 0) return;
    const err = codedError(code, message);
    const socket = new NativeSocket(address, port, secure, false);
    socket._close();
    this.emit('clientError', err, socket);
  }

  /** `webSocket` option: a WebSocket on the same port, as ws's WebSocketServer 'connection' event. */
  _onUpgrade(req, client) {
    const handle = this._webSocket?.handleProtocols;
    if (client._choosingProtocol) {
      let chosen;
      try {
        chosen = typeof handle === 'function' ? handle(new Set(offeredProtocols(req)), req) : offeredProtocols(req)[0];
      } catch (err) {
        this.emit('handlerError', err, req) || logger.error('handleProtocols failed', err);
        client._selectProtocol(false, true);
        return;
      }
      client._selectProtocol(chosen ? String(chosen) : false);
    }
    if (this.listenerCount('websocket') === 0) {
      client.close(1011, 'no websocket listener');
      return;
    }
    this.emit('websocket', client, req);
  }

  /**
   * node's `listen`: binds before returning (so `address()` is right at once); 'listening' follows
   * on the next tick; a bind failure is an 'error' event with node's code, errno and syscall.
   */
  listen(...args) {
    const { options, callback } = listenArguments(args);
    if (this._address !== null) {
      throw codedError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
    }
    if (this._closing !== null) {
      throw codedError('ERR_SERVER_STATE', 'ERR_SERVER_STATE: close() has not finished; listen again once the server emitted \'close\'');
    }
    if (typeof callback === 'function') this.once('listening', callback);
    this._applyLimits();
    const host = options.host === undefined || options.host === null || options.host === '' ? null : String(options.host);
    const backlog = isNumeric(options.backlog) && +options.backlog >= 0 ? Math.floor(+options.backlog) : undefined;
    const bridge = this._bridge;
    const outcome = this._native.listenNow(bridge.onRequest, bridge.onEvent, bridge.staging, host, options.port, backlog, options.ipv6Only === true, options.reusePort === true, this._referenced);
    if (outcome.errorCode) {
      const err = listenError(outcome, host, options.port);
      process.nextTick(() => this.emit('error', err));
      return this;
    }
    const address = { address: outcome.address, family: outcome.family, port: outcome.port };
    this._address = address;
    process.nextTick(() => {
      if (this._address === address) this.emit('listening');
    });
    const signal = options.signal;
    if (signal && typeof signal.addEventListener === 'function') {
      if (signal.aborted) process.nextTick(() => this.close());
      else signal.addEventListener('abort', () => this._address === address && this.close(), { once: true });
    }
    return this;
  }

  get listening() {
    return this._address !== null;
  }

  /** `{ address, family, port }` while listening, else null. */
  address() {
    return this._address === null ? null : { ...this._address };
  }

  /**
   * node's `close`: stops accepting, closes idle connections and asks busy ones to close after
   * their response (`Connection: close`; HTTP/2: GOAWAY), then emits 'close' (and calls `cb`)
   * once the last connection has ended. Not listening: `cb` gets ERR_SERVER_NOT_RUNNING.
   */
  close(callback) {
    if (typeof callback === 'function') {
      if (this._address === null) {
        this.once('close', () => callback(codedError('ERR_SERVER_NOT_RUNNING', 'Server is not running.')));
      } else {
        this.once('close', callback);
      }
    }
    if (this._address === null) {
      if (this._closing === null) process.nextTick(() => this.emit('close'));
      return this;
    }
    this._address = null;
    const native = this._native;
    this._closing = native
      .stopAccepting()
      .then(() => native.waitIdle(UNBOUNDED_MS))
      .then(() => native.release())
      .then(
        () => {
          this._closing = null;
          this.emit('close');
        },
        (err) => {
          this._closing = null;
          this.emit('error', err);
        },
      );
    return this;
  }

  /** Closes every HTTP connection now, requests in flight or not (node's closeAllConnections). */
  closeAllConnections() {
    this._native.closeConnections(true);
  }

  /** Closes the HTTP/1 connections with no request in flight (node's closeIdleConnections). */
  closeIdleConnections() {
    this._native.closeConnections(false);
  }

  /** `cb(null, count)` with the connections open now. */
  getConnections(callback) {
    const count = this._native.openConnections();
    if (typeof callback === 'function') process.nextTick(callback, null, count);
    return this;
  }

  ref() {
    this._referenced = true;
    this._native.setReferenced(true);
    return this;
  }

  unref() {
    this._referenced = false;
    this._native.setReferenced(false);
    return this;
  }

  /** node's `setTimeout(ms[, cb])`: sets `timeout`; `cb` listens for 'timeout' (never emitted here: README). */
  setTimeout(ms, callback) {
    this.timeout = ms;
    if (typeof callback === 'function') this.on('timeout', callback);
    return this;
  }

  /** The counters (connections, requests, latency), as `connectionPool.getMetrics()`. */
  getMetrics() {
    return this.connectionPool.getMetrics();
  }

  [Symbol.asyncDispose]() {
    return new Promise((resolve, reject) => this.close((err) => (err && err.code !== 'ERR_SERVER_NOT_RUNNING' ? reject(err) : resolve())));
  }
}

// node's limit properties: read as set; changes reach the native limits for new requests.
for (const key of Object.keys(LIMIT_DEFAULTS)) {
  Object.defineProperty(NodeHttpServer.prototype, key, {
    get() {
      return this._limits[key];
    },
    set(value) {
      this._limits[key] = value;
      this._scheduleLimits();
    },
    enumerable: true,
    configurable: true,
  });
}

function listenerAndOptions(options, requestListener) {
  if (typeof options === 'function') return [{}, options];
  return [options, requestListener];
}

/** node's `http.createServer([options][, requestListener])`, served by the native core. */
function createServer(options, requestListener) {
  const [opts, listener] = listenerAndOptions(options, requestListener);
  return new NodeHttpServer(opts, listener, false);
}

/**
 * node's `https.createServer(options[, requestListener])` (TLS on rustls); with `allowHTTP1` set,
 * node's `http2.createSecureServer` with its compatibility API (HTTP/2, and HTTP/1.1 when true).
 */
function createSecureServer(options, requestListener) {
  const [opts, listener] = listenerAndOptions(options, requestListener);
  return new NodeHttpServer(opts, listener, true);
}

module.exports = { createServer, createSecureServer, NodeHttpServer };
