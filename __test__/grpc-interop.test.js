'use strict';
// The standard gRPC interop test cases (grpc/doc/interop-test-descriptions.md) against a
// grpc.testing.TestService implemented in JavaScript on GrpcServer, driven by an @grpc/grpc-js client;
// then a python grpcio client (unary + server streaming + metadata + status + compression) when python3 and grpcio
// are available: a venv under the OS temp dir is created on first use from __test__/python/requirements.txt,
// otherwise the python tests are skipped with the reason.
// Protos: __test__/protos/grpc/testing/{empty,messages,test}.proto (subset of the upstream files).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const http2 = require('http2');
const os = require('os');
const zlib = require('zlib');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { GrpcServer, Metadata } = require('..');
const { spawn } = require('child_process');
const { runProgram, probeProgram, withTimeout, pollUntil, failIfKeptAlive } = require('./helpers');

failIfKeptAlive(__filename);

const PROTO_DIR = path.join(__dirname, 'protos');
const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };
const testing = grpc.loadPackageDefinition(protoLoader.loadSync('grpc/testing/test.proto', LOAD_OPTIONS)).grpc.testing;

const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n';

// ---------------------------------------------------------------------------------------------------
// TestService in JS (as grpc-node's interop server implements it)

const payload = (size) => ({ type: 'COMPRESSABLE', body: Buffer.alloc(size) });
/** grpc-js's `WriteFlags.NoCompress`. */
const NO_COMPRESS = 2;
const wait = (us) => new Promise((resolve) => setTimeout(resolve, Math.ceil(us / 1000)));

function makeTestService(state) {
  state.calls = [];
  const track = (call, method) => {
    const rec = { method, cancelled: 0 };
    call.on('cancelled', () => { rec.cancelled++; });
    state.calls.push(rec);
    return rec;
  };
  /** Echo x-grpc-test-echo-initial as initial metadata; returns the trailers to send. */
  function echoMetadata(call) {
    const initial = call.metadata.get(ECHO_INITIAL);
    if (initial.length > 0) {
      const md = new Metadata();
      md.set(ECHO_INITIAL, initial[0]);
      call.sendMetadata(md);
    }
    const trailer = new Metadata();
    const trailing = call.metadata.get(ECHO_TRAILING);
    if (trailing.length > 0) trailer.set(ECHO_TRAILING, trailing[0]);
    return trailer;
  }
  const failure = (status, trailer) => ({ code: status.code, details: status.message, metadata: trailer });

  return {
    EmptyCall(call, callback) {
      track(call, 'EmptyCall');
      callback(null, {});
    },

    UnaryCall(call, callback) {
      track(call, 'UnaryCall');
      const req = call.request;
      // server_compressed_unary: response_compressed true → compressed, false → not.
      if (req.response_compressed) call.setCompression(req.response_compressed.value ? 'gzip' : 'identity');
      const trailer = echoMetadata(call);
      if (req.response_status && req.response_status.code) {
        callback(failure(req.response_status, trailer));
        return;
      }
      callback(null, { payload: payload(req.response_size) }, trailer);
    },

    async StreamingOutputCall(call) {
      const rec = track(call, 'StreamingOutputCall');
      const req = call.request;
      // server_compressed_streaming: each response's `compressed` says whether it is compressed.
      const compressed = (p) => Boolean(p.compressed && p.compressed.value);
      if (req.response_parameters.some(compressed)) call.setCompression('gzip');
      const trailer = echoMetadata(call);
      for (const p of req.response_parameters) {
        if (p.interval_us > 0) await wait(p.interval_us);
        if (call.cancelled) return;
        call.write({ payload: payload(p.size) }, compressed(p) ? 0 : NO_COMPRESS);
        rec.written = (rec.written || 0) + 1;
      }
      if (req.response_status && req.response_status.code) call.emit('error', failure(req.response_status, trailer));
      else call.end(trailer);
    },

    StreamingInputCall(call, callback) {
      track(call, 'StreamingInputCall');
      let size = 0;
      call.on('data', (m) => { size += m.payload ? m.payload.body.length : 0; });
      call.on('end', () => callback(null, { aggregated_payload_size: size }));
    },

    FullDuplexCall(call) {
      const rec = track(call, 'FullDuplexCall');
      const trailer = echoMetadata(call);
      // Requests are answered in order, each after its parameters' intervals.
      let chain = Promise.resolve();
      call.on('data', (req) => {
        chain = chain.then(async () => {
          if (call.cancelled) return;
          if (req.response_status && req.response_status.code) {
            call.emit('error', failure(req.response_status, trailer));
            return;
          }
          for (const p of req.response_parameters) {
            if (p.interval_us > 0) await wait(p.interval_us);
            if (call.cancelled) return;
            call.write({ payload: payload(p.size) });
            rec.written = (rec.written || 0) + 1;
          }
        }).catch((err) => { rec.error = err; });
      });
      call.on('end', () => {
        chain.then(() => {
          if (call.cancelled) return;
          rec.answered = true;
          call.end(trailer);
        });
      });
    },

    HalfDuplexCall(call) {
      track(call, 'HalfDuplexCall');
      const requests = [];
      call.on('data', (req) => requests.push(req));
      call.on('end', () => {
        for (const req of requests) for (const p of req.response_parameters) call.write({ payload: payload(p.size) });
        call.end();
      });
    },
    // UnimplementedCall is deliberately absent (unimplemented_method).
  };
}

