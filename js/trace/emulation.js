'use strict';
// Native trace mode's koatty_trace emulation: the lean middleware that does koatty_trace 1.13.1's
// per-request work (../shared/docs/koatty-trace.md) for http, https, http2, ws and grpc. Finding
// koatty_trace in the app and putting this middleware in its place is ./koatty.js's.
//
// The lean middleware produces the same responses, frames, gRPC statuses, ctx state and log lines
// as koatty_trace, with less work per request:
// - the timeout Exception is built only when the timer fires, and there is no Promise.race: one
//   `setTimeout(fn, ms, ctx)` without a closure (it keeps the request's async context, as the
//   original's timer does), cleared when the chain settles;
// - one async function instead of three; constant headers set with `res.setHeader`; no property
//   added to ctx beyond koatty_trace's five;
// - the access line is not even formatted when koatty_logger would drop it, and is written to
//   stdout with winston's Console bytes when it would only reach koatty_logger's console transport
//   (./access-log.js); otherwise it goes through DefaultLogger as before;
// - the finish listener is one function per app (the context rides on the response object).
// Errors still go through koatty_exception's Exception / the app's @ExceptionHandler class, so
// their output, log lines and user hooks are koatty_trace's.
const { randomUUID } = require('node:crypto');
const { inspect } = require('node:util');
const { Stream } = require('node:stream');
const { validateHeaderName } = require('node:http');
const { isProxy } = require('node:util').types;
const { createAccessLog, DROP } = require('./access-log');

let binding = null;
try {
  binding = require('../binding');
} catch {
  // no addon (only js/ unit use)
}

const kCtx = Symbol('koattyServe.traceContext');
// A native timeout that fires this much before koatty_trace's would (the native timer starts
// when the request is handed to JavaScript, before ctx.startTime) is re-armed in JavaScript.
const EARLY_TIMEOUT_TOLERANCE_MS = 20;
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How much of the native path ran (process-wide; read by the differential tests to prove it):
 * access lines written natively, timeouts answered after the native timer fired or its JS
 * take-over, JS take-overs of the native timer.
 */
const stats = { nativeLines: 0, nativeTimeouts: 0, timerTakeovers: 0 };
const SHUTDOWN_BODY = 'Server is in the process of shutting down';
// The native http_timeout timer runs for the request (a request flag; src/napi/wire.rs).
const FLAG_TRACE_TIMER = binding === null ? 0 : binding.RequestFlag.TraceTimer;

// ------------------------------------------------------------------------------------------------
// The request path's side: one hook per request, made by the server's NativeTrace

// Where a request's http_timeout timer is (RequestTrace.timerState).
const TRACE_IDLE = 0; // no timer (the middleware chain has settled, or it has not started)
const TRACE_NATIVE = 1; // the native timer runs (it lives until the response head goes out)
const TRACE_JS = 2; // a JS timer took over (RequestTrace.timer)
const TRACE_FIRED = 3; // the timeout answered

/**
 * One request's trace hook: `res._trace` (HTTP) or the WebSocket's `_trace` (its upgrade
 * request's id). It carries what the native side resolved for the middleware, and where the
 * http_timeout timer is. The request path tells it three things and knows nothing else of trace:
 * `headSending()` (js/response.js, before the head goes out), `closed()` (the response was
 * destroyed or the native side lost the request) and `timerFired()` (js/bridge.js, the native
 * timer's event).
 */
class RequestTrace {
  constructor(id, nativeTimer) {
    /** koatty_trace's request id as resolved natively ('' for a WebSocket without one), or undefined. */
    this.id = id;
    /** Whether the native http_timeout timer runs for this request. */
    this.nativeTimer = nativeTimer;
    /** Whether koatty_trace's four headers were preset in the response's header map. */
    this.preset = false;
    /** The middleware's ctx, until the access line is written ('finish'). */
    this.ctx = null;
    /** TRACE_*: where the http_timeout timer is. */
    this.timerState = TRACE_IDLE;
    /** The app's timer handling (`{ timeout(trace), lost(trace) }`) while the native timer runs. */
    this.watch = null;
    /** The JS timer that took over from the native one. */
    this.timer = null;
  }

