'use strict';
// The request object handed to Koatty: node's own IncomingMessage (so every member Koa, raw-body,
// formidable and inflation touch behaves as under node:http), fed from the native bridge.
const { IncomingMessage } = require('node:http');
const { NativeSocket } = require('./socket');

const { RequestFlag, splitFlat } = require('./wire');
const { ownMethodsAssigner } = require('./own-methods');

const FLAG_ENCRYPTED = RequestFlag.Encrypted;
const FLAG_STREAMED_BODY = RequestFlag.StreamedBody;
const FLAG_AUTHORIZED = RequestFlag.Authorized;
// node's own symbols for the lazily built header object, where node has them: its `headers`
// getter (which runs instead of ours once a framework swaps the prototype, as Express does) then
// builds the same object from `rawHeaders`, and both share one cache.
const nodeSymbol = (() => {
  const probe = new IncomingMessage(null);
  const symbols = Object.getOwnPropertySymbols(probe);
  return (name) => symbols.find((s) => s.description === name);
})();
const kHeaders = nodeSymbol('kHeaders') ?? Symbol('headers');
const kHeadersCount = nodeSymbol('kHeadersCount') ?? Symbol('headersCount');
const kBody = Symbol('inlineBody');
// `httpVersion` for the versions the native side serves: one string each, not one per request.
const VERSION_TEXT = { 10: '1.0', 11: '1.1', 20: '2.0' };
const kTraceId = Symbol('traceId');
const { randomUUID } = require('node:crypto');

function traceIdOf(req) {
  const header = req.headers['x-request-id'];
  if (Array.isArray(header) ? header.length : header) return Array.isArray(header) ? header.join('.') : header;
  const q = req.url.indexOf('?');
  if (q >= 0) {
    const fromQuery = new URLSearchParams(req.url.slice(q + 1)).get('requestId');
    if (fromQuery) return fromQuery;
  }
  return randomUUID();
}

class NativeRequest extends IncomingMessage {
  constructor(bridge, id, method, url, rawHeaders, body, flags, remoteAddress, remotePort, tlsDetails) {
    super(null);
    this.socket = new NativeSocket(remoteAddress, remotePort, (flags & FLAG_ENCRYPTED) !== 0, (flags & FLAG_AUTHORIZED) !== 0, tlsDetails);
    // req.socket.destroy() ends the connection, as destroying node's socket does.
    this.socket._request = this;
    // The native side has let go of this request (answered, client gone, or destroyed).
    this._nativeGone = false;
    const version = flags & 0xff;
    this.httpVersionMajor = (version / 10) | 0;
    this.httpVersionMinor = version % 10;
    this.httpVersion = VERSION_TEXT[version] ?? `${this.httpVersionMajor}.${this.httpVersionMinor}`;
    this.method = method;
    this.url = url;
    // Headers cross as one `name\0value\0…` string (one string is far cheaper than many).
    this.rawHeaders = splitFlat(rawHeaders);
    this[kHeaders] = null;
    this[kHeadersCount] = this.rawHeaders.length;
    this._bridge = bridge;
    this._id = id;
    this._streamed = (flags & FLAG_STREAMED_BODY) !== 0;
    this[kBody] = body;
  }

