'use strict';
// The server classes: one shared lifecycle (BaseServer) with the protocol parts plugged in. The
// native NativeServer does the I/O; this keeps the koatty_serve surface (options, protocol, status,
// server, listenCallback, Start, Stop) and node's EventEmitter conventions.
const { EventEmitter } = require('node:events');
const binding = require('./binding');

const { NativeServer } = binding;
const { Bridge } = require('./bridge');
const { codedError } = require('./errors');
const logger = require('./logger');
const { createConnectionPool } = require('./pool');
const { flushWakesNow } = require('./wakes');
const { GrpcDispatcher } = require('./grpc');
const { traceServer, koattyDefaultLogger } = require('./trace');
const { offeredProtocols } = require('./websocket');

const { runShutdown, shutdownOptions, analyzeConfigChanges } = require('./lifecycle');
const { invalidConfig, optionsJson, NODE_SERVER_LIMITS, nonNegative, nodeMaxConnections, idleCapWarning } = require('./config');

const DEFAULT_SHUTDOWN = { timeout: 30000 };
/** Protocols one native server can switch between on restart. */
const PROTOCOL_FAMILIES = [new Set(['http', 'https', 'http2']), new Set(['ws', 'wss']), new Set(['grpc'])];
const sameFamily = (a, b) => PROTOCOL_FAMILIES.some((f) => f.has(a) && f.has(b));

/** ` [trace <id>]` for a request with a trace id, else ''. */
function traceTag(req) {
  let id;
  try {
    id = req?.traceId;
  } catch {
    id = undefined;
  }
  return typeof id === 'string' && id !== '' ? ` [trace ${id}]` : '';
}

/** What `server.server` is (and what Start returns): a small handle shaped like node's net.Server. */
class ListenerHandle extends EventEmitter {
  constructor(owner) {
    super();
    this._owner = owner;
    this._address = null;
    this.listening = false;
  }

  address() {
    return this._address;
  }

  close(callback) {
    this._owner.Stop(callback);
    return this;
  }

  /** node's `setTimeout(ms[, cb])`: sets `timeout` (`connectionPool.connectionTimeout`); `cb` listens for 'timeout', which is never emitted (README). */
  setTimeout(ms, callback) {
    this.timeout = ms;
    if (typeof callback === 'function') this.on('timeout', callback);
    return this;
  }

  /** `cb(null, count)` with the connections open now, as node's. */
  getConnections(callback) {
    const count = this._owner._native.openConnections();
    if (typeof callback === 'function') process.nextTick(callback, null, count);
    return this;
  }
}

/** Says when `server.server`'s keep-alive time is capped by its headers timeout (`idleCapWarning`). */
function warnIdleCap(handle) {
  const warning = idleCapWarning(handle.keepAliveTimeout, handle.headersTimeout);
  if (warning !== null) logger.warn(`server.server: ${warning}`);
}

// node's http.Server properties, forwarded to `connectionPool` so that an assignment is not lost.
for (const [property, [key, fallback]] of Object.entries(NODE_SERVER_LIMITS)) {
  Object.defineProperty(ListenerHandle.prototype, property, {
    get() {
      return this._owner.options.connectionPool?.[key] ?? fallback;
    },
    set(value) {
      let taken;
      if (property === 'maxConnections') taken = nodeMaxConnections(value);
      // undefined, null or Infinity: no limit, as node reads maxHeadersCount.
      else if (value !== undefined && value !== null && value !== Infinity) taken = nonNegative(value);
      // In place (these keys need no restart): applied before updateConfig returns its promise.
      this._owner.updateConfig({ connectionPool: { [key]: taken } }).catch((err) => logger.warn(`server.server.${property} could not be applied`, err));
      if (property === 'keepAliveTimeout' || property === 'headersTimeout') warnIdleCap(this);
    },
    configurable: true,
    enumerable: true,
  });
}

/** The options the native side needs (ext and TLS material stay in JS). */
/** Every key but `ext` goes across, so that the native side rejects unknown (misspelt) ones. */
function nativeOptions(options) {
  const { ext: _ext, ...rest } = options;
  return optionsJson(rest);
}

