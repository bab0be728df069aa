// Type definitions for koatty_serve (native). Hand-written: the generated binding.d.ts describes the
// internal addon surface only.
import { EventEmitter } from 'events';
import type { IncomingMessage, ServerResponse } from 'http';

export type KoattyProtocol = 'http' | 'https' | 'http2' | 'grpc' | 'ws' | 'wss';

/** What a server needs from the application: Koatty's `app` (koatty_core) satisfies it. */
export interface KoattyApplication {
  callback(protocol?: string, reqHandler?: (ctx: any) => Promise<any>): (req: any, res: any) => any;
  config?(name?: string, type?: string): any;
  [key: string]: any;
}

/** The options Koatty 3.11.8 passes to `NewServe` (koatty_serve 2.3.0's `ListeningOptions`). */
export interface ListeningOptions {
  hostname: string;
  port: number;
  protocol: KoattyProtocol;
  trace?: boolean;
  ext?: any;
}

export interface ConnectionPoolConfig {
  /** Open connections at most (default 1000, 10000 when NODE_ENV=production). Over it: 503 + Retry-After. */
  maxConnections?: number;
  /** Idle connection timeout in ms. */
  connectionTimeout?: number;
  /** Idle time between requests on a keep-alive connection, ms (default 5000; 0 = no limit). */
  keepAliveTimeout?: number;
  /** Time for the whole request including the handler's answer, ms (default 300000; unanswered → 503). */
  requestTimeout?: number;
  /** Time for the request headers to arrive, ms (default 60000). */
  headersTimeout?: number;
  /** Requests handed to JavaScript whose response head has not gone out yet, at most (default 4096); when full, reading pauses. */
  maxInFlight?: number;
  /** Request line + headers size limit in bytes (default 16384 → 431). */
  maxHeaderSize?: number;
  /**
   * Request header fields, at most (default 2000, node's `maxHeadersCount` → 431); 0 = as many as
   * `maxHeaderSize` holds. HTTP/1.1 and HTTP/2.
   */
  maxHeadersCount?: number;
  /** Request body size limit in bytes (default none → 413). */
  maxBodySize?: number;
  /** Time allowed for a TLS handshake, ms (default 10000); a silent client never stalls others. */
  handshakeTimeout?: number;
  /** Requests served on one HTTP/1 connection, at most (node's `maxRequestsPerSocket`; default none, 0 = none). */
  maxRequestsPerSocket?: number;
  /** Thresholds of `getHealth()`. */
  health?: Partial<HealthThresholds>;
  protocolSpecific?: {
    maxSessionMemory?: number;
    maxHeaderListSize?: number;
    maxConcurrentStreams?: number;
    initialWindowSize?: number;
    keepAliveTime?: number;
    keepAliveTimeout?: number;
    maxReceiveMessageLength?: number;
    maxSendMessageLength?: number;
    /**
     * gRPC: how response messages are compressed when the client accepts it: 'identity' (default,
     * as grpc-js's server), 'deflate' or 'gzip', or grpc-js's `compressionAlgorithms` 0, 1, 2. A
     * handler can choose per call (`call.setCompression`) and per message (write flag 2).
     */
    defaultCompressionAlgorithm?: 'identity' | 'deflate' | 'gzip' | 0 | 1 | 2;
    pingInterval?: number;
    pongTimeout?: number;
    heartbeatInterval?: number;
    maxPayload?: number;
    /** WebSocket: unsent bytes a connection may queue before it is terminated (default 16 MiB). */
    maxBufferedAmount?: number;
    /** WebSocket: bytes of received messages (and pongs) a connection may have waiting for the handler; reading pauses while spent (default 8 MiB). */
    maxReceiveQueue?: number;
    /** WebSocket: keep connections open through shutdown's drain delay and close them (1001) at step 3 instead of step 1 (default false). */
    keepOpenDuringDrainDelay?: boolean;
  };
}

export interface BaseServerOptions {
  hostname: string;
  port: number;
  protocol: KoattyProtocol;
  trace?: boolean;
  ext?: Record<string, any>;
  connectionPool?: ConnectionPoolConfig;
  /** SO_REUSEPORT, so several processes can serve one port. */
  reusePort?: boolean;
  /**
   * Health and metrics paths answered in Rust without entering JavaScript (off by default):
   * `true` for `/healthz`, `/readyz`, `/metrics` (Prometheus), or per-path settings.
   */
  nativeEndpoints?: boolean | { healthz?: string | boolean; readyz?: string | boolean; metrics?: string | boolean };
}

