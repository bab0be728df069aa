'use strict';
// WebSocket echo controller (plain JS): with router protocol 'ws' (src/config/router.js) every text
// message on a connection upgraded at /ws/echo is routed like `GET /ws/echo`, @RequestBody() being
// the message. Koatty's tracer (koatty_trace, or the native trace mode) replies with
// util.inspect(returned value); a number comes back as its digits, so the client's message (digits)
// is echoed byte for byte and ws-load can check every reply. (A string would come back quoted.)
// Exported only when the app runs as a WebSocket server (BENCH_PROTOCOL=ws), so the HTTP/1.1 and
// h2 benchmarks run exactly the one-controller app they always ran.
require('reflect-metadata');
const { Controller, GetMapping, RequestBody } = require('koatty');

if (process.env.BENCH_PROTOCOL === 'ws') {
  class WsController {
    constructor(ctx) { this.ctx = ctx; }
    async echo(body) {
      return Number(body);
    }
  }
  const P = WsController.prototype;
  Reflect.defineMetadata('design:paramtypes', [Object], P, 'echo');
  RequestBody()(P, 'echo', 0);
  GetMapping('/echo')(P, 'echo', Object.getOwnPropertyDescriptor(P, 'echo'));
  Controller('/ws')(WsController);
  exports.WsController = WsController;
}
