'use strict';
// The response object handed to Koatty: the ServerResponse members Koa, cookies, on-finished and
// `stream.pipe(res)` rely on (koatty-contract.md §3.3), writing through the native bridge. The
// whole response goes out in one native call when the handler ends without streaming.
const { Stream } = require('node:stream');
const { inspect, types: { isUint8Array } } = require('node:util');
const { STATUS_CODES, validateHeaderName, validateHeaderValue } = require('node:http');

const kHeaders = Symbol('outHeaders');
// The header store's prototype: empty, with none above it, so no name ('__proto__', 'toString')
// is inherited or special. `Object.create(null)` would be simpler, but V8 keeps such an object
// in dictionary mode, where adding a property misses the store's inline cache every time (≈ 10 %
// of the JS thread under a bare handler's load, `--log-ic`); an object with a prototype stays in
// fast mode and its usual header sequences hit the cache.
const HEADER_STORE = Object.freeze(Object.create(null));
const kStarted = Symbol('nativeHeadSent');
// writeHead ran (explicitly): the status and reason were validated then.
const kHeadWritten = Symbol('headWritten');
// The status code and reason writeHead fixed: later changes to statusCode/statusMessage do not
// reach the wire, as node builds the status line in writeHead.
const kHeadStatus = Symbol('headStatus');
const kHeadReason = Symbol('headReason');
const { codedError, streamDestroyedError, invalidArgType } = require('./errors');
const { FramingFlag, SendResult, answers, staged } = require('./wire');
const { flushWakesSoon, flushWakesNow } = require('./wakes');
const { ownMethodsAssigner } = require('./own-methods');

const { respond: nativeRespond, write: nativeWrite, end: nativeEnd } = answers;

const FRAMING_REMOVED_CONTENT_LENGTH = FramingFlag.RemovedContentLength;
// respond/end result: sent, but the handler's Content-Length disagreed with the body.
const LENGTH_MISMATCH = SendResult.LengthMismatch;
const FULL = SendResult.Full;
// What node's checkInvalidHeaderChar refuses in a reason phrase.
const INVALID_REASON_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/** node's writeHead check: `code | 0` within 100–999, else ERR_HTTP_INVALID_STATUS_CODE (RangeError). */
function validStatusCode(statusCode) {
  const code = statusCode | 0;
  if (code < 100 || code > 999) throw codedError('ERR_HTTP_INVALID_STATUS_CODE', `Invalid status code: ${statusCode}`, RangeError);
  return code;
}

function invalidHeadersArgument(headers) {
  return codedError('ERR_INVALID_ARG_VALUE', `The argument 'headers' is invalid. Received ${inspect(headers)}`, TypeError);
}

/** writeHead's headers as [name, value] lines: `{name: value}`, `[[name, value], …]` or a flat list. */
function headLines(headers) {
  if (!headers) return [];
  if (!Array.isArray(headers)) return Object.keys(headers).map((name) => [name, headers[name]]);
  if (headers.length > 0 && Array.isArray(headers[0])) return headers.map((entry) => [entry[0], entry[1]]);
  if (headers.length % 2 !== 0) throw invalidHeadersArgument(headers);
  const lines = [];
  for (let i = 0; i < headers.length; i += 2) lines.push([headers[i], headers[i + 1]]);
  return lines;
}

/** `value`, unless node's http2 compatibility API refuses it (undefined, null). */
function http2HeaderValue(name, value) {
  if (value === undefined || value === null) throw codedError('ERR_HTTP2_INVALID_HEADER_VALUE', `Invalid value "${value}" for header "${name}"`, TypeError);
  return value;
}

/** node's check of a writeHead line before it is stored (each value of an array on its own). */
function checkHeadLine(name, value) {
  validateHeaderName(name);
  if (!Array.isArray(value)) validateHeaderValue(name, value);
  else if (value.length >= 2 && String(name).toLowerCase() === 'cookie') validateHeaderValue(name, value.join('; '));
  else for (const each of value) validateHeaderValue(name, each);
}

/** A header value as node's head puts it: strings as they are, anything else as `${value}`. */
function headerText(value) {
  return typeof value === 'string' ? value : `${value}`;
}

// A chunk as the native calls take it: bytes, or text sent as UTF-8 (a string in another
// encoding becomes bytes). `chunkText` says which; `chunkBytes` returns the bytes (two functions,
// not an array made per write).
function chunkText(chunk, encoding) {
  return typeof chunk === 'string' && sentAsUtf8(encoding) ? chunk : undefined;
}