  // Built on first use with node's own header-line rules (set-cookie arrays, joined duplicates).
  get headers() {
    let h = this[kHeaders];
    if (h === null) {
      h = {};
      const raw = this.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) this._addHeaderLine(raw[i], raw[i + 1], h);
      this[kHeaders] = h;
    }
    return h;
  }

  set headers(value) {
    this[kHeaders] = value;
  }

  /** HTTP/2: as node's Http2ServerRequest (`:authority`, else `host`); HTTP/1: undefined. */
  get authority() {
    if (this.httpVersionMajor < 2) return undefined;
    const headers = this.headers;
    return headers[':authority'] ?? headers.host;
  }

  /** HTTP/2: `:scheme`, as node's Http2ServerRequest; HTTP/1: undefined. */
  get scheme() {
    return this.httpVersionMajor < 2 ? undefined : this.headers[':scheme'];
  }

  get connection() {
    return this.socket;
  }

  /**
   * This request's trace id, by koatty_trace's rules: the `X-Request-Id` header (repeated headers
   * arrive joined by node's rules), else the `requestId` query parameter, else a new UUID. `traceparent`, when
   * sent, is kept as `req.traceparent`.
   */
  get traceId() {
    if (this[kTraceId] === undefined) this[kTraceId] = traceIdOf(this);
    return this[kTraceId];
  }

  _replaceTraceId() {
    this[kTraceId] = randomUUID();
  }

  get traceparent() {
    return this.headers.traceparent;
  }

  _read() {
    if (!this._consuming) {
      // IncomingMessage starts with readingMore set; node's own _read clears it on first use.
      this._readableState.readingMore = false;
      this._consuming = true;
    }
    if (this._streamed) {
      this._bridge.native.pullBody(this._id);
      return;
    }
    const body = this[kBody];
    this[kBody] = null;
    if (body) this.push(body);
    this.complete = true;
    this.push(null);
  }

  // Called by the bridge for a streamed body.
  _onChunk(chunk) {
    this.push(chunk);
  }

  _onEnd() {
    this.complete = true;
    this.push(null);
  }

  _onBodyError(message) {
    const code = message.split(':', 1)[0];
    if (code === 'ECONNRESET' && this.httpVersionMajor === 2) {
      // node's http2 compatibility API: a reset upload is 'aborted' and 'close', no 'error'.
      this._nativeGone = true;
      this.destroy();
      return;
    }
    // A client that went away mid-body: node's own error, which apps filter client aborts by.
    const err = new Error(code === 'ECONNRESET' ? 'aborted' : message);
    err.code = code;
    // The native side has already answered (400/408/413) or lost the request.
    this._nativeGone = true;
    this.destroy(err);
  }

  // The request is gone: the client went away, or the response was destroyed.
  _onAbort() {
    this._nativeGone = true;
    this.socket._close();
    if (!this.complete) this.destroy();
  }

  _destroy(err, cb) {
    // req.destroy() before the request was read to its end (node then destroys the socket; an
    // auto-destroy after 'end' does not): the connection ends and nothing written to the
    // response afterwards goes out.
    if (!this._nativeGone && (!this.readableEnded || !this.complete)) {
      this._nativeGone = true;
      const res = this._bridge.open.get(this._id);
      if (res !== undefined) res.destroy();
      else this._bridge.native.destroy(this._id);
    }
    if (!this.readableEnded || !this.complete) {
      this.aborted = true;
      this.emit('aborted');
    }
    // As node does: a broken request body is an 'error' only for those listening for one; with
    // nobody listening it must not become an uncaught exception (a client could crash the app).
    cb(this.listenerCount('error') > 0 ? err : undefined);
  }
}

/**
 * The request `createServer` hands out. Express (4 and 5) swaps the prototype of every request for
 * its own, which inherits node's `IncomingMessage.prototype`: node's `_read`/`_destroy` would then
 * run against a socket that is not node's. Own properties survive the swap, so the methods the
 * stream machinery and the bridge call are copied onto each instance (shared functions: a store
 * each, no allocation).
 */
const SWAP_SAFE_REQUEST_METHODS = ['_read', '_destroy', '_onChunk', '_onEnd', '_onBodyError', '_onAbort', '_replaceTraceId'].map((name) => [name, NativeRequest.prototype[name]]);

const ownMethods = ownMethodsAssigner(SWAP_SAFE_REQUEST_METHODS);

class SwapSafeRequest extends NativeRequest {
  constructor(bridge, id, method, url, rawHeaders, body, flags, remoteAddress, remotePort, tlsDetails) {
    super(bridge, id, method, url, rawHeaders, body, flags, remoteAddress, remotePort, tlsDetails);
    ownMethods(this);
  }
}

module.exports = { NativeRequest, SwapSafeRequest };