class BaseServer extends EventEmitter {
  constructor(app, options) {
    super();
    if (options === null || typeof options !== 'object') {
      throw codedError('ERR_INVALID_CONFIG', 'ERR_INVALID_CONFIG: options: must be an object');
    }
    Object.defineProperty(this, 'app', { value: app, writable: true, enumerable: false, configurable: true });
    // The native core's log events reach the JS logger from the first server on; a Koatty app's
    // own logger writes them (and the library's messages).
    logger.forwardNative(binding);
    const appLogger = koattyDefaultLogger(app);
    if (appLogger) logger.useKoattyLogger(appLogger);
    this.options = options;
    this.protocol = options.protocol ?? this.defaultProtocol(options);
    this.status = undefined;
    this.listenCallback = undefined;
    this.server = new ListenerHandle(this);
    // Bad options or TLS settings throw here, coded (`ERR_INVALID_CONFIG`, `ERR_TLS_CONFIG`).
    const native = new NativeServer(this.nativeOptionsJson(options));
    if (native.generatedDevCertificate) {
      logger.warn(`${this.constructor.name}: no ssl.key/ssl.cert given; serving a generated self-signed development certificate`);
    }
    const bridge = new Bridge(
      native,
      this.createRequestHandler(),
      // The request's trace id (X-Request-Id, requestId, or a generated one) goes on the line.
      (err, req) => this.emit('handlerError', err, req) || logger.error(`request handler failed${traceTag(req)}`, err),
      (req, client) => this.onUpgrade(req, client),
      (bridge, id, path, headers, remoteAddress, remotePort) => this.onGrpcCall(bridge, id, path, headers, remoteAddress, remotePort),
    );
    Object.defineProperty(this, '_native', { value: native, enumerable: false });
    Object.defineProperty(this, '_bridge', { value: bridge, enumerable: false });
    Object.defineProperty(this, '_stopping', { value: null, writable: true, enumerable: false });
    // The shutdown `_stopping` stands for has ended: Start() may serve again.
    Object.defineProperty(this, '_stopped', { value: false, writable: true, enumerable: false });
    // A Start() whose listener is not bound yet: settles once it is (or failed to be).
    Object.defineProperty(this, '_starting', { value: null, writable: true, enumerable: false });
    this.connectionPool = createConnectionPool(this.protocol, native, options);
    // `trace` (js/trace): native trace mode for a Koatty app (chosen now, before any
    // app.callback()); for another app X-Request-Id echoed, switched at run time by `_setTrace`.
    Object.defineProperty(this, '_setTrace', { value: traceServer(app, bridge, native, options.trace === true), enumerable: false });
  }

  /** The options handed to the native side (protocols may derive some, e.g. ssl from ext). */
  nativeOptionsOf(options) {
    return options;
  }

  /** The protocol a server class serves when `options.protocol` is not given. */
  defaultProtocol(_options) {
    return 'http';
  }

  nativeOptionsJson(options) {
    const protocol = options.protocol ?? this.defaultProtocol(options);
    return nativeOptions(this.nativeOptionsOf({ ...options, protocol }));
  }

  /** Re-reads the TLS key and certificate for new handshakes; open connections keep theirs. */
  reloadCertificates() {
    this._native.reloadCertificates();
  }

  /** gRPC servers: a new call. */
  onGrpcCall() {
    throw codedError('ERR_NOT_IMPLEMENTED', `${this.constructor.name} does not serve gRPC`);
  }

  /** WebSocket servers: a new connection (its upgrade request and the socket). */
  onUpgrade(_req, client) {
    client.terminate();
  }

  /** The protocol part: what each request is handed to. */
  createRequestHandler() {
    throw codedError('ERR_NOT_IMPLEMENTED', `${this.constructor.name} must implement createRequestHandler()`);
  }