// ---------------------------------------------------------------------------------------------------

function unary(client, method, request, { metadata = new grpc.Metadata(), deadline = Date.now() + 10000 } = {}) {
  return new Promise((resolve) => {
    const out = { err: null, value: undefined, headers: null, status: null };
    let done = 0;
    const finish = () => { if (++done === 2) resolve(out); };
    const c = client[method](request, metadata, { deadline }, (err, value) => { out.err = err; out.value = value; finish(); });
    c.on('metadata', (m) => { out.headers = m; });
    c.on('status', (s) => { out.status = s; finish(); });
  });
}

function collect(stream) {
  return new Promise((resolve) => {
    const out = { messages: [], err: null, headers: null, status: null };
    let done = 0;
    const finish = () => { if (++done === 2) resolve(out); };
    stream.on('metadata', (m) => { out.headers = m; });
    stream.on('data', (m) => out.messages.push(m));
    stream.on('error', (err) => { out.err = err; finish(); });
    stream.on('end', finish);
    stream.on('status', (s) => { out.status = s; finish(); });
  });
}

/**
 * One call with node's http2 client sending grpc-js's `grpc-accept-encoding`: resolves { headers,
 * frames: [{ compressed, data }] } (the 5-byte prefix's flag and the message as on the wire).
 */
async function rawFrames(port, callPath, message) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  try {
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    return await withTimeout(new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'POST', ':path': callPath, 'content-type': 'application/grpc', te: 'trailers', 'grpc-accept-encoding': 'identity,deflate,gzip' });
      let headers;
      const chunks = [];
      stream.on('response', (h) => { headers = h; });
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', reject);
      stream.on('end', () => {
        const body = Buffer.concat(chunks);
        const frames = [];
        for (let o = 0; o + 5 <= body.length;) {
          const len = body.readUInt32BE(o + 1);
          frames.push({ compressed: body[o], data: body.subarray(o + 5, o + 5 + len) });
          o += 5 + len;
        }
        resolve({ headers, frames });
      });
      stream.end(frame);
    }), 5000, `raw call ${callPath}`);
  } finally {
    session.destroy();
  }
}

const nextMessage = (stream, what) => withTimeout(new Promise((resolve) => stream.once('data', resolve)), 5000, what);