  /** The response head is about to go out: the native timer ends with the wait for it. */
  headSending() {
    if (this.timerState === TRACE_NATIVE) this.watch.lost(this);
  }

  /** The response was destroyed, or the native side lost the request: its timer is gone. */
  closed() {
    if (this.timerState === TRACE_NATIVE) this.watch.lost(this);
  }

  /** The native http_timeout timer fired (it never fires once the head is out). */
  timerFired() {
    if (this.timerState === TRACE_NATIVE) this.watch.timeout(this);
  }
}

// koatty_trace's constant headers as header-map entries, shared by every response (never changed
// in place: js/response.js).
const POWERED_BY = Object.freeze(['X-Powered-By', 'Koatty']);
const CONTENT_TYPE_OPTIONS = Object.freeze(['X-Content-Type-Options', 'nosniff']);
const XSS_PROTECTION = Object.freeze(['X-XSS-Protection', '1;mode=block']);

/**
 * Native trace mode on one server once the app's tracer has read its config (the native side
 * resolves ids and runs the timer from then on): each HTTP request gets its hook, with
 * koatty_trace's four headers preset when the id came resolved; each WebSocket one for its id.
 */
class NativeTrace {
  constructor(headerName) {
    this.headerName = headerName;
    this.headerKey = headerName.toLowerCase();
  }

  /**
   * A new HTTP request (`id` and `flags` as the native side sent them). koatty_trace's four
   * headers go first and in its order, before any other (a natively resolved id is a valid header
   * value): what its `ctx.set`/`setHeader` calls would leave in the header map.
   */
  request(_req, res, id, flags) {
    const trace = new RequestTrace(id ?? undefined, (flags & FLAG_TRACE_TIMER) !== 0);
    if (typeof id === 'string' && id !== '') {
      res._presetHeader(this.headerKey, [this.headerName, id]);
      res._presetHeader('x-powered-by', POWERED_BY);
      res._presetHeader('x-content-type-options', CONTENT_TYPE_OPTIONS);
      res._presetHeader('x-xss-protection', XSS_PROTECTION);
      trace.preset = true;
    }
    res._trace = trace;
  }

  /** A new WebSocket: its upgrade request's id serves every message. */
  upgrade(_req, client, id) {
    Object.defineProperty(client, '_trace', { value: new RequestTrace(id ?? undefined, false) });
  }

  /** A handler failed before the head went out (the server's 500 clears all headers). */
  failed() {}
}

/** The request's hook from the native side, or null: the response's (HTTP), the WebSocket's. */
function traceOf(ctx, protocol) {
  if (protocol === 'grpc') return null;
  const holder = protocol === 'ws' || protocol === 'wss' ? ctx.websocket : ctx.res;
  if (holder === null || holder === undefined) return null;
  const trace = holder._trace;
  return trace instanceof RequestTrace ? trace : null;
}

// ------------------------------------------------------------------------------------------------
// Per-request helpers

const kFired = Symbol('koattyServe.traceTimeoutFired');

// koatty_lib's Helper.define: a getter-only, non-configurable, enumerable own property (one
// descriptor object reused; defineProperty copies what it needs). Koatty contexts each have a map
// of their own (koatty_core defines closures on them), so every property added to one copies its
// descriptors: this tracer adds no property koatty_trace does not add.
const DESCRIPTOR = { get: undefined, configurable: false, enumerable: true };
function define(obj, key, value) {
  DESCRIPTOR.get = () => value;
  Object.defineProperty(obj, key, DESCRIPTOR);
  DESCRIPTOR.get = undefined;
}

// koatty_core gives each request's context a hidden class of its own (its getters close over the
// context), so every property added to it afterwards (this middleware's four, Koa's, the router's)
// copied that class and its descriptor array: ≈ 1.6 KB and 12 % of the JS thread per request of a
// Koatty app (bench/RESULTS.md). A context in dictionary mode takes each as a hash-table insert.
// V8 moves an object there when a property other than its last is deleted: two are added and
// deleted, under symbols nobody else holds, so the context ends with the same properties, in the
// same order, as before.
const kScratchFirst = Symbol('koattyServe.scratchFirst');
const kScratchSecond = Symbol('koattyServe.scratchSecond');
// A Proxy (an app whose createContext returns one) is left alone: its traps would see the
// symbols, and one that refuses deletes would fail the request.
function toDictionaryMode(obj) {
  if (isProxy(obj) || !Object.isExtensible(obj)) return;
  obj[kScratchFirst] = undefined;
  obj[kScratchSecond] = undefined;
  delete obj[kScratchFirst];
  delete obj[kScratchSecond];
}

