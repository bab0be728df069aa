'use strict';
// gRPC unary controller (decorators applied by hand, plain JS): with router protocol 'grpc' and
// ext.protoFile = src/proto/bench.proto (src/config/router.js), koatty_router's GrpcRouter maps
// `/benchkoatty.Greeter/SayHello` to SayHello; @RequestBody() is the decoded HelloRequest.
// Exported only when the app runs as a gRPC server (BENCH_PROTOCOL=grpc), so the HTTP/1.1 and h2
// benchmarks (bench/run.js) run exactly the one-controller app they always ran.
require('reflect-metadata');
const { Controller, PostMapping, RequestBody } = require('koatty');

if (process.env.BENCH_PROTOCOL === 'grpc') {
  class GreeterController {
    constructor(ctx) { this.ctx = ctx; }
    async SayHello(body) {
      const request = body && body.post !== undefined ? body.post : body;
      return { message: `Hello ${request && request.name}` };
    }
  }
  const P = GreeterController.prototype;
  Reflect.defineMetadata('design:paramtypes', [Object], P, 'SayHello');
  RequestBody()(P, 'SayHello', 0);
  PostMapping('/SayHello')(P, 'SayHello', Object.getOwnPropertyDescriptor(P, 'SayHello'));
  Controller('/benchkoatty.Greeter')(GreeterController);
  exports.GreeterController = GreeterController;
}
