'use strict';
// Real frameworks from npm served through createServer, driven by supertest and undici: Koa 2,
// Express 4 and 5 (which swap the prototype of every request and response for their own), and
// Fastify through `serverFactory`. Routing, bodies, streams, errors, keep-alive.
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Readable } = require('node:stream');
const supertest = require('supertest');
const undici = require('undici');
const Koa = require('koa');
const express4 = require('express4');
const express5 = require('express');
const Fastify = require('fastify');
const { createServer } = require('..');

const FILE = path.join(__dirname, 'fixtures', 'reuse-port-server.js');
const servers = new Set();
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    if (s.listening) await new Promise((r) => s.close(r));
  }
});

/** createServer(listener), left for supertest to listen on (port 0, read back at once). */
function served(listener) {
  const server = createServer(listener);
  servers.add(server);
  return server;
}

/** GET over one keep-alive connection several times; the server saw one client port. */
async function keepsAlive(server, pathname) {
  if (!server.listening) server.listen(0, '127.0.0.1');
  const agent = new undici.Agent({ connections: 1 });
  try {
    const ports = [];
    for (let i = 0; i < 3; i++) {
      const res = await undici.fetch(`http://127.0.0.1:${server.address().port}${pathname}`, { dispatcher: agent });
      assert.equal(res.status, 200);
      ports.push(await res.text());
    }
    assert.equal(new Set(ports).size, 1, `one connection: ${ports}`);
  } finally {
    await agent.close();
  }
}

describe('Koa 2 through createServer', () => {
  const app = new Koa();
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.status = err.status || 500;
      ctx.body = { error: err.message };
    }
  });
  app.use(async (ctx) => {
    if (ctx.path === '/json' && ctx.method === 'POST') {
      const chunks = [];
      for await (const c of ctx.req) chunks.push(c);
      ctx.body = { received: JSON.parse(Buffer.concat(chunks).toString()) };
    } else if (ctx.path === '/stream') {
      ctx.type = 'text/plain';
      ctx.body = Readable.from(['one ', 'two ', 'three']);
    } else if (ctx.path === '/teapot') {
      ctx.throw(418, 'short and stout');
    } else if (ctx.path === '/port') {
      ctx.body = String(ctx.req.socket.remotePort);
    } else if (ctx.path === '/') {
      ctx.set('x-koa', 'yes');
      ctx.body = 'koa home';
    }
  });
  const server = served(app.callback());

  it('routes, headers and a 404', async () => {
    const home = await supertest(server).get('/').expect(200).expect('x-koa', 'yes');
    assert.equal(home.text, 'koa home');
    await supertest(server).get('/nowhere').expect(404);
  });

  it('a JSON body, a streamed response, an error', async () => {
    const posted = await supertest(server).post('/json').send({ a: [1, 2] }).expect(200);
    assert.deepEqual(posted.body, { received: { a: [1, 2] } });
    const streamed = await supertest(server).get('/stream').expect(200);
    assert.equal(streamed.text, 'one two three');
    const teapot = await supertest(server).get('/teapot').expect(418);
    assert.deepEqual(teapot.body, { error: 'short and stout' });
  });

  it('keep-alive (undici)', () => keepsAlive(server, '/port'));
});

