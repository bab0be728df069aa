'use strict';
// One "hello" route on a framework from npm (BENCH_FRAMEWORK: express4, express5, koa, fastify, or
// bare: the plain handler), served by node:http (BENCH_ON=node) or by this package's createServer
// (BENCH_ON=native), so each framework's two rows differ in the server alone.
const http = require('http');
const path = require('path');
const { handler, port, report, fail } = require('./_common');

const framework = process.env.BENCH_FRAMEWORK || 'bare';
const on = process.env.BENCH_ON || 'node';

function nativeRoot() {
  // bench/run.js points BENCH_NATIVE_ROOT at a copy of the package taken at the start of the run.
  return process.env.BENCH_NATIVE_ROOT || path.resolve(__dirname, '..', '..');
}

/** The framework's request listener (and, for Fastify, the app that takes a serverFactory). */
function listenerFor(name) {
  switch (name) {
    case 'bare':
      return handler;
    case 'express4':
    case 'express5': {
      const app = require(name === 'express4' ? 'express4' : 'express')();
      app.set('etag', false);
      app.get('/', (req, res) => {
        res.type('text/plain');
        res.send('hello');
      });
      return app;
    }
    case 'koa': {
      const app = new (require('koa'))();
      app.use((ctx) => {
        ctx.type = 'text/plain';
        ctx.body = 'hello';
      });
      return app.callback();
    }
    default:
      return fail(`unknown BENCH_FRAMEWORK ${name}`);
  }
}

function ready(server, extra) {
  report({ port: server.address().port, impl: on === 'native' ? 'native createServer' : 'node:http', framework, ...extra });
}

async function main() {
  let createServer = http.createServer;
  let extra = {};
  if (on === 'native') {
    const native = require(nativeRoot());
    createServer = native.createServer;
    const info = native.runtimeInfo();
    extra = { root: nativeRoot(), runtimeInfo: info, buildProfile: info.buildProfile };
  }
  if (framework === 'fastify') {
    let server;
    const fastify = require('fastify')({
      logger: false,
      serverFactory: (fastifyHandler) => {
        server = createServer((req, res) => fastifyHandler(req, res));
        return server;
      },
    });
    fastify.get('/', (req, reply) => reply.type('text/plain').send('hello'));
    await fastify.listen({ port: port(), host: '127.0.0.1' });
    return ready(server, extra);
  }
  const server = createServer(listenerFor(framework));
  server.on('error', (e) => fail(`listen failed: ${e.message}`));
  server.listen({ port: port(), host: '127.0.0.1' }, () => ready(server, extra));
}

main().catch((e) => fail(String((e && e.stack) || e)));
