// Compile-only consumer of koatty_serve's public typings (never executed). It uses every export of
// index.d.ts and config.d.ts the way a TypeScript user would. Checked twice:
// - here, against this repository (typings.test.js: tsc --strict -p __test__/ts-consumer);
// - against the packed and installed tarball (fresh-install.test.js, with noUnusedLocals), which also
//   checks that every explicit export of index.d.ts is imported below. Add new exports here.
import { EventEmitter } from 'events';
import type { IncomingMessage, ServerResponse } from 'http';
import {
  NewServe,
  HttpServer,
  HttpsServer,
  Http2Server,
  WsServer,
  GrpcServer,
  BaseServer,
  Metadata,
  GrpcStatus,
  ConfigHelper,
  CreateTerminus,
  BindProcessEvent,
  runtimeInfo,
  setLogLevel,
  ConnectionPoolManager,
  HttpConnectionPoolManager,
  HttpsConnectionPoolManager,
  Http2ConnectionPoolManager,
  WebSocketConnectionPoolManager,
  GrpcConnectionPoolManager,
  createServer,
  createSecureServer,
  NodeHttpServer,
} from 'koatty_serve';
import type {
  LogLevel,
  KoattyProtocol,
  KoattyApplication,
  ListeningOptions,
  ConnectionPoolConfig,
  BaseServerOptions,
  HealthThresholds,
  BaseSSLConfig,
  SSLConfig,
  SSL1Config,
  SSL2Config,
  HttpServerOptions,
  HttpsServerOptions,
  Http2ServerOptions,
  GrpcServerOptions,
  WebSocketServerOptions,
  ServerOptionsInput,
  ShutdownOptions,
  ShutdownStepName,
  ShutdownReport,
  ConfigUpdateResult,
  ConnectionMetrics,
  MetricsSample,
  HealthStatus,
  ConnectionHealth,
  ConnectionPool,
  HttpConnectionPool,
  HttpsConnectionPool,
  Http2ConnectionPool,
  WebSocketConnectionPool,
  GrpcConnectionPool,
  HttpConnectionMetrics,
  Http2ConnectionMetrics,
  WebSocketConnectionMetrics,
  GrpcConnectionMetrics,
  Http1Figures,
  Http2Figures,
  WebSocketFigures,
  GrpcFigures,
  GrpcMethodFigures,
  GrpcActiveCalls,
  Http2MetricsSample,
  WebSocketMetricsSample,
  Http2ConnectionHealth,
  WebSocketConnectionHealth,
  LiveConnection,
  LiveConnectionTls,
  ListenerAddress,
  ListenerHandle,
  KoattyServer,
  NativeWebSocket,
  GrpcMethodDefinition,
  NativeTlsSocket,
  NativeRequest,
  NativeResponse,
  TerminusOptions,
  RuntimeInfo,
  CreateServerOptions,
  CreateSecureServerOptions,
  CreateServerListenOptions,
  RequestListener,
} from 'koatty_serve';
import { ConfigHelper as ConfigHelperFromSubpath } from 'koatty_serve/config';
import type * as FromConfig from 'koatty_serve/config';

// Type-level equality, for the checks below that must hold exactly (not just assignability).
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T {
  return true as T;
}

// ---- the application ------------------------------------------------------------------------------
// Request and response are node's own types.
const handler = (req: NativeRequest, res: NativeResponse): void => {
  const sock = req.socket as unknown as NativeTlsSocket;
  const subject: Record<string, string> | undefined = sock.getPeerCertificate().subject;
  const cipher: string | undefined = sock.getCipher()?.name;
  const alpn: string | false = sock.alpnProtocol;
  const tlsVersion: string | null = sock.getProtocol();
  const authorized: boolean = sock.authorized;
  res.setHeader('X-Peer', JSON.stringify({ subject, cipher, alpn, tlsVersion, authorized, why: sock.authorizationError }));
  res.end('ok');
};
const app: KoattyApplication = { callback: () => handler };
// Whatever the package accepts as the application (a Koatty app), typed from the package itself.
declare const koattyApp: Parameters<typeof NewServe>[0];
const sameApp: ConstructorParameters<typeof HttpServer>[0] = koattyApp;