  /**
   * Binds and serves. Returns the listener handle at once; `listenCallback` runs when listening.
   * A bind failure is emitted as 'error' (with `code`), never thrown from here; a Start() while
   * listening or starting throws ERR_SERVER_ALREADY_LISTEN (as node's listen()), one during a
   * shutdown ERR_SERVER_STATE.
   */
  Start(listenCallback) {
    if (this._stopping !== null) {
      if (!this._stopped) {
        throw codedError('ERR_SERVER_STATE', 'ERR_SERVER_STATE: Start() while a shutdown is in progress: start again once it has ended (Stop\'s callback, \'stopped\')');
      }
      // Stopped: it serves again, as node's servers listen again after close(), and the next
      // Stop() is a shutdown of its own.
      this._stopping = null;
      this._stopped = false;
      this.status = undefined;
    }
    if (this._starting !== null || this.server.listening) {
      // As node's listen() twice: the listener that serves is kept.
      throw codedError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
    }
    const callback = listenCallback ?? this.listenCallback;
    const bridge = this._bridge;
    this._native.connect(bridge.onRequest, bridge.onEvent, bridge.staging);
    const listened = this._native.listen();
    const bound = () => {
      this._starting = null;
    };
    this._starting = listened.then(bound, bound);
    listened.then(({ errorCode, errorMessage, address, port, family }) => {
      if (errorCode) {
        const err = codedError(errorCode, errorMessage);
        err.syscall = 'listen';
        err.address = this.options.hostname;
        err.port = this.options.port;
        // Emitted from its own tick so an unhandled 'error' is an uncaught exception, as with
        // node's servers (Koatty exits with 255 on EADDRINUSE).
        process.nextTick(() => {
          if (this.server.listenerCount('error') > 0) this.server.emit('error', err);
          this.emit('error', err);
        });
        return;
      }
      this.server._address = { address, family, port };
      this.server.listening = true;
      this.connectionPool.startMonitoring();
      this.server.emit('listening');
      this.emit('listening');
      if (typeof callback === 'function') callback();
    }).catch((err) => {
      // A 'listening' handler or the callback threw: an uncaught exception, as with node's servers
      // (not an unhandled rejection of a promise the user never saw).
      process.nextTick(() => {
        throw err;
      });
    });
    return this.server;
  }

  /** Graceful shutdown with default options, then `callback` (called once, also on failure). */
  Stop(callback) {
    this.gracefulShutdown().then(
      () => typeof callback === 'function' && callback(),
      (err) => {
        logger.error('shutdown failed', err);
        if (typeof callback === 'function') callback();
      },
    );
  }

  /**
   * The five-step graceful shutdown (see js/lifecycle.js): stop accepting, wait `drainDelay`,
   * let in-flight requests finish within `timeout`, force-close the rest, release resources.
   * Safe to call twice (the second call gets the first one's result).
   */
  gracefulShutdown(options) {
    if (this._stopping) return this._stopping;
    // Invalid options reject without marking the server as stopping.
    try {
      shutdownOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    // A Start() not bound yet binds first, then shuts down (the port is not left bound).
    const shutdown = this._starting === null
      ? runShutdown(this, this._native, options)
      : this._starting.then(() => runShutdown(this, this._native, options));
    const stopping = shutdown.then((report) => {
      this._stopped = true;
      this.connectionPool.stopMonitoring();
      this.server.listening = false;
      this.server.emit('close');
      this.emit('close');
      this.emit('stopped', report);
      return report;
    });
    this._stopping = stopping;
    // A shutdown that failed may be asked for again.
    stopping.catch(() => {
      if (this._stopping === stopping) this._stopping = null;
    });
    return stopping;
  }

  /**
   * Applies changed options: pool limits, timeouts and a new TLS key/certificate in place; host,
   * port, protocol and other ssl settings by a restart that binds the new listener first (or takes
   * the old socket over on the same address), then drains the old one. On failure the old server
   * keeps serving and the promise rejects with the coded error.
   * The seed's three parts: `analyzeConfigChanges` (js/lifecycle.js), then `applyConfigChanges`
   * or `gracefulRestart`.
   * @returns {Promise<{changedKeys: string[], requiresRestart: boolean, restarted: boolean}>}
   */
  async updateConfig(partial) {
    const { next, changedKeys, requiresRestart } = analyzeConfigChanges(this.options, partial);
    if (changedKeys.length === 0) return { changedKeys, requiresRestart: false, restarted: false };
    if (!requiresRestart) {
      try {
        this.applyConfigChanges(next);
        return { changedKeys, requiresRestart: false, restarted: false };
      } catch (err) {
        // The native side knows better in one case the key names cannot show: TLS switched on or
        // off through the ssl section (e.g. ssl.key/cert given to a plaintext gRPC server).
        if (err.code !== 'ERR_RESTART_REQUIRED') throw err;
      }
    }
    await this.gracefulRestart(next);
    return { changedKeys, requiresRestart: true, restarted: true };
  }

  /**
   * Run-time changes (no restart): limits, timeouts, maxInFlight, TLS key/certificate, trace, log
   * level reach the native server at once; open connections are not touched. Throws a coded error
   * if `next` needs a restart.
   */
  applyConfigChanges(next) {
    this._native.applyInPlace(this.nativeOptionsJson(next));
    this.adoptOptions(next);
  }

  /**
   * Zero-downtime restart on `next`: the new listener is bound first (the same address takes the
   * old socket over), the server switches to it, and the old one then stops accepting and drains
   * in the background. On failure the old server keeps serving and the promise rejects.
   */
  async gracefulRestart(next) {
    if (!sameFamily(this.protocol, next.protocol ?? this.defaultProtocol(next))) {
      throw codedError('ERR_PROTOCOL_NOT_SUPPORTED', `ERR_PROTOCOL_NOT_SUPPORTED: cannot switch to protocol '${next.protocol}'`);
    }
    if (!this.server.listening) {
      throw codedError('ERR_SERVER_STATE', 'ERR_SERVER_STATE: a restart-requiring change needs a listening server (Start it first)');
    }
    if (this._stopping !== null) {
      // A new listener would serve through (or after) the shutdown, as Start() may not.
      throw codedError('ERR_SERVER_STATE', 'ERR_SERVER_STATE: a restart-requiring change during a shutdown');
    }
    const json = this.nativeOptionsJson(next);
    const drainTimeout = Math.min(Math.max(0, (this.options.connectionPool?.requestTimeout ?? DEFAULT_SHUTDOWN.timeout) | 0), DEFAULT_SHUTDOWN.timeout);
    flushWakesNow();
    const { errorCode, errorMessage, address: host, port, family } = await this._native.restart(json, drainTimeout);
    if (errorCode) throw codedError(errorCode, errorMessage);
    const address = { address: host, family, port };
    this.server._address = address;
    this.adoptOptions(next);
    this.protocol = this.options.protocol ?? this.defaultProtocol(this.options);
    // Connections begun before the switch may still be on their way to the old port (node connects
    // on the next tick): retire the old listener after them; its backlog is served before it closes.
    setImmediate(() => this._native.retireReplaced(drainTimeout));
  }

  /** Takes `next` as the server's options after a change has been applied. */
  adoptOptions(next) {
    Object.assign(this.options, next);
    this._setTrace(this.options.trace === true);
  }
}

/** HTTP/1.1: every request goes to `app.callback()`, taken per request as koatty_serve 2.3.0 does. */
class HttpServer extends BaseServer {
  createRequestHandler() {
    return (req, res) => this.app.callback()(req, res);
  }
}

/**
 * The TLS key and certificate: `options.ssl`, else what NewServe read from Koatty's
 * key_file/crt_file into `ext` (2.3.0 passes PEM text there), else auto mode.
 */
function withSsl(options) {
  if (options.ssl || !options.ext || !options.ext.key || !options.ext.cert) return options;
  return { ...options, ssl: { mode: 'manual', key: options.ext.key, cert: options.ext.cert } };
}

/** HTTP/1.1 over TLS (rustls). */
class HttpsServer extends HttpServer {
  defaultProtocol() {
    return 'https';
  }