describe('gRPC interop test cases: grpc-js client → JS TestService on GrpcServer', () => {
  let server;
  let client;
  let port;
  const state = {};

  before(async () => {
    server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', reflection: true });
    server.on('handlerError', (err) => { (state.handlerErrors ||= []).push(err); });
    server.RegisterService({ service: testing.TestService.service, implementation: makeTestService(state) });
    await new Promise((resolve, reject) => { server.once('error', reject); server.Start(resolve); });
    port = server.server.address().port;
    client = new testing.TestService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    if (client) client.close();
    if (server) await server.gracefulShutdown({ drainDelay: 0, timeout: 3000 });
  });

  it('empty_unary', async () => {
    const r = await unary(client, 'EmptyCall', {});
    assert.equal(r.err, null);
    assert.deepEqual(r.value, {});
  });

  it('large_unary', async () => {
    const r = await unary(client, 'UnaryCall', { response_size: 314159, payload: { body: Buffer.alloc(271828) } });
    assert.equal(r.err, null);
    assert.equal(r.value.payload.type, 'COMPRESSABLE');
    assert.equal(r.value.payload.body.length, 314159);
    assert.ok(r.value.payload.body.equals(Buffer.alloc(314159)));
  });

  it('client_streaming', async () => {
    const r = await new Promise((resolve) => {
      const call = client.StreamingInputCall((err, value) => resolve({ err, value }));
      for (const size of [27182, 8, 1828, 45904]) call.write({ payload: { body: Buffer.alloc(size) } });
      call.end();
    });
    assert.equal(r.err, null);
    assert.equal(r.value.aggregated_payload_size, 74922);
  });

  it('server_streaming', async () => {
    const sizes = [31415, 9, 2653, 58979];
    const r = await collect(client.StreamingOutputCall({ response_parameters: sizes.map((size) => ({ size })) }));
    assert.equal(r.err, null);
    assert.deepEqual(r.messages.map((m) => m.payload.body.length), sizes);
    assert.equal(r.status.code, grpc.status.OK);
  });

  it('ping_pong', async () => {
    const call = client.FullDuplexCall();
    const result = collect(call);
    const sizes = [31415, 9, 2653, 58979];
    const payloads = [27182, 8, 1828, 45904];
    for (let i = 0; i < sizes.length; i++) {
      const reply = nextMessage(call, `ping_pong response ${i}`);
      call.write({ response_parameters: [{ size: sizes[i] }], payload: { body: Buffer.alloc(payloads[i]) } });
      assert.equal((await reply).payload.body.length, sizes[i]);
    }
    call.end();
    const r = await result;
    assert.equal(r.err, null);
    assert.equal(r.status.code, grpc.status.OK);
  });

  it('client_compressed_unary / client_compressed_streaming (gzip and deflate requests)', async () => {
    for (const algorithm of ['gzip', 'deflate']) {
      const c = new testing.TestService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_compression_algorithm': grpc.compressionAlgorithms[algorithm] });
      try {
        const r = await unary(c, 'UnaryCall', { response_size: 314159, payload: { body: Buffer.alloc(271828) } });
        assert.equal(r.err, null, algorithm);
        assert.equal(r.value.payload.body.length, 314159);
        const s = await new Promise((resolve) => {
          const call = c.StreamingInputCall((err, value) => resolve({ err, value }));
          for (const size of [27182, 45904]) call.write({ payload: { body: Buffer.alloc(size) } });
          call.end();
        });
        assert.equal(s.err, null, algorithm);
        assert.equal(s.value.aggregated_payload_size, 73086);
      } finally {
        c.close();
      }
    }
  });

  it('server_compressed_unary and server_compressed_streaming (response_compressed, compressed)', async () => {
    for (const value of [true, false]) {
      const r = await unary(client, 'UnaryCall', { response_size: 314159, payload: { body: Buffer.alloc(271828) }, response_compressed: { value } });
      assert.equal(r.err, null);
      assert.equal(r.value.payload.body.length, 314159);
    }
    const r = await collect(client.StreamingOutputCall({ response_parameters: [{ size: 31415, compressed: { value: true } }, { size: 92653, compressed: { value: false } }] }));
    assert.equal(r.err, null);
    assert.deepEqual(r.messages.map((m) => m.payload.body.length), [31415, 92653]);
    // The flags on the wire (grpc-js clients do not expose them): node's http2 client.
    const wire = await rawFrames(port, '/grpc.testing.TestService/StreamingOutputCall',
      testing.TestService.service.StreamingOutputCall.requestSerialize({ response_parameters: [{ size: 31415, compressed: { value: true } }, { size: 92653, compressed: { value: false } }] }));
    assert.equal(wire.headers['grpc-encoding'], 'gzip');
    const serialized = (size) => testing.TestService.service.StreamingOutputCall.responseSerialize({ payload: payload(size) });
    assert.deepEqual(wire.frames.map((f) => f.compressed), [1, 0]);
    assert.ok(zlib.gunzipSync(wire.frames[0].data).equals(serialized(31415)));
    assert.ok(wire.frames[1].data.equals(serialized(92653)));
    const off = await rawFrames(port, '/grpc.testing.TestService/UnaryCall',
      testing.TestService.service.UnaryCall.requestSerialize({ response_size: 100, response_compressed: { value: false } }));
    assert.equal(off.headers['grpc-encoding'], 'identity');
    assert.deepEqual(off.frames.map((f) => f.compressed), [0]);
    const on = await rawFrames(port, '/grpc.testing.TestService/UnaryCall',
      testing.TestService.service.UnaryCall.requestSerialize({ response_size: 100, response_compressed: { value: true } }));
    assert.equal(on.headers['grpc-encoding'], 'gzip');
    assert.deepEqual(on.frames.map((f) => f.compressed), [1]);
  });

  it('empty_stream', async () => {
    const call = client.FullDuplexCall();
    const result = collect(call);
    call.end();
    const r = await result;
    assert.equal(r.err, null);
    assert.equal(r.messages.length, 0);
    assert.equal(r.status.code, grpc.status.OK);
  });

  it('custom_metadata (UnaryCall and FullDuplexCall)', async () => {
    const trailing = Buffer.from([0xab, 0xab, 0xab]);
    const metadata = () => {
      const m = new grpc.Metadata();
      m.set(ECHO_INITIAL, 'test_initial_metadata_value');
      m.set(ECHO_TRAILING, trailing);
      return m;
    };
    const r = await unary(client, 'UnaryCall', { response_size: 314159, payload: { body: Buffer.alloc(271828) } }, { metadata: metadata() });
    assert.equal(r.err, null);
    assert.deepEqual(r.headers.get(ECHO_INITIAL), ['test_initial_metadata_value']);
    assert.ok(r.status.metadata.get(ECHO_TRAILING)[0].equals(trailing));

    const call = client.FullDuplexCall(metadata());
    const result = collect(call);
    call.write({ response_parameters: [{ size: 314159 }], payload: { body: Buffer.alloc(271828) } });
    call.end();
    const s = await result;
    assert.equal(s.err, null);
    assert.equal(s.messages.length, 1);
    assert.deepEqual(s.headers.get(ECHO_INITIAL), ['test_initial_metadata_value']);
    assert.ok(s.status.metadata.get(ECHO_TRAILING)[0].equals(trailing));
  });

  it('status_code_and_message (UnaryCall and FullDuplexCall)', async () => {
    const response_status = { code: 2, message: 'test status message' };
    const r = await unary(client, 'UnaryCall', { response_status });
    assert.equal(r.err.code, 2);
    assert.equal(r.err.details, 'test status message');

    const call = client.FullDuplexCall({ deadline: Date.now() + 5000 });
    const result = collect(call);
    call.write({ response_status });
    call.end();
    const s = await result;
    assert.ok(s.err, `FullDuplexCall ended with status ${s.status && s.status.code}: call.emit('error', status) did not end the call with that status`);
    assert.equal(s.err.code, 2, `got ${s.err.code} ${s.err.details}`);
    assert.equal(s.err.details, 'test status message');
  });

  it('special_status_message', async () => {
    const r = await unary(client, 'UnaryCall', { response_status: { code: 2, message: SPECIAL_MESSAGE } });
    assert.equal(r.err.code, 2);
    assert.equal(r.err.details, SPECIAL_MESSAGE);
  });

  it('unimplemented_method', async () => {
    const r = await unary(client, 'UnimplementedCall', {});
    assert.equal(r.err.code, grpc.status.UNIMPLEMENTED);
  });

  it('unimplemented_service', async () => {
    const other = new testing.UnimplementedService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const r = await unary(other, 'UnimplementedCall', {});
      assert.equal(r.err.code, grpc.status.UNIMPLEMENTED);
    } finally {
      other.close();
    }
  });

  it('cancel_after_begin', async () => {
    const r = await new Promise((resolve) => {
      const call = client.StreamingInputCall((err) => resolve({ err }));
      call.cancel();
    });
    assert.equal(r.err.code, grpc.status.CANCELLED);
  });

  it('cancel_after_first_response', async () => {
    state.calls.length = 0;
    const call = client.FullDuplexCall();
    const result = collect(call);
    const first = nextMessage(call, 'first response');
    call.write({ response_parameters: [{ size: 31415 }], payload: { body: Buffer.alloc(27182) } });
    assert.equal((await first).payload.body.length, 31415);
    call.cancel();
    const r = await result;
    assert.equal(r.err.code, grpc.status.CANCELLED);
    // Server side: the handler learns of it — unless it had already answered. grpc-js's cancel is
    // END_STREAM, then RST_STREAM(CANCEL) in a later write; this handler answers as soon as it
    // sees 'end', and the answer may leave before the reset arrives (README "Differences").
    const rec = state.calls.find((c) => c.method === 'FullDuplexCall');
    await pollUntil(() => rec.cancelled + (rec.answered ? 1 : 0), (n) => n > 0, { timeoutMs: 2000 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(rec.cancelled === 1 || (rec.answered && rec.cancelled === 0),
      `the FullDuplexCall handler saw 'cancelled' once (${rec.cancelled}) or had answered before the reset (${rec.answered})`);
  });

  it('timeout_on_sleeping_server', async () => {
    const call = client.FullDuplexCall({ deadline: Date.now() + 1 });
    const result = collect(call);
    call.write({ payload: { body: Buffer.alloc(27182) } });
    const r = await result;
    assert.equal(r.err.code, grpc.status.DEADLINE_EXCEEDED);
  });

  it('nothing left in flight after the cases', async () => {
    const n = await pollUntil(() => server.connectionPool.getMetrics().pendingRequests, (v) => v === 0, { timeoutMs: 3000 });
    assert.equal(n, 0);
  });
});

// ---------------------------------------------------------------------------------------------------
// python grpcio client (no generated stubs: __test__/python/interop_client.py encodes the few
// messages it needs by hand, so grpcio alone is enough).

const PY_DIR = path.join(__dirname, 'python');
const REQUIREMENTS = path.join(PY_DIR, 'requirements.txt');

/** A python with grpcio: a venv under the temp dir (created once, reused). Resolves { python } or { skip }. */
async function grpcioPython() {
  // The venv below is laid out as on POSIX (bin/python; Windows has Scripts\python.exe).
  if (process.platform === 'win32') return { skip: 'the python clients are set up for POSIX venvs only (not on Windows)' };
  const probe = probeProgram('python3', ['-c', 'import sys, venv; print(sys.version_info[0], sys.version_info[1])']);
  if (!probe.ok || !/^\d+ \d+/.test(probe.output.trim())) return { skip: 'python3 (with the venv module) is not available' };
  const [major, minor] = probe.output.trim().split(/\s+/);
  const requirements = fs.readFileSync(REQUIREMENTS, 'utf8');
  const tag = require('crypto').createHash('sha256').update(requirements).digest('hex').slice(0, 12);
  const venv = path.join(os.tmpdir(), `koatty-serve-grpcio-py${major}.${minor}-${tag}`);
  const python = path.join(venv, 'bin', 'python');
  const ready = path.join(venv, '.ready');
  if (fs.existsSync(ready)) return { python };
  fs.rmSync(venv, { recursive: true, force: true });
  const mk = await runProgram('python3', ['-m', 'venv', venv], { timeoutMs: 60000 });
  if (mk.code !== 0) return { skip: `python3 -m venv failed: ${(mk.stderr || String(mk.error)).trim().slice(-300)}` };
  const pip = await runProgram(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--only-binary=:all:', '-r', REQUIREMENTS], { timeoutMs: 120000 });
  if (pip.code !== 0) {
    fs.rmSync(venv, { recursive: true, force: true });
    return { skip: `pip install -r __test__/python/requirements.txt failed (offline?): ${(pip.stderr || String(pip.error)).trim().slice(-300)}` };
  }
  fs.writeFileSync(ready, requirements);
  return { python };
}

describe('python grpcio client → JS TestService on GrpcServer', () => {
  let server;
  let py;
  const state = {};

  before(async () => {
    py = await grpcioPython();
    if (py.skip) return;
    server = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc', reflection: true });
    server.RegisterService({ service: testing.TestService.service, implementation: makeTestService(state) });
    await new Promise((resolve, reject) => { server.once('error', reject); server.Start(resolve); });
  });

  after(async () => {
    if (server) await server.gracefulShutdown({ drainDelay: 0, timeout: 3000 });
  });

  it('unary, server streaming, metadata, status and compression (both ways) from grpcio', async (t) => {
    if (py.skip) {
      t.skip(py.skip);
      return;
    }
    const port = server.server.address().port;
    const r = await runProgram(py.python, [path.join(PY_DIR, 'interop_client.py'), `127.0.0.1:${port}`], { timeoutMs: 30000 });
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    assert.ok(line, `no JSON result from interop_client.py (exit ${r.code})\n${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(line);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.ok(out.grpcio, 'grpcio version reported');
    assert.deepEqual(out.empty_unary, { ok: true });
    assert.deepEqual(out.large_unary, { ok: true, size: 314159 });
    assert.deepEqual(out.server_streaming, { ok: true, sizes: [31415, 9, 2653, 58979] });
    assert.deepEqual(out.custom_metadata, { initial: 'test_initial_metadata_value', trailing: 'ababab' });
    assert.deepEqual(out.status_code_and_message, { code: 'UNKNOWN', details: 'test status message' });
    assert.deepEqual(out.special_status_message, { code: 'UNKNOWN', details: SPECIAL_MESSAGE });
    assert.deepEqual(out.unimplemented_method, { code: 'UNIMPLEMENTED' });
    assert.deepEqual(out.timeout, { code: 'DEADLINE_EXCEEDED' });
    assert.deepEqual(out.client_compressed_unary, { gzip: 314159, deflate: 314159 });
    assert.deepEqual(out.server_compressed_unary, [314159, 314159]);
    assert.deepEqual(out.server_compressed_streaming, [31415, 92653]);
  });

  it('shutdown: a call from grpcio on a channel opened before it fails UNAVAILABLE (retryable), never INTERNAL', async (t) => {
    if (py.skip) {
      t.skip(py.skip);
      return;
    }
    // Its own server: the shared one serves the cases after this one.
    const own = new GrpcServer({}, { hostname: '127.0.0.1', port: 0, protocol: 'grpc' });
    own.RegisterService({ service: testing.TestService.service, implementation: makeTestService({}) });
    await new Promise((resolve, reject) => { own.once('error', reject); own.Start(resolve); });
    const child = spawn(py.python, [path.join(PY_DIR, 'shutdown_client.py'), `127.0.0.1:${own.server.address().port}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await withTimeout(new Promise((resolve) => {
        const check = () => { if (out.includes('ready')) { child.stdout.off('data', check); resolve(); } };
        child.stdout.on('data', check);
        check();
      }), 20000, `grpcio ready\n${err}`);
      // A call in flight keeps the drain going while the late call comes.
      const js = new testing.TestService(`127.0.0.1:${own.server.address().port}`, grpc.credentials.createInsecure());
      const inFlight = new Promise((resolve) => {
        const c = js.StreamingOutputCall({ response_parameters: [{ size: 1, interval_us: 600000 }] });
        c.on('data', () => {});
        c.on('error', resolve);
        c.on('end', () => resolve(null));
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const shutdown = own.gracefulShutdown({ drainDelay: 2000, timeout: 5000 });
      await new Promise((resolve) => setTimeout(resolve, 100));
      child.stdin.write('go\n');
      await withTimeout(exited, 15000, `grpcio late call\n${out}\n${err}`);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      assert.ok(line, `no JSON result from shutdown_client.py\n${out}\n${err}`);
      const result = JSON.parse(line);
      assert.equal(result.late, 'UNAVAILABLE', `a call after shutdown began: ${JSON.stringify(result)}`);
      assert.equal(await inFlight, null, 'the call in flight completed');
      js.close();
      await shutdown;
    } finally {
      child.kill();
      if (own.server.listening) await own.gracefulShutdown({ drainDelay: 0, timeout: 2000 });
    }
  });

  it('server reflection through grpcio-reflection (ProtoReflectionDescriptorDatabase, v1alpha)', async (t) => {
    if (py.skip) {
      t.skip(py.skip);
      return;
    }
    const port = server.server.address().port;
    const r = await runProgram(py.python, [path.join(PY_DIR, 'reflection_client.py'), `127.0.0.1:${port}`], { timeoutMs: 30000 });
    const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    assert.ok(line, `no JSON result from reflection_client.py (exit ${r.code})\n${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(line);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(out.services, ['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection', 'grpc.testing.TestService']);
    assert.deepEqual(out.test_service_methods, ['EmptyCall', 'FullDuplexCall', 'HalfDuplexCall', 'StreamingInputCall', 'StreamingOutputCall', 'UnaryCall', 'UnimplementedCall']);
    assert.ok(out.simple_request_fields.includes('response_size'), out.simple_request_fields.join());
    assert.deepEqual(out.health_methods, ['Check', 'Watch']);
    assert.equal(out.unknown, 'KeyError');
  });
});