// ---- NewServe, as Koatty 3.11.8 calls it ------------------------------------------------------------
const protocol: KoattyProtocol = 'http';
// @ts-expect-error 'ftp' is not a KoattyProtocol
const badProtocol: KoattyProtocol = 'ftp';
const listening: ListeningOptions = { hostname: '127.0.0.1', port: 3000, protocol };
const fromKoatty: BaseServer = NewServe(koattyApp, listening);
const fromKoattyNoOpts = NewServe(sameApp);
const status: number | undefined = fromKoatty.status;
fromKoatty.status = 503;
const configuredPort: number = fromKoatty.options.port;
fromKoattyNoOpts.Stop();

// ---- options and ConfigHelper -----------------------------------------------------------------------
const thresholds: HealthThresholds = {
  degradedUtilisation: 0.8,
  overloadedUtilisation: 0.95,
  degradedErrorRate: 0.05,
  overloadedErrorRate: 0.25,
  degradedLatencyMs: 1000,
  overloadedLatencyMs: 5000,
  degradedEventLoopLagMs: 100,
  overloadedEventLoopLagMs: 500,
  degradedRefusedStreamRate: 0.01,
  overloadedRefusedStreamRate: 0.1,
  degradedPongTimeoutRate: 0.1,
  overloadedPongTimeoutRate: 0.5,
  windowSeconds: 60,
};
const pool: ConnectionPoolConfig = {
  maxConnections: 1000,
  maxInFlight: 4096,
  keepAliveTimeout: 5000,
  headersTimeout: 60000,
  requestTimeout: 300000,
  maxHeaderSize: 16384,
  maxBodySize: 1 << 20,
  handshakeTimeout: 10000,
  health: { ...thresholds, windowSeconds: 30 },
  protocolSpecific: { maxConcurrentStreams: 250, pingInterval: 30000, pongTimeout: 10000, maxBufferedAmount: 1 << 24 },
};
const httpInput: ServerOptionsInput<HttpServerOptions> = { hostname: '127.0.0.1', port: 0, connectionPool: pool };
const httpOpts: HttpServerOptions = ConfigHelper.createHttpConfig(httpInput);
const httpOpts2: HttpServerOptions = ConfigHelperFromSubpath.createHttpConfig({ port: 3000, reusePort: true });
const tlsBase: BaseSSLConfig = { key: 'server.key', cert: 'server.crt', ciphers: 'TLS_AES_128_GCM_SHA256', secureProtocol: 'TLSv1_3_method' };
const ssl1: SSL1Config = { ...tlsBase, mode: 'mutual_tls', ca: 'ca.crt', requestCert: true, rejectUnauthorized: true };
// @ts-expect-error 'strict' is not an SSL mode
const badSsl: SSL1Config = { mode: 'strict' };
const ssl2: SSL2Config = { ...tlsBase, mode: 'auto', allowHTTP1: false };
const sslGrpc: SSLConfig = { enabled: true, keyFile: 'server.key', certFile: 'server.crt', caFile: 'ca.crt', clientCertRequired: true };
const httpsOpts: HttpsServerOptions = ConfigHelper.createHttpsConfig({ port: 0, ssl: ssl1 });
const h2Opts: Http2ServerOptions = ConfigHelper.createHttp2Config({ port: 0, ssl: ssl2 });
const h2cOpts: Http2ServerOptions = ConfigHelper.createHttp2Config({ port: 0, h2c: true, nativeEndpoints: { metrics: false } });
const grpcOpts: GrpcServerOptions = ConfigHelper.createGrpcConfig({ port: 0, ssl: sslGrpc, reflection: false });
const reflectionOn: boolean | undefined = grpcOpts.reflection;
void reflectionOn;
const wsOpts: WebSocketServerOptions = ConfigHelper.createWebSocketConfig({ port: 0, protocol: 'wss', ssl: { enabled: false } });
const baseOpts: BaseServerOptions = { hostname: '::', port: 8080, protocol: 'http', trace: true, nativeEndpoints: true };

