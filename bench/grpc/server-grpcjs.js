'use strict';
// An @grpc/grpc-js Server (the baseline; koatty_serve 2.3.0 serves gRPC with it) with the same handler.
const { grpc, Greeter, implementation, report } = require('./service');

const server = new grpc.Server();
server.addService(Greeter.service, implementation);
server.bindAsync(`127.0.0.1:${Number(process.env.PORT || 0)}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) { console.error(err); process.exit(1); }
  report({ impl: 'grpc-js', port, grpcJsVersion: require('@grpc/grpc-js/package.json').version });
});
process.on('SIGTERM', () => process.exit(0));
