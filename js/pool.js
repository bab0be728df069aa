'use strict';
// `server.connectionPool`: the connection pool as the seed names it, one class per protocol over
// the native counters (kept in Rust without touching this thread): the figures every server has,
// plus each protocol's own (HTTP/1.1 keep-alive, HTTP/2 streams, WebSocket messages, gRPC calls),
// and the live connections (`getConnections()`, `closeConnection(id)`). Health combines
// utilisation, recent error rate and latency (from the per-second history), this thread's
// event-loop lag and the protocol's own signs of trouble (refused streams, pong timeouts), against
// thresholds that `connectionPool.health` may override.
const { performance } = require('node:perf_hooks');
const { codedError } = require('./errors');
const { flushWakesNow } = require('./wakes');

/** The native counters (one JSON conversion in Rust for every field). */
function nativeMetrics(native) {
  return JSON.parse(native.metricsJson());
}

/** The native per-second samples, oldest first (`second`: Unix time in s). */
function nativeHistory(native, seconds) {
  return JSON.parse(native.metricsHistoryJson(seconds));
}

const LAG_TICK_MS = 100;
const LAG_HISTORY_SECONDS = 300;

/**
 * Event-loop lag as the largest timer drift seen in each second (a `LAG_TICK_MS` timer, unref'd),
 * so a figure over a window does not depend on when, or by how many callers, it is read.
 */
class LagMonitor {
  constructor() {
    this.bySecond = new Map();
    this.timer = null;
  }

  start() {
    if (this.timer) return;
    let last = performance.now();
    this.timer = setInterval(() => {
      const now = performance.now();
      const lag = Math.max(0, now - last - LAG_TICK_MS);
      last = now;
      const second = Math.floor(Date.now() / 1000);
      if (lag > (this.bySecond.get(second) ?? -1)) this.bySecond.set(second, lag);
      for (const s of this.bySecond.keys()) {
        if (s > second - LAG_HISTORY_SECONDS) break;
        this.bySecond.delete(s);
      }
    }, LAG_TICK_MS);
    this.timer.unref();
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Largest lag (ms) in the last `seconds`. */
  maxOver(seconds) {
    const from = Math.floor(Date.now() / 1000) - seconds;
    let max = 0;
    for (const [s, lag] of this.bySecond) if (s > from && lag > max) max = lag;
    return max;
  }
}

const HEALTH_DEFAULTS = {
  /** Share of maxConnections in use. */
  degradedUtilisation: 0.8,
  overloadedUtilisation: 0.95,
  /** Errors (5xx, failures, timeouts) per request over the window. */
  degradedErrorRate: 0.05,
  overloadedErrorRate: 0.25,
  /** Average latency over the window, ms. */
  degradedLatencyMs: 1000,
  overloadedLatencyMs: 5000,
  /** Largest event-loop delay of the JavaScript thread over the window, ms. */
  degradedEventLoopLagMs: 100,
  overloadedEventLoopLagMs: 500,
  /** HTTP/2 (and gRPC): streams refused / streams asked for over the window. */
  degradedRefusedStreamRate: 0.01,
  overloadedRefusedStreamRate: 0.1,
  /** WebSocket: connections ended for a missing pong / connections ended over the window. */
  degradedPongTimeoutRate: 0.1,
  overloadedPongTimeoutRate: 0.5,
  /** Seconds of history the rates are taken over. */
  windowSeconds: 60,
};

/** `getConnections()` lists this many by default, and at most `MAX_CONNECTIONS_LISTED`. */
const DEFAULT_CONNECTIONS_LISTED = 100;
const MAX_CONNECTIONS_LISTED = 10000;

class ConnectionPoolManager {
  constructor(native, options) {
    Object.defineProperty(this, '_native', { value: native });
    Object.defineProperty(this, '_options', { value: options });
    Object.defineProperty(this, '_lag', { value: null, writable: true });
  }

  /** Counters and latency figures (ms), with the protocol's own figures. */
  getMetrics() {
    const m = nativeMetrics(this._native);
    return { ...sharedFigures(m), ...this._protocolFigures(m) };
  }

  /** The protocol's own figures (`{ http1, http2, websocket, grpc }`, those that apply). */
  _protocolFigures() {
    return {};
  }

  /** The protocol's own per-second figures, from a native sample. */
  _protocolSample() {
    return {};
  }

  /** The protocol's own health checks: `[name, value, degraded, overloaded]` over the window. */
  _protocolHealth() {
    return [];
  }

  /**
   * The newest live connections, newest first, at most `limit` (default 100, at most 10000):
   * `{ id, protocol, remoteAddress, remotePort, since, requests, bytesIn, bytesOut, tls, streams }`.
   * A connection is listed once its protocol is known (on an h2c port serving both, its first request).
   */
  getConnections(limit = DEFAULT_CONNECTIONS_LISTED) {
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0) {
      throw codedError('ERR_OUT_OF_RANGE', `The value of "limit" is out of range. It must be a non-negative integer. Received ${String(limit)}`, RangeError);
    }
    return JSON.parse(this._native.connectionsJson(Math.min(limit, MAX_CONNECTIONS_LISTED)));
  }

