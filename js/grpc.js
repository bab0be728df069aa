'use strict';
// gRPC on the native server: services registered from grpc-js style definitions (as
// @grpc/proto-loader + loadPackageDefinition or koatty_router produce), call objects shaped like
// grpc-js's for the four call kinds, and a Metadata class compatible with the members Koatty and
// handlers use. Rust routes by path and moves raw bytes; (de)serialisation uses the definition's
// own functions, here.
const { EventEmitter } = require('node:events');
const { Duplex } = require('node:stream');
const { SendResult, answers } = require('./wire');
const { streamDestroyedError } = require('./errors');
const { flushWakesSoon } = require('./wakes');

const { grpcWrite, grpcReply, grpcEnd } = answers;

const FULL = SendResult.Full;

const Status = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
});

/** grpc-js compatible metadata: lower-case keys, `-bin` keys hold Buffers. */
class Metadata {
  constructor() {
    this.internalRepr = new Map();
  }

  static key(k) {
    return String(k).toLowerCase();
  }

  set(key, value) {
    this.internalRepr.set(Metadata.key(key), [value]);
  }

  add(key, value) {
    const k = Metadata.key(key);
    const existing = this.internalRepr.get(k);
    if (existing) existing.push(value);
    else this.internalRepr.set(k, [value]);
  }

  remove(key) {
    this.internalRepr.delete(Metadata.key(key));
  }

  get(key) {
    return this.internalRepr.get(Metadata.key(key)) ?? [];
  }

  getMap() {
    const out = {};
    for (const [k, v] of this.internalRepr) if (v.length > 0) out[k] = v[0];
    return out;
  }

  clone() {
    const copy = new Metadata();
    for (const [k, v] of this.internalRepr) copy.internalRepr.set(k, v.slice());
    return copy;
  }

  merge(other) {
    for (const [k, v] of toEntries(other)) for (const value of v) this.add(k, value);
  }

  toJSON() {
    const out = {};
    for (const [k, v] of this.internalRepr) out[k] = v;
    return out;
  }

  /**
   * From the flat `[name, value, …]` list the server receives (`-bin` values base64). The headers
   * grpc-js's server removes are removed here too (server-interceptors.js); other `grpc-*` keys
   * such as `grpc-trace-bin` stay visible, as there.
   */
  static fromFlat(flat) {
    const md = new Metadata();
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i];
      if (name.startsWith(':') || TRANSPORT_HEADERS.has(name)) continue;
      if (name.endsWith('-bin')) {
        md.add(name, Buffer.from(flat[i + 1], 'base64'));
        continue;
      }
      // A repeated text key is one value joined with ', ', as node's http2 hands it to grpc-js.
      const previous = name === 'set-cookie' ? undefined : md.internalRepr.get(name);
      if (previous !== undefined) previous[0] = `${previous[0]}, ${flat[i + 1]}`;
      else md.add(name, flat[i + 1]);
    }
    return md;
  }
}

/** Request headers that are transport, not metadata (the ones grpc-js's server removes). */
const TRANSPORT_HEADERS = new Set(['grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding', 'accept-encoding', 'te', 'content-type']);

/** Entries of our Metadata, a grpc-js Metadata (internalRepr or toJSON), or a plain object. */
function toEntries(md) {
  if (!md) return [];
  if (md.internalRepr instanceof Map) return [...md.internalRepr];
  const json = typeof md.toJSON === 'function' ? md.toJSON() : md;
  return Object.entries(json).map(([k, v]) => [k, Array.isArray(v) ? v : [v]]);
}

function toFlat(md) {
  const flat = [];
  for (const [k, values] of toEntries(md)) {
    for (const v of values) flat.push(k, Buffer.isBuffer(v) ? v.toString('base64') : String(v));
  }
  return flat;
}

function statusError(code, details) {
  const err = new Error(`${code} ${Object.keys(Status).find((k) => Status[k] === code) ?? ''}: ${details}`);
  err.code = code;
  err.details = details;
  return err;
}

const CANCEL_REASONS = { 1: 'client cancelled', 2: 'deadline exceeded', 3: 'server shutting down' };

/** Compression algorithms by name, numbered as grpc-js's `compressionAlgorithms`. */
const COMPRESSION = { identity: 0, deflate: 1, gzip: 2 };

/** grpc-js's write flags (`WriteFlags`, `NoCompress` = 2 is the one read natively) as a number. */
const writeFlags = (flags) => (Number.isInteger(flags) ? flags : 0);

