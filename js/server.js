'use strict';
// The server classes: one shared lifecycle (BaseServer) with the protocol parts plugged in. The
// native NativeServer does the I/O; this keeps the koatty_serve surface (options, protocol, status,
// server, listenCallback, Start, Stop) and node's EventEmitter conventions.
const { EventEmitter } = require('node:events');
const { NativeServer } = require('./binding');
const { Bridge } = require('./bridge');
const { codedError } = require('./response');
const logger = require('./logger');

const DEFAULT_SHUTDOWN = { timeout: 30000, drainDelay: 5000, stepTimeout: 6000 };

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
}

/** The options the native side needs (ext and TLS material stay in JS). */
function nativeOptions(options) {
  const { hostname, port, protocol, connectionPool, reusePort, ssl, h2c } = options;
  return JSON.stringify({ hostname, port, protocol, connectionPool, reusePort, ssl, h2c });
}

/** A native constructor error as a coded Error (`ERR_TLS_CONFIG: …` → code ERR_TLS_CONFIG). */
function constructionError(e) {
  const match = /^(ERR_[A-Z_]+):/.exec(e.message);
  return codedError(match ? match[1] : 'ERR_INVALID_CONFIG', e.message);
}

class BaseServer extends EventEmitter {
  constructor(app, options) {
    super();
    if (options === null || typeof options !== 'object') {
      throw codedError('ERR_INVALID_CONFIG', 'ERR_INVALID_CONFIG: options: must be an object');
    }
    Object.defineProperty(this, 'app', { value: app, writable: true, enumerable: false, configurable: true });
    this.options = options;
    this.protocol = options.protocol ?? 'http';
    this.status = undefined;
    this.listenCallback = undefined;
    this.server = new ListenerHandle(this);
    let native;
    try {
      native = new NativeServer(nativeOptions(this.nativeOptionsOf(options)));
    } catch (e) {
      throw constructionError(e);
    }
    if (native.generatedDevCertificate) {
      logger.warn(`${this.constructor.name}: no ssl.key/ssl.cert given; serving a generated self-signed development certificate`);
    }
    const bridge = new Bridge(native, this.createRequestHandler(), (err) => this.emit('handlerError', err) || logger.error('request handler failed', err));
    Object.defineProperty(this, '_native', { value: native, enumerable: false });
    Object.defineProperty(this, '_bridge', { value: bridge, enumerable: false });
    Object.defineProperty(this, '_stopping', { value: null, writable: true, enumerable: false });
    this.connectionPool = createPoolView(native, options);
  }

  /** The options handed to the native side (protocols may derive some, e.g. ssl from ext). */
  nativeOptionsOf(options) {
    return options;
  }

  /** Re-reads the TLS key and certificate for new handshakes; open connections keep theirs. */
  reloadCertificates() {
    const failure = this._native.reloadCertificates();
    if (failure) throw constructionError(new Error(failure));
  }

  /** The protocol part: what each request is handed to. */
  createRequestHandler() {
    throw codedError('ERR_NOT_IMPLEMENTED', `${this.constructor.name} must implement createRequestHandler()`);
  }

  /**
   * Binds and serves. Returns the listener handle at once; `listenCallback` runs when listening.
   * A bind failure is emitted as 'error' (with `code`), never thrown from here.
   */
  Start(listenCallback) {
    const callback = listenCallback ?? this.listenCallback;
    const bridge = this._bridge;
    this._native.listen(bridge.onRequest, bridge.onEvent, (code, message, address, port, family) => {
      if (code) {
        const err = codedError(code, message);
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
      this.server.emit('listening');
      this.emit('listening');
      if (typeof callback === 'function') callback();
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

  /** Stops accepting, lets in-flight requests finish within `timeout`, then closes what is left. */
  gracefulShutdown(options) {
    if (this._stopping) return this._stopping;
    const opts = { ...DEFAULT_SHUTDOWN, ...options };
    const started = Date.now();
    this._stopping = new Promise((resolve) => {
      this._native.close(Math.max(0, opts.timeout | 0), (connectionsAtStart, forced) => {
        this.server.listening = false;
        const report = { connectionsAtStart, forced, duration: Date.now() - started };
        this.server.emit('close');
        this.emit('close');
        this.emit('stopped', report);
        resolve(report);
      });
    });
    return this._stopping;
  }
}

function createPoolView(native, options) {
  return {
    getMetrics() {
      const m = native.metrics();
      return {
        activeConnections: m.activeConnections,
        totalConnections: m.totalConnections,
        connectionsPerSecond: m.connectionsPerSecond,
        averageLatency: 0,
        errorRate: m.errorRate,
        pendingRequests: m.pendingRequests,
        requestsTotal: m.requestsTotal,
        requestsActive: m.requestsActive,
        requestsFailed: m.requestsFailed,
        requestsTimedOut: m.requestsTimedOut,
        requestsAborted: m.requestsAborted,
        rejectedConnections: m.rejectedConnections,
        bytesOut: m.bytesOut,
        uptime: m.uptimeMs,
      };
    },
    getHealth() {
      const m = native.metrics();
      const max = options.connectionPool?.maxConnections;
      const utilisation = max ? m.activeConnections / max : 0;
      const status = utilisation >= 0.95 ? 'overloaded' : utilisation >= 0.8 || m.errorRate > 0.05 ? 'degraded' : 'healthy';
      return { status, utilisation, activeConnections: m.activeConnections, errorRate: m.errorRate };
    },
  };
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
  nativeOptionsOf(options) {
    return options.h2c ? options : withSsl(options);
  }
}

module.exports = { BaseServer, HttpServer, HttpsServer, Http2Server, ListenerHandle };