  /**
   * Asks live connection `id` (from `getConnections()`) to close gracefully: HTTP/1.1 after the
   * response in flight (idle: at once), HTTP/2 and gRPC with GOAWAY (open streams finish),
   * WebSocket with close 1001. Returns false when no such connection is open.
   */
  closeConnection(id) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) {
      throw codedError('ERR_INVALID_ARG_VALUE', `The argument 'id' must be a connection id from getConnections(). Received ${String(id)}`, TypeError);
    }
    // What handlers answered or sent in this turn goes out before the close (a WebSocket's
    // messages before its 1001), as the shutdown steps flush first.
    flushWakesNow();
    return this._native.closeConnection(id);
  }

  /**
   * Per-second samples `{ timestamp, requests, errors, connections, averageLatency }` (plus the
   * protocol's own rates), oldest first.
   */
  getMetricsHistory(seconds = 300) {
    return nativeHistory(this._native, Math.max(1, Math.min(300, seconds | 0))).map((s) => ({
      timestamp: s.second * 1000,
      requests: s.requests,
      errors: s.errors,
      connections: s.connections,
      averageLatency: s.averageLatencyMs,
      ...this._protocolSample(s),
    }));
  }

  /** The counters in Prometheus text format. */
  getPrometheusMetrics() {
    return this._native.prometheus();
  }

  /** Starts measuring the event loop's delay (called when the server starts listening). */
  startMonitoring() {
    if (!this._lag) this._lag = new LagMonitor();
    this._lag.start();
  }

  stopMonitoring() {
    if (this._lag) this._lag.stop();
  }

  /** `{ status: 'healthy' | 'degraded' | 'overloaded', reasons, ...figures }`. */
  getHealth() {
    const t = { ...HEALTH_DEFAULTS, ...this._options.connectionPool?.health };
    const m = nativeMetrics(this._native);
    const history = nativeHistory(this._native, t.windowSeconds);
    let requests = 0;
    let errors = 0;
    let latencySum = 0;
    for (const s of history) {
      requests += s.requests;
      errors += s.errors;
      latencySum += s.averageLatencyMs * s.requests;
    }
    const own = this._protocolHealth(history, t);
    const max = this._options.connectionPool?.maxConnections;
    const figures = {
      utilisation: max ? m.activeConnections / max : 0,
      errorRate: requests ? errors / requests : 0,
      averageLatency: requests ? latencySum / requests : 0,
      eventLoopLag: this._lag ? this._lag.maxOver(t.windowSeconds) : 0,
    };
    const checks = [
      ['utilisation', figures.utilisation, t.degradedUtilisation, t.overloadedUtilisation],
      ['errorRate', figures.errorRate, t.degradedErrorRate, t.overloadedErrorRate],
      ['averageLatency', figures.averageLatency, t.degradedLatencyMs, t.overloadedLatencyMs],
      ['eventLoopLag', figures.eventLoopLag, t.degradedEventLoopLagMs, t.overloadedEventLoopLagMs],
      ...own,
    ];
    for (const [name, value] of own) figures[name] = value;
    let status = 'healthy';
    const reasons = [];
    for (const [name, value, degraded, overloaded] of checks) {
      if (value >= overloaded) {
        status = 'overloaded';
        reasons.push(`${name} ${round(value)} ≥ ${overloaded}`);
      } else if (value >= degraded) {
        if (status === 'healthy') status = 'degraded';
        reasons.push(`${name} ${round(value)} ≥ ${degraded}`);
      }
    }
    return { status, reasons, ...figures, activeConnections: m.activeConnections, accepting: m.accepting, thresholds: t };
  }
}

function round(v) {
  return Math.round(v * 1000) / 1000;
}

/** What every server counts, from the native report. */
function sharedFigures(m) {
  return {
    activeConnections: m.activeConnections,
    totalConnections: m.totalConnections,
    connectionsPerSecond: m.connectionsPerSecond,
    averageLatency: m.averageLatencyMs,
    p50Latency: m.p50LatencyMs,
    p90Latency: m.p90LatencyMs,
    p99Latency: m.p99LatencyMs,
    errorRate: m.errorRate,
    pendingRequests: m.pendingRequests,
    requestsTotal: m.requestsTotal,
    requestsActive: m.requestsActive,
    requestsFailed: m.requestsFailed,
    requestsTimedOut: m.requestsTimedOut,
    requestsAborted: m.requestsAborted,
    responses5xx: m.responses5xx,
    /** WebSocket peers terminated for missing a pong. */
    wsDeadPeers: m.wsDeadPeers,
    rejectedConnections: m.rejectedConnections,
    bytesIn: m.bytesIn,
    bytesOut: m.bytesOut,
    uptime: m.uptimeMs,
    accepting: m.accepting,
  };
}

const NO_HTTP1 = { keepAliveReuses: 0, requestsPerConnection: 0, idleConnections: 0 };
const NO_HTTP2 = { sessions: 0, activeStreams: 0, maxStreamsPerSession: 0, refusedStreams: 0, resetStreams: 0, goawaysSent: 0 };