export interface HealthThresholds {
  degradedUtilisation: number;
  overloadedUtilisation: number;
  degradedErrorRate: number;
  overloadedErrorRate: number;
  degradedLatencyMs: number;
  overloadedLatencyMs: number;
  degradedEventLoopLagMs: number;
  overloadedEventLoopLagMs: number;
  /** HTTP/2 and gRPC: refused streams / streams asked for, over the window. */
  degradedRefusedStreamRate: number;
  overloadedRefusedStreamRate: number;
  /** WebSocket: connections ended for a missing pong / connections ended, over the window. */
  degradedPongTimeoutRate: number;
  overloadedPongTimeoutRate: number;
  windowSeconds: number;
}

export interface BaseSSLConfig {
  key?: string;
  cert?: string;
  ca?: string;
  passphrase?: string;
  ciphers?: string;
  honorCipherOrder?: boolean;
  secureProtocol?: string;
}

export interface SSLConfig extends BaseSSLConfig {
  enabled: boolean;
  keyFile?: string;
  certFile?: string;
  caFile?: string;
  clientCertRequired?: boolean;
  /** As node's: ask for a client certificate (verified against `ca`). */
  requestCert?: boolean;
  /** As node's: with `false`, a client without a valid certificate gets in, `authorized` false. */
  rejectUnauthorized?: boolean;
}

export interface SSL1Config extends BaseSSLConfig {
  mode: 'auto' | 'manual' | 'mutual_tls';
  requestCert?: boolean;
  rejectUnauthorized?: boolean;
}

export interface SSL2Config extends SSL1Config {
  allowHTTP1?: boolean;
}

export interface HttpServerOptions extends BaseServerOptions {}
export interface HttpsServerOptions extends BaseServerOptions {
  ssl?: SSL1Config;
}
export interface Http2ServerOptions extends BaseServerOptions {
  ssl?: SSL2Config;
  /** Serve cleartext HTTP/2 with prior knowledge (and HTTP/1.1 on the same port) instead of TLS. */
  h2c?: boolean;
}
export interface GrpcServerOptions extends BaseServerOptions {
  ssl?: SSLConfig;
  /**
   * Serve gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) built from the registered
   * services' descriptors. Off by default, as with grpc-js: it lists every service to anyone who
   * can connect (applies in place on `updateConfig`).
   */
  reflection?: boolean;
}
export interface WebSocketServerOptions extends BaseServerOptions {
  ssl?: SSLConfig;
  /**
   * ws's `handleProtocols`: chooses the subprotocol from those the client offers (in order); the
   * answer goes into the 101 and is `client.protocol`, `false` sends none, a throw refuses the
   * upgrade (500). Not called when nothing is offered. Default: the first offered.
   */
  handleProtocols?: (protocols: Set<string>, request: IncomingMessage) => string | false;
}

/** Input of the ConfigHelper functions: everything optional, defaults filled in. */
export type ServerOptionsInput<T extends BaseServerOptions> = Partial<T>;

export interface ShutdownOptions {
  /** Bound on the whole shutdown, ms (default 30000). */
  timeout?: number;
  /** Wait after refusing new connections so load balancers notice, ms (default 5000; ends early when no connection is open). */
  drainDelay?: number;
  /** Bound on steps 1, 4 and 5, ms (default 6000). */
  stepTimeout?: number;
  skipSteps?: ShutdownStepName[];
}

export type ShutdownStepName =
  | 'stopAcceptingNewConnections'
  | 'waitDrainDelay'
  | 'waitForConnectionCompletion'
  | 'forceCloseRemainingConnections'
  | 'stopMonitoringAndCleanup';

export interface ShutdownReport {
  traceId: string;
  steps: Array<{ name: ShutdownStepName; status: 'completed' | 'skipped' | 'timeout'; duration: number }>;
  connectionsAtStart: number;
  drained: boolean;
  forced: number;
  duration: number;
}

export interface ConfigUpdateResult {
  changedKeys: string[];
  requiresRestart: boolean;
  restarted: boolean;
}