/** `define` of originalPath, version and requestId, in that order, with getters sharing one scope. */
function defineIdentity(obj, originalPath, version, requestId) {
  DESCRIPTOR.get = () => originalPath;
  Object.defineProperty(obj, 'originalPath', DESCRIPTOR);
  DESCRIPTOR.get = () => version;
  Object.defineProperty(obj, 'version', DESCRIPTOR);
  DESCRIPTOR.get = () => requestId;
  Object.defineProperty(obj, 'requestId', DESCRIPTOR);
  DESCRIPTOR.get = undefined;
}

/** koatty_trace's respond(): a copy of Koa's. */
function respond(ctx) {
  if (false === ctx.respond) return;
  if (!ctx.writable) return;
  const res = ctx.res;
  let body = ctx.body;
  const code = ctx.status;
  if (code === 204 || code === 205 || code === 304) {
    ctx.body = null;
    return res.end();
  }
  if ('HEAD' === ctx.method) {
    if (!res.headersSent && !ctx.response.has('Content-Length')) {
      const { length } = ctx.response;
      if (Number.isInteger(length)) ctx.length = length;
    }
    return res.end();
  }
  if (null == body) {
    if (ctx.response._explicitNullBody) {
      ctx.response.remove('Content-Type');
      ctx.response.remove('Transfer-Encoding');
      return res.end();
    }
    if (ctx.req.httpVersionMajor >= 2) {
      body = String(code);
    } else {
      body = ctx.message || String(code);
    }
    if (!res.headersSent) {
      ctx.type = 'text';
      ctx.length = Buffer.byteLength(body);
    }
    return res.end(body);
  }
  if (code === 404) ctx.status = 200;
  if (Buffer.isBuffer(body)) return res.end(body);
  if ('string' === typeof body) return res.end(body);
  if (body instanceof Stream) return body.pipe(res);
  body = JSON.stringify(body);
  if (!res.headersSent) ctx.length = Buffer.byteLength(body);
  res.end(body);
}

/** Runs `fn()` where koatty_core would have caught its failure: Koa's ctx.onerror. */
function settleLikeCore(ctx, fn) {
  let result;
  try {
    result = fn();
  } catch (err) {
    ctx.onerror(err);
    return;
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    result.then(undefined, (err) => ctx.onerror(err));
  }
}

