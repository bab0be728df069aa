'use strict';
// NewServe: koatty_serve 2.3.0's lenient factory (koatty-contract.md §1.3), which Koatty 3.11.8 calls
// with { hostname, port, protocol } straight from its config (values may be undefined).
const fs = require('node:fs');
const { HttpServer, HttpsServer, Http2Server, WsServer, GrpcServer } = require('./server');
const { CreateTerminus } = require('./terminus');

const TLS_PROTOCOLS = new Set(['https', 'http2', 'wss']);

const SERVERS = {
  http: HttpServer,
  https: HttpsServer,
  http2: Http2Server,
  ws: WsServer,
  wss: WsServer,
  grpc: GrpcServer,
};

function NewServe(app, opt) {
  const options = {
    hostname: process.env.IP || '127.0.0.1',
    port: process.env.PORT || process.env.APP_PORT || 3000,
    protocol: 'http',
    ext: { key: '', cert: '', protoFile: '', server: null },
    ...opt,
  };
  const protocol = options.protocol;
  if (TLS_PROTOCOLS.has(protocol)) {
    options.ext.key = fs.readFileSync(app.config('key_file') ?? '', 'utf-8');
    options.ext.cert = fs.readFileSync(app.config('crt_file') ?? '', 'utf-8');
    if (protocol !== 'wss' && options.port === 80) options.port = 443;
  } else if (protocol === 'grpc') {
    options.ext.protoFile = app.config('protoFile', 'router');
  }
  // Unknown protocols serve HTTP, as 2.3.0 does; options.protocol keeps the given value.
  const Server = SERVERS[protocol] ?? HttpServer;
  const server = new Server(app, options);
  CreateTerminus(server);
  return server;
}

module.exports = { NewServe };