export interface ConnectionMetrics {
  activeConnections: number;
  totalConnections: number;
  connectionsPerSecond: number;
  /** ms, since start */
  averageLatency: number;
  p50Latency: number;
  p90Latency: number;
  p99Latency: number;
  /** (failed + timed out + 5xx answers) / requests */
  errorRate: number;
  /** Requests handed to the handler and not finished (0 when idle: nothing leaked). */
  pendingRequests: number;
  requestsTotal: number;
  requestsActive: number;
  requestsFailed: number;
  requestsTimedOut: number;
  requestsAborted: number;
  responses5xx: number;
  /** WebSocket peers terminated for missing a pong */
  wsDeadPeers: number;
  rejectedConnections: number;
  bytesIn: number;
  bytesOut: number;
  uptime: number;
  /** false from the first shutdown step on (what /readyz reports) */
  accepting: boolean;
}

/** HTTP/1.1 figures (HttpServer, HttpsServer; HTTP/1.1 clients of Http2Server and WsServer). */
export interface Http1Figures {
  /** Requests served on a connection that had served one before. */
  keepAliveReuses: number;
  /** Requests per connection that served any, on average. */
  requestsPerConnection: number;
  /** Open HTTP/1.1 connections with no request in flight. */
  idleConnections: number;
}

/** HTTP/2 figures (Http2Server, and GrpcServer's connections). */
export interface Http2Figures {
  /** Open HTTP/2 sessions. */
  sessions: number;
  /** Streams in flight. */
  activeStreams: number;
  /** The most streams in flight at once on one session, since start. */
  maxStreamsPerSession: number;
  /** Streams refused (RST_STREAM REFUSED_STREAM sent: over maxConcurrentStreams, or a header block too large). */
  refusedStreams: number;
  /** Streams reset by the client (RST_STREAM received). */
  resetStreams: number;
  /** Sessions sent a GOAWAY (shutdown, restart, closeConnection, connectionTimeout, protocol errors). */
  goawaysSent: number;
}

/** WebSocket figures (WsServer). Messages are text and binary frames; pings and pongs are not. */
export interface WebSocketFigures {
  /** Open WebSocket connections. */
  connections: number;
  messagesIn: number;
  messagesOut: number;
  /** Payload bytes of the messages received. */
  bytesIn: number;
  /** Payload bytes of the messages sent. */
  bytesOut: number;
  /** The server's keep-alive pings (`pingInterval`). */
  pingsSent: number;
  /** Connections terminated for a pong missing past `pongTimeout` (as `wsDeadPeers`). */
  pongTimeouts: number;
  /** Connections ended, by close code: '1000'…'1015' one by one, any other under 'other'; 1006 when no close frame was exchanged. */
  closeCodes: Record<string, number>;
}

/** A registered gRPC method's finished calls. */
export interface GrpcMethodFigures {
  calls: number;
  /** ms from the call's arrival to its status */
  averageLatency: number;
}

/** gRPC calls of registered methods in progress, by kind. */
export interface GrpcActiveCalls {
  unary: number;
  clientStreaming: number;
  serverStreaming: number;
  bidiStreaming: number;
}

/** gRPC figures (GrpcServer). */
export interface GrpcFigures {
  /** Calls received (registered methods, health, reflection, unimplemented ones). */
  callsStarted: number;
  /** Calls ended, by the status code sent ('0'…'16', 'other'); a call the client reset counts under '1' (CANCELLED). */
  callsByStatus: Record<string, number>;
  /** By full method name (`/package.Service/Method`), registered methods only. */
  callsByMethod: Record<string, GrpcMethodFigures>;
  activeStreams: GrpcActiveCalls;
}

export interface HttpConnectionMetrics extends ConnectionMetrics {
  http1: Http1Figures;
}

export interface Http2ConnectionMetrics extends HttpConnectionMetrics {
  http2: Http2Figures;
}

export interface WebSocketConnectionMetrics extends HttpConnectionMetrics {
  websocket: WebSocketFigures;
}

export interface GrpcConnectionMetrics extends ConnectionMetrics {
  http2: Http2Figures;
  grpc: GrpcFigures;
}

export interface MetricsSample {
  /** start of the second, ms since the epoch */
  timestamp: number;
  requests: number;
  errors: number;
  connections: number;
  averageLatency: number;
}

/** A second of an HTTP/2 or gRPC server. */
export interface Http2MetricsSample extends MetricsSample {
  refusedStreams: number;
  resetStreams: number;
}

/** A second of a WebSocket server. */
export interface WebSocketMetricsSample extends MetricsSample {
  messagesIn: number;
  messagesOut: number;
  pongTimeouts: number;
}

/** TLS details of a live connection. */
export interface LiveConnectionTls {
  /** e.g. 'TLSv1.3' */
  protocol: string | null;
  /** OpenSSL name, e.g. 'TLS_AES_128_GCM_SHA256' */
  cipher: string | null;
  /** The client certificate was verified against `ca`. */
  authorized: boolean;
}