  nativeOptionsOf(options) {
    return withSsl(options);
  }
}

/**
 * HTTP/2 over TLS with ALPN (`h2`, falling back to HTTP/1.1 unless `ssl.allowHTTP1` is false), or
 * cleartext HTTP/2 with prior knowledge when `h2c: true`. Requests look as under node's http2
 * compatibility API (`req.httpVersion` '2.0', pseudo-headers in `req.headers`).
 */
class Http2Server extends HttpServer {
  defaultProtocol() {
    return 'http2';
  }

  nativeOptionsOf(options) {
    return options.h2c ? options : withSsl(options);
  }
}

/**
 * WebSocket (`ws`, or `wss` when `ssl.enabled` or protocol 'wss'), the Koatty contract of
 * koatty_serve 2.3.0: per message, `app.callback(protocol)(upgradeReq, client)` with
 * `upgradeReq.data` set to the message Buffer. Ordinary HTTP requests on the same port go to
 * `app.callback()` as with HttpServer. Emits 'connection' (client, req) like ws's server.
 */
class WsServer extends HttpServer {
  defaultProtocol(options) {
    return options.ssl?.enabled ? 'wss' : 'ws';
  }

  nativeOptionsOf(options) {
    // handleProtocols runs here; the native side only learns that the 101 must wait for it.
    const { handleProtocols } = options;
    if (handleProtocols !== undefined && handleProtocols !== null && typeof handleProtocols !== 'function') {
      throw invalidConfig('handleProtocols', 'must be a function');
    }
    options = { ...options, handleProtocols: typeof handleProtocols === 'function' ? true : undefined };
    if (options.ssl || options.protocol !== 'wss') return options;
    const { key, cert } = options.ext ?? {};
    return { ...options, ssl: key && cert ? { enabled: true, key, cert } : { enabled: true } };
  }