/**
 * One call. Streaming calls are object-mode Duplex streams (read: request messages, write:
 * response messages), as grpc-js's are; unary calls carry `request`.
 */
class ServerCall extends Duplex {
  constructor(bridge, id, path, method, flat, peer, deadline) {
    super({ objectMode: true, allowHalfOpen: true });
    Object.defineProperty(this, '_bridge', { value: bridge });
    Object.defineProperty(this, '_id', { value: id });
    Object.defineProperty(this, '_method', { value: method });
    this.metadata = Metadata.fromFlat(flat);
    this.request = undefined;
    this.cancelled = false;
    this._peer = peer;
    this._host = flatValue(flat, ':authority') || flatValue(flat, 'host') || '';
    this._path = path;
    this._deadline = deadline;
    this._headSent = false;
    this._ended = false;
    this._pendingWrite = null;
    this.handler = { path, type: kindOf(method) };
    // grpc-js: `call.emit('error', { code, details, metadata })` ends a streaming call with that status.
    this.on('error', (err) => {
      if (this._ended || !err) return;
      const code = Number.isInteger(err.code) && err.code > 0 && err.code <= 16 ? err.code : Status.UNKNOWN;
      this._finish(code, err.details ?? err.message ?? String(err), err.metadata);
    });
  }

  getPeer() {
    return this._peer;
  }

  /**
   * The handler, or a listener of this call's messages or end, threw or rejected: the client
   * learns that it failed, not why (its message may hold internals), as grpc-js answers a
   * handler's throw; GRPC_NODE_DEBUG_SEND_ERROR_DETAILS sends it, with grpc-js's wording.
   */
  _failed(err) {
    if (this._ended) return;
    this._finish(Status.UNKNOWN, process.env.GRPC_NODE_DEBUG_SEND_ERROR_DETAILS ? `Server method handler threw error ${err && err.message ? err.message : String(err)}` : 'Unknown error');
  }

  getPath() {
    return this._path;
  }

  getDeadline() {
    return this._deadline;
  }

  /** The `:authority` the client called (grpc-js: `headers[':authority'] ?? headers.host`). */
  getHost() {
    return this._host;
  }

  /**
   * Compression of this call's response messages: 'identity', 'deflate' or 'gzip' (or grpc-js's
   * `compressionAlgorithms` 0, 1, 2), in place of the server's `defaultCompressionAlgorithm`.
   * Only before the response head goes out (`sendMetadata`, the first message, the unary answer);
   * it applies when the client lists the algorithm in `grpc-accept-encoding`. A message written
   * with grpc-js's `WriteFlags.NoCompress` (2) still goes out uncompressed.
   */
  setCompression(algorithm) {
    const n = typeof algorithm === 'string' ? COMPRESSION[algorithm] : algorithm;
    if (!Number.isInteger(n) || n < 0 || n > 2) {
      const err = new TypeError(`The argument 'algorithm' must be 'identity', 'deflate' or 'gzip' (or 0, 1, 2). Received ${typeof algorithm === 'string' ? `'${algorithm}'` : String(algorithm)}`);
      err.code = 'ERR_INVALID_ARG_VALUE';
      throw err;
    }
    if (this._ended) return;
    if (this._headSent) {
      const err = new Error('Cannot set the compression after the response metadata was sent');
      err.code = 'ERR_HTTP_HEADERS_SENT';
      throw err;
    }
    this._bridge.native.grpcSetCompression(this._id, n);
  }

  sendMetadata(metadata) {
    if (this._headSent || this._ended) return;
    this._headSent = true;
    this._bridge.native.grpcSendMetadata(this._id, toFlat(metadata));
    flushWakesSoon();
  }

  /** Ends the call with a status (0 = OK). Later calls are ignored. */
  _finish(code, details, trailers) {
    if (this._ended) return;
    this._markEnded();
    grpcEnd(this._bridge.handle, this._id, code, details, toFlat(trailers));
    flushWakesSoon();
  }

  _markEnded() {
    this._ended = true;
    this._bridge.forgetCall(this._id);
  }

  /** `[true, bytes]`, or `[false, err]` once the call has been ended with INTERNAL. */
  _serialize(value) {
    try {
      return [true, this._method.responseSerialize(value)];
    } catch (err) {
      this._finish(Status.INTERNAL, `Error serializing response: ${err.message}`);
      return [false, err];
    }
  }