/** One entry of `getConnections()`. */
export interface LiveConnection {
  /** For `closeConnection(id)`. */
  id: number;
  /** What it speaks: 'http1', 'http2', 'websocket' (after an upgrade) or 'grpc'. */
  protocol: 'http1' | 'http2' | 'websocket' | 'grpc';
  remoteAddress: string;
  remotePort: number;
  /** When it was accepted, ms since the epoch. */
  since: number;
  /** Requests (HTTP/2 streams, gRPC calls) begun on it. */
  requests: number;
  /** Bytes read and written (after TLS). */
  bytesIn: number;
  bytesOut: number;
  tls: LiveConnectionTls | null;
  /** Requests (streams, calls) in flight. */
  streams: number;
}

export type HealthStatus = 'healthy' | 'degraded' | 'overloaded';

export interface ConnectionHealth {
  status: HealthStatus;
  reasons: string[];
  utilisation: number;
  errorRate: number;
  averageLatency: number;
  eventLoopLag: number;
  activeConnections: number;
  accepting: boolean;
  thresholds: HealthThresholds;
}

/** Health of an HTTP/2 or gRPC server. */
export interface Http2ConnectionHealth extends ConnectionHealth {
  /** Refused streams / streams asked for (served or refused), over the window. */
  refusedStreamRate: number;
}

/** Health of a WebSocket server. */
export interface WebSocketConnectionHealth extends ConnectionHealth {
  /** Connections ended for a missing pong / connections ended, over the window. */
  pongTimeoutRate: number;
}

export interface ConnectionPool {
  getMetrics(): ConnectionMetrics;
  /** Per-second samples of the last `seconds` (≤ 300), oldest first. */
  getMetricsHistory(seconds?: number): MetricsSample[];
  getHealth(): ConnectionHealth;
  /** The counters in Prometheus text format. */
  getPrometheusMetrics(): string;
  /** The newest live connections, newest first, at most `limit` (default 100, ≤ 10000; ERR_OUT_OF_RANGE otherwise). */
  getConnections(limit?: number): LiveConnection[];
  /** Asks connection `id` to close gracefully; false when it is not open (ERR_INVALID_ARG_VALUE for a non-id). */
  closeConnection(id: number): boolean;
}

/** `HttpServer`'s pool. */
export interface HttpConnectionPool extends ConnectionPool {
  getMetrics(): HttpConnectionMetrics;
}

/** `HttpsServer`'s pool (the HTTP/1.1 figures). */
export interface HttpsConnectionPool extends HttpConnectionPool {
  getMetrics(): HttpConnectionMetrics;
}

/** `Http2Server`'s pool: HTTP/2, and HTTP/1.1 for clients that fall back to it. */
export interface Http2ConnectionPool extends HttpConnectionPool {
  getMetrics(): Http2ConnectionMetrics;
  getMetricsHistory(seconds?: number): Http2MetricsSample[];
  getHealth(): Http2ConnectionHealth;
}

/** `WsServer`'s pool: WebSocket, and HTTP/1.1 for the plain requests it serves. */
export interface WebSocketConnectionPool extends HttpConnectionPool {
  getMetrics(): WebSocketConnectionMetrics;
  getMetricsHistory(seconds?: number): WebSocketMetricsSample[];
  getHealth(): WebSocketConnectionHealth;
}

/** `GrpcServer`'s pool: gRPC calls over HTTP/2 sessions. */
export interface GrpcConnectionPool extends ConnectionPool {
  getMetrics(): GrpcConnectionMetrics;
  getMetricsHistory(seconds?: number): Http2MetricsSample[];
  getHealth(): Http2ConnectionHealth;
}

export interface ListenerAddress {
  address: string;
  family: string;
  port: number;
}

/** `server.server` and `Start()`'s return value: a small handle shaped like node's net.Server. */
export interface ListenerHandle extends EventEmitter {
  readonly listening: boolean;
  address(): ListenerAddress | null;
  close(callback?: () => void): this;
  /** `cb(null, count)` with the connections open now. */
  getConnections(callback: (err: Error | null, count: number) => void): this;
  /** Sets `timeout` (`connectionPool.connectionTimeout`); `'timeout'` is never emitted. */
  setTimeout(ms: number, callback?: () => void): this;
  /** node's http.Server properties: they read and write the matching `connectionPool` keys, applied at once. */
  keepAliveTimeout: number;
  headersTimeout: number;
  requestTimeout: number;
  timeout: number;
  maxHeadersCount: number | null;
  maxRequestsPerSocket: number;
  maxConnections: number | undefined;
}