  /**
   * ws's `handleProtocols(protocols, request)`: its answer is the subprotocol of the 101 (false or
   * another falsy value: none); a throw refuses the upgrade (500). Returns whether it goes on.
   */
  chooseProtocol(req, client) {
    const handle = this.options.handleProtocols;
    const offered = offeredProtocols(req);
    let chosen;
    try {
      // Removed by updateConfig since the upgrade arrived: ws's default, the first offered.
      chosen = typeof handle === 'function' ? handle(new Set(offered), req) : offered[0];
    } catch (err) {
      this.emit('handlerError', err, req) || logger.error('handleProtocols failed', err);
      client._selectProtocol(false, true);
      return false;
    }
    client._selectProtocol(chosen ? String(chosen) : false);
    return true;
  }

  onUpgrade(req, client) {
    if (client._choosingProtocol && !this.chooseProtocol(req, client)) return;
    this.emit('connection', client, req);
    const protocol = this.protocol;
    client.on('message', (data) => {
      if (!Object.prototype.hasOwnProperty.call(req, 'data')) {
        Object.defineProperty(req, 'data', { value: data, writable: true, enumerable: true, configurable: false });
      } else {
        req.data = data;
      }
      const result = this.app.callback(protocol)(req, client);
      if (result && typeof result.then === 'function') {
        result.then(undefined, (err) => this.emit('handlerError', err) || logger.error('websocket handler failed', err));
      }
    });
    client.on('error', (err) => {
      // Logged only when the app has no 'error' listener of its own (it handles what it hears).
      if (client.listenerCount('error') <= 1) logger.error('websocket error', err);
      client.close(1011);
    });
  }
}

/**
 * gRPC over HTTP/2 (plaintext, or TLS with `ssl: { enabled: true, ... }`). Services are registered
 * with `RegisterService({ service, implementation })` (grpc-js definitions), before or after Start;
 * unknown methods get UNIMPLEMENTED without entering JavaScript. The standard health service
 * `grpc.health.v1.Health` (Check, Watch) and server reflection (`grpc.reflection.v1` and
 * `v1alpha`, unless `reflection: false`) are answered natively.
 */
class GrpcServer extends BaseServer {
  constructor(app, options) {
    if (options && options.reflection !== undefined && typeof options.reflection !== 'boolean') {
      throw codedError('ERR_INVALID_CONFIG', 'ERR_INVALID_CONFIG: reflection: must be a boolean');
    }
    super(app, options);
    Object.defineProperty(this, '_grpc', {
      value: new GrpcDispatcher((err) => this.emit('handlerError', err) || logger.error('gRPC handler failed', err)),
    });
    this.publishServices();
  }

  defaultProtocol() {
    return 'grpc';
  }

  createRequestHandler() {
    return (_req, res) => {
      res.statusCode = 415;
      res.end('gRPC server: use HTTP/2 with content-type application/grpc');
    };
  }

  /** grpc-js `addService`: `{ service, implementation }`. */
  RegisterService(impl) {
    this._grpc.register(impl?.service, impl?.implementation);
    this.publishServices();
  }

  /** `reflection` applies in place. */
  async updateConfig(partial) {
    if (partial && partial.reflection !== undefined && typeof partial.reflection !== 'boolean') {
      throw codedError('ERR_INVALID_CONFIG', 'ERR_INVALID_CONFIG: reflection: must be a boolean');
    }
    const result = await super.updateConfig(partial);
    this.publishServices();
    return result;
  }

  /** Tells the native side what to route, and what reflection describes. */
  publishServices() {
    // Reflection lists every service: off unless asked for, as with grpc-js.
    const reflection = this.options.reflection === true ? this._grpc.descriptorFiles() : null;
    const problem = this._native.setGrpcMethods(this._grpc.paths(), this._grpc.requestStreamPaths(), this._grpc.responseStreamPaths(), reflection);
    if (problem) logger.warn(`GrpcServer: server reflection lists service names only: ${problem}`);
  }

  onGrpcCall(bridge, id, path, headers, remoteAddress, remotePort) {
    return this._grpc.start(bridge, id, path, headers, remoteAddress, remotePort);
  }
}

module.exports = { BaseServer, HttpServer, HttpsServer, Http2Server, WsServer, GrpcServer, ListenerHandle };