  /** A unary answer: the message and status OK in one native call. */
  _reply(value, trailers, flags) {
    const [ok, bytes] = this._serialize(value);
    if (!ok) return;
    // Marked ended only once the native call is made, so that a throw here still finishes the
    // call (UNKNOWN) rather than leaving it to its deadline.
    grpcReply(this._bridge.handle, this._id, bytes, toFlat(trailers), writeFlags(flags));
    flushWakesSoon();
    this._headSent = true;
    this._markEnded();
  }

  _sendMessage(value, cb, flags) {
    const [ok, bytesOrError] = this._serialize(value);
    if (!ok) return cb && cb(bytesOrError);
    this._headSent = true;
    const r = grpcWrite(this._bridge.handle, this._id, bytesOrError, writeFlags(flags));
    flushWakesSoon();
    if (r === FULL) this._pendingWrite = cb ?? true;
    else if (cb) cb();
  }

  // Writable side (server and bidi streaming). Messages go out at once, in order, rather than
  // through the Writable buffer, so a status sent right after some writes (`call.emit('error')`,
  // as grpc-js allows) follows every message written before it. `false` + 'drain' as usual.
  // `write(message, flags, cb)`: a number in the encoding's place is grpc-js's write flags.
  write(value, encoding, cb) {
    if (typeof encoding === 'function') cb = encoding;
    if (this._ended || this.cancelled) {
      // As grpc-js: a write after the client cancelled fails (the stream is destroyed).
      if (typeof cb === 'function') process.nextTick(cb, this.cancelled ? streamDestroyedError() : undefined);
      return false;
    }
    this._sendMessage(value, typeof cb === 'function' ? cb : undefined, encoding);
    return this._pendingWrite === null;
  }

  _write(value, _enc, cb) {
    if (this._ended || this.cancelled) return cb();
    this._sendMessage(value, cb);
  }

  _final(cb) {
    this._finish(Status.OK, 'OK', this._trailer);
    cb();
  }

  /** grpc-js: `call.end([metadata])` sends trailing metadata. */
  end(metadataOrChunk, ...rest) {
    if (metadataOrChunk && !Buffer.isBuffer(metadataOrChunk) && (metadataOrChunk instanceof Metadata || typeof metadataOrChunk.toJSON === 'function' || metadataOrChunk.internalRepr)) {
      this._trailer = metadataOrChunk;
      return super.end(...rest);
    }
    return super.end(metadataOrChunk, ...rest);
  }

  // Readable side (client and bidi streaming): messages are pushed as they arrive.
  _read() {}

  _onMessage(bytes) {
    let value;
    try {
      value = this._method.requestDeserialize(bytes);
    } catch (err) {
      this._finish(Status.INTERNAL, `Error deserializing request: ${err.message}`);
      return;
    }
    // A single-request call arrives whole (its one message, then its end): the native side
    // answers a missing or second message UNIMPLEMENTED, as grpc-js, before the handler.
    if (this._method.requestStream) this.push(value);
    else this.request = value;
  }

  _onInputEnd() {
    // After a cancel the request stream is not complete: never report its end.
    if (this.cancelled || this._ended) return;
    if (this._method.requestStream) this.push(null);
    else this.emit('_unaryReady');
  }

  // The request stream failed (a reset, a message over the size limit): the native side has
  // already answered the client and a 'cancelled' follows; keep the reason for handlers.
  _onInputError(message) {
    const [code, ...details] = message.split(': ');
    this.inputError = statusError(Number(code) || Status.INTERNAL, details.join(': '));
  }

  _onCancel(reason) {
    if (this._ended) return;
    this._ended = true;
    this.cancelled = true;
    this.emit('cancelled', CANCEL_REASONS[reason] ?? 'cancelled');
    if (!this.destroyed) this.destroy();
  }

  _onDrain() {
    const cb = this._pendingWrite;
    this._pendingWrite = null;
    if (typeof cb === 'function') cb();
    this.emit('drain');
  }

  _destroy(err, cb) {
    cb(this.cancelled ? null : err);
  }
}

function kindOf(method) {
  if (method.requestStream && method.responseStream) return 'bidi';
  if (method.requestStream) return 'clientStream';
  if (method.responseStream) return 'serverStream';
  return 'unary';
}

/**
 * `callback(err, value, trailer, flags)` as grpc-js gives unary and client-streaming handlers
 * (`flags`: grpc-js's write flags for the reply; `NoCompress` (2) keeps it uncompressed).
 */