/** The interface koatty_core's `KoattyServer` describes, as every server class implements it. */
export interface KoattyServer {
  options: any;
  server: any;
  status: number | undefined;
  readonly Start: (listenCallback?: () => void) => any;
  readonly Stop: (callback?: () => void) => void;
  readonly RegisterService?: (impl: any) => void;
}

export declare class BaseServer<O extends BaseServerOptions = BaseServerOptions> extends EventEmitter implements KoattyServer {
  constructor(app: KoattyApplication, options: O);
  readonly app: KoattyApplication;
  options: O;
  protocol: KoattyProtocol | string;
  /** `undefined` while running, 503 once shutdown has begun. */
  status: number | undefined;
  server: ListenerHandle;
  listenCallback?: () => void;
  readonly connectionPool: ConnectionPool;
  /** Binds and serves; a bind failure is emitted as 'error' with `code` (never thrown). */
  Start(listenCallback?: () => void): ListenerHandle;
  /** Graceful shutdown with default options; `callback` is called once. */
  Stop(callback?: () => void): void;
  /** Five named steps, each bounded; calling it twice returns the same promise. */
  gracefulShutdown(options?: ShutdownOptions): Promise<ShutdownReport>;
  /**
   * Pool limits, timeouts and a new TLS key/cert apply in place; hostname, port, protocol and other
   * ssl settings restart with no refused connection. Rejects (old server kept) on failure.
   */
  updateConfig(partial: Partial<O> & Record<string, any>): Promise<ConfigUpdateResult>;
  /** updateConfig's in-place part: applies options that need no restart (throws a coded error otherwise). */
  protected applyConfigChanges(next: O): void;
  /** updateConfig's restart part: bind the new listener first, switch, then drain the old one. */
  protected gracefulRestart(next: O): Promise<void>;
  /** Re-reads the TLS key and certificate for new handshakes (throws ERR_TLS_CONFIG; TLS servers only). */
  reloadCertificates(): void;
  on(event: 'error', listener: (err: NodeJS.ErrnoException) => void): this;
  on(event: 'listening' | 'close', listener: () => void): this;
  on(event: 'stopped', listener: (report: ShutdownReport) => void): this;
  /** A handler threw or rejected; `req` is the request (HTTP family) when there is one. */
  on(event: 'handlerError', listener: (err: unknown, req?: import('http').IncomingMessage) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare class HttpServer<O extends BaseServerOptions = HttpServerOptions> extends BaseServer<O> {
  constructor(app: KoattyApplication, options: O | ListeningOptions);
  readonly connectionPool: HttpConnectionPool;
}

/** HTTP/1.1 over TLS (rustls). Bad TLS settings throw `ERR_TLS_CONFIG` from the constructor. */
export declare class HttpsServer extends HttpServer<HttpsServerOptions> {
  constructor(app: KoattyApplication, options: HttpsServerOptions | ListeningOptions);
  readonly connectionPool: HttpsConnectionPool;
}

/** HTTP/2 over TLS (ALPN, HTTP/1.1 fallback unless `ssl.allowHTTP1` is false), or cleartext with `h2c`. */
export declare class Http2Server extends HttpServer<Http2ServerOptions> {
  constructor(app: KoattyApplication, options: Http2ServerOptions | ListeningOptions);
  readonly connectionPool: Http2ConnectionPool;
}

/**
 * WebSocket (`ws`, or `wss` when protocol is 'wss' or `ssl.enabled`): the Koatty contract
 * (per message `app.callback(protocol)(upgradeReq, client)` with `upgradeReq.data`); ordinary HTTP
 * requests go to `app.callback()`. Emits 'connection' (client, upgradeReq).
 */
export declare class WsServer extends BaseServer<WebSocketServerOptions> {
  constructor(app: KoattyApplication, options: WebSocketServerOptions | ListeningOptions);
  readonly connectionPool: WebSocketConnectionPool;
  on(event: 'connection', listener: (client: NativeWebSocket, req: IncomingMessage & { data?: Buffer }) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** The socket WebSocket handlers get (`ctx.websocket`): a subset of ws.WebSocket. */
export interface NativeWebSocket extends EventEmitter {
  readonly readyState: 0 | 1 | 2 | 3;
  readonly bufferedAmount: number;
  readonly protocol: string;
  readonly url: string;
  /** A `Blob` is read first, then sent; what is sent after it waits for it, in order (as ws 8.18+). */
  send(data: string | number | Buffer | ArrayBuffer | ArrayBufferView | Blob, options?: { binary?: boolean } | null, cb?: (err?: Error) => void): void;
  send(data: string | number | Buffer | ArrayBuffer | ArrayBufferView | Blob, cb?: (err?: Error) => void): void;
  /** Throws ws's RangeError for a payload over 125 bytes; `cb` gets an error when not open. Counts toward `bufferedAmount` like `send`. */
  ping(data?: string | Buffer | number | Blob, mask?: boolean, cb?: (err?: Error) => void): void;
  /** An unsolicited pong (pings are answered automatically); as `ping`. */
  pong(data?: string | Buffer | number | Blob, mask?: boolean, cb?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'pong', listener: (data: Buffer) => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** A grpc-js style method definition (what proto-loader + loadPackageDefinition produce). */
export interface GrpcMethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestDeserialize(bytes: Buffer): any;
  responseSerialize(value: any): Buffer;
  originalName?: string;
  [key: string]: any;
}

/**
 * gRPC over HTTP/2 (TLS with `ssl.enabled`). `RegisterService({ service, implementation })` with
 * grpc-js definitions; all four call kinds; UNIMPLEMENTED, grpc.health.v1 (Check, Watch) and server
 * reflection answered natively.
 */
export declare class GrpcServer extends BaseServer<GrpcServerOptions> {
  constructor(app: KoattyApplication, options: GrpcServerOptions | ListeningOptions);
  readonly connectionPool: GrpcConnectionPool;
  RegisterService(impl: { service: Record<string, GrpcMethodDefinition>; implementation: Record<string, (...args: any[]) => any> }): void;
}

/** grpc-js compatible metadata (`-bin` keys hold Buffers). */
export declare class Metadata {
  set(key: string, value: string | Buffer): void;
  add(key: string, value: string | Buffer): void;
  remove(key: string): void;
  get(key: string): Array<string | Buffer>;
  getMap(): Record<string, string | Buffer>;
  clone(): Metadata;
  merge(other: Metadata): void;
  toJSON(): Record<string, Array<string | Buffer>>;
}

export declare const GrpcStatus: Readonly<Record<'OK' | 'CANCELLED' | 'UNKNOWN' | 'INVALID_ARGUMENT' | 'DEADLINE_EXCEEDED' | 'NOT_FOUND' | 'ALREADY_EXISTS' | 'PERMISSION_DENIED' | 'RESOURCE_EXHAUSTED' | 'FAILED_PRECONDITION' | 'ABORTED' | 'OUT_OF_RANGE' | 'UNIMPLEMENTED' | 'INTERNAL' | 'UNAVAILABLE' | 'DATA_LOSS' | 'UNAUTHENTICATED', number>>;

/** What `req.socket` offers over TLS (a subset of node's tls.TLSSocket). */
export interface NativeTlsSocket {
  encrypted: true;
  authorized: boolean;
  readonly authorizationError: string | null;
  readonly alpnProtocol: string | false;
  getPeerCertificate(): { subject?: Record<string, string>; issuer?: Record<string, string>; valid_from?: string; valid_to?: string; serialNumber?: string; fingerprint256?: string };
  getCipher(): { name: string; standardName: string; version: string } | null;
  getProtocol(): string | null;
}

/** Request and response types handlers receive (node-compatible). */
export type NativeRequest = IncomingMessage;
export type NativeResponse = ServerResponse;

export declare const ConfigHelper: {
  createHttpConfig(options?: ServerOptionsInput<HttpServerOptions>): HttpServerOptions;
  createHttpsConfig(options?: ServerOptionsInput<HttpsServerOptions>): HttpsServerOptions;
  createHttp2Config(options?: ServerOptionsInput<Http2ServerOptions>): Http2ServerOptions;
  createGrpcConfig(options?: ServerOptionsInput<GrpcServerOptions>): GrpcServerOptions;
  createWebSocketConfig(options?: ServerOptionsInput<WebSocketServerOptions>): WebSocketServerOptions;
};

/** koatty_serve 2.3.0's factory, as Koatty 3.11.8 calls it. */
export declare function NewServe(app: KoattyApplication, opt?: Partial<ListeningOptions>): BaseServer;

type processEvent = 'beforeExit' | 'exit' | NodeJS.Signals;

export interface TerminusOptions {
  timeout: number;
  signals?: string[];
  onSignal?: (event: string, server: KoattyServer, forceTimeout: number) => Promise<any>;
}

export declare function CreateTerminus(server: KoattyServer, options?: TerminusOptions): () => void;
export declare function BindProcessEvent(event: EventEmitter, originEventName: string, targetEventName?: processEvent): void;

export interface RuntimeInfo {
  native: boolean;
  buildProfile: 'release' | 'debug' | string;
  workerThreads: number;
  version: string;
}
export declare function runtimeInfo(): RuntimeInfo;

/** Log levels of the library's logger (`warning` is Koatty's name for `warn`). */
export type LogLevel = 'off' | 'error' | 'warn' | 'warning' | 'info' | 'debug' | 'trace';
/**
 * Sets the level of the library's logs, JavaScript and native (Rust `tracing`) alike; default
 * `warn` or `KOATTY_SERVE_LOG_LEVEL`. Throws `ERR_INVALID_CONFIG` for an unknown level.
 */
export declare function setLogLevel(level: LogLevel): void;

/** `server.connectionPool`: one class per protocol, as the seed names them, each with its protocol's own figures. */
export declare class ConnectionPoolManager implements ConnectionPool {
  getMetrics(): ConnectionMetrics;
  getMetricsHistory(seconds?: number): MetricsSample[];
  getHealth(): ConnectionHealth;
  getPrometheusMetrics(): string;
  getConnections(limit?: number): LiveConnection[];
  closeConnection(id: number): boolean;
}
export declare class HttpConnectionPoolManager extends ConnectionPoolManager implements HttpConnectionPool {
  getMetrics(): HttpConnectionMetrics;
}
export declare class HttpsConnectionPoolManager extends ConnectionPoolManager implements HttpsConnectionPool {
  getMetrics(): HttpConnectionMetrics;
}
export declare class Http2ConnectionPoolManager extends ConnectionPoolManager implements Http2ConnectionPool {
  getMetrics(): Http2ConnectionMetrics;
  getMetricsHistory(seconds?: number): Http2MetricsSample[];
  getHealth(): Http2ConnectionHealth;
}
export declare class WebSocketConnectionPoolManager extends ConnectionPoolManager implements WebSocketConnectionPool {
  getMetrics(): WebSocketConnectionMetrics;
  getMetricsHistory(seconds?: number): WebSocketMetricsSample[];
  getHealth(): WebSocketConnectionHealth;
}
export declare class GrpcConnectionPoolManager extends ConnectionPoolManager implements GrpcConnectionPool {
  getMetrics(): GrpcConnectionMetrics;
  getMetricsHistory(seconds?: number): Http2MetricsSample[];
  getHealth(): Http2ConnectionHealth;
}
// --- createServer: node's http.Server surface for any Node framework --------------------------------

/** `createServer` options: node's `http.createServer` options this server honours, and this package's own. */
export interface CreateServerOptions {
  /** Idle time between requests on a keep-alive connection, ms (node's default 5000; 0 = none). */
  keepAliveTimeout?: number;
  /** Time for a request's headers, ms (default 60000 → 408). */
  headersTimeout?: number;
  /** Time for the whole request, ms (default 300000; 0 = none). */
  requestTimeout?: number;
  /** Request line + headers, bytes (default 16384 → 431). */
  maxHeaderSize?: number;
  /** As node's: repeated request headers joined with `, ` instead of dropped. */
  joinDuplicateHeaders?: boolean;
  /** This package's limits (maxInFlight, maxBodySize, handshakeTimeout, …); the properties above win. */
  connectionPool?: ConnectionPoolConfig;
  /** `/healthz`, `/readyz`, `/metrics` answered natively (see `BaseServerOptions.nativeEndpoints`). */
  nativeEndpoints?: BaseServerOptions['nativeEndpoints'];
  /**
   * WebSocket on the same port: each upgrade becomes a 'websocket' event with a ws-compatible
   * socket (instead of node's raw-socket 'upgrade').
   */
  webSocket?: boolean | { handleProtocols?: (protocols: Set<string>, req: IncomingMessage) => string | false };
  /** Accepted as node accepts them; they change nothing here (README, "Use with Koa / Express / Fastify"). */
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  highWaterMark?: number;
  insecureHTTPParser?: boolean;
  requireHostHeader?: boolean;
  connectionsCheckingInterval?: number;
  uniqueHeaders?: Array<string | string[]>;
}

/** `createSecureServer` options: node's TLS options (PEM), and with `allowHTTP1` HTTP/2. */
export interface CreateSecureServerOptions extends CreateServerOptions {
  key?: string | Buffer | Array<string | Buffer>;
  cert?: string | Buffer | Array<string | Buffer>;
  ca?: string | Buffer | Array<string | Buffer>;
  passphrase?: string;
  ciphers?: string;
  honorCipherOrder?: boolean;
  secureProtocol?: 'TLS_method' | 'TLSv1_2_method' | 'TLSv1_3_method';
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1.2' | 'TLSv1.3';
  requestCert?: boolean;
  rejectUnauthorized?: boolean;
  /** Set (true or false): HTTP/2 as node's `http2.createSecureServer`, with HTTP/1.1 for clients without h2 when true. */
  allowHTTP1?: boolean;
}

/** node's `listen(options)` fields this server reads. */
export interface CreateServerListenOptions {
  port?: number | string;
  host?: string;
  backlog?: number;
  ipv6Only?: boolean;
  reusePort?: boolean;
  exclusive?: boolean;
  signal?: AbortSignal;
}

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * What `createServer` returns: node's http.Server members, served by the native core. The request
 * and response objects keep working when a framework swaps their prototype (Express).
 */
export declare class NodeHttpServer extends EventEmitter {
  /** Binds before returning: `address()` is right at once; 'listening' follows on the next tick. */
  listen(port?: number | string, hostname?: string, backlog?: number, listeningListener?: () => void): this;
  listen(port?: number | string, hostname?: string, listeningListener?: () => void): this;
  listen(port?: number | string, listeningListener?: () => void): this;
  listen(options: CreateServerListenOptions, listeningListener?: () => void): this;
  listen(listeningListener?: () => void): this;
  /** Stops accepting, closes idle connections, 'close' once the last connection ends. */
  close(callback?: (err?: Error) => void): this;
  closeAllConnections(): void;
  closeIdleConnections(): void;
  address(): ListenerAddress | null;
  readonly listening: boolean;
  getConnections(callback: (err: Error | null, count: number) => void): this;
  ref(): this;
  unref(): this;
  setTimeout(msecs?: number, callback?: () => void): this;
  /** The native counters (connections, requests, latency): `connectionPool.getMetrics()`. */
  getMetrics(): ConnectionMetrics;
  /** The pool as the other server classes have it: figures per protocol, live connections, history, health. */
  readonly connectionPool: HttpConnectionPoolManager | HttpsConnectionPoolManager | Http2ConnectionPoolManager | WebSocketConnectionPoolManager;
  /** Socket inactivity, ms (0 = none): a connection with no byte moving for that long closes. */
  timeout: number;
  keepAliveTimeout: number;
  headersTimeout: number;
  requestTimeout: number;
  maxHeadersCount: number | null;
  /** Requests per HTTP/1 connection (0 or null: no limit); the last response says `Connection: close`. */
  maxRequestsPerSocket: number | null;
  maxConnections: number | undefined;
  [Symbol.asyncDispose](): Promise<void>;
  on(event: 'request' | 'checkContinue' | 'checkExpectation', listener: RequestListener): this;
  on(event: 'listening' | 'close', listener: () => void): this;
  on(event: 'error', listener: (err: NodeJS.ErrnoException) => void): this;
  on(event: 'websocket', listener: (socket: NativeWebSocket, req: IncomingMessage) => void): this;
  /** A request head the native side answered with an error (400, 408, 431); `socket` is closed already. */
  on(event: 'clientError', listener: (err: NodeJS.ErrnoException, socket: { remoteAddress: string; remotePort: number; readonly destroyed: boolean }) => void): this;
  on(event: 'handlerError', listener: (err: unknown, req?: IncomingMessage) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'request' | 'checkContinue' | 'checkExpectation', listener: RequestListener): this;
  once(event: 'listening' | 'close', listener: () => void): this;
  once(event: 'error', listener: (err: NodeJS.ErrnoException) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** node's `http.createServer([options][, requestListener])`, served by the native core. */
export declare function createServer(requestListener?: RequestListener): NodeHttpServer;
export declare function createServer(options: CreateServerOptions, requestListener?: RequestListener): NodeHttpServer;
/** node's `https.createServer(options[, requestListener])`; with `allowHTTP1`, `http2.createSecureServer`. */
export declare function createSecureServer(options: CreateSecureServerOptions, requestListener?: RequestListener): NodeHttpServer;
export {};
