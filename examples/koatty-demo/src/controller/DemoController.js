'use strict';
// A Koatty controller in plain JS. TypeScript would write `@Controller('/')`, `@GetMapping('/hello/:name')`,
// `@PathVariable('name') name: string` ...; here the same decorators are applied by hand at the bottom.
require('reflect-metadata');
const { Readable } = require('stream');
const { Controller, GetMapping, PostMapping, PathVariable, RequestBody } = require('koatty');
const serve = require('koatty_serve');

// runtimeInfo() exists only in the native koatty_serve (the JS 2.x server has none).
const runtimeInfo = () => (typeof serve.runtimeInfo === 'function'
  ? serve.runtimeInfo() : { native: false, buildProfile: 'n/a', version: '2.x (JS)' });

// Lines sent by GET /stream, one every STREAM_DELAY_MS, so `curl -N` shows them arriving one by one.
const STREAM_LINES = [
  'koatty_serve streams this response line by line.',
  'Each line is pushed from a Node Readable into ctx.body ...',
  '... and written to the socket by the Rust server as it arrives,',
  'with chunked transfer encoding and backpressure.',
  'Done.',
];
const STREAM_DELAY_MS = Number(process.env.STREAM_DELAY_MS || 150);

class DemoController {
  constructor(ctx) {
    this.ctx = ctx;
  }

  // GET /  -> JSON greeting; `native` comes from the addon itself
  async index() {
    const info = runtimeInfo();
    return {
      message: 'Hello from Koatty 3.11.8 on the native koatty_serve',
      native: info.native,
      server: this.ctx.app.server ? this.ctx.app.server.constructor.name : null,
      build: info.buildProfile,
      version: info.version,
      routes: ['GET /', 'GET /hello/:name', 'POST /echo', 'GET /stream'],
    };
  }

  // GET /hello/:name  -> the path variable, injected by @PathVariable('name')
  async hello(name) {
    return { hello: name, query: this.ctx.query };
  }

  // POST /echo  -> the JSON body, parsed by Koatty and injected by @RequestBody() as { post, file }
  async echo(body) {
    return {
      echo: body && body.post !== undefined ? body.post : body,
      contentType: this.ctx.get('content-type'),
      length: Number(this.ctx.get('content-length')) || null,
    };
  }

  // GET /stream  -> text/plain streamed from a Readable, a line every STREAM_DELAY_MS
  async stream() {
    let i = 0;
    let timer = null;
    const body = new Readable({
      read() {
        if (timer) return;
        if (i >= STREAM_LINES.length) {
          this.push(null);
          return;
        }
        const line = `${i + 1}/${STREAM_LINES.length} ${STREAM_LINES[i]}\n`;
        i += 1;
        // The first line goes at once, the others after a delay.
        const delay = i === 1 ? 0 : STREAM_DELAY_MS;
        timer = setTimeout(() => {
          timer = null;
          if (!this.destroyed) this.push(line);
        }, delay);
      },
      destroy(err, cb) {
        if (timer) clearTimeout(timer);
        cb(err);
      },
    });
    this.ctx.type = 'text/plain; charset=utf-8';
    this.ctx.body = body;
  }
}

// --- decorators, applied by hand ---
const P = DemoController.prototype;
const route = (decorator, path, method) => decorator(path)(P, method, Object.getOwnPropertyDescriptor(P, method));
// Parameter decorators need the parameter types TypeScript would emit as `design:paramtypes`.
Reflect.defineMetadata('design:paramtypes', [String], P, 'hello');
PathVariable('name')(P, 'hello', 0);
Reflect.defineMetadata('design:paramtypes', [Object], P, 'echo');
RequestBody()(P, 'echo', 0);

route(GetMapping, '/', 'index');
route(GetMapping, '/hello/:name', 'hello');
route(PostMapping, '/echo', 'echo');
route(GetMapping, '/stream', 'stream');
Controller('/')(DemoController);

exports.DemoController = DemoController;
