'use strict';
// The native GrpcServer (this repository's addon) serving bench/grpc/service.js's handler.
// BENCH_NATIVE_ROOT: load the package from that copy instead (run.js --baseline).
const path = require('path');
const { Greeter, implementation, report } = require('./service');

const serve = require(process.env.BENCH_NATIVE_ROOT || path.join(__dirname, '..', '..'));
const server = new serve.GrpcServer({}, { hostname: '127.0.0.1', port: Number(process.env.PORT || 0), protocol: 'grpc' });
server.on('error', (err) => { console.error(err); process.exit(1); });
server.RegisterService({ service: Greeter.service, implementation });
server.Start(() => {
  report({ impl: 'native', port: server.server.address().port, runtimeInfo: serve.runtimeInfo() });
});
process.on('SIGTERM', () => process.exit(0));
