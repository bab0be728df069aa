'use strict';
// GrpcServer used directly (no Koatty), in-process, with real @grpc/grpc-js clients (and node's http2
// client where the wire itself is checked): the four call kinds, metadata, status codes, deadlines,
// cancellation, message size limits, unknown methods, handler failures, concurrency, gzip, TLS and
// mTLS, the native health service and graceful shutdown. The service is __test__/protos/echo.proto,
// loaded the way koatty_proto loads protos (proto-loader options of koatty-contract.md §5.1).
// The Koatty side (koatty_router gRPC controller through NewServe) is at the end, in a child process.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const path = require('path');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { GrpcServer, NewServe, Metadata, GrpcStatus, ConfigHelper } = require('..');
const { getCerts } = require('./certs');
const { startKoattyApp, KOATTY_APP_DIR, pollUntil, withTimeout, sleep, failIfKeptAlive } = require('./helpers');

failIfKeptAlive(__filename);

const PROTO_DIR = path.join(__dirname, 'protos');
// koatty_proto's LoadProto options (koatty-contract.md §5.1).
const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(file, LOAD_OPTIONS));
const { Echo } = load('echo.proto').koatty.test;
const { Health } = load('grpc/health/v1/health.proto').grpc.health.v1;
const ReflectionV1 = load('grpc/reflection/v1/reflection.proto').grpc.reflection.v1.ServerReflection;
const ReflectionV1alpha = load('grpc/reflection/v1alpha/reflection.proto').grpc.reflection.v1alpha.ServerReflection;
// FileDescriptorProto, to read what reflection returns (protobufjs comes with @grpc/proto-loader).
const { FileDescriptorProto } = require('protobufjs/ext/descriptor');
const ECHO = '/koatty.test.Echo';

const clients = new Set();
after(() => {
  for (const c of clients) c.close();
});

// ---------------------------------------------------------------------------------------------------
// The service under test

/**
 * The Echo implementation. Everything a handler sees is recorded in `state.calls` (one record per
 * call: path, metadata, deadline, 'cancelled' events) so the tests can check the server side too.
 *
 * EchoRequest: message (echoed; 'throw'/'reject' fail the handler, 'metadata' echoes the x-* request
 * metadata as initial metadata), count (replies to stream), delay_ms (wait before answering / between
 * replies), blob (echoed), size (reply with a blob of this size; random bytes when message is
 * 'random'), code + details (fail with this status and trailers).
 */
function makeEcho(state) {
  state.calls = [];
  state.inFlight = 0;
  state.maxInFlight = 0;
  function track(call, kind) {
    const rec = {
      kind,
      path: call.getPath(),
      handlerPath: call.handler && call.handler.path,
      peer: call.getPeer(),
      host: call.getHost(),
      deadline: call.getDeadline(),
      metadata: call.metadata,
      cancelEvents: [],
      cancelledFlag: null,
      written: 0,
    };
    call.on('cancelled', (reason) => {
      rec.cancelEvents.push(reason);
      rec.cancelledFlag = call.cancelled;
      // As on grpc-js, a write after the cancel fails (its callback gets ERR_STREAM_DESTROYED).
      if (kind === 'serverStream' && rec.cancelEvents.length === 1) call.write({ message: 'late' }, (err) => { rec.writeAfterCancel = err ? err.code : null; });
    });
    state.calls.push(rec);
    return rec;
  }
  function trailer() {
    const md = new Metadata();
    md.set('x-trailer', 'done');
    md.set('x-trailer-bin', Buffer.from([0x01, 0x02, 0x03, 0xfa]));
    return md;
  }
  function replyOf(call, req, extra = {}) {
    let blob = req.blob;
    if (req.size > 0) blob = req.message === 'random' ? crypto.randomBytes(req.size) : Buffer.alloc(req.size, 0x61);
    return { message: req.message, blob, peer: call.getPeer(), path: call.getPath(), ...extra };
  }
  // grpc-js: emitting 'error' on a streaming call ends it with that status. Guarded so that a server
  // without its own 'error' listener fails the test (client sees no status) instead of this process.
  function emitStatus(call, rec, status) {
    try {
      call.emit('error', status);
    } catch (err) {
      rec.emitThrew = err;
      state.handlerErrors.push(err);
    }
  }
  function errorOf(req) {
    const md = new Metadata();
    md.set('x-error', 'yes');
    md.set('x-error-bin', Buffer.from([0x00, 0xff, 0x10]));
    return { code: req.code, details: req.details, metadata: md };
  }
  return {
    Unary(call, callback) {
      const rec = track(call, 'unary');
      const req = call.request;
      if (req.message === 'throw') throw new Error('handler threw: boom');
      if (req.message === 'reject') return Promise.reject(new Error('handler rejected: boom'));
      if (req.message === 'metadata') {
        const echo = new Metadata();
        for (const [k, values] of Object.entries(call.metadata.toJSON())) {
          if (k.startsWith('x-')) for (const v of values) echo.add(k, v);
        }
        call.sendMetadata(echo);
      }
      const answer = () => {
        state.inFlight--;
        rec.answered = true;
        if (req.code) callback(errorOf(req));
        else callback(null, replyOf(call, req), trailer());
      };
      state.inFlight++;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      if (req.delay_ms > 0) {
        const timer = setTimeout(answer, req.delay_ms);
        call.on('cancelled', () => { clearTimeout(timer); state.inFlight--; });
      } else {
        answer();
      }
      return undefined;
    },

    ServerStream(call) {
      const rec = track(call, 'serverStream');
      const req = call.request;
      if (req.message === 'throw') throw new Error('stream handler threw');
      let i = 0;
      const next = () => {
        if (call.cancelled) return;
        if (i >= req.count) {
          if (req.code) emitStatus(call, rec, errorOf(req));
          else call.end(trailer());
          return;
        }
        call.write(replyOf(call, req, { index: i }));
        rec.written = ++i;
        if (req.delay_ms > 0) setTimeout(next, req.delay_ms);
        else setImmediate(next);
      };
      next();
    },

    ClientStream(call, callback) {
      const rec = track(call, 'clientStream');
      const messages = [];
      let bytes = 0;
      call.on('data', (m) => {
        if (m.message === 'throw') throw new Error('data listener threw');
        messages.push(m.message);
        bytes += m.blob.length;
      });
      call.on('error', (err) => { rec.error = err; });
      call.on('end', () => {
        rec.ended = true;
        rec.received = messages.length;
        const answer = () => callback(null, { message: messages.join(','), index: messages.length, blob: Buffer.from(String(bytes)) }, trailer());
        const delay = endDelay(call);
        if (delay) setTimeout(answer, delay);
        else answer();
      });
    },

    Bidi(call) {
      const rec = track(call, 'bidi');
      let i = 0;
      call.on('data', (m) => {
        if (m.code) {
          emitStatus(call, rec, errorOf(m));
          return;
        }
        call.write({ message: m.message.toUpperCase(), index: i++ });
        rec.written = i;
      });
      call.on('error', (err) => { rec.error = err; });
      call.on('end', () => {
        rec.ended = true;
        const delay = endDelay(call);
        if (delay) setTimeout(() => call.end(trailer()), delay);
        else call.end(trailer());
      });
    },
  };
}

/** `x-end-delay` metadata: ms a streaming handler waits after the request stream's end before answering. */
function endDelay(call) {
  return Number(call.metadata.get('x-end-delay')[0] || 0);
}

/** A started GrpcServer serving Echo (and whatever `setup(server)` registers). */
async function startServer({ options = {}, implementation, setup } = {}) {
  const state = { handlerErrors: [] };
  const server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', ...options });
  server.on('handlerError', (err) => state.handlerErrors.push(err));
  server.RegisterService({ service: Echo.service, implementation: implementation || makeEcho(state) });
  if (setup) setup(server);
  await withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(resolve);
  }), 5000, 'GrpcServer Start');
  const port = server.server.address().port;
  return { server, state, port, address: `127.0.0.1:${port}` };
}

async function stopServer(server) {
  if (server) await withTimeout(server.gracefulShutdown({ drainDelay: 0, timeout: 3000 }), 8000, 'GrpcServer shutdown');
}

function client(Ctor, address, credentials = grpc.credentials.createInsecure(), options = {}) {
  const c = new Ctor(address, credentials, options);
  clients.add(c);
  return c;
}

function md(entries = {}) {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(entries)) {
    for (const x of Array.isArray(v) ? v : [v]) m.add(k, x);
  }
  return m;
}

/**
 * A unary (or client-streaming when `requests` is an array, or null for `onCall` to write) call:
 * resolves { err, value, headers, status }.
 */
function call(c, method, request, { metadata = new grpc.Metadata(), deadline = Date.now() + 5000, onCall } = {}) {
  return new Promise((resolve) => {
    const out = { err: null, value: undefined, headers: null, status: null };
    let gotResult = false;
    const done = () => { if (gotResult && out.status) resolve(out); };
    const cb = (err, value) => {
      out.err = err;
      out.value = value;
      gotResult = true;
      done();
    };
    let x;
    if (Array.isArray(request)) {
      x = c[method](metadata, { deadline }, cb);
      for (const r of request) x.write(r);
      x.end();
    } else if (request === null) {
      // A client stream that `onCall` writes and ends.
      x = c[method](metadata, { deadline }, cb);
    } else {
      x = c[method](request, metadata, { deadline }, cb);
    }
    x.on('metadata', (h) => { out.headers = h; });
    x.on('status', (s) => { out.status = s; done(); });
    if (onCall) onCall(x);
  });
}