// `chunk`: undefined, or one `checkChunk` let through.
function chunkBytes(chunk, encoding) {
  if (typeof chunk === 'string') return sentAsUtf8(encoding) ? undefined : Buffer.from(chunk, encoding);
  if (chunk === undefined || Buffer.isBuffer(chunk)) return chunk;
  return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

// Encodings whose strings go out as UTF-8 text; node writes a string with 'buffer' as UTF-8 too.
function sentAsUtf8(encoding) {
  return !encoding || encoding === 'utf8' || encoding === 'utf-8' || encoding === 'buffer';
}

/** What node's write refuses before anything else (null, or not a string, Buffer or Uint8Array). */
function checkChunk(chunk) {
  if (chunk === null) throw codedError('ERR_STREAM_NULL_VALUES', 'May not write null values to stream', TypeError);
  if (typeof chunk !== 'string' && !isUint8Array(chunk)) throw invalidArgType('chunk', 'of type string or an instance of Buffer or Uint8Array', chunk);
}

class NativeResponse extends Stream {
  constructor(bridge, id, req) {
    super();
    this._bridge = bridge;
    this._id = id;
    this.req = req;
    // An own property, as node's (a framework that swaps the prototype still finds it).
    this.socket = req.socket;
    this.statusCode = 200;
    // As node: undefined until the head is written (or the handler sets it).
    this.statusMessage = undefined;
    this[kHeaders] = Object.create(HEADER_STORE);
    this[kStarted] = false;
    this[kHeadWritten] = false;
    this[kHeadStatus] = 200;
    this[kHeadReason] = undefined;
    // node's _removedContLen: no Content-Length of the server's own (chunked instead).
    this._removedContLen = false;
    this.headersSent = false;
    this.writableEnded = false;
    this.finished = false;
    this.writableFinished = false;
    this.writableNeedDrain = false;
    this.writable = true;
    this.destroyed = false;
    // As node's: the error destroy() was given.
    this.errored = null;
    this.sendDate = true;
    this.chunkedEncoding = false;
    this.shouldKeepAlive = true;
    // Native trace mode (js/trace): this request's trace hook, told when the head is about to go
    // out and when the response is gone; null when off.
    this._trace = null;
  }

  /**
   * A header known to be valid (`key` its name lower-cased, `entry` its `[name, value]`), put in
   * the header map as setHeader would, without running node's validators again (js/trace presets
   * koatty_trace's headers). Entries are never changed in place, so a constant one can be shared
   * by every response.
   */
  _presetHeader(key, entry) {
    this[kHeaders][key] = entry;
  }

  get connection() {
    return this.req.socket;
  }

  get writableLength() {
    return 0;
  }

  get writableHighWaterMark() {
    return 16384;
  }

  get writableCorked() {
    return 0;
  }

  setHeader(name, value) {
    if (this.headersSent) throw codedError('ERR_HTTP_HEADERS_SENT', 'Cannot set headers after they are sent to the client');
    validateHeaderName(name);
    validateHeaderValue(name, value);
    this[kHeaders][name.toLowerCase()] = [name, value];
    return this;
  }

  appendHeader(name, value) {
    const key = name.toLowerCase();
    const existing = this[kHeaders][key];
    if (!existing) return this.setHeader(name, value);
    if (this.headersSent) throw codedError('ERR_HTTP_HEADERS_SENT', 'Cannot append headers after they are sent to the client');
    validateHeaderValue(name, value);
    const prev = existing[1];
    if (Array.isArray(prev)) {
      // As node: into the stored array (the one setHeader was given, getHeader returns).
      if (Array.isArray(value)) for (const v of value) prev.push(v);
      else prev.push(value);
    } else {
      // A new entry: the old one may be shared (_presetHeader).
      this[kHeaders][key] = [existing[0], [prev].concat(value)];
    }
    return this;
  }

  setHeaders(headers) {
    for (const [name, value] of headers) this.setHeader(name, value);
    return this;
  }

  getHeader(name) {
    const entry = this[kHeaders][String(name).toLowerCase()];
    return entry === undefined ? undefined : entry[1];
  }

  getHeaders() {
    const out = Object.create(null);
    const headers = this[kHeaders];
    for (const key in headers) out[key] = headers[key][1];
    return out;
  }

  getHeaderNames() {
    return Object.keys(this[kHeaders]);
  }

  getRawHeaderNames() {
    const headers = this[kHeaders];
    return Object.keys(headers).map((k) => headers[k][0]);
  }

  hasHeader(name) {
    return this[kHeaders][String(name).toLowerCase()] !== undefined;
  }

  removeHeader(name) {
    if (this.headersSent) throw codedError('ERR_HTTP_HEADERS_SENT', 'Cannot remove headers after they are sent to the client');
    const key = String(name).toLowerCase();
    if (key === 'content-length') this._removedContLen = true;
    delete this[kHeaders][key];
  }

  writeHead(statusCode, reason, headers) {
    if (this.headersSent) throw codedError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent to the client');
    // In node's order: the code, then the reason, then the headers, then the reason's characters.
    const code = validStatusCode(statusCode);
    if (typeof reason === 'string') {
      this.statusMessage = reason;
    } else {
      this.statusMessage ||= STATUS_CODES[code] || 'unknown';
      headers ??= reason;
    }
    // node's http sets the code before the headers, its http2 after them (a throw keeps the old).
    if (this.req.httpVersionMajor >= 2) {
      this._headHeadersHttp2(headers);
      this.statusCode = code;
    } else {
      this.statusCode = code;
      this._headHeaders(headers);
    }
    // HTTP/2 has no reason phrase: node's http2 ignores it (the check is HTTP/1's).
    if (this.req.httpVersionMajor < 2 && INVALID_REASON_CHAR.test(this.statusMessage)) throw codedError('ERR_INVALID_CHAR', 'Invalid character in statusMessage', TypeError);
    this[kHeadWritten] = true;
    this[kHeadStatus] = code;
    this[kHeadReason] = this.statusMessage;
    this.headersSent = true;
    return this;
  }

  // writeHead's headers as node 20's http applies them: with nothing set before, every line is
  // checked (names, values, each value of an array) before any applies, and each goes out (a name
  // given twice in two cases, twice); after a setHeader, each pair is a setHeader (a later one
  // replaces, one without a name is skipped, a pair given as an array is a name it refuses).
  _headHeaders(headers) {
    if (this.getHeaderNames().length === 0) {
      const lines = headLines(headers);
      for (const [name, value] of lines) checkHeadLine(name, value);
      for (const [name, value] of lines) this.appendHeader(name, value);
      return;
    }
    if (Array.isArray(headers)) {
      if (headers.length % 2 !== 0) throw invalidHeadersArgument(headers);
      for (let i = 0; i < headers.length; i += 2) if (headers[i]) this.setHeader(headers[i], headers[i + 1]);
    } else if (headers) {
      for (const name of Object.keys(headers)) if (name) this.setHeader(name, headers[name]);
    }
  }

  // The same as node 20's http2 compatibility API: a list replaces what was set under its names
  // and appends each line (pairs given as arrays too); an object is a setHeader per name.
  // (A value undefined or null is refused there, with its own code.)
  _headHeadersHttp2(headers) {
    if (Array.isArray(headers)) {
      const lines = headLines(headers);
      if (this.getHeaderNames().length > 0) for (const [name] of lines) this.removeHeader(name);
      for (const [name, value] of lines) this.appendHeader(name, http2HeaderValue(name, value));
    } else if (headers !== null && typeof headers === 'object') {
      for (const name of Object.keys(headers)) this.setHeader(name, http2HeaderValue(name, headers[name]));
    }
  }

  flushHeaders() {
    // '' as node's flushHeaders sends it (the head then goes out as a string write: UTF-8).
    if (!this[kStarted]) this._start(undefined, '', false);
  }

  /** The headers as `name\0value\0…` for the native side (validated by setHeader). */
  _flatHeaders() {
    // Joined once into a flat string: concatenating built a rope of pieces, which the native side
    // then had to flatten (a copy), ≈ 700 bytes and 60 ns more per response of a Koatty app.
    // Values as node writes them: `join` alone would turn null and undefined into ''.
    const parts = [];
    const headers = this[kHeaders];
    for (const key in headers) {
      const entry = headers[key];
      const value = entry[1];
      if (Array.isArray(value)) for (let i = 0; i < value.length; i++) parts.push(entry[0], headerText(value[i]));
      else parts.push(entry[0], headerText(value));
    }
    return parts.join('\0');
  }

  // Sends the head natively (with a first chunk, or the whole body when `end`). Without an
  // explicit writeHead, node's implicit one runs first: it may throw (bad code or reason), and
  // then nothing is sent and the response stays open for the error handler.
  _start(buf, text, end) {
    // A head the handler wrote with writeHead is fixed before the body's length is known: as
    // node, no Content-Length of the server's own follows (chunked).
    const explicitHead = this[kHeadWritten];
    if (!explicitHead) this.writeHead(this.statusCode);
    this[kStarted] = true;
    const trace = this._trace;
    if (trace !== null) trace.headSending();
    const framing = this._removedContLen || explicitHead ? FRAMING_REMOVED_CONTENT_LENGTH : 0;
    // node's own phrase for the code crosses as nothing (the native side writes the same one), as
    // does any on HTTP/2, which has none; another value goes out as its string, as node writes it.
    const status = this[kHeadStatus];
    const message = this[kHeadReason];
    const reason = message === STATUS_CODES[status] || this.req.httpVersionMajor >= 2 ? undefined : typeof message === 'string' ? message : String(message);
    const result = nativeRespond(this._bridge.handle, this._id, status, reason, this._flatHeaders(), staged(buf), text, end, framing);
    flushWakesSoon();
    if (result === LENGTH_MISMATCH) this._lengthMismatch();
    return result;
  }

  // Issue 16 §9: the handler's Content-Length disagreed with its body. The native side sent no
  // more than announced and closes the connection; the server reports it ('handlerError').
  _lengthMismatch() {
    this._report(codedError('ERR_HTTP_CONTENT_LENGTH_MISMATCH', `ERR_HTTP_CONTENT_LENGTH_MISMATCH: the body of ${this.req.method} ${this.req.url} disagrees with its Content-Length (${this.getHeader('content-length')}); the connection was closed after the announced bytes`));
  }

  // A handler's mistake, told to the server ('handlerError').
  _report(err) {
    try {
      this._bridge.onHandlerError(err, this.req);
    } catch {
      // reporting must not break the response
    }
  }

  // A chunk after end(), as node: the callback gets ERR_STREAM_WRITE_AFTER_END and 'error' is
  // emitted; once the response is destroyed (from 'close' on), write's callback alone hears of it
  // and end's nothing.
  _writeAfterEnd(callback, fromEnd) {
    const err = codedError('ERR_STREAM_WRITE_AFTER_END', 'write after end');
    if (this.destroyed) {
      if (!fromEnd && typeof callback === 'function') process.nextTick(callback, err);
      return;
    }
    // Decided now: this response's 'close' (next tick) comes sooner than node's (after the socket
    // took the bytes), so an end() twice in one turn still gets its 'error' as with node. With
    // nobody listening, node's 'error' would end the process; here the server reports it
    // ('handlerError', README "Differences from node").
    process.nextTick(() => {
      if (typeof callback === 'function') callback(err);
      if (this.listenerCount('error') > 0) this.emit('error', err);
      else this._report(err);
    });
  }

  // write/end after destroy(): as node, the callback gets ERR_STREAM_DESTROYED; nothing is sent.
  _destroyedWrite(callback) {
    if (typeof callback === 'function') process.nextTick(callback, streamDestroyedError());
    return false;
  }

  write(chunk, encoding, callback) {
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    // As node: the chunk is checked first (a bad one throws even after end or destroy).
    checkChunk(chunk);
    // Ended first, then destroyed, as node's write_ looks.
    if (this.writableEnded) {
      this._writeAfterEnd(callback, false);
      return false;
    }
    if (this.destroyed) return this._destroyedWrite(callback);
    const buf = chunkBytes(chunk, encoding);
    const text = chunkText(chunk, encoding);
    const result = this[kStarted] ? nativeWrite(this._bridge.handle, this._id, staged(buf), text) : this._start(buf, text, false);
    if (typeof callback === 'function') process.nextTick(callback);
    if (result === FULL) {
      this.writableNeedDrain = true;
      return false;
    }
    return true;
  }

  end(chunk, encoding, callback) {
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (this.writableFinished && !this.writableEnded) {
      // As node's http2: the stream closed before the end (`_emitClosed`), end() calls back and
      // does nothing else.
      if (typeof callback === 'function') process.nextTick(callback);
      return this;
    }
    // As node: a falsy chunk (0, false, null, '') is no chunk; another is checked as write does.
    if (!chunk) chunk = undefined;
    if (this.writableEnded) {
      // As node: a chunk after the end is an error; without one, the callback waits for 'finish'.
      if (chunk !== undefined) {
        this._writeAfterEnd(callback, true);
        return this;
      }
      if (typeof callback === 'function') {
        if (this.writableFinished) process.nextTick(callback, codedError('ERR_STREAM_ALREADY_FINISHED', 'Cannot call end after a stream was finished'));
        else this.once('finish', callback);
      }
      return this;
    }
    if (chunk !== undefined) checkChunk(chunk);
    if (this.destroyed) {
      // As node: end's callback waits for a 'finish' that never comes.
      if (typeof callback === 'function') this.once('finish', callback);
      this.writableEnded = true;
      this.finished = true;
      return this;
    }
    const buf = chunkBytes(chunk, encoding);
    const text = chunkText(chunk, encoding);
    if (!this[kStarted]) this._start(buf, text, true);
    else if (nativeEnd(this._bridge.handle, this._id, staged(buf), text) === LENGTH_MISMATCH) this._lengthMismatch();
    this.writableEnded = true;
    this.finished = true;
    this.writable = false;
    if (typeof callback === 'function') this.once('finish', callback);
    process.nextTick(finish, this);
    return this;
  }

  // As node (the socket is destroyed): the connection closes without a response, or is cut off
  // mid-body; req is aborted; nothing written afterwards goes out. As node's, `err` is kept in
  // `errored` and not emitted on the response (node hands it to the socket, whose server listens):
  // an 'error' nobody listened for would end the process.
  destroy(err) {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.errored = err ?? null;
    this.writable = false;
    if (this._trace !== null) this._trace.closed();
    // A head given this turn is still held (js/wakes.js): send it first, as node has written it
    // by now (`flushHeaders(); destroy()` sends the head, then closes).
    if (this[kStarted]) flushWakesNow();
    this._bridge.native.destroy(this._id);
    this._bridge.forget(this._id);
    this.req._onAbort();
    this._emitClosed();
    return this;
  }

  // The native side lost the request (client gone, or request timeout).
  _onClose() {
    if (this._trace !== null) this._trace.closed();
    if (this.destroyed) return;
    this.destroyed = true;
    this.writable = false;
    this.req._onAbort();
    this._emitClosed();
  }

  // A response over before its end: 'close', as node's http; node's http2 compatibility API emits
  // 'finish' first (koatty_trace writes its access line on it), unless end() has one on its way,
  // and later end() calls only call back.
  _emitClosed() {
    const finishes = this.req.httpVersionMajor >= 2 && !this.writableEnded && !this.writableFinished;
    if (finishes) this.writableFinished = true;
    process.nextTick(() => {
      if (finishes) this.emit('finish');
      this.emit('close');
    });
  }

  _onDrain() {
    if (!this.writableNeedDrain) return;
    this.writableNeedDrain = false;
    this.emit('drain');
  }

  /** As node's: `cb` listens for 'timeout', and the socket's timer is set (see NativeSocket). */
  setTimeout(ms, cb) {
    if (typeof cb === 'function') this.on('timeout', cb);
    this.req.socket.setTimeout(ms);
    return this;
  }

  cork() {}

  uncork() {}

  addTrailers() {}

  writeContinue() {}

  writeProcessing() {}

  /** 103 Early Hints are not sent (hyper sends no other 1xx heads; README): the callback still runs. */
  writeEarlyHints(_hints, callback) {
    if (typeof callback === 'function') process.nextTick(callback);
  }

  assignSocket() {}

  detachSocket() {}
}

function finish(res) {
  res.req.socket._clearTimer();
  res.writableFinished = true;
  res._bridge.forget(res._id);
  res.emit('finish');
  // As node's: destroyed from 'close' on (so a late write is an error for its callback only).
  if (!res.destroyed) {
    res.destroyed = true;
    res.emit('close');
  }
  // As node's server does once a response is done: a request body nobody read is dumped, so
  // req then emits 'end' and 'close' (only worth the work when someone listens; a streamed body
  // still arriving is dropped natively instead).
  const req = res.req;
  if (!req._consuming && !req._streamed && !req.destroyed && (req.listenerCount('close') > 0 || req.listenerCount('end') > 0)) req._dump();
}

/**
 * The response `createServer` hands out. Express swaps the prototype of every response for its
 * own, which inherits node's `ServerResponse.prototype`, whose methods look for node's internal
 * state (`TypeError` in `node:_http_outgoing` on the first 404). Own properties survive the swap:
 * every method of NativeResponse is copied onto each instance (shared functions, one store each),
 * so Express's `res.send`, finalhandler and `send`'s streams call these, and node's never run.
 */
const SWAP_SAFE_RESPONSE_METHODS = (() => {
  const proto = NativeResponse.prototype;
  const methods = Object.getOwnPropertyNames(proto)
    .filter((name) => name !== 'constructor' && typeof Object.getOwnPropertyDescriptor(proto, name).value === 'function')
    .map((name) => [name, proto[name]]);
  // node's alias, and what a module that replaces writeHead (on-headers) may call.
  methods.push(['writeHeader', proto.writeHead], ['_implicitHeader', function _implicitHeader() {
    this.writeHead(this.statusCode);
  }]);
  return methods;
})();

const ownMethods = ownMethodsAssigner(SWAP_SAFE_RESPONSE_METHODS);

class SwapSafeResponse extends NativeResponse {
  constructor(bridge, id, req) {
    super(bridge, id, req);
    ownMethods(this);
  }
}

module.exports = { NativeResponse, SwapSafeResponse };