/** HTTP/1.1: requests on reused connections, requests per connection, idle keep-alive connections. */
function http1Figures(m) {
  return { http1: { ...(m.http1 ?? NO_HTTP1) } };
}

/** HTTP/2 sessions and streams (the HTTP/2 server's, and gRPC's connections). */
function http2Figures(m) {
  return { http2: { ...(m.http2 ?? NO_HTTP2) } };
}

/** Share of `part` in `whole` over the window's samples (0 with nothing in the window). */
function rateOver(history, part, whole) {
  let p = 0;
  let w = 0;
  for (const s of history) {
    p += part(s);
    w += whole(s);
  }
  return w > 0 ? p / w : 0;
}

/** Refused streams among the streams clients asked for (served or refused). */
function refusedStreamCheck(history, t) {
  const rate = rateOver(history, (s) => s.refusedStreams, (s) => s.requests + s.refusedStreams);
  return [['refusedStreamRate', rate, t.degradedRefusedStreamRate, t.overloadedRefusedStreamRate]];
}

function http2Sample(s) {
  return { refusedStreams: s.refusedStreams, resetStreams: s.resetStreams };
}

class HttpConnectionPoolManager extends ConnectionPoolManager {
  _protocolFigures(m) {
    return http1Figures(m);
  }
}

class HttpsConnectionPoolManager extends ConnectionPoolManager {
  _protocolFigures(m) {
    return http1Figures(m);
  }
}

/** HTTP/2, and HTTP/1.1 for clients that fall back to it (or an h2c port's HTTP/1.1 ones). */
class Http2ConnectionPoolManager extends ConnectionPoolManager {
  _protocolFigures(m) {
    return { ...http1Figures(m), ...http2Figures(m) };
  }

  _protocolSample(s) {
    return http2Sample(s);
  }

  _protocolHealth(history, t) {
    return refusedStreamCheck(history, t);
  }
}

/** WebSocket, and HTTP/1.1 for the plain requests a WebSocket server serves too. */
class WebSocketConnectionPoolManager extends ConnectionPoolManager {
  _protocolFigures(m) {
    const w = m.websocket ?? {};
    return {
      ...http1Figures(m),
      websocket: {
        connections: w.connections ?? 0,
        messagesIn: w.messagesIn ?? 0,
        messagesOut: w.messagesOut ?? 0,
        bytesIn: w.bytesIn ?? 0,
        bytesOut: w.bytesOut ?? 0,
        pingsSent: w.pingsSent ?? 0,
        pongTimeouts: w.pongTimeouts ?? 0,
        closeCodes: { ...w.closeCodes },
      },
    };
  }

  _protocolSample(s) {
    return { messagesIn: s.wsMessagesIn, messagesOut: s.wsMessagesOut, pongTimeouts: s.pongTimeouts };
  }

  _protocolHealth(history, t) {
    const rate = rateOver(history, (s) => s.pongTimeouts, (s) => s.wsClosed);
    return [['pongTimeoutRate', rate, t.degradedPongTimeoutRate, t.overloadedPongTimeoutRate]];
  }
}

/** gRPC calls, over HTTP/2 sessions. */
class GrpcConnectionPoolManager extends ConnectionPoolManager {
  _protocolFigures(m) {
    const g = m.grpc ?? {};
    const callsByMethod = {};
    for (const [method, f] of Object.entries(g.callsByMethod ?? {})) {
      callsByMethod[method] = { calls: f.calls, averageLatency: f.averageLatencyMs };
    }
    const a = g.activeStreams ?? {};
    return {
      ...http2Figures(m),
      grpc: {
        callsStarted: g.callsStarted ?? 0,
        callsByStatus: { ...g.callsByStatus },
        callsByMethod,
        activeStreams: {
          unary: a.unary ?? 0,
          clientStreaming: a.clientStreaming ?? 0,
          serverStreaming: a.serverStreaming ?? 0,
          bidiStreaming: a.bidiStreaming ?? 0,
        },
      },
    };
  }

  _protocolSample(s) {
    return http2Sample(s);
  }

  _protocolHealth(history, t) {
    return refusedStreamCheck(history, t);
  }
}

const POOL_BY_PROTOCOL = {
  http: HttpConnectionPoolManager,
  https: HttpsConnectionPoolManager,
  http2: Http2ConnectionPoolManager,
  ws: WebSocketConnectionPoolManager,
  wss: WebSocketConnectionPoolManager,
  grpc: GrpcConnectionPoolManager,
};

function createConnectionPool(protocol, native, options) {
  const Pool = POOL_BY_PROTOCOL[protocol] ?? HttpConnectionPoolManager;
  return new Pool(native, options);
}

module.exports = {
  nativeMetrics,
  HEALTH_DEFAULTS,
  ConnectionPoolManager,
  HttpConnectionPoolManager,
  HttpsConnectionPoolManager,
  Http2ConnectionPoolManager,
  WebSocketConnectionPoolManager,
  GrpcConnectionPoolManager,
  createConnectionPool,
};