// The koatty_serve/config subpath re-exports the same types.
expectType<Equal<FromConfig.HttpServerOptions, HttpServerOptions>>();
expectType<Equal<FromConfig.HttpsServerOptions, HttpsServerOptions>>();
expectType<Equal<FromConfig.Http2ServerOptions, Http2ServerOptions>>();
expectType<Equal<FromConfig.GrpcServerOptions, GrpcServerOptions>>();
expectType<Equal<FromConfig.WebSocketServerOptions, WebSocketServerOptions>>();
expectType<Equal<FromConfig.BaseServerOptions, BaseServerOptions>>();
expectType<Equal<FromConfig.ConnectionPoolConfig, ConnectionPoolConfig>>();
expectType<Equal<FromConfig.SSLConfig, SSLConfig>>();
expectType<Equal<FromConfig.SSL1Config, SSL1Config>>();
expectType<Equal<FromConfig.SSL2Config, SSL2Config>>();
expectType<Equal<FromConfig.ShutdownOptions, ShutdownOptions>>();
expectType<Equal<typeof ConfigHelperFromSubpath, typeof ConfigHelper>>();
expectType<Equal<NativeRequest, IncomingMessage>>();
expectType<Equal<NativeResponse, ServerResponse>>();

// ---- the server classes --------------------------------------------------------------------------
const server = new HttpServer(app, httpOpts);
const server2 = new HttpServer(app, httpOpts2);
const server3 = new HttpServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'http' });
const fromListening = new HttpServer(app, listening);
const https = new HttpsServer(app, httpsOpts);
const h2 = new Http2Server(app, h2Opts);
const h2c = new Http2Server(app, h2cOpts);
const ws = new WsServer(app, wsOpts);
const wsChoosing = new WsServer(app, {
  ...wsOpts,
  handleProtocols: (protocols: Set<string>, request: IncomingMessage) => (protocols.has('graphql-transport-ws') && request.url ? 'graphql-transport-ws' : false),
});
const grpc = new GrpcServer(app, grpcOpts);
const all: BaseServer<BaseServerOptions>[] = [server, server2, server3, fromListening, https, h2, h2c, ws, wsChoosing, grpc];
const asEmitter: EventEmitter = server;
const asKoattyServer: KoattyServer = grpc;
https.reloadCertificates();

function describeServer<O extends BaseServerOptions>(s: BaseServer<O>): string {
  const p: KoattyProtocol | string = s.protocol;
  return `${p}://${s.options.hostname}:${s.options.port} ${s instanceof BaseServer}`;
}

server.on('error', (err) => {
  const code: string | undefined = err.code;
  void code;
});
server.on('stopped', (report: ShutdownReport) => void report.drained);
server.on('handlerError', (err: unknown) => void err);

const handle: ListenerHandle = server.Start(() => {
  const addr: ListenerAddress | null = server.server.address();
  if (addr) {
    const port: number = addr.port;
    void port;
  }
  const listeningNow: boolean = handle.listening;
  void listeningNow;
  server.Stop(() => undefined);
});
handle.close(() => undefined);

