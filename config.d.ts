export { ConfigHelper } from './index';
export type {
  BaseServerOptions,
  ConnectionPoolConfig,
  HttpServerOptions,
  HttpsServerOptions,
  Http2ServerOptions,
  GrpcServerOptions,
  WebSocketServerOptions,
  SSLConfig,
  SSL1Config,
  SSL2Config,
  ShutdownOptions,
} from './index';