function isHeaderName(name) {
  try {
    validateHeaderName(name);
    return true;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------------------------
// The middleware

/**
 * The lean trace middleware for one app. `mods` are the app's Koatty packages and `cfg` holds
 * koatty_core's mapping of the config (§3 of koatty-trace.md), read at the first app.callback()
 * (both from ./koatty.js). `onNative(headerName, idName, timeoutMs)` is told what the servers'
 * native side can take over from now on (request ids, preset headers, the timer).
 */
function createLeanTrace(app, mods, cfg, onNative) {
  const { Exception } = mods.exception;
  const { IOCContainer } = mods.container;
  const log = createAccessLog(mods.logger.DefaultLogger, mods.loggerFile, stats);
  const { StatusCodeConvert } = mods.exception;
  const geh = IOCContainer.getClass('ExceptionHandler', 'COMPONENT');
  const idName = cfg.idName;
  const headerName = cfg.headerName;
  const headerKey = headerName.toLowerCase();
  const encoding = cfg.encoding;
  const timeout = cfg.timeout || 10000;
  // The servers' native side resolves ids and runs the timer from now on (setTrace); 0 = a timeout
  // setTimeout would not keep exactly (it clamps to 1 ms), so the JS timer stays.
  const nativeTimeout = Number.isFinite(timeout) && timeout >= 1 && timeout <= MAX_TIMER_MS ? timeout : 0;
  // A trace_header that is no valid header name makes koatty_trace's ctx.set throw per request:
  // that stays JavaScript's (the headers are preset natively without validation).
  if (isHeaderName(headerName) && typeof onNative === 'function') onNative(headerName, idName, nativeTimeout);

  // koatty_trace's catcher() without a span (open_trace runs the original Trace()).
  function catcher(ctx, err) {
    const message = err.message || ctx.message || '';
    const sanitizedMessage = message.includes('"') ? message.replace(/"/g, '\\"') : message;
    const ins = IOCContainer.getInsByClass(geh, [err.message, err.code, err.status, err.stack, undefined]);
    if (typeof (ins === null || ins === undefined ? undefined : ins.handler) === 'function') return ins.handler(ctx);
    return new Exception(sanitizedMessage, 1, 500, err.stack, undefined).handler(ctx);
  }

  // ---- HTTP (http, https, http2)
  function onHttpFinish() {
    const trace = this._trace;
    if (trace === undefined || trace === null) return;
    const ctx = trace.ctx;
    if (ctx === null) return;
    trace.ctx = null;
    const status = ctx.status;
    const failed = status >= 400;
    const how = log.sink(failed);
    if (how === DROP) return;
    log.writeLine(how, failed, ctx.method, status, ctx.startTime, ctx.requestId, ctx.originalPath || '/');
  }

  function afterHttp(ctx) {
    try {
      if (ctx.body !== undefined && ctx.status === 404) ctx.status = 200;
      if (ctx.status >= 400) throw new Exception(ctx.message, 1, ctx.status);
      return respond(ctx);
    } catch (err) {
      return catcher(ctx, err);
    }
  }

  // `this` is the Timeout: the flag tells the awaiting middleware that the timer answered.
  function onHttpTimeout(ctx) {
    this[kFired] = true;
    settleLikeCore(ctx, () => catcher(ctx, new Exception('Request Timeout', 1, 408)));
  }

  // The native http_timeout timer (RequestTrace `timerState`): `timeout` when it fires, `lost`
  // when it ends with the chain still running (the head went out first, or the request closed).
  const nativeWatch = {
    timeout(trace) {
      const remaining = trace.ctx.startTime + timeout - Date.now();
      if (remaining > EARLY_TIMEOUT_TOLERANCE_MS) armJsTimer(trace, remaining);
      else fireHttpTimeout(trace);
    },
    lost(trace) {
      armJsTimer(trace, trace.ctx.startTime + timeout - Date.now());
    },
  };

  function armJsTimer(trace, ms) {
    stats.timerTakeovers++;
    trace.timerState = TRACE_JS;
    trace.timer = setTimeout(fireHttpTimeout, Math.max(0, ms), trace, trace.ctx);
  }

  // Runs in koatty_core's context store for the request, as koatty_trace's timer callback does
  // (an @ExceptionHandler may read app.currentContext).
  function fireHttpTimeout(trace, ctx = trace.ctx) {
    if (trace.timerState !== TRACE_NATIVE && trace.timerState !== TRACE_JS) return;
    trace.timerState = TRACE_FIRED;
    trace.timer = null;
    stats.nativeTimeouts++;
    const answer = () => settleLikeCore(ctx, () => catcher(ctx, new Exception('Request Timeout', 1, 408)));
    const store = app.ctxStorage;
    if (store && typeof store.run === 'function' && store.getStore() !== ctx) store.run(ctx, answer);
    else answer();
  }

  // The chain settled: false when the timeout answered already.
  function chainSettled(trace) {
    const state = trace.timerState;
    if (state === TRACE_FIRED) return false;
    if (state === TRACE_JS) clearTimeout(trace.timer);
    trace.timerState = TRACE_IDLE;
    trace.timer = null;
    return true;
  }

  // `nativeTrace`: the request's hook from the native side, or null.
  async function httpTrace(ctx, next, terminated, preset, nativeTrace) {
    ctx.encoding = encoding;
    const res = ctx.res;
    if (!preset) {
      res.setHeader('X-Powered-By', 'Koatty');
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('X-XSS-Protection', '1;mode=block');
    }
    // The finish listener finds ctx on the response's hook (one of its own without the native side).
    let trace = nativeTrace;
    if (trace === null) {
      trace = new RequestTrace(undefined, false);
      res._trace = trace;
    }
    trace.ctx = ctx;
    res.on('finish', onHttpFinish);
    if (terminated) return afterHttp(ctx);
    if (trace.nativeTimer && trace.timerState === TRACE_IDLE) {
      // No JS timer: the native one notifies (RequestTrace.timerFired) only if it fires.
      trace.watch = nativeWatch;
      trace.timerState = TRACE_NATIVE;
      try {
        await next();
      } catch (err) {
        return chainSettled(trace) ? catcher(ctx, err) : undefined;
      }
      return chainSettled(trace) ? afterHttp(ctx) : undefined;
    }
    const timer = setTimeout(onHttpTimeout, timeout, ctx);
    try {
      await next();
    } catch (err) {
      clearTimeout(timer);
      if (timer[kFired] === true) return undefined;
      return catcher(ctx, err);
    }
    clearTimeout(timer);
    if (timer[kFired] === true) return undefined;
    return afterHttp(ctx);
  }

  // ---- WebSocket (ws, wss): once per message; ctx.res is koatty_core's throw-away response
  function wsLog(ctx) {
    const status = ctx.status;
    const failed = status >= 400;
    const how = log.sink(failed);
    if (how === DROP) return;
    log.writeLine(how, failed, ctx.protocol, status, ctx.startTime, ctx.requestId, ctx.originalPath || '/');
  }

  function onWsFinish() {
    const ctx = this[kCtx];
    if (ctx === undefined) return;
    this[kCtx] = undefined;
    wsLog(ctx);
  }

  function afterWs(ctx, err, failed) {
    try {
      if (failed) return catcher(ctx, err);
      try {
        if (ctx.body !== undefined && ctx.status === 404) ctx.status = 200;
        if (ctx.status >= 400) throw new Exception(ctx.message, 1, ctx.status);
        ctx.websocket.send(inspect(ctx.body || ''), null);
        return null;
      } catch (e) {
        return catcher(ctx, e);
      }
    } finally {
      ctx.res.emit('finish');
    }
  }

  function onWsTimeout(ctx) {
    this[kFired] = true;
    settleLikeCore(ctx, () => afterWs(ctx, new Exception('Request Timeout', 1, 408), true));
  }

  async function wsTrace(ctx, next, terminated) {
    ctx.encoding = encoding;
    const res = ctx.res;
    res.setHeader('X-Powered-By', 'Koatty');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-XSS-Protection', '1;mode=block');
    res[kCtx] = ctx;
    res.once('finish', onWsFinish);
    if (terminated) return afterWs(ctx, undefined, false);
    const timer = setTimeout(onWsTimeout, timeout, ctx);
    try {
      await next();
    } catch (err) {
      clearTimeout(timer);
      if (timer[kFired] === true) return undefined;
      return afterWs(ctx, err, true);
    }
    clearTimeout(timer);
    if (timer[kFired] === true) return undefined;
    return afterWs(ctx, undefined, false);
  }

  // ---- gRPC (unary calls through koatty_router)
  function afterGrpc(ctx, err, failed) {
    try {
      if (failed) return catcher(ctx, err);
      try {
        if (ctx.body !== undefined && ctx.status === 404) ctx.status = 200;
        if (ctx.status >= 400) throw new Exception(ctx.message, 0, ctx.status);
        ctx.rpc.callback(null, ctx.body);
        return null;
      } catch (e) {
        return catcher(ctx, e);
      }
    } finally {
      ctx.res.emit('finish');
    }
  }

  // koatty_trace never clears the gRPC timer (it hands clearTimeout the Promise), so it keeps the
  // event loop alive for `timeout` after each call; this one is not cleared either.
  function onGrpcTimeout(state) {
    const ctx = state.ctx;
    if (ctx === null) return;
    state.ctx = null;
    state.fired = true;
    settleLikeCore(ctx, () => afterGrpc(ctx, new Error('Deadline exceeded'), true));
  }

  async function grpcTrace(ctx, next, terminated) {
    ctx.encoding = encoding;
    const rpc = ctx.rpc;
    const call = rpc === null || rpc === undefined ? undefined : rpc.call;
    if (call !== null && call !== undefined && call.metadata !== null && call.metadata !== undefined) call.metadata.set('X-Powered-By', 'Koatty');
    if (call !== null && call !== undefined) call.sendMetadata(ctx.rpc.call.metadata);
    const finish = () => {
      const status = StatusCodeConvert(ctx.status);
      const failed = status > 0;
      const how = log.sink(failed);
      if (how === DROP) return;
      log.writeLine(how, failed, ctx.protocol, status, ctx.startTime, ctx.requestId, `${ctx.originalPath}`);
    };
    ctx.res.once('finish', finish);
    call.once('error', finish);
    if (terminated) return afterGrpc(ctx, undefined, false);
    const state = { ctx, fired: false };
    setTimeout(onGrpcTimeout, timeout, state);
    try {
      await next();
    } catch (err) {
      if (state.fired) return undefined;
      state.ctx = null;
      return afterGrpc(ctx, err, true);
    }
    if (state.fired) return undefined;
    state.ctx = null;
    return afterGrpc(ctx, undefined, false);
  }

  // ---- the middleware: koatty_trace's Trace() middleware + respWapper
  return function koattyServeTrace(ctx, next) {
    toDictionaryMode(ctx);
    define(ctx, 'startTime', Date.now());
    let terminated = false;
    const protocol = ctx.protocol;
    // What the native side resolved for this request (none for gRPC).
    const trace = traceOf(ctx, protocol);
    // The trace headers preset on the response (the id was resolved natively): HTTP only.
    let preset = trace !== null && trace.preset;
    const server = app.server;
    if (server !== null && server !== undefined && server.status === 503) {
      if (preset) {
        // Shutdown: koatty_trace sets them after Connection and the body's headers.
        preset = false;
        for (const name of [headerName, 'X-Powered-By', 'X-Content-Type-Options', 'X-XSS-Protection']) ctx.res.removeHeader(name);
      }
      ctx.status = 503;
      ctx.set('Connection', 'close');
      ctx.body = SHUTDOWN_BODY;
      terminated = true;
    }
    // koatty_trace defines originalPath, version and requestId in this order, the id after reading
    // the other two: the same values, defined together (one closure scope for the three getters).
    let originalPath, version, requestId;
    if (protocol === 'grpc') {
      originalPath = ctx.getMetaData('originalPath')[0];
      version = '2.0';
      const request = ctx.getMetaData('_body')[0] || {};
      requestId = `${ctx.getMetaData(idName)[0]}` || `${request[idName] || ''}`;
    } else {
      originalPath = ctx.path;
      version = ctx.req.httpVersion;
      // Resolved natively by the same rules (crates/core/src/trace.rs), '' for a WebSocket without one.
      requestId = trace === null ? undefined : trace.id;
      if (typeof requestId !== 'string') {
        const header = ctx.headers[headerKey];
        requestId = Array.isArray(header) ? header.join('.') : header;
        // Koa's ctx.query is {} without a '?', so the lookup can only give '' then.
        if (!requestId) requestId = ctx.req.url.indexOf('?') === -1 ? '' : `${ctx.query[idName] || ''}`;
      }
    }
    requestId = requestId || randomUUID();
    defineIdentity(ctx, originalPath, version, requestId);
    ctx.setMetaData(idName, requestId);
    if (protocol === 'grpc') {
      ctx.respond = false;
      if (ctx.rpc) ctx.rpc.call.metadata.set(idName, requestId);
      return grpcTrace(ctx, next, terminated);
    }
    if (protocol === 'ws' || protocol === 'wss') {
      ctx.respond = false;
      ctx.set(headerName, requestId);
      return wsTrace(ctx, next, terminated);
    }
    if (!preset) ctx.set(headerName, requestId);
    return httpTrace(ctx, next, terminated, preset, trace);
  };
}

module.exports = { createLeanTrace, respond, stats, NativeTrace, RequestTrace };