// ---- pools, metrics, health ----------------------------------------------------------------------
const connectionPool: ConnectionPool = server.connectionPool;
const metrics: ConnectionMetrics = connectionPool.getMetrics();
const pending: number = metrics.pendingRequests;
const history: MetricsSample[] = connectionPool.getMetricsHistory(60);
const health: ConnectionHealth = connectionPool.getHealth();
const healthStatus: HealthStatus = health.status;
const healthLimits: HealthThresholds = health.thresholds;
const prometheus: string = connectionPool.getPrometheusMetrics();
const poolClasses: Array<typeof ConnectionPoolManager> = [
  HttpConnectionPoolManager,
  HttpsConnectionPoolManager,
  Http2ConnectionPoolManager,
  WebSocketConnectionPoolManager,
  GrpcConnectionPoolManager,
];
const poolClass = poolClasses.find((C) => server.connectionPool instanceof C);
if (connectionPool instanceof ConnectionPoolManager) {
  const p99: number = connectionPool.getMetrics().p99Latency;
  void p99;
}
// Each server's pool has its protocol's own figures.
const httpPool: HttpConnectionPool = server.connectionPool;
const http1: Http1Figures = httpPool.getMetrics().http1;
const httpsPool: HttpsConnectionPool = https.connectionPool;
const httpsMetrics: HttpConnectionMetrics = httpsPool.getMetrics();
const h2Pool: Http2ConnectionPool = h2.connectionPool;
const h2Metrics: Http2ConnectionMetrics = h2Pool.getMetrics();
const h2Figures: Http2Figures = h2Metrics.http2;
const refused: number = h2Figures.refusedStreams + h2Metrics.http1.keepAliveReuses;
const h2History: Http2MetricsSample[] = h2Pool.getMetricsHistory(10);
const h2Health: Http2ConnectionHealth = h2Pool.getHealth();
const wsPool: WebSocketConnectionPool = ws.connectionPool;
const wsMetrics: WebSocketConnectionMetrics = wsPool.getMetrics();
const wsFigures: WebSocketFigures = wsMetrics.websocket;
const normalCloses: number = wsFigures.closeCodes['1000'] ?? 0;
const wsHistory: WebSocketMetricsSample[] = wsPool.getMetricsHistory();
const wsHealth: WebSocketConnectionHealth = wsPool.getHealth();
const grpcPool: GrpcConnectionPool = grpc.connectionPool;
const grpcMetrics: GrpcConnectionMetrics = grpcPool.getMetrics();
const grpcFigures: GrpcFigures = grpcMetrics.grpc;
const unaryFigures: GrpcMethodFigures | undefined = grpcFigures.callsByMethod['/koatty.test.Echo/Unary'];
const activeCalls: GrpcActiveCalls = grpcFigures.activeStreams;
const okCalls: number = grpcFigures.callsByStatus[GrpcStatus.OK] ?? 0;
const live: LiveConnection[] = connectionPool.getConnections(10);
const firstTls: LiveConnectionTls | null = live[0]?.tls ?? null;
const closed: boolean = live.length > 0 && h2Pool.closeConnection(live[0].id);
void [http1, httpsMetrics, refused, h2History, h2Health.refusedStreamRate, normalCloses, wsHistory];
void [wsHealth.pongTimeoutRate, unaryFigures, activeCalls.bidiStreaming, okCalls, firstTls, closed];

// ---- shutdown and hot reload ---------------------------------------------------------------------
const skip: ShutdownStepName[] = ['waitDrainDelay'];
const shutdownOptions: ShutdownOptions = { timeout: 30000, drainDelay: 0, stepTimeout: 6000, skipSteps: skip };
async function lifecycle(): Promise<[ConfigUpdateResult, ShutdownReport]> {
  const update: ConfigUpdateResult = await server.updateConfig({ connectionPool: { maxConnections: 10 } });
  const moved = await h2.updateConfig({ port: 8443, ssl: { mode: 'auto' } });
  const restarted: boolean = moved.restarted || moved.requiresRestart;
  void restarted;
  const report: ShutdownReport = await server.gracefulShutdown(shutdownOptions);
  const stepNames: ShutdownStepName[] = report.steps.map((s) => s.name);
  void stepNames;
  return [update, report];
}

// ---- WebSocket -----------------------------------------------------------------------------------
ws.on('connection', (client: NativeWebSocket, req) => {
  const first: Buffer | undefined = req.data;
  const url: string | undefined = req.url;
  client.on('message', (data: Buffer, isBinary: boolean) => {
    client.send(isBinary ? data : data.toString(), { binary: isBinary }, (err) => void err);
  });
  client.on('close', (code: number, reason: Buffer) => void [code, reason]);
  client.on('pong', (data: Buffer) => void data);
  client.ping('hb');
  client.send(new Blob(['read, then sent']), (err) => void err);
  client.pong(Buffer.alloc(0), undefined, (err?: Error) => void err);
  if (client.readyState === 1 && client.bufferedAmount > 1 << 20) client.terminate();
  else client.close(1000, `bye ${first?.length} ${url} ${client.protocol} ${client.url}`);
});