/** A server-streaming or bidi call already started: resolves { messages, err, headers, status }. */
function collect(stream) {
  return new Promise((resolve) => {
    const out = { messages: [], err: null, headers: null, status: null };
    let ended = false;
    const done = () => { if (ended && out.status) resolve(out); };
    stream.on('metadata', (h) => { out.headers = h; });
    stream.on('data', (m) => out.messages.push(m));
    stream.on('error', (err) => { out.err = err; ended = true; done(); });
    stream.on('end', () => { ended = true; done(); });
    stream.on('status', (s) => { out.status = s; done(); });
  });
}

/**
 * One call with node's http2 client, to see the wire: resolves { headers, messages (Buffers, as
 * on the wire), frames ({ compressed, data } per message: the 5-byte prefix's flag), body,
 * trailers }. `message` is the serialised request; `compress: 'gzip' | 'deflate'` sends it
 * compressed (flag 1, grpc-encoding).
 */
async function rawCall(address, callPath, message, extraHeaders = {}, { compress } = {}) {
  const session = http2.connect(`http://${address}`);
  session.on('error', () => {});
  try {
    const payload = compress === 'gzip' ? zlib.gzipSync(message) : compress === 'deflate' ? zlib.deflateSync(message) : message;
    const frame = Buffer.alloc(5 + payload.length);
    frame[0] = compress ? 1 : 0;
    frame.writeUInt32BE(payload.length, 1);
    payload.copy(frame, 5);
    if (compress) extraHeaders = { 'grpc-encoding': compress, ...extraHeaders };
    return await withTimeout(new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': callPath, 'content-type': 'application/grpc', te: 'trailers', ...extraHeaders });
      let headers;
      let trailers = {};
      const chunks = [];
      stream.on('response', (h) => { headers = h; });
      stream.on('trailers', (t) => { trailers = t; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', reject);
      stream.on('end', () => {
        const body = Buffer.concat(chunks);
        const messages = [];
        const frames = [];
        for (let o = 0; o + 5 <= body.length;) {
          const len = body.readUInt32BE(o + 1);
          messages.push(body.subarray(o + 5, o + 5 + len));
          frames.push({ compressed: body[o], data: body.subarray(o + 5, o + 5 + len) });
          o += 5 + len;
        }
        resolve({ headers, trailers, messages, frames, body });
      });
      stream.end(frame);
    }), 5000, `raw call ${callPath}`);
  } finally {
    session.destroy();
  }
}

const pending = (server) => server.connectionPool.getMetrics().pendingRequests;

async function expectPendingZero(server) {
  const n = await pollUntil(() => pending(server), (v) => v === 0, { timeoutMs: 3000 });
  assert.equal(n, 0, 'pendingRequests back to 0');
}

// ---------------------------------------------------------------------------------------------------