/** The same Express app on Express 4 and 5: the 404 that crashed, res.send/json, bodies, sendFile, redirect, errors. */
function expressSuite(name, express) {
  describe(`${name} through createServer`, () => {
    const app = express();
    app.use(express.json());
    app.get('/', (req, res) => res.send('express home'));
    app.get('/json', (req, res) => res.status(201).json({ ok: true, ip: req.ip, protocol: req.protocol, host: req.hostname }));
    app.post('/echo', (req, res) => res.json({ body: req.body, type: req.get('content-type') }));
    app.get('/file', (req, res, next) => res.sendFile(FILE, (err) => err && next(err)));
    app.get('/stream', (req, res) => {
      res.type('text/plain');
      Readable.from(['s1 ', 's2 ', 's3']).pipe(res);
    });
    app.get('/redirect', (req, res) => res.redirect('/json'));
    app.get('/fail', () => {
      throw new Error('boom');
    });
    app.get('/next-error', (req, res, next) => next(Object.assign(new Error('nope'), { status: 409 })));
    app.get('/port', (req, res) => res.send(String(req.socket.remotePort)));
    app.get('/headers', (req, res) => {
      res.set('x-one', '1');
      res.append('x-multi', 'a');
      res.append('x-multi', 'b');
      res.removeHeader('x-one');
      res.cookie('c', 'v', { httpOnly: true });
      res.vary('accept');
      res.end();
    });
    // An app's own error handler (4 arguments).
    const guarded = express.Router();
    guarded.get('/x', () => {
      throw new Error('handled');
    });
    guarded.use((err, req, res, _next) => res.status(422).json({ handled: err.message }));
    app.use('/guarded', guarded);
    const server = served(app);

    it("a 404 from finalhandler (node's ServerResponse methods on the swapped prototype crashed it)", async () => {
      const res = await supertest(server).get('/missing').expect(404);
      assert.match(res.text, /Cannot GET \/missing/);
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
    });

    it('res.send, res.json with a status, req.ip/protocol/hostname', async () => {
      const home = await supertest(server).get('/').expect(200).expect('content-type', /text\/html/);
      assert.equal(home.text, 'express home');
      assert.ok(home.headers.etag, 'Express sets an ETag');
      const json = await supertest(server).get('/json').expect(201);
      assert.deepEqual(json.body, { ok: true, ip: '127.0.0.1', protocol: 'http', host: '127.0.0.1' });
      await supertest(server).get('/').set('if-none-match', home.headers.etag).expect(304);
    });

    it('express.json() bodies, headers set/append/remove/cookie/vary', async () => {
      const echoed = await supertest(server).post('/echo').send({ n: 1, s: 'x' }).expect(200);
      assert.deepEqual(echoed.body, { body: { n: 1, s: 'x' }, type: 'application/json' });
      const h = await supertest(server).get('/headers').expect(200);
      assert.equal(h.headers['x-one'], undefined);
      assert.equal(h.headers['x-multi'], 'a, b');
      assert.match(h.headers['set-cookie'][0], /^c=v; Path=\/; HttpOnly$/);
      assert.equal(h.headers.vary, 'accept');
    });

    it('res.sendFile, a piped stream, res.redirect', async () => {
      const file = await supertest(server).get('/file').expect(200);
      assert.equal(file.text, fs.readFileSync(FILE, 'utf8'));
      assert.ok(file.headers['last-modified']);
      const ranged = await supertest(server).get('/file').set('range', 'bytes=0-9').expect(206);
      assert.equal(ranged.text, fs.readFileSync(FILE, 'utf8').slice(0, 10));
      const streamed = await supertest(server).get('/stream').expect(200);
      assert.equal(streamed.text, 's1 s2 s3');
      await supertest(server).get('/redirect').expect(302).expect('location', '/json');
    });

    it('errors: a throw and next(err) reach finalhandler; an error handler answers its own', async () => {
      const boom = await supertest(server).get('/fail').expect(500);
      assert.match(boom.text, /Internal Server Error|boom/);
      await supertest(server).get('/next-error').expect(409);
      const handled = await supertest(server).get('/guarded/x').expect(422);
      assert.deepEqual(handled.body, { handled: 'handled' });
    });

    it('keep-alive (undici)', () => keepsAlive(server, '/port'));
  });
}

expressSuite('Express 4', express4);
expressSuite('Express 5', express5);

describe('Fastify through createServer (serverFactory)', () => {
  let fastify;
  after(() => fastify && fastify.close());

  it('routes, JSON bodies, a stream, an error, keep-alive; fastify.close() closes the server', async () => {
    let server;
    fastify = Fastify({
      serverFactory: (handler) => {
        server = createServer((req, res) => handler(req, res));
        servers.add(server);
        return server;
      },
    });
    fastify.get('/', async () => ({ hello: 'fastify' }));
    fastify.post('/echo', async (req) => ({ got: req.body }));
    fastify.get('/stream', (req, reply) => {
      reply.type('text/plain').send(Readable.from(['f1 ', 'f2']));
    });
    fastify.get('/fail', async () => {
      throw new Error('fastify boom');
    });
    fastify.get('/port', async (req) => String(req.raw.socket.remotePort));
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    assert.equal(server.listening, true);
    const base = `http://127.0.0.1:${server.address().port}`;
    const home = await undici.fetch(`${base}/`);
    assert.deepEqual(await home.json(), { hello: 'fastify' });
    const echoed = await supertest(base).post('/echo').send({ k: 'v' }).expect(200);
    assert.deepEqual(echoed.body, { got: { k: 'v' } });
    const streamed = await undici.fetch(`${base}/stream`);
    assert.equal(await streamed.text(), 'f1 f2');
    const failed = await undici.fetch(`${base}/fail`);
    assert.equal(failed.status, 500);
    assert.equal((await failed.json()).message, 'fastify boom');
    await supertest(base).get('/missing').expect(404);
    await keepsAlive(server, '/port');
    await fastify.close();
    assert.equal(server.listening, false);
  });
});