// ---- gRPC ----------------------------------------------------------------------------------------
const sayHello: GrpcMethodDefinition = {
  path: '/helloworld.Greeter/SayHello',
  requestStream: false,
  responseStream: false,
  requestDeserialize: (bytes: Buffer) => JSON.parse(bytes.toString()),
  responseSerialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
};
grpc.RegisterService({
  service: { SayHello: sayHello },
  implementation: {
    SayHello: (call: { metadata: Metadata; request: { name: string } }, callback: (err: unknown, value?: unknown) => void) => {
      const md = new Metadata();
      md.set('x-trace', call.metadata.get('x-trace')[0] ?? 'none');
      md.add('x-bin', Buffer.from([1, 2]));
      md.merge(call.metadata.clone());
      md.remove('x-unused');
      const map: Record<string, string | Buffer> = md.getMap();
      const json: Record<string, Array<string | Buffer>> = md.toJSON();
      if (!call.request.name) return callback({ code: GrpcStatus.INVALID_ARGUMENT, details: 'name required', metadata: md });
      return callback(null, { message: `hello ${call.request.name}`, keys: Object.keys(map).length + Object.keys(json).length });
    },
  },
});
const unimplemented: number = GrpcStatus.UNIMPLEMENTED;
// @ts-expect-error GrpcStatus is read-only
GrpcStatus.OK = 1;
// @ts-expect-error no such status
const noSuchStatus = GrpcStatus.TEAPOT;

// ---- signals and the runtime ---------------------------------------------------------------------
const terminusOptions: TerminusOptions = {
  timeout: 60000,
  signals: ['SIGINT', 'SIGTERM'],
  onSignal: async (event: string, s: KoattyServer, forceTimeout: number) => {
    s.status = 503;
    return new Promise((resolve) => s.Stop(() => resolve(`${event} ${forceTimeout}`)));
  },
};
const removeSignalHandlers: () => void = CreateTerminus(asKoattyServer, terminusOptions);
CreateTerminus(fromKoatty);
removeSignalHandlers();
const appEvents = new EventEmitter();
BindProcessEvent(appEvents, 'appStop');
BindProcessEvent(appEvents, 'appStop', 'SIGTERM');
const info: RuntimeInfo = runtimeInfo();
const native: boolean = info.native;
const level: LogLevel = 'info';
setLogLevel(level);
// @ts-expect-error: not a level
setLogLevel('verbose');

void [badProtocol, badSsl, status, configuredPort, baseOpts, all.map((s) => describeServer(s)), asEmitter];
void [pending, history, healthStatus, healthLimits, prometheus, poolClass, lifecycle, unimplemented, noSuchStatus];
void [native, info.buildProfile, info.workerThreads, info.version];

// ---- createServer: node's http.Server surface -------------------------------------------------------
const onRequest: RequestListener = (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`${req.method} ${req.url}`);
};
const plainOptions: CreateServerOptions = { keepAliveTimeout: 5000, connectionPool: { maxInFlight: 1024 }, webSocket: true };
const nodeServer: NodeHttpServer = createServer(plainOptions, onRequest);
createServer(onRequest).close();
const listenOptions: CreateServerListenOptions = { port: 0, host: '127.0.0.1', backlog: 511 };
nodeServer.listen(listenOptions, () => {
  const bound: ListenerAddress | null = nodeServer.address();
  const isListening: boolean = nodeServer.listening;
  nodeServer.getConnections((err: Error | null, count: number) => void [err, count, bound, isListening]);
});
nodeServer.listen(0, '127.0.0.1', () => undefined);
nodeServer.keepAliveTimeout = 10000;
nodeServer.headersTimeout = 20000;
nodeServer.requestTimeout = 0;
nodeServer.maxHeadersCount = null;
nodeServer.setTimeout(1000).unref().ref();
nodeServer.on('websocket', (socket: NativeWebSocket, req: IncomingMessage) => socket.send(String(req.url)));
nodeServer.on('error', (err: NodeJS.ErrnoException) => void err.code);
nodeServer.on('clientError', (err, socket) => void [err.code, socket.remoteAddress, socket.remotePort]);
nodeServer.closeIdleConnections();
nodeServer.closeAllConnections();
nodeServer.close((err?: Error) => void err);
// @ts-expect-error: a port is a number or a string
nodeServer.listen({ port: true });
const secureOptions: CreateSecureServerOptions = { key: '-----BEGIN PRIVATE KEY-----', cert: Buffer.from(''), allowHTTP1: true };
const secureServer: NodeHttpServer = createSecureServer(secureOptions, onRequest);
void [secureServer.getMetrics().activeConnections];