function unaryCallback(call) {
  return (err, value, trailer, flags) => {
    if (call._ended) return;
    if (err) {
      const code = Number.isInteger(err.code) && err.code > 0 && err.code <= 16 ? err.code : Status.UNKNOWN;
      call._finish(code, err.details ?? err.message ?? String(err), err.metadata ?? trailer);
      return;
    }
    call._reply(value, trailer, flags);
  };
}

/** Routes calls to registered implementations. One per GrpcServer. */
class GrpcDispatcher {
  constructor(onError) {
    this.methods = new Map();
    this.onError = onError;
  }

  /** `{ service, implementation }` as grpc-js's addService takes them. Returns the paths added. */
  register(service, implementation) {
    if (!service || typeof service !== 'object') {
      // A programming error, not a call status: a string code like node's argument errors.
      const err = new TypeError('RegisterService needs { service, implementation } (grpc-js service definitions)');
      err.code = 'ERR_INVALID_ARG_TYPE';
      throw err;
    }
    const added = [];
    for (const [name, method] of Object.entries(service)) {
      if (!method || typeof method.path !== 'string') continue;
      this.collectDescriptors(method);
      const impl = implementation?.[name] ?? implementation?.[method.originalName];
      if (typeof impl !== 'function') continue;
      this.methods.set(method.path, { method, impl });
      added.push(method.path);
    }
    return added;
  }

  /**
   * The serialised FileDescriptorProtos @grpc/proto-loader attaches to a method's request and
   * response types (every file of the load, dependencies included), for server reflection.
   * proto-loader shares one array per load, so most repeats are skipped by identity.
   */
  collectDescriptors(method) {
    this.descriptorLists ??= new Set();
    this.descriptors ??= new Map();
    for (const type of [method.requestType, method.responseType]) {
      const list = type?.fileDescriptorProtos;
      if (!Array.isArray(list) || this.descriptorLists.has(list)) continue;
      this.descriptorLists.add(list);
      for (const file of list) {
        if (!(file instanceof Uint8Array)) continue;
        const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
        const key = bytes.toString('latin1');
        if (!this.descriptors.has(key)) this.descriptors.set(key, bytes);
      }
    }
  }

  /** Distinct descriptor files seen so far (see collectDescriptors). */
  descriptorFiles() {
    return this.descriptors ? [...this.descriptors.values()] : [];
  }

  paths() {
    return [...this.methods.keys()];
  }

  /** Paths of the registered methods whose request is a stream (client streaming and bidi). */
  requestStreamPaths() {
    return [...this.methods].filter(([, { method }]) => method.requestStream).map(([p]) => p);
  }

  /** Paths of the registered methods whose response is a stream (server streaming and bidi). */
  responseStreamPaths() {
    return [...this.methods].filter(([, { method }]) => method.responseStream).map(([p]) => p);
  }

  /** A call arrived (Rust only announces registered paths). */
  start(bridge, id, path, flat, remoteAddress, remotePort) {
    const entry = this.methods.get(path);
    const timeoutHeader = flatValue(flat, 'grpc-timeout');
    const deadline = timeoutHeader ? new Date(Date.now() + timeoutMs(timeoutHeader)) : Infinity;
    // As grpc-js builds it (no brackets around an IPv6 address).
    const peer = `${remoteAddress}:${remotePort}`;
    const call = new ServerCall(bridge, id, path, entry.method, flat, peer, deadline);
    const run = (...args) => {
      try {
        const result = entry.impl.call(undefined, call, ...args);
        if (result && typeof result.then === 'function') {
          result.then(undefined, (err) => this.fail(call, err));
        }
      } catch (err) {
        this.fail(call, err);
      }
    };
    const kind = kindOf(entry.method);
    if (kind === 'unary' || kind === 'serverStream') {
      call.once('_unaryReady', () => (kind === 'unary' ? run(unaryCallback(call)) : run()));
    } else if (kind === 'clientStream') {
      run(unaryCallback(call));
    } else {
      run();
    }
    return call;
  }

  fail(call, err) {
    try {
      this.onError(err);
    } catch {
      // logging must not break the server
    }
    call._failed(err);
  }
}

function flatValue(flat, name) {
  for (let i = 0; i < flat.length; i += 2) if (flat[i] === name) return flat[i + 1];
  return undefined;
}

function timeoutMs(value) {
  const n = Number(value.slice(0, -1));
  const unit = { H: 3600e3, M: 60e3, S: 1e3, m: 1, u: 1e-3, n: 1e-6 }[value.slice(-1)] ?? 0;
  return n * unit;
}

module.exports = { Metadata, Status, ServerCall, GrpcDispatcher };
