// Compile-only consumer of koatty_serve's public typings (never executed).
import { EventEmitter } from 'events';
import { HttpServer, NewServe, ConfigHelper, KoattyProtocol, ListeningOptions } from 'koatty_serve';
import { ConfigHelper as ConfigHelperFromSubpath } from 'koatty_serve/config';

// Whatever the package accepts as the application (a Koatty app); typed from the package itself.
declare const app: ConstructorParameters<typeof HttpServer>[0];
declare const koattyApp: Parameters<typeof NewServe>[0];

const protocol: KoattyProtocol = 'http';
// @ts-expect-error 'ftp' is not a KoattyProtocol
const badProtocol: KoattyProtocol = 'ftp';

// What Koatty 3.11.8 passes to NewServe.
const listening: ListeningOptions = { hostname: '127.0.0.1', port: 3000, protocol };
const fromKoatty = NewServe(koattyApp, listening);
const fromKoattyNoOpts = NewServe(koattyApp);
const status: number | undefined = fromKoatty.status;
fromKoatty.status = 503;
const configuredPort = fromKoatty.options.port;
fromKoattyNoOpts.Stop();

// ConfigHelper from the root and from the `koatty_serve/config` subpath.
const cfg = ConfigHelper.createHttpConfig({ hostname: '127.0.0.1', port: 0 });
const cfg2 = ConfigHelperFromSubpath.createHttpConfig({ hostname: '127.0.0.1', port: 3000 });
const server = new HttpServer(app, cfg);
const server2 = new HttpServer(app, cfg2);
const server3 = new HttpServer(app, { hostname: '127.0.0.1', port: 0, protocol: 'http' });

const asEmitter: EventEmitter = server;
server.on('error', (err) => {
  const code: string | undefined = (err as NodeJS.ErrnoException).code;
  void code;
});

server.Start(() => {
  const addr = server.server.address();
  if (addr && typeof addr === 'object') {
    const port: number = addr.port;
    void port;
  }
  const pending: number = server.connectionPool.getMetrics().pendingRequests;
  void pending;
  server.Stop(() => undefined);
});

void [badProtocol, status, configuredPort, server2, server3, asEmitter, fromKoatty];