describe('GrpcServer: the four call kinds, metadata and status (plaintext h2c)', () => {
  let ctx;
  let echo;

  before(async () => {
    ctx = await startServer();
    echo = client(Echo, ctx.address);
  });

  after(() => stopServer(ctx && ctx.server));

  it('serves a unary call and exposes the call as grpc-js does', async () => {
    const r = await call(echo, 'Unary', { message: 'hello', blob: Buffer.from([1, 2, 3]) });
    assert.equal(r.err, null);
    assert.equal(r.value.message, 'hello');
    assert.deepEqual([...r.value.blob], [1, 2, 3]);
    assert.equal(r.value.path, `${ECHO}/Unary`);
    assert.match(r.value.peer, /^127\.0\.0\.1:\d+$/);
    assert.equal(r.status.code, grpc.status.OK);
    const rec = ctx.state.calls.at(-1);
    assert.equal(rec.handlerPath, `${ECHO}/Unary`, 'call.handler.path (Koatty reads it for ctx.originalPath)');
    assert.equal(rec.deadline instanceof Date, true, 'getDeadline() is a Date when the client set a deadline');
    await expectPendingZero(ctx.server);
  });

  it('streams server replies in order, then trailers', async () => {
    const r = await collect(echo.ServerStream({ message: 's', count: 5 }, md({ 'x-a': '1' })));
    assert.equal(r.err, null);
    assert.deepEqual(r.messages.map((m) => m.index), [0, 1, 2, 3, 4]);
    assert.equal(r.status.code, grpc.status.OK);
    assert.deepEqual(r.status.metadata.get('x-trailer'), ['done']);
    assert.deepEqual([...r.status.metadata.get('x-trailer-bin')[0]], [0x01, 0x02, 0x03, 0xfa]);
  });

  it('reads a client stream (call.on data/end) and answers through the callback', async () => {
    const requests = ['a', 'b', 'c', 'd'].map((m, i) => ({ message: m, blob: Buffer.alloc(1000 * (i + 1)) }));
    const r = await call(echo, 'ClientStream', requests);
    assert.equal(r.err, null);
    assert.equal(r.value.message, 'a,b,c,d');
    assert.equal(r.value.index, 4);
    assert.equal(r.value.blob.toString(), '10000');
    assert.deepEqual(r.status.metadata.get('x-trailer'), ['done']);
  });

  it("a 'data' listener that throws fails the call with UNKNOWN (it was answered OK without the message)", async () => {
    // 'throw' arrives once the request stream flows, so the listener runs as the message is
    // handed over (a message buffered before that is emitted from a tick: uncaught, as grpc-js).
    const r = await call(echo, 'ClientStream', null, {
      onCall: (x) => {
        x.write({ message: 'a', blob: Buffer.alloc(1) });
        setTimeout(() => { x.write({ message: 'throw', blob: Buffer.alloc(1) }); x.end(); }, 100);
      },
    });
    assert.equal(r.err?.code, grpc.status.UNKNOWN, `status ${r.status?.code} ${r.status?.details}`);
    assert.equal(r.status.details, 'Unknown error');
    const ok = await call(echo, 'ClientStream', [{ message: 'after', blob: Buffer.alloc(1) }]);
    assert.equal(ok.err, null, 'the next call on the same server is answered');
    assert.equal(ok.value.message, 'after');
  });

  it('bidi: each request answered before the next is sent (ping-pong), then end', async () => {
    const stream = echo.Bidi(md(), { deadline: Date.now() + 10000 });
    const result = collect(stream);
    const seen = [];
    for (const word of ['ping', 'pong', 'ding', 'dong']) {
      const reply = new Promise((resolve) => stream.once('data', resolve));
      stream.write({ message: word });
      seen.push((await withTimeout(reply, 3000, `bidi reply to ${word}`)).message);
    }
    stream.end();
    const r = await result;
    assert.equal(r.err, null);
    assert.deepEqual(seen, ['PING', 'PONG', 'DING', 'DONG']);
    assert.deepEqual(r.messages.map((m) => m.index), [0, 1, 2, 3]);
    assert.equal(r.status.code, grpc.status.OK);
  });

  it('metadata round trip: text, repeated and -bin keys in; initial metadata and trailers out', async () => {
    const bin = Buffer.from([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]);
    const r = await call(echo, 'Unary', { message: 'metadata' }, {
      metadata: md({ 'x-text': 'hello world', 'x-multi': ['one', 'two'], 'x-data-bin': bin, 'X-Upper': 'v' }),
    });
    assert.equal(r.err, null);
    // What the handler saw (call.metadata: grpc-js compatible Metadata).
    const seen = ctx.state.calls.at(-1).metadata;
    assert.ok(seen instanceof Metadata);
    assert.deepEqual(seen.get('x-text'), ['hello world']);
    assert.deepEqual(seen.get('x-multi'), ['one, two'], 'a repeated text key joined, as a grpc-js server sees it');
    assert.ok(Buffer.isBuffer(seen.get('x-data-bin')[0]), '-bin values are Buffers');
    assert.deepEqual([...seen.get('x-data-bin')[0]], [...bin]);
    assert.deepEqual(seen.get('x-upper'), ['v'], 'keys are lower-cased');
    assert.equal(seen.getMap()['x-text'], 'hello world');
    assert.deepEqual(seen.toJSON()['x-multi'], ['one, two']);
    assert.equal(seen.get('content-type').length, 0, 'transport headers are not metadata');
    // Echoed as initial metadata (call.sendMetadata) …
    assert.deepEqual(r.headers.get('x-text'), ['hello world']);
    assert.deepEqual([...r.headers.get('x-data-bin')[0]], [...bin]);
    assert.deepEqual(r.headers.get('x-multi').join(',').split(/,\s*/), ['one', 'two']);
    // … and trailers from callback(null, value, trailer).
    assert.deepEqual(r.status.metadata.get('x-trailer'), ['done']);
    assert.deepEqual([...r.status.metadata.get('x-trailer-bin')[0]], [0x01, 0x02, 0x03, 0xfa]);
  });

  it('call.metadata holds the same keys as under a grpc-js server for the same call (grpc-trace-bin kept; transport headers removed)', async () => {
    const send = () => md({ 'x-app': 'a', 'grpc-trace-bin': Buffer.from([1, 2, 3]), 'grpc-tags-bin': Buffer.from([4]) });
    const keysUnder = async (address, seenOf) => {
      const c = client(Echo, address, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': 2 });
      const r = await call(c, 'Unary', { message: 'keys' }, { metadata: send(), deadline: Date.now() + 5000 });
      assert.equal(r.err, null);
      return Object.keys(seenOf().toJSON()).sort();
    };
    // The reference: @grpc/grpc-js's own server with a handler that records call.metadata.
    const reference = new grpc.Server();
    let refSeen;
    reference.addService(Echo.service, { Unary(call, cb) { refSeen = call.metadata; cb(null, { message: 'ok' }); } });
    const refPort = await new Promise((resolve, reject) => reference.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    try {
      const expected = await keysUnder(`127.0.0.1:${refPort}`, () => refSeen);
      const native = await keysUnder(ctx.address, () => ctx.state.calls.at(-1).metadata);
      assert.deepEqual(native, expected);
      assert.ok(expected.includes('grpc-trace-bin') && !expected.includes('grpc-accept-encoding'), `reference keys ${expected}`);
    } finally {
      reference.forceShutdown();
    }
  });

  it('every status code 1–16 with its details; error metadata becomes trailers', async () => {
    for (let code = 1; code <= 16; code++) {
      const details = `failing with ${code}`;
      const r = await call(echo, 'Unary', { message: 'e', code, details });
      assert.ok(r.err, `code ${code}: an error`);
      assert.equal(r.err.code, code, `code ${code}`);
      assert.equal(r.err.details, details, `details of ${code}`);
      assert.deepEqual(r.status.metadata.get('x-error'), ['yes'], `trailers of ${code}`);
      assert.deepEqual([...r.status.metadata.get('x-error-bin')[0]], [0x00, 0xff, 0x10]);
    }
    await expectPendingZero(ctx.server);
  });

  it('details with special characters survive (percent-encoded grpc-message)', async () => {
    const samples = [
      '\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n',
      '100% done: e=%41 "quoted" \'single\' <tag> {brace} `tick` \\ back',
      'ünïcödé — 中文 — עברית',
      '',
    ];
    for (const details of samples) {
      const r = await call(echo, 'Unary', { message: 'e', code: GrpcStatus.INVALID_ARGUMENT, details });
      assert.equal(r.err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(r.err.details, details);
    }
  });

  it("details with '?' and '#' reach a grpc-js client unchanged", async () => {
    // The gRPC spec percent-encodes only bytes outside 0x20–0x7E and '%'. grpc-js decodes
    // grpc-message with decodeURI, which leaves %3F and %23 alone, so a server that also encodes
    // '?' and '#' shows grpc-js users 'a%3Fb'.
    const details = 'Is it? #1 / a?b=c#frag';
    const r = await call(echo, 'Unary', { message: 'e', code: GrpcStatus.NOT_FOUND, details });
    assert.equal(r.err.code, grpc.status.NOT_FOUND);
    assert.equal(r.err.details, details);
  });

  it('a status from a server-streaming call after some messages (call.emit("error", status), as grpc-js)', async () => {
    // grpc-js servers end a streaming call with a status by emitting 'error' on the call (the
    // gRPC interop server does this); the messages written before it are sent first.
    const req = { message: 's', count: 2, code: GrpcStatus.FAILED_PRECONDITION, details: 'stream failed' };
    const r = await collect(echo.ServerStream(req, md(), { deadline: Date.now() + 3000 }));
    assert.ok(r.err, `an error status (got ${r.status && r.status.code})`);
    assert.equal(r.err.code, grpc.status.FAILED_PRECONDITION, `got ${r.err.code} ${r.err.details}`);
    assert.equal(r.err.details, 'stream failed');
    assert.deepEqual(r.status.metadata.get('x-error'), ['yes'], 'the error metadata as trailers');
    // The grpc-js client drops messages still being decoded when an error status arrives right
    // behind them, so count them on the wire.
    const wire = await rawCall(ctx.address, `${ECHO}/ServerStream`, Echo.service.ServerStream.requestSerialize(req));
    assert.equal(wire.trailers['grpc-status'], String(GrpcStatus.FAILED_PRECONDITION));
    assert.deepEqual(wire.messages.map((m) => Echo.service.ServerStream.responseDeserialize(m).index), [0, 1]);
  });

  it('a status from a bidi call (call.emit("error", status) inside a data listener)', async () => {
    const stream = echo.Bidi(md(), { deadline: Date.now() + 3000 });
    const result = collect(stream);
    stream.write({ message: 'first' });
    stream.write({ message: 'x', code: GrpcStatus.ABORTED, details: 'bidi aborted' });
    const r = await result;
    assert.deepEqual(r.messages.map((m) => m.message), ['FIRST']);
    assert.equal(r.err && r.err.code, grpc.status.ABORTED, `got ${r.err && r.err.code} ${r.err && r.err.details}`);
    assert.equal(r.err.details, 'bidi aborted');
  });

  it('unknown service or method → UNIMPLEMENTED (12)', async () => {
    const ser = (x) => x;
    const raw = (p) => new Promise((resolve) => {
      echo.makeUnaryRequest(p, ser, ser, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err) => resolve(err));
    });
    for (const p of ['/koatty.test.Nope/Unary', `${ECHO}/Missing`, '/grpc.testing.UnimplementedService/UnimplementedCall']) {
      const err = await raw(p);
      assert.ok(err, p);
      assert.equal(err.code, grpc.status.UNIMPLEMENTED, `${p}: ${err.details}`);
    }
  });

  it("a throwing or rejecting handler → UNKNOWN 'Unknown error', as grpc-js (its message stays on the server); the server keeps serving", async () => {
    const before = ctx.state.handlerErrors.length;
    const thrown = await call(echo, 'Unary', { message: 'throw' });
    assert.equal(thrown.err.code, grpc.status.UNKNOWN);
    assert.equal(thrown.err.details, 'Unknown error');
    const rejected = await call(echo, 'Unary', { message: 'reject' });
    assert.equal(rejected.err.code, grpc.status.UNKNOWN);
    assert.equal(rejected.err.details, 'Unknown error');
    const stream = await collect(echo.ServerStream({ message: 'throw', count: 3 }));
    assert.equal(stream.err.code, grpc.status.UNKNOWN);
    assert.equal(stream.err.details, 'Unknown error');
    assert.match(String(ctx.state.handlerErrors.at(-1)), /stream handler threw/, "the message reaches 'handlerError'");
    assert.equal(ctx.state.handlerErrors.length - before, 3, "each failure is reported as 'handlerError'");
    const ok = await call(echo, 'Unary', { message: 'still here' });
    assert.equal(ok.err, null);
    assert.equal(ok.value.message, 'still here');
    await expectPendingZero(ctx.server);
  });

  it('a repeated text metadata key is one value joined with ", " (as grpc-js sees it from node http2); -bin keys stay separate', async () => {
    const before = ctx.state.calls.length;
    const r = await call(echo, 'Unary', { message: 'multi' }, { metadata: md({ 'x-multi': ['a', 'b', ''], 'x-multi-bin': [Buffer.from([1]), Buffer.from([2])] }) });
    assert.equal(r.err, null);
    const rec = ctx.state.calls[before];
    assert.deepEqual(rec.metadata.get('x-multi'), ['a, b, ']);
    assert.deepEqual(rec.metadata.get('x-multi-bin').map((b) => [...b]), [[1], [2]]);
  });

  it('call.getHost() is the :authority the client called (grpc-js), not part of call.metadata', async () => {
    const before = ctx.state.calls.length;
    const r = await call(echo, 'Unary', { message: 'host' });
    assert.equal(r.err, null);
    const rec = ctx.state.calls[before];
    assert.equal(rec.host, ctx.address);
    assert.deepEqual(rec.metadata.get(':authority'), []);
    const other = client(Echo, ctx.address, undefined, { 'grpc.default_authority': 'api.example:443' });
    await call(other, 'Unary', { message: 'host' });
    assert.equal(ctx.state.calls.at(-1).host, 'api.example:443');
    other.close();
    clients.delete(other);
  });

  it('100 concurrent calls on one channel, and 100 more over 4 channels, all answered correctly', async () => {
    ctx.state.maxInFlight = 0;
    const n = 100;
    const one = await Promise.all(Array.from({ length: n }, (_, i) => call(echo, 'Unary', { message: `c${i}`, delay_ms: 50 })));
    one.forEach((r, i) => {
      assert.equal(r.err, null, `call ${i}`);
      assert.equal(r.value.message, `c${i}`);
    });
    assert.ok(ctx.state.maxInFlight >= n / 2, `calls overlapped in the handler (max in flight ${ctx.state.maxInFlight})`);
    const channels = Array.from({ length: 4 }, () => client(Echo, ctx.address));
    const many = await Promise.all(Array.from({ length: n }, (_, i) => call(channels[i % 4], 'Unary', { message: `m${i}`, delay_ms: 20, size: 1000 })));
    many.forEach((r, i) => {
      assert.equal(r.err, null, `call ${i}`);
      assert.equal(r.value.message, `m${i}`);
      assert.equal(r.value.blob.length, 1000);
    });
    for (const c of channels) { c.close(); clients.delete(c); }
    await expectPendingZero(ctx.server);
  });
});

describe('GrpcServer: deadlines and cancellation', () => {
  let ctx;
  let echo;

  before(async () => {
    ctx = await startServer();
    echo = client(Echo, ctx.address);
  });

  after(() => stopServer(ctx && ctx.server));

  it('grpc-timeout passes → DEADLINE_EXCEEDED; the handler sees call.cancelled and one "cancelled" event', async () => {
    const deadline = Date.now() + 300;
    const t0 = Date.now();
    const r = await call(echo, 'Unary', { message: 'slow', delay_ms: 5000 }, { deadline });
    assert.equal(r.err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t0 < 2000, 'not waiting for the handler');
    const rec = ctx.state.calls.find((c) => c.kind === 'unary');
    await pollUntil(() => rec.cancelEvents.length, (n) => n > 0, { timeoutMs: 2000 });
    assert.equal(rec.cancelEvents.length, 1);
    assert.equal(rec.cancelledFlag, true);
    assert.ok(Math.abs(rec.deadline.getTime() - deadline) < 250, `getDeadline() ${rec.deadline.toISOString()} ≈ the client's`);
    assert.equal(rec.answered, undefined, 'the handler did not answer');
    await expectPendingZero(ctx.server);
  });

  it('requestTimeout bounds a call answered with one message when the client sets no deadline; streamed responses are not bounded by it', async () => {
    const bounded = await startServer({ options: { connectionPool: { requestTimeout: 400 } } });
    const c = client(Echo, bounded.address);
    try {
      const t0 = Date.now();
      const r = await call(c, 'Unary', { message: 'slow', delay_ms: 3000 }, { deadline: Infinity });
      const took = Date.now() - t0;
      assert.equal(r.err && r.err.code, grpc.status.DEADLINE_EXCEEDED, `unary past requestTimeout: ${r.err && r.err.details}`);
      assert.ok(took >= 350 && took < 1500, `ended after ${took} ms (requestTimeout 400)`);
      const rec = bounded.state.calls.find((x) => x.kind === 'unary');
      await pollUntil(() => rec.cancelEvents.length, (n) => n > 0, { timeoutMs: 2000 });
      assert.equal(rec.cancelledFlag, true, 'the handler learns of it');
      // A server stream runs past requestTimeout (long-lived by design; only a client deadline ends it).
      const s = await collect(c.ServerStream({ message: 'long', count: 16, delay_ms: 50 }, md(), { deadline: Infinity }));
      assert.equal(s.err, null, s.err && s.err.details);
      assert.equal(s.messages.length, 16);
      await expectPendingZero(bounded.server);
    } finally {
      c.close();
      await stopServer(bounded.server);
    }
  });

  it('deadline during a server stream: handler sees cancelled and stops; client gets DEADLINE_EXCEEDED', async () => {
    const r = await collect(echo.ServerStream({ message: 'slowstream', count: 1000, delay_ms: 50 }, md(), { deadline: Date.now() + 400 }));
    assert.equal(r.err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(r.messages.length >= 2 && r.messages.length < 20, `${r.messages.length} messages before the deadline`);
    const rec = ctx.state.calls.find((c) => c.kind === 'serverStream');
    await pollUntil(() => rec.cancelEvents.length, (n) => n > 0, { timeoutMs: 2000 });
    assert.equal(rec.cancelledFlag, true);
    await expectPendingZero(ctx.server);
  });

  it('client cancels mid server-stream → CANCELLED; the handler sees "cancelled"; pendingRequests back to 0', async () => {
    ctx.state.calls.length = 0;
    const stream = echo.ServerStream({ message: 'cancelme', count: 10000, delay_ms: 10 }, md(), { deadline: Date.now() + 10000 });
    const result = collect(stream);
    let n = 0;
    stream.on('data', () => { if (++n === 3) stream.cancel(); });
    const r = await result;
    assert.equal(r.err.code, grpc.status.CANCELLED);
    const rec = ctx.state.calls.find((c) => c.kind === 'serverStream');
    await pollUntil(() => rec.cancelEvents.length, (k) => k > 0, { timeoutMs: 2000 });
    assert.equal(rec.cancelEvents.length, 1);
    assert.equal(rec.cancelledFlag, true);
    await pollUntil(() => rec.writeAfterCancel, (v) => v !== undefined, { timeoutMs: 2000 });
    assert.equal(rec.writeAfterCancel, 'ERR_STREAM_DESTROYED');
    const written = rec.written;
    await sleep(100);
    assert.equal(rec.written, written, 'the handler stopped writing');
    assert.ok(written < 100, `wrote ${written}`);
    await expectPendingZero(ctx.server);
  });

  // grpc-js clients cancel with node's http2 close(CANCEL): an empty DATA frame with END_STREAM, then
  // RST_STREAM(CANCEL), often in separate TCP segments. A handler still working must learn of it
  // ('cancelled', `call.cancelled`). As on a grpc-js server (measured: 40 of 40 cancelled calls saw
  // 'end' and then 'cancelled'), the END_STREAM is delivered as 'end' at once: the server does not
  // hold every request stream's end back for a reset that may follow. The handler here answers
  // 200 ms after 'end' (`x-end-delay`), so the reset always finds it working.
  for (const kind of ['clientStream', 'bidi']) {
    it(`client cancels mid ${kind} → the handler sees "cancelled" once, as on grpc-js`, async () => {
      ctx.state.calls.length = 0;
      let x;
      if (kind === 'clientStream') {
        x = echo.ClientStream(md({ 'x-end-delay': '200' }), { deadline: Date.now() + 10000 }, () => {});
        x.write({ message: 'a' });
        await pollUntil(() => ctx.state.calls.length, (k) => k === 1, { timeoutMs: 2000 });
        await sleep(50);
      } else {
        x = echo.Bidi(md({ 'x-end-delay': '200' }), { deadline: Date.now() + 10000 });
        const first = new Promise((resolve) => x.once('data', resolve));
        x.write({ message: 'x' });
        await withTimeout(first, 3000, 'bidi first reply');
      }
      const status = new Promise((resolve) => x.on('status', resolve));
      x.on('error', () => {});
      x.cancel();
      assert.equal((await status).code, grpc.status.CANCELLED);
      const rec = ctx.state.calls[0];
      await pollUntil(() => rec.cancelEvents.length, (k) => k > 0, { timeoutMs: 2000 });
      await sleep(100);
      assert.equal(rec.cancelEvents.length, 1, "one 'cancelled' event");
      assert.equal(rec.cancelledFlag, true);
      await expectPendingZero(ctx.server);
    });
  }
});

describe('GrpcServer: maxInFlight bounds calls as it bounds HTTP requests', () => {
  it('with maxInFlight 2, five slow calls reach the handler at most two at a time and all succeed', async () => {
    const ctx = await startServer({ options: { connectionPool: { maxInFlight: 2 } } });
    try {
      const echo = client(Echo, ctx.address);
      ctx.state.maxInFlight = 0;
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => call(echo, 'Unary', { message: `q${i}`, delay_ms: 100 })));
      results.forEach((r, i) => {
        assert.equal(r.err, null, `call ${i}`);
        assert.equal(r.value.message, `q${i}`);
      });
      assert.equal(ctx.state.maxInFlight, 2, 'the handler saw at most maxInFlight calls at once (and the cap was used)');
      echo.close();
      clients.delete(echo);
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('single-request calls whose message never finishes arriving hold no slot: other calls are served (outside probe: they held the cap for good)', async () => {
    const ctx = await startServer({ options: { connectionPool: { maxInFlight: 2 } } });
    const session = http2.connect(`http://${ctx.address}`);
    session.on('error', () => {});
    try {
      // Four calls (unary and server streaming) that send 3 of the 5 bytes of a message prefix and stop.
      const stalled = ['Unary', 'ServerStream', 'Unary', 'ServerStream'].map((m) => {
        const req = session.request({ ':method': 'POST', ':path': `${ECHO}/${m}`, 'content-type': 'application/grpc', te: 'trailers' });
        req.on('error', () => {});
        req.write(Buffer.from([0, 0, 0]));
        return req;
      });
      await sleep(200);
      const echo = client(Echo, ctx.address);
      const r = await call(echo, 'Unary', { message: 'through' }, { deadline: Date.now() + 3000 });
      assert.equal(r.err, null, `a normal call is served beside the stalled ones: ${r.err && r.err.message}`);
      assert.equal(r.value.message, 'through');
      for (const req of stalled) req.close(http2.constants.NGHTTP2_CANCEL);
      echo.close();
      clients.delete(echo);
      await expectPendingZero(ctx.server);
    } finally {
      session.destroy();
      await stopServer(ctx.server);
    }
  });
});

describe('GrpcServer: a streaming call leaves maxInFlight once its head is out (outside probe, session 16)', () => {
  it('with maxInFlight 2, three server-streaming calls streaming slowly do not hold the cap: a unary call is served', async () => {
    const ctx = await startServer({ options: { connectionPool: { maxInFlight: 2 } } });
    try {
      const echo = client(Echo, ctx.address);
      // 3 × (40 replies, 100 ms apart): 4 s each, far longer than the unary call below may take.
      const streams = [0, 1, 2].map(() => {
        const s = echo.ServerStream({ message: 'sub', count: 40, delay_ms: 100 });
        let got = 0;
        s.on('data', () => { got++; });
        s.on('error', () => {});
        return { s, got: () => got };
      });
      await pollUntil(() => Math.min(...streams.map((x) => x.got())), (n) => n >= 2, { timeoutMs: 5000 });
      const r = await call(echo, 'Unary', { message: 'through' }, { deadline: Date.now() + 2000 });
      assert.equal(r.err, null, `a unary call beside 3 streaming calls (cap 2): ${r.err && r.err.message}`);
      for (const x of streams) x.s.cancel();
      echo.close();
      clients.delete(echo);
      await expectPendingZero(ctx.server);
    } finally {
      await stopServer(ctx.server);
    }
  });
});

describe('GrpcServer: message size limits', () => {
  const LIMIT = 64 * 1024;
  let ctx;
  let echo;

  before(async () => {
    ctx = await startServer({
      // gzip replies, so that a reply's limit is seen to apply before compression.
      options: { connectionPool: { protocolSpecific: { maxReceiveMessageLength: LIMIT, maxSendMessageLength: LIMIT, defaultCompressionAlgorithm: 'gzip' } } },
    });
    // A client that sends without compression and accepts big replies, so only the server's limits apply.
    echo = client(Echo, ctx.address, undefined, { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 });
  });

  after(() => stopServer(ctx && ctx.server));

  it('a request just under maxReceiveMessageLength is served', async () => {
    const r = await call(echo, 'Unary', { message: 'fits', blob: crypto.randomBytes(LIMIT - 100) });
    assert.equal(r.err, null);
    assert.equal(r.value.blob.length, LIMIT - 100);
  });

  it('a request over maxReceiveMessageLength → RESOURCE_EXHAUSTED; the handler never runs', async () => {
    const before = ctx.state.calls.length;
    const r = await call(echo, 'Unary', { message: 'too big', blob: crypto.randomBytes(LIMIT + 1000) });
    assert.ok(r.err, 'an error');
    assert.equal(r.err.code, grpc.status.RESOURCE_EXHAUSTED, `got ${r.err.code} ${r.err.details}`);
    assert.equal(ctx.state.calls.length, before, 'the handler was not invoked');
    await expectPendingZero(ctx.server);
  });

  it('a reply over maxSendMessageLength → RESOURCE_EXHAUSTED (incompressible reply)', async () => {
    const r = await call(echo, 'Unary', { message: 'random', size: LIMIT + 1000 });
    assert.ok(r.err, `an error (got a ${r.value && r.value.blob.length}-byte reply)`);
    assert.equal(r.err.code, grpc.status.RESOURCE_EXHAUSTED, `got ${r.err.code} ${r.err.details}`);
    await expectPendingZero(ctx.server);
  });

  it('a reply over maxSendMessageLength → RESOURCE_EXHAUSTED also when it compresses well', async () => {
    // This server gzips replies (grpc-js clients accept gzip); the limit is on the message, not on
    // its compressed size (grpc-js and grpc core check the serialized size).
    const r = await call(echo, 'Unary', { message: 'zeros', size: LIMIT + 1000 });
    assert.ok(r.err, `an error (got a ${r.value && r.value.blob.length}-byte reply)`);
    assert.equal(r.err.code, grpc.status.RESOURCE_EXHAUSTED, `got ${r.err.code} ${r.err.details}`);
  });

  it('a gzip-compressed request whose message is over maxReceiveMessageLength → RESOURCE_EXHAUSTED', async () => {
    const gz = client(Echo, ctx.address, undefined, { 'grpc.default_compression_algorithm': 2, 'grpc.max_send_message_length': -1 });
    const before = ctx.state.calls.length;
    const r = await call(gz, 'Unary', { message: 'zipped', blob: Buffer.alloc(LIMIT * 4) });
    assert.ok(r.err, 'an error');
    assert.equal(r.err.code, grpc.status.RESOURCE_EXHAUSTED, `got ${r.err.code} ${r.err.details}`);
    assert.equal(ctx.state.calls.length, before, 'the handler was not invoked');
    gz.close();
    clients.delete(gz);
  });

  it('the server keeps serving after the limit errors', async () => {
    const r = await call(echo, 'Unary', { message: 'after', size: 10 });
    assert.equal(r.err, null);
    assert.equal(r.value.blob.length, 10);
    await expectPendingZero(ctx.server);
  });
});

describe('GrpcServer: HTTP/2 settings', () => {
  it('protocolSpecific.initialWindowSize and maxConcurrentStreams reach the client in SETTINGS (as on Http2Server)', async () => {
    const ctx = await startServer({ options: { connectionPool: { protocolSpecific: { initialWindowSize: 300000, maxConcurrentStreams: 77 } } } });
    const session = http2.connect(`http://${ctx.address}`);
    session.on('error', () => {});
    try {
      const settings = await withTimeout(new Promise((resolve) => session.once('remoteSettings', resolve)), 5000, 'SETTINGS');
      assert.equal(settings.initialWindowSize, 300000, 'initialWindowSize applied to gRPC connections (hyper default: 1 MiB)');
      assert.equal(settings.maxConcurrentStreams, 77);
    } finally {
      session.destroy();
      await stopServer(ctx.server);
    }
  });
});

describe('GrpcServer: malformed unary calls, answered as a grpc-js server answers them', () => {
  /** A raw h2 call to Echo/Unary carrying `messages` (each an empty EchoRequest): resolves grpc-status. */
  function rawUnary(address, messages) {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://${address}`);
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': `${ECHO}/Unary`, 'content-type': 'application/grpc', te: 'trailers' });
      let status = null;
      let message = null;
      const take = (h) => {
        if (h['grpc-status'] !== undefined) {
          status = Number(h['grpc-status']);
          message = decodeURIComponent(h['grpc-message'] || '');
        }
      };
      req.on('response', take);
      req.on('trailers', take);
      req.on('data', () => {});
      req.on('close', () => {
        session.close();
        resolve({ status, message });
      });
      req.end(Buffer.alloc(5 * messages));
    });
  }

  it('no request message, or two, end UNIMPLEMENTED and never reach the handler (the handler saw call.request undefined)', async () => {
    const ctx = await startServer();
    try {
      const before = ctx.state.calls.length;
      const none = await withTimeout(rawUnary(ctx.address, 0), 5000, 'no message');
      assert.deepEqual(none, { status: GrpcStatus.UNIMPLEMENTED, message: `Received no request message for server streaming method ${ECHO}/Unary` });
      const two = await withTimeout(rawUnary(ctx.address, 2), 5000, 'two messages');
      assert.deepEqual(two, { status: GrpcStatus.UNIMPLEMENTED, message: `Received a second request message for server streaming method ${ECHO}/Unary` });
      assert.equal(ctx.state.calls.length, before, 'the handler ran for none of them');
      const one = await withTimeout(rawUnary(ctx.address, 1), 5000, 'one message');
      assert.equal(one.status, GrpcStatus.OK);
      await expectPendingZero(ctx.server);
    } finally {
      await stopServer(ctx.server);
    }
  });
});

describe('GrpcServer: the largest HTTP/2 window', () => {
  it('initialWindowSize 2^31-1 (node:http2 accepts it) serves calls; 2^31 is refused with ERR_INVALID_CONFIG naming the key', async () => {
    const ctx = await startServer({ options: { connectionPool: { protocolSpecific: { initialWindowSize: 2 ** 31 - 1 } } } });
    try {
      const echo = client(Echo, ctx.address);
      const r = await call(echo, 'Unary', { message: 'wide' });
      assert.equal(r.err, null, 'the connection was not reset (h2 asserted on a connection window over 2^31-1)');
      assert.equal(r.value.message, 'wide');
      echo.close();
      clients.delete(echo);
    } finally {
      await stopServer(ctx.server);
    }
    assert.throws(
      () => new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', connectionPool: { protocolSpecific: { initialWindowSize: 2 ** 31 } } }),
      (e) => e.code === 'ERR_INVALID_CONFIG' && /initialWindowSize/.test(e.message),
    );
  });
});

describe('GrpcServer: connectionTimeout', () => {
  it('a quiet connection is closed (GOAWAY) after connectionTimeout; the client reconnects for the next call', async () => {
    const { server, address } = await startServer({ options: { connectionPool: { connectionTimeout: 300 } } });
    try {
      const c = client(Echo, address);
      const first = await call(c, 'Unary', { text: 'a' });
      assert.equal(first.err, null);
      assert.equal(server.connectionPool.getMetrics().activeConnections, 1);
      const closed = await pollUntil(() => server.connectionPool.getMetrics().activeConnections, (n) => n === 0, { timeoutMs: 3000, intervalMs: 20 });
      assert.equal(closed, 0, 'the quiet connection was closed');
      const second = await call(c, 'Unary', { text: 'b' });
      assert.equal(second.err, null, 'the next call reconnects');
      assert.equal(server.connectionPool.getMetrics().totalConnections, 2);
    } finally {
      await stopServer(server);
    }
  });
});

/**
 * The request headers a @grpc/grpc-js client sends (captured from a real call to a node http2
 * server), without the pseudo-headers: what the raw calls below send, so that the wire checks see
 * what a grpc-js client would get.
 */
async function grpcJsRequestHeaders() {
  const server = http2.createServer();
  let seen;
  server.on('stream', (stream, headers) => {
    seen = headers;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const c = new Echo(`127.0.0.1:${server.address().port}`, grpc.credentials.createInsecure());
  try {
    await call(c, 'Unary', { message: 'headers' });
  } finally {
    c.close();
    await new Promise((resolve) => server.close(resolve));
  }
  return Object.fromEntries(Object.entries(seen).filter(([k]) => !k.startsWith(':') && !['content-type', 'te', 'grpc-timeout'].includes(k)));
}

/**
 * Echo handlers for the compression tests. Unary: `message` 'gzip'/'deflate'/'identity' →
 * `call.setCompression(message)` first; `code` 2 → the reply with flags 2 (grpc-js's
 * `WriteFlags.NoCompress`); the reply is `{ message: 'x' }` plus `size` bytes of 'a'.
 * ServerStream: `count` messages, the odd ones written with NoCompress, after
 * `setCompression(message)` when `message` names an algorithm. `details` 'late' tries
 * setCompression after the head went out and records what it threw.
 */
function compressionEcho(state) {
  const algorithm = (m) => (['gzip', 'deflate', 'identity'].includes(m) ? m : null);
  const reply = (req) => ({ message: 'x', blob: req.size ? Buffer.alloc(req.size, 0x61) : Buffer.alloc(0) });
  return {
    Unary(call, callback) {
      const req = call.request;
      if (algorithm(req.message)) call.setCompression(req.message);
      if (req.details === 'late') {
        call.sendMetadata(new Metadata());
        try {
          call.setCompression('gzip');
        } catch (err) {
          state.late = err;
        }
      }
      if (req.code === 2) callback(null, reply(req), undefined, 2);
      else callback(null, reply(req));
    },
    ServerStream(call) {
      const req = call.request;
      if (algorithm(req.message)) call.setCompression(req.message);
      for (let i = 0; i < req.count; i++) call.write({ ...reply(req), index: i }, i % 2 ? 2 : undefined);
      call.end();
    },
  };
}

const UNARY = `${ECHO}/Unary`;
const request = (r) => Echo.service.Unary.requestSerialize(r);
const replyBytes = (r) => Echo.service.Unary.responseSerialize({ message: 'x', blob: r.size ? Buffer.alloc(r.size, 0x61) : Buffer.alloc(0) });

describe('GrpcServer: compression — identity responses by default, compressed requests read', () => {
  let grpcJs;
  let plain;

  before(async () => {
    grpcJs = await grpcJsRequestHeaders();
    plain = await startServer({ implementation: compressionEcho({}) });
  });
  after(() => stopServer(plain && plain.server));

  it('grpc-js clients list gzip in grpc-accept-encoding (what makes the default matter)', () => {
    assert.match(grpcJs['grpc-accept-encoding'], /(^|,)gzip(,|$)/, JSON.stringify(grpcJs));
  });

  it('by default a reply to a grpc-js client is identity: flag 0, the message as serialised; headers as grpc-js\'s server sends', async () => {
    const r = { message: 'small', size: 0 };
    const got = await rawCall(plain.address, UNARY, request(r), grpcJs);
    assert.equal(got.trailers['grpc-status'], '0');
    assert.equal(got.headers['grpc-encoding'], 'identity');
    assert.equal(got.headers['grpc-accept-encoding'], 'identity,deflate,gzip');
    assert.equal(got.frames.length, 1);
    assert.equal(got.frames[0].compressed, 0, 'compressed flag clear');
    assert.ok(got.frames[0].data.equals(replyBytes(r)), 'the message exactly as serialised');
    assert.equal(got.body.length, 5 + replyBytes(r).length);
    // A large compressible one too: still identity.
    const big = await rawCall(plain.address, UNARY, request({ size: 50000 }), grpcJs);
    assert.equal(big.frames[0].compressed, 0);
    assert.equal(big.frames[0].data.length, replyBytes({ size: 50000 }).length);
  });

  it('by default streamed replies are identity too', async () => {
    const req = Echo.service.ServerStream.requestSerialize({ count: 4, size: 1000 });
    const got = await rawCall(plain.address, `${ECHO}/ServerStream`, req, grpcJs);
    assert.equal(got.trailers['grpc-status'], '0');
    assert.equal(got.headers['grpc-encoding'], 'identity');
    assert.deepEqual(got.frames.map((f) => f.compressed), [0, 0, 0, 0]);
  });

  it('requests compressed with gzip or deflate are read (grpc-js client and on the wire)', async () => {
    const blob = Buffer.alloc(200 * 1024, 'compressible text ');
    for (const algorithm of [2, 1]) {
      const c = client(Echo, plain.address, undefined, { 'grpc.default_compression_algorithm': algorithm });
      const r = await call(c, 'Unary', { message: 'compressed request', size: 7 });
      assert.equal(r.err, null, `algorithm ${algorithm}`);
      assert.equal(r.value.blob.length, 7);
    }
    for (const compress of ['gzip', 'deflate']) {
      const got = await rawCall(plain.address, UNARY, request({ message: 'wire', blob, size: 3 }), grpcJs, { compress });
      assert.equal(got.trailers['grpc-status'], '0', `${compress}: ${got.trailers['grpc-message']}`);
      assert.equal(got.frames[0].compressed, 0, 'the reply is identity even so');
    }
  });

  it('a request encoding the server does not read → UNIMPLEMENTED naming what it accepts', async () => {
    const got = await rawCall(plain.address, UNARY, request({ message: 'br' }), { ...grpcJs, 'grpc-encoding': 'br' });
    assert.equal(got.headers['grpc-status'], '12');
    assert.equal(got.headers['grpc-accept-encoding'], 'identity,deflate,gzip');
  });

  it('health responses advertise grpc-accept-encoding too and read compressed requests', async () => {
    const got = await rawCall(plain.address, '/grpc.health.v1.Health/Check', Buffer.alloc(0), grpcJs, { compress: 'deflate' });
    assert.equal(got.trailers['grpc-status'], '0', got.trailers['grpc-message']);
    assert.equal(got.headers['grpc-accept-encoding'], 'identity,deflate,gzip');
    assert.equal(got.headers['grpc-encoding'], 'identity');
    assert.equal(got.frames[0].compressed, 0);
  });
});

describe('GrpcServer: compression — defaultCompressionAlgorithm, per call and per message', () => {
  let grpcJs;
  let plain;
  let gzip;
  const state = {};

  before(async () => {
    grpcJs = await grpcJsRequestHeaders();
    plain = await startServer({ implementation: compressionEcho(state) });
    gzip = await startServer({
      implementation: compressionEcho(state),
      options: { connectionPool: { protocolSpecific: { defaultCompressionAlgorithm: 'gzip' } } },
    });
  });
  after(async () => {
    await stopServer(plain && plain.server);
    await stopServer(gzip && gzip.server);
  });

  it('defaultCompressionAlgorithm: gzip compresses replies the client accepts (grpc-encoding gzip, flag 1)', async () => {
    const r = { size: 50000 };
    const got = await rawCall(gzip.address, UNARY, request(r), grpcJs);
    assert.equal(got.trailers['grpc-status'], '0');
    assert.equal(got.headers['grpc-encoding'], 'gzip');
    assert.equal(got.headers['grpc-accept-encoding'], 'identity,deflate,gzip');
    assert.equal(got.frames[0].compressed, 1);
    assert.ok(got.frames[0].data.length < 1000, `50000 'a' bytes compress (${got.frames[0].data.length} bytes)`);
    assert.ok(zlib.gunzipSync(got.frames[0].data).equals(replyBytes(r)));
    // What a grpc-js client makes of it.
    const c = client(Echo, gzip.address);
    const v = await call(c, 'Unary', { size: 50000 });
    assert.equal(v.err, null);
    assert.equal(v.value.blob.length, 50000);
  });

  it('defaultCompressionAlgorithm: a client that does not list it gets identity', async () => {
    for (const headers of [{ 'grpc-accept-encoding': 'identity' }, { 'grpc-accept-encoding': 'identity,deflate' }, {}]) {
      const got = await rawCall(gzip.address, UNARY, request({ size: 100 }), headers);
      assert.equal(got.headers['grpc-encoding'], 'identity', JSON.stringify(headers));
      assert.equal(got.frames[0].compressed, 0, JSON.stringify(headers));
    }
  });

  it('defaultCompressionAlgorithm: deflate (zlib), and grpc-js\'s numbers (compressionAlgorithms) are accepted', async () => {
    const ctx = await startServer({
      implementation: compressionEcho(state),
      options: { connectionPool: { protocolSpecific: { defaultCompressionAlgorithm: grpc.compressionAlgorithms.deflate } } },
    });
    try {
      const got = await rawCall(ctx.address, UNARY, request({ size: 1000 }), grpcJs);
      assert.equal(got.headers['grpc-encoding'], 'deflate');
      assert.equal(got.frames[0].compressed, 1);
      assert.ok(zlib.inflateSync(got.frames[0].data).equals(replyBytes({ size: 1000 })));
      const v = await call(client(Echo, ctx.address), 'Unary', { size: 1000 });
      assert.equal(v.err, null);
      assert.equal(v.value.blob.length, 1000);
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('defaultCompressionAlgorithm: a value other than identity/deflate/gzip/0/1/2 is refused, naming the key', () => {
    for (const bad of ['br', 3, true]) {
      assert.throws(
        () => new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', connectionPool: { protocolSpecific: { defaultCompressionAlgorithm: bad } } }),
        (e) => e.code === 'ERR_INVALID_CONFIG' && e.message.includes('defaultCompressionAlgorithm'),
        String(bad),
      );
    }
    const ok = ConfigHelper.createGrpcConfig({ connectionPool: { protocolSpecific: { defaultCompressionAlgorithm: 'gzip' } } });
    assert.equal(ok.connectionPool.protocolSpecific.defaultCompressionAlgorithm, 'gzip');
  });

  it('per call: call.setCompression(\'gzip\') compresses on an identity server; (\'identity\') turns the default off', async () => {
    const on = await rawCall(plain.address, UNARY, request({ message: 'gzip', size: 1000 }), grpcJs);
    assert.equal(on.headers['grpc-encoding'], 'gzip');
    assert.equal(on.frames[0].compressed, 1);
    assert.ok(zlib.gunzipSync(on.frames[0].data).equals(replyBytes({ size: 1000 })));
    const off = await rawCall(gzip.address, UNARY, request({ message: 'identity', size: 1000 }), grpcJs);
    assert.equal(off.headers['grpc-encoding'], 'identity');
    assert.equal(off.frames[0].compressed, 0);
    // Asked for but not accepted by the client: identity.
    const refused = await rawCall(plain.address, UNARY, request({ message: 'gzip', size: 1000 }), { 'grpc-accept-encoding': 'identity' });
    assert.equal(refused.headers['grpc-encoding'], 'identity');
    assert.equal(refused.frames[0].compressed, 0);
  });

  it('per message: grpc-js\'s WriteFlags.NoCompress (2) keeps a message uncompressed (unary callback flags, call.write(msg, flags))', async () => {
    const unary = await rawCall(gzip.address, UNARY, request({ code: 2, size: 1000 }), grpcJs);
    assert.equal(unary.trailers['grpc-status'], '0');
    assert.equal(unary.headers['grpc-encoding'], 'gzip');
    assert.equal(unary.frames[0].compressed, 0);
    assert.ok(unary.frames[0].data.equals(replyBytes({ size: 1000 })));
    // Interop server_compressed_streaming: compressed and uncompressed messages in one stream.
    const req = Echo.service.ServerStream.requestSerialize({ message: 'gzip', count: 4, size: 1000 });
    const stream = await rawCall(plain.address, `${ECHO}/ServerStream`, req, grpcJs);
    assert.equal(stream.trailers['grpc-status'], '0');
    assert.equal(stream.headers['grpc-encoding'], 'gzip');
    assert.deepEqual(stream.frames.map((f) => f.compressed), [1, 0, 1, 0]);
    const decoded = stream.frames.map((f) => Echo.service.ServerStream.responseDeserialize(f.compressed ? zlib.gunzipSync(f.data) : f.data));
    assert.deepEqual(decoded.map((m) => [m.index, m.blob.length]), [[0, 1000], [1, 1000], [2, 1000], [3, 1000]]);
    // And through a grpc-js client.
    const c = client(Echo, plain.address);
    const got = await collect(c.ServerStream({ message: 'gzip', count: 4, size: 1000 }));
    assert.equal(got.err, null);
    assert.deepEqual(got.messages.map((m) => m.index), [0, 1, 2, 3]);
  });

  it('setCompression: only before the head goes out (ERR_HTTP_HEADERS_SENT), and only known algorithms (ERR_INVALID_ARG_VALUE)', async () => {
    state.late = null;
    const got = await rawCall(plain.address, UNARY, request({ details: 'late', size: 10 }), grpcJs);
    assert.equal(got.trailers['grpc-status'], '0');
    assert.equal(got.headers['grpc-encoding'], 'identity');
    assert.equal(state.late && state.late.code, 'ERR_HTTP_HEADERS_SENT');
    const { ServerCall } = require('../js/grpc');
    const fake = Object.create(ServerCall.prototype);
    for (const bad of ['br', 3, -1, null]) {
      assert.throws(() => fake.setCompression(bad), (e) => e.code === 'ERR_INVALID_ARG_VALUE', String(bad));
    }
  });
});

describe('GrpcServer: TLS and mutual TLS', () => {
  const certs = getCerts();
  const ca = fs.readFileSync(certs.ca.cert);
  // The certificate is for localhost; connect to 127.0.0.1 with SNI / authority localhost.
  const TLS_NAME = { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' };

  it('TLS: a client trusting the CA is served; one that does not is refused', async () => {
    const ctx = await startServer({ options: { ssl: { enabled: true, keyFile: certs.server.key, certFile: certs.server.cert } } });
    try {
      const good = client(Echo, ctx.address, grpc.credentials.createSsl(ca), TLS_NAME);
      const r = await call(good, 'Unary', { message: 'over tls' });
      assert.equal(r.err, null);
      assert.equal(r.value.message, 'over tls');
      const untrusting = client(Echo, ctx.address, grpc.credentials.createSsl(fs.readFileSync(certs.otherCa.cert)), TLS_NAME);
      const bad = await call(untrusting, 'Unary', { message: 'x' }, { deadline: Date.now() + 3000 });
      assert.equal(bad.err.code, grpc.status.UNAVAILABLE);
      const plain = client(Echo, ctx.address);
      const clear = await call(plain, 'Unary', { message: 'x' }, { deadline: Date.now() + 3000 });
      assert.ok(clear.err, 'a cleartext client is not served');
      for (const c of [good, untrusting, plain]) { c.close(); clients.delete(c); }
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('mTLS (clientCertRequired): no client cert or one from another CA is rejected; the CA-signed one is served', async () => {
    const ctx = await startServer({
      options: { ssl: { enabled: true, keyFile: certs.server.key, certFile: certs.server.cert, caFile: certs.ca.cert, clientCertRequired: true } },
    });
    try {
      const noCert = client(Echo, ctx.address, grpc.credentials.createSsl(ca), TLS_NAME);
      const r1 = await call(noCert, 'Unary', { message: 'x' }, { deadline: Date.now() + 3000 });
      assert.ok(r1.err, 'a client without a certificate is rejected');
      assert.equal(r1.err.code, grpc.status.UNAVAILABLE, r1.err.details);
      const rogue = client(Echo, ctx.address, grpc.credentials.createSsl(ca, fs.readFileSync(certs.otherClient.key), fs.readFileSync(certs.otherClient.cert)), TLS_NAME);
      const r2 = await call(rogue, 'Unary', { message: 'x' }, { deadline: Date.now() + 3000 });
      assert.ok(r2.err, 'a client with a certificate from another CA is rejected');
      assert.equal(r2.err.code, grpc.status.UNAVAILABLE, r2.err.details);
      const good = client(Echo, ctx.address, grpc.credentials.createSsl(ca, fs.readFileSync(certs.client.key), fs.readFileSync(certs.client.cert)), TLS_NAME);
      const r3 = await call(good, 'Unary', { message: 'mutual' });
      assert.equal(r3.err, null);
      assert.equal(r3.value.message, 'mutual');
      const s = await collect(good.ServerStream({ message: 'm', count: 3 }));
      assert.equal(s.messages.length, 3);
      assert.equal(ctx.state.calls.length, 2, 'only the authenticated client reached a handler');
      for (const c of [noCert, rogue, good]) { c.close(); clients.delete(c); }
    } finally {
      await stopServer(ctx.server);
    }
  });
});

/** A hand-written service definition (no protobuf descriptors): raw bytes in and out. */
const HAND_WRITTEN = {
  Ping: {
    path: '/hand.Written/Ping',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b) => b,
    requestDeserialize: (b) => b,
    responseSerialize: (b) => b,
    responseDeserialize: (b) => b,
  },
};

describe('GrpcServer: health service and graceful shutdown', () => {
  it('grpc.health.v1.Health/Watch: current status, SERVICE_UNKNOWN until registered, NOT_SERVING when shutdown starts, then ends', async () => {
    const ctx = await startServer();
    const health = client(Health, ctx.address);
    const echo = client(Echo, ctx.address);
    const watch = (service) => {
      const stream = health.Watch({ service });
      const seen = [];
      const waiters = [];
      stream.on('data', (m) => {
        seen.push(m.status);
        for (const w of waiters.splice(0)) w();
      });
      const result = collect(stream);
      const next = (n) => pollUntil(() => seen.length, (k) => k >= n, { timeoutMs: 3000 }).then(() => seen[n - 1]);
      return { stream, seen, next, result };
    };
    try {
      const server = watch('');
      const later = watch('hand.Written');
      assert.equal(await server.next(1), 'SERVING');
      assert.equal(await later.next(1), 'SERVICE_UNKNOWN');
      ctx.server.RegisterService({ service: HAND_WRITTEN, implementation: { Ping: (call, cb) => cb(null, call.request) } });
      assert.equal(await later.next(2), 'SERVING', 'registering the service is announced');
      // A call in flight keeps the drain going while the watchers learn of the shutdown.
      const inFlight = collect(echo.ServerStream({ message: 'long', count: 6, delay_ms: 100 }));
      await pollUntil(() => ctx.state.calls.length, (n) => n === 1, { timeoutMs: 2000 });
      const shutdown = ctx.server.gracefulShutdown({ drainDelay: 300, timeout: 5000 });
      assert.equal(await server.next(2), 'NOT_SERVING');
      assert.equal(await later.next(3), 'NOT_SERVING');
      // Once connections drain, Watch ends (UNAVAILABLE) rather than holding the shutdown up.
      const ended = await server.result;
      assert.equal(ended.err && ended.err.code, grpc.status.UNAVAILABLE);
      assert.deepEqual(server.seen, ['SERVING', 'NOT_SERVING']);
      assert.equal((await inFlight).err, null);
      const report = await shutdown;
      assert.equal(report.forced, 0, 'nothing had to be forced');
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('grpc.health.v1.Health/Check: SERVING, SERVICE_UNKNOWN for an unregistered name, NOT_SERVING once shutdown starts', async () => {
    const ctx = await startServer();
    const health = client(Health, ctx.address);
    const echo = client(Echo, ctx.address);
    try {
      const check = async (service) => {
        const r = await call(health, 'Check', { service }, { deadline: Date.now() + 3000 });
        assert.equal(r.err, null, `Check(${service}): ${r.err && r.err.details}`);
        return r.value.status;
      };
      assert.equal(await check(''), 'SERVING');
      assert.equal(await check('koatty.test.Echo'), 'SERVING');
      // As grpc-js's and grpc-go's health servers: Check of an unknown service is NOT_FOUND.
      const unknown = await call(health, 'Check', { service: 'koatty.test.Nope' }, { deadline: Date.now() + 3000 });
      assert.equal(unknown.err && unknown.err.code, grpc.status.NOT_FOUND);
      assert.equal(ctx.state.calls.length, 0, 'answered natively, no handler ran');
      // A call in flight keeps the drain going; Check on the open connection sees NOT_SERVING.
      const inFlight = collect(echo.ServerStream({ message: 'long', count: 6, delay_ms: 100 }));
      await pollUntil(() => ctx.state.calls.length, (n) => n === 1, { timeoutMs: 2000 });
      const shutdown = ctx.server.gracefulShutdown({ drainDelay: 500, timeout: 5000 });
      await sleep(50);
      // Step 1 sent GOAWAY on the open connection (as grpc-js's tryShutdown does), so a new Check
      // needs a new connection, which the closed listener refuses: never SERVING once shutdown began.
      for (const service of ['', 'koatty.test.Echo']) {
        const late = await call(health, 'Check', { service }, { deadline: Date.now() + 3000 });
        if (late.err) assert.equal(late.err.code, grpc.status.UNAVAILABLE, `Check(${service}) after shutdown began: ${late.err.details}`);
        else assert.equal(late.value.status, 'NOT_SERVING');
      }
      const r = await inFlight;
      assert.equal(r.err, null);
      await shutdown;
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('graceful shutdown lets an in-flight streaming call finish; new connections are refused', async () => {
    const ctx = await startServer();
    const echo = client(Echo, ctx.address);
    try {
      const stream = echo.ServerStream({ message: 'drain', count: 10, delay_ms: 100 }, md(), { deadline: Date.now() + 10000 });
      const result = collect(stream);
      await new Promise((resolve) => stream.once('data', resolve));
      const t0 = Date.now();
      let stopped = false;
      const shutdown = ctx.server.gracefulShutdown({ drainDelay: 0, timeout: 5000 }).then((report) => { stopped = true; return report; });
      const r = await result;
      assert.equal(r.err, null, r.err && r.err.details);
      assert.deepEqual(r.messages.map((m) => m.index), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.equal(r.status.code, grpc.status.OK);
      const report = await shutdown;
      assert.equal(stopped, true);
      assert.equal(report.drained, true);
      assert.equal(report.forced, 0);
      assert.ok(Date.now() - t0 >= 700, 'shutdown waited for the call');
      const late = client(Echo, ctx.address);
      const after = await call(late, 'Unary', { message: 'late' }, { deadline: Date.now() + 2000 });
      assert.ok(after.err, 'no new calls after shutdown');
      assert.equal(after.err.code, grpc.status.UNAVAILABLE);
      late.close();
      clients.delete(late);
      assert.equal(pending(ctx.server), 0);
    } finally {
      echo.close();
      clients.delete(echo);
      await stopServer(ctx.server);
    }
  });
});

/** One ServerReflectionInfo exchange per request over a single stream: resolves the responses in order. */
async function reflect(Ctor, address, requests) {
  const c = client(Ctor, address);
  try {
    const stream = c.ServerReflectionInfo({ deadline: Date.now() + 5000 });
    const result = collect(stream);
    for (const r of requests) stream.write(r);
    stream.end();
    const out = await result;
    if (out.err) throw out.err;
    assert.equal(out.messages.length, requests.length);
    return out.messages;
  } finally {
    c.close();
    clients.delete(c);
  }
}

const fileNames = (response) => response.file_descriptor_response.file_descriptor_proto.map((b) => FileDescriptorProto.decode(b).name);

describe('GrpcServer: server reflection', () => {
  it('v1 and v1alpha list the registered services, health and reflection, and serve their descriptors', async () => {
    const ctx = await startServer({ options: { reflection: true }, setup: (s) => s.RegisterService({ service: HAND_WRITTEN, implementation: { Ping: (call, cb) => cb(null, call.request) } }) });
    try {
      const expected = ['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection', 'hand.Written', 'koatty.test.Echo'];
      for (const Ctor of [ReflectionV1, ReflectionV1alpha]) {
        const [list, echoFile, health] = await reflect(Ctor, ctx.address, [
          { list_services: '' },
          { file_containing_symbol: 'koatty.test.Echo' },
          { file_containing_symbol: 'grpc.health.v1.Health' },
        ]);
        assert.deepEqual(list.list_services_response.service.map((s) => s.name).sort(), expected);
        const file = FileDescriptorProto.decode(echoFile.file_descriptor_response.file_descriptor_proto[0]);
        assert.equal(file.package, 'koatty.test');
        assert.deepEqual(file.service.map((s) => s.name), ['Echo']);
        assert.deepEqual(file.service[0].method.map((m) => m.name).sort(), ['Bidi', 'ClientStream', 'ServerStream', 'Unary']);
        // proto-loader names its descriptors after the package (koatty_test.proto), not the source file.
        const [byName, message] = await reflect(Ctor, ctx.address, [{ file_by_filename: file.name }, { file_containing_symbol: 'koatty.test.EchoRequest' }]);
        assert.deepEqual(fileNames(byName), [file.name]);
        assert.deepEqual(fileNames(message), [file.name]);
        const healthFile = FileDescriptorProto.decode(health.file_descriptor_response.file_descriptor_proto[0]);
        assert.deepEqual(healthFile.service[0].method.map((m) => m.name), ['Check', 'Watch']);
        // Unknown files, and a hand-written definition (no descriptors: listed by name only), are
        // NOT_FOUND error responses on the open stream, as the reflection protocol has it.
        const [missing, handWritten, after] = await reflect(Ctor, ctx.address, [
          { file_by_filename: 'nope.proto' },
          { file_containing_symbol: 'hand.Written' },
          { file_containing_symbol: 'koatty.test.EchoReply' },
        ]);
        assert.equal(missing.error_response.error_code, grpc.status.NOT_FOUND);
        assert.equal(handWritten.error_response.error_code, grpc.status.NOT_FOUND);
        assert.equal(handWritten.original_request.file_containing_symbol, 'hand.Written');
        assert.deepEqual(fileNames(after), [file.name], 'the stream goes on after an error');
      }
      assert.equal(ctx.state.calls.length, 0, 'answered natively, no handler ran');
    } finally {
      await stopServer(ctx.server);
    }
  });

  it('reflection is off by default (as with grpc-js) → UNIMPLEMENTED; updateConfig turns it on in place; ConfigHelper validates it', async () => {
    const ctx = await startServer();
    try {
      const c = client(ReflectionV1, ctx.address);
      const off = await collect((() => { const s = c.ServerReflectionInfo(); s.write({ list_services: '' }); s.end(); return s; })());
      assert.equal(off.err && off.err.code, grpc.status.UNIMPLEMENTED);
      const change = await ctx.server.updateConfig({ reflection: true });
      assert.deepEqual(change, { changedKeys: ['reflection'], requiresRestart: false, restarted: false });
      const [list] = await reflect(ReflectionV1, ctx.address, [{ list_services: '' }]);
      assert.ok(list.list_services_response.service.some((s) => s.name === 'koatty.test.Echo'));
    } finally {
      await stopServer(ctx.server);
    }
    assert.equal(ConfigHelper.createGrpcConfig({}).reflection, false);
    assert.equal(ConfigHelper.createGrpcConfig({ reflection: true }).reflection, true);
    assert.throws(() => ConfigHelper.createGrpcConfig({ reflection: 'no' }), { code: 'ERR_INVALID_CONFIG', message: /reflection/ });
    assert.throws(() => ConfigHelper.createHttpConfig({ reflection: true }), { code: 'ERR_INVALID_CONFIG', message: /reflection/ });
    assert.throws(() => new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', reflection: 1 }), { code: 'ERR_INVALID_CONFIG' });
  });
});

describe('NewServe and RegisterService', () => {
  it("NewServe(app, { protocol: 'grpc' }) gives a GrpcServer with ext.protoFile from the router config", async () => {
    const app = { config: (key, type) => (key === 'protoFile' && type === 'router' ? '/some/file.proto' : undefined) };
    const server = NewServe(app, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' });
    try {
      assert.ok(server instanceof GrpcServer);
      assert.equal(server.constructor.name, 'GrpcServer');
      assert.equal(server.options.ext.protoFile, '/some/file.proto');
      const state = {};
      // Registered before Start, as koatty_router does; only Unary implemented (by originalName's key).
      const impl = makeEcho(state);
      server.RegisterService({ service: Echo.service, implementation: { Unary: impl.Unary } });
      await new Promise((resolve) => server.Start(resolve));
      const echo = client(Echo, `127.0.0.1:${server.server.address().port}`);
      const r = await call(echo, 'Unary', { message: 'via NewServe' });
      assert.equal(r.err, null);
      assert.equal(r.value.message, 'via NewServe');
      const missing = await collect(echo.ServerStream({ count: 1 }));
      assert.equal(missing.err.code, grpc.status.UNIMPLEMENTED, 'a method absent from the implementation');
      echo.close();
      clients.delete(echo);
    } finally {
      await stopServer(server);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// Koatty 3.11.8 (child process): a koatty_router gRPC controller (src/controller/GreeterController.js
// + src/proto/greeter.proto) served through NewServe on this server (koatty-contract.md §5). Router
// protocol and proto file come from run-con env overrides of the router config.

describe('Koatty: a koatty_router gRPC controller on GrpcServer', () => {
  const protoFile = path.join(KOATTY_APP_DIR, 'src', 'proto', 'greeter.proto');
  let app;
  let greeter;
  let health;

  before(async () => {
    app = await startKoattyApp({
      env: {
        KOATTY_TEST_PROTOCOL: 'grpc',
        router_router__protocol: 'grpc',
        router_router__ext__protoFile: protoFile,
      },
    });
    const { Greeter } = load(protoFile).koattytest;
    greeter = client(Greeter, `127.0.0.1:${app.port}`);
    health = client(Health, `127.0.0.1:${app.port}`);
  });

  after(async () => {
    if (greeter) { greeter.close(); clients.delete(greeter); }
    if (health) { health.close(); clients.delete(health); }
    if (app) {
      const r = await app.stop();
      assert.equal(r.forced, false, `the app stopped by itself on SIGTERM\n${app.output()}`);
    }
  });

  it('boots with the native GrpcServer', () => {
    assert.equal(app.info.serverClass, 'GrpcServer');
    assert.equal(app.info.native, true, 'koatty_serve resolved to this repository (native addon)');
  });

  it('answers a unary call through the controller (@RequestBody gets the request), echoing metadata as koatty_trace does', async () => {
    const r = await call(greeter, 'SayHello', { name: 'Koatty' }, { metadata: md({ 'x-custom': 'abc' }) });
    assert.equal(r.err, null, `${r.err && r.err.details}\n${app.output()}`);
    assert.equal(r.value.message, 'Hello Koatty');
    assert.equal(r.value.path, '/koattytest.Greeter/SayHello', 'ctx.originalPath from call.handler.path');
    assert.equal(r.value.rpc, true, 'ctx.rpc.call is the server call');
    // koatty_trace sends the incoming metadata plus x-powered-by as response headers (§5.2).
    assert.deepEqual(r.headers.get('x-custom'), ['abc']);
    assert.deepEqual(r.headers.get('x-powered-by'), ['Koatty']);
    const again = await call(greeter, 'SayHello', { name: 'again' });
    assert.equal(again.value.message, 'Hello again');
  });

  it('a method without a controller route is UNIMPLEMENTED; Health/Check is answered natively', async () => {
    const r = await call(greeter, 'Unrouted', { name: 'x' }, { deadline: Date.now() + 3000 });
    assert.equal(r.err.code, grpc.status.UNIMPLEMENTED);
    // @grpc/grpc-js (koatty_serve 2.3.0) has no health service: SERVING proves this server answered.
    const h = await call(health, 'Check', { service: 'koattytest.Greeter' }, { deadline: Date.now() + 3000 });
    assert.equal(h.err, null);
    assert.equal(h.value.status, 'SERVING');
    const m = await app.metrics();
    assert.equal(m.metrics.pendingRequests, 0);
  });
});
