'use strict';
// `server.connectionPool`: the connection pool as the seed names it, one class per protocol over
// the same native counters (kept in Rust without touching this thread). Health combines
// utilisation, recent error rate and latency (from the per-second history) and this thread's
// event-loop lag, against thresholds that `connectionPool.health` may override.
const { performance } = require('node:perf_hooks');

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
  /** Seconds of history the rates are taken over. */
  windowSeconds: 60,
};

class ConnectionPoolManager {
  constructor(native, options) {
    Object.defineProperty(this, '_native', { value: native });
    Object.defineProperty(this, '_options', { value: options });
    Object.defineProperty(this, '_lag', { value: null, writable: true });
  }

  /** Counters and latency figures (ms). */
  getMetrics() {
    const m = nativeMetrics(this._native);
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

  /** Per-second samples `{ timestamp, requests, errors, connections, averageLatency }`, oldest first. */
  getMetricsHistory(seconds = 300) {
    return nativeHistory(this._native, Math.max(1, Math.min(300, seconds | 0))).map((s) => ({
      timestamp: s.second * 1000,
      requests: s.requests,
      errors: s.errors,
      connections: s.connections,
      averageLatency: s.averageLatencyMs,
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
    ];
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

class HttpConnectionPoolManager extends ConnectionPoolManager {}
class HttpsConnectionPoolManager extends ConnectionPoolManager {}
class Http2ConnectionPoolManager extends ConnectionPoolManager {}
class WebSocketConnectionPoolManager extends ConnectionPoolManager {}
class GrpcConnectionPoolManager extends ConnectionPoolManager {}

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
