'use strict';
// Native trace mode: the server supplies Koatty's tracer (koatty_trace 1.13.1's per-request work,
// ../shared/docs/koatty-trace.md) so that koatty_core 1.11.x never inserts koatty_trace.
//
// koatty_core's `app.callback()` unshifts koatty_trace's middleware unless `app.tracer` is truthy.
// `installTracer` defines `app.tracer` as a getter when the server is constructed (NewServe runs
// before any `app.callback()`); the getter's first read — koatty_core's check in the first
// `app.callback()` — reads the config, looks the @ExceptionHandler class up and unshifts the lean
// middleware below at `app.middleware[0]`, exactly when and where koatty_core would have put
// koatty_trace's. With `open_trace` or `async_hooks` (or option values koatty_trace would choke
// on) the original `Trace()` is installed instead, so those apps see koatty_trace itself.
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
//   (createAccessLog); otherwise it goes through DefaultLogger as before;
// - the finish listener is one function per app (the context rides on the response object).
// Errors still go through koatty_exception's Exception / the app's @ExceptionHandler class, so
// their output, log lines and user hooks are koatty_trace's.
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');
const { randomUUID } = require('node:crypto');
const { inspect } = require('node:util');
const { Stream } = require('node:stream');
const { validateHeaderName } = require('node:http');
const logger = require('./logger');
const { TRACE_IDLE, TRACE_NATIVE, TRACE_JS, TRACE_FIRED } = require('./response');

let binding = null;
try {
  binding = require('./binding');
} catch {
  // no addon (only js/ unit use): access lines are written from JavaScript
}

const kCtx = Symbol('koattyServe.traceContext');
const kInstalled = Symbol.for('koatty_serve.tracer');
// Servers of the app waiting for the lean tracer's config (to switch their native side on).
const kOnLean = Symbol('koattyServe.onLeanTracer');
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
const LEVELS = { debug: 7, info: 6, warning: 4, error: 3 };
const SHUTDOWN_BODY = 'Server is in the process of shutting down';

// ------------------------------------------------------------------------------------------------
// The Koatty packages, as the app's koatty_core resolves them (koatty_trace's own dependencies, so
// `instanceof Exception` and the IOC container are the app's).

function packageVersion(file) {
  let dir = path.dirname(file);
  for (;;) {
    const p = path.join(dir, 'package.json');
    if (fs.existsSync(p)) {
      try {
        const pkg = JSON.parse(fs.readFileSync(p, 'utf8'));
        if (pkg.name) return String(pkg.version || '');
      } catch {
        return '';
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return '';
    dir = up;
  }
}

/** The file of the koatty_core whose `Koatty` class `app` is an instance of. */
function findKoattyCore(app) {
  for (const file of Object.keys(require.cache)) {
    if (!/[\\/]koatty_core[\\/]/.test(file)) continue;
    const K = require.cache[file] && require.cache[file].exports && require.cache[file].exports.Koatty;
    if (typeof K === 'function' && app instanceof K) return file;
  }
  const bases = [app.rootPath, app.appPath, process.cwd(), require.main && path.dirname(require.main.filename)];
  for (const base of bases) {
    if (typeof base !== 'string' || base === '') continue;
    try {
      const fromBase = createRequire(path.join(base, 'noop.js'));
      for (const via of ['koatty', null]) {
        try {
          const req = via ? createRequire(fromBase.resolve(via)) : fromBase;
          const file = req.resolve('koatty_core');
          const K = req('koatty_core').Koatty;
          if (typeof K === 'function' && app instanceof K) return file;
        } catch {
          // try the next way
        }
      }
    } catch {
      // try the next base
    }
  }
  return null;
}

function loadModules(app) {
  const coreFile = findKoattyCore(app);
  if (!coreFile) return { reason: 'koatty_core not found for this app' };
  const fromCore = createRequire(coreFile);
  const core = fromCore(coreFile);
  // Only a koatty_core that skips koatty_trace when app.tracer is set (1.x) can take this tracer.
  const cb = core.Koatty && core.Koatty.prototype && core.Koatty.prototype.callback;
  if (typeof cb !== 'function' || !String(cb).includes('this.tracer')) return { reason: 'this koatty_core does not honour app.tracer' };
  let traceFile;
  try {
    traceFile = fromCore.resolve('koatty_trace');
  } catch {
    return { reason: 'koatty_trace not found next to koatty_core' };
  }
  const version = packageVersion(traceFile);
  if (!/^1\.13\./.test(version)) return { reason: `koatty_trace ${version || '(unknown version)'} (native trace mode reproduces 1.13.x)` };
  const fromTrace = createRequire(traceFile);
  try {
    return {
      trace: fromTrace(traceFile),
      exception: fromTrace('koatty_exception'),
      container: fromTrace('koatty_container'),
      logger: fromTrace('koatty_logger'),
      loggerFile: fromTrace.resolve('koatty_logger'),
    };
  } catch (e) {
    return { reason: `cannot load koatty_trace's dependencies: ${e.message}` };
  }
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

// ------------------------------------------------------------------------------------------------
// Access lines: what koatty_trace hands to koatty_logger's DefaultLogger, written without winston's
// pipeline when that changes nothing.

const TIMESTAMP_FORMAT = 'YYYY-MM-DD HH:mm:ss.SSS Z'; // koatty_logger's winston timestamp format

/** fecha as winston's logform (which formats koatty_logger's timestamps) loads it, or null. */
function loadFecha(loggerFile) {
  try {
    const winstonFile = createRequire(loggerFile).resolve('winston');
    const logformFile = createRequire(winstonFile).resolve('logform');
    const fecha = createRequire(logformFile)('fecha');
    const sample = fecha.format(new Date(0), TIMESTAMP_FORMAT);
    return /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:?\d\d$/.test(sample) ? fecha : null;
  } catch {
    return null;
  }
}

const DROP = 0; // the line would not be written
const CALL = 1; // hand it to DefaultLogger.Info/Error, as koatty_trace does
const DIRECT = 2; // write it as winston's Console transport would

/**
 * Access lines for one koatty_logger DefaultLogger. `sink(failed)` says what a
 * `DefaultLogger.Info/Error(line)` call would do right now, from the logger's live state:
 * - DROP when koatty_logger's own methods (not wrapped) would write nothing: logging disabled, or
 *   the one transport's level drops the line (winston formats the line before the transport drops
 *   it: most of an access line's cost);
 * - DIRECT when the line would reach koatty_logger's own Console transport and nothing else
 *   (no other transport, format, listener or stderr level): then `write` puts the same bytes on
 *   stdout, `[<fecha timestamp>]  INFO <line>` + eol, as printf + util.format + Console.log do;
 * - CALL otherwise (a file transport, wrapped methods, anything unusual).
 */
function createAccessLog(L, loggerFile) {
  const proto = Object.getPrototypeOf(L);
  const fecha = loadFecha(loggerFile);
  const native = nativeLineWriter();
  let lastMs = -1;
  let lastText = '';
  let transport = null;

  function sink(failed) {
    const method = failed ? 'Error' : 'Info';
    if (L[method] !== proto[method] || L.printLog !== proto.printLog || L.format !== proto.format) return CALL;
    if (!L.enableLog) return DROP;
    const level = failed ? 'error' : 'info';
    const winston = L.logger;
    const transports = winston && !winston.silent ? winston.transports : null;
    if (!Array.isArray(transports) || transports.length !== 1) return CALL;
    const t = transports[0];
    const own = L.transports;
    if (!own || (t !== own.Console && t !== own.File) || t.silent) return CALL;
    const threshold = LEVELS[t.level];
    if (threshold === undefined) return CALL;
    if (LEVELS[level] > threshold) return DROP;
    if (
      fecha === null || t !== own.Console || t.format || t.forceConsole || typeof t.eol !== 'string'
      || (t.stderrLevels && t.stderrLevels[level]) || (t.consoleWarnLevels && t.consoleWarnLevels[level])
      || t.listenerCount('logged') > 0 || winston.listenerCount('data') !== 1
      || Object.prototype.hasOwnProperty.call(winston, level)
      || !console._stdout || typeof console._stdout.write !== 'function'
    ) {
      return CALL;
    }
    transport = t;
    return DIRECT;
  }

  /**
   * Writes one access line. DIRECT: natively formatted and written to fd 1 in one write(2) from
   * this (the JS) thread, at the same moment as before, so it stays in order with the app's own
   * stdout writes; JS formatting when the native writer cannot take it (values that are not
   * strings / integers, or Node's stdout stream has data queued that the line must not overtake).
   */
  function writeLine(how, failed, action, status, startTime, requestId, path) {
    if (how === DIRECT && native !== null && typeof action === 'string' && typeof requestId === 'string'
      && typeof path === 'string' && Number.isInteger(status) && status >= -2147483648 && status <= 2147483647
      && Number.isFinite(startTime) && transport.eol === '\n' && console._stdout === process.stdout
      && process.stdout.writableLength === 0) {
      let rest;
      try {
        rest = native(failed, action, status, startTime, requestId, path);
      } catch {
        rest = undefined; // no local time after all (ERR_TRACE_LOCAL_TIME): written below
      }
      if (rest !== undefined) {
        stats.nativeLines++;
        if (rest !== null) process.stdout.write(rest);
        return;
      }
    }
    const now = Date.now();
    write(how, failed, `{"action":"${action}","status":"${status}","startTime":"${startTime}","duration":"${(now - startTime) || 0}","requestId":"${requestId}","endTime":"${now}","path":"${path}"}`);
  }

  function write(how, failed, line) {
    if (how === DIRECT) {
      const now = new Date();
      const ms = now.getTime();
      if (ms !== lastMs) {
        lastMs = ms;
        lastText = fecha.format(now, TIMESTAMP_FORMAT);
      }
      console._stdout.write(`[${lastText}]  ${failed ? 'ERROR' : 'INFO'} ${line}${transport.eol}`);
    } else if (failed) {
      L.Error(line);
    } else {
      L.Info(line);
    }
  }

  return { sink, write, writeLine };
}

/**
 * The native access-line writer (`traceAccessLine`), when its local time agrees with this
 * process's `Date` (now and half a year on, for daylight saving time); else null.
 */
function nativeLineWriter() {
  if (binding === null || typeof binding.traceAccessLine !== 'function' || typeof binding.traceLocalOffset !== 'function') return null;
  if (process.stdout.fd !== 1) return null;
  const now = Date.now();
  for (const t of [now, now + 182 * 86400000]) {
    if (binding.traceLocalOffset(t) !== -new Date(t).getTimezoneOffset()) return null;
  }
  return binding.traceAccessLine;
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
 * The lean trace middleware for one app. `cfg` holds koatty_core's mapping of the config (§3 of
 * koatty-trace.md), read at the first app.callback().
 */
function createLeanTrace(app, mods, cfg) {
  const { Exception } = mods.exception;
  const { IOCContainer } = mods.container;
  const log = createAccessLog(mods.logger.DefaultLogger, mods.loggerFile);
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
  if (isHeaderName(headerName)) for (const onLean of app[kOnLean] || []) onLean(headerName, idName, nativeTimeout);

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
    const ctx = this._traceCtx;
    if (ctx === undefined || ctx === null) return;
    this._traceCtx = null;
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

  // The native http_timeout timer (NativeResponse `_traceState`): `timeout` when it fires, `lost`
  // when it ends with the chain still running (the head went out first, or the request closed).
  const nativeWatch = {
    timeout(res) {
      const remaining = res._traceCtx.startTime + timeout - Date.now();
      if (remaining > EARLY_TIMEOUT_TOLERANCE_MS) armJsTimer(res, remaining);
      else fireHttpTimeout(res);
    },
    lost(res) {
      armJsTimer(res, res._traceCtx.startTime + timeout - Date.now());
    },
  };

  function armJsTimer(res, ms) {
    stats.timerTakeovers++;
    res._traceState = TRACE_JS;
    res._traceTimer = setTimeout(fireHttpTimeout, Math.max(0, ms), res, res._traceCtx);
  }

  // Runs in koatty_core's context store for the request, as koatty_trace's timer callback does
  // (an @ExceptionHandler may read app.currentContext).
  function fireHttpTimeout(res, ctx = res._traceCtx) {
    if (res._traceState !== TRACE_NATIVE && res._traceState !== TRACE_JS) return;
    res._traceState = TRACE_FIRED;
    res._traceTimer = null;
    stats.nativeTimeouts++;
    const answer = () => settleLikeCore(ctx, () => catcher(ctx, new Exception('Request Timeout', 1, 408)));
    const store = app.ctxStorage;
    if (store && typeof store.run === 'function' && store.getStore() !== ctx) store.run(ctx, answer);
    else answer();
  }

  // The chain settled: false when the timeout answered already.
  function chainSettled(res) {
    const state = res._traceState;
    if (state === TRACE_FIRED) return false;
    if (state === TRACE_JS) clearTimeout(res._traceTimer);
    res._traceState = TRACE_IDLE;
    res._traceTimer = null;
    return true;
  }

  async function httpTrace(ctx, next, terminated, preset) {
    ctx.encoding = encoding;
    const res = ctx.res;
    if (!preset) {
      res.setHeader('X-Powered-By', 'Koatty');
      res.setHeader('X-Content-Type-Options', 'nosniff');
      res.setHeader('X-XSS-Protection', '1;mode=block');
    }
    res._traceCtx = ctx;
    res.on('finish', onHttpFinish);
    if (terminated) return afterHttp(ctx);
    if (ctx.req._traceTimer === true && res._traceState === TRACE_IDLE) {
      // No JS timer: the native one notifies (NativeResponse._onTraceTimeout) only if it fires.
      res._traceWatch = nativeWatch;
      res._traceState = TRACE_NATIVE;
      try {
        await next();
      } catch (err) {
        return chainSettled(res) ? catcher(ctx, err) : undefined;
      }
      return chainSettled(res) ? afterHttp(ctx) : undefined;
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
    define(ctx, 'startTime', Date.now());
    let terminated = false;
    const protocol = ctx.protocol;
    // The trace headers preset on the response (the id was resolved natively): HTTP only.
    let preset = ctx.res._tracePreset === true;
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
    let requestId;
    if (protocol === 'grpc') {
      define(ctx, 'originalPath', ctx.getMetaData('originalPath')[0]);
      define(ctx, 'version', '2.0');
      const request = ctx.getMetaData('_body')[0] || {};
      requestId = `${ctx.getMetaData(idName)[0]}` || `${request[idName] || ''}`;
    } else {
      define(ctx, 'originalPath', ctx.path);
      define(ctx, 'version', ctx.req.httpVersion);
      // Resolved natively by the same rules (src/trace.rs), '' for a WebSocket without one.
      requestId = ctx.req._traceId;
      if (typeof requestId !== 'string') {
        const header = ctx.headers[headerKey];
        requestId = Array.isArray(header) ? header.join('.') : header;
        // Koa's ctx.query is {} without a '?', so the lookup can only give '' then.
        if (!requestId) requestId = ctx.req.url.indexOf('?') === -1 ? '' : `${ctx.query[idName] || ''}`;
      }
    }
    requestId = requestId || randomUUID();
    define(ctx, 'requestId', requestId);
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
    return httpTrace(ctx, next, terminated, preset);
  };
}

// ------------------------------------------------------------------------------------------------
// Installation

/** koatty_core 1.11.4's handleResponse() mapping of the config. */
function readConfig(app) {
  return {
    timeout: (app.config('http_timeout') || 10) * 1000,
    encoding: app.config('encoding') || 'utf-8',
    openTrace: app.config('open_trace') || false,
    asyncHooks: app.config('async_hooks') || false,
    headerName: app.config('trace_header') || 'X-Request-Id',
    idName: app.config('trace_id') || 'requestId',
  };
}

/** Whether `app` is a Koatty application this tracer can serve (koatty_core 1.x API). */
function isKoattyApp(app) {
  return app !== null && typeof app === 'object' && typeof app.callback === 'function' && Array.isArray(app.middleware) && typeof app.config === 'function';
}

/**
 * Defines `app.tracer` so that koatty_core does not insert koatty_trace, and the native trace
 * middleware takes its place at the first `app.callback()`. Returns true when installed (or
 * already installed by another server of this app), false when the app keeps koatty_trace
 * (not a Koatty 1.x app, a tracer of its own, or packages this mode does not reproduce).
 */
function installTracer(app, onLean) {
  if (!isKoattyApp(app)) return false;
  if (app[kInstalled] === true) {
    if (typeof onLean === 'function') app[kOnLean].push(onLean);
    return true;
  }
  const own = Object.getOwnPropertyDescriptor(app, 'tracer');
  // A tracer of the app's own (or koatty_core's, after a first app.callback()) stays.
  if (own !== undefined ? own.get || own.value || !own.configurable : app.tracer) return false;
  const mods = loadModules(app);
  if (mods.reason) {
    logger.warn(`native trace mode is off for this app: ${mods.reason}; koatty_trace stays in charge`);
    return false;
  }
  let middleware = null;
  // koatty_core reads app.tracer in every app.callback(); the first read installs the tracer.
  // Until then app.tracer stays replaceable (assignment or defineProperty), as before koatty_core
  // defines it: an app that sets its own tracer before the first request keeps it.
  const tracerGetter = () => {
    if (middleware === null) {
      const cfg = readConfig(app);
      const plainNames = typeof cfg.headerName === 'string' && typeof cfg.idName === 'string';
      if (cfg.openTrace || cfg.asyncHooks || !plainNames) {
        // koatty_trace itself, with koatty_core's options (koatty-trace.md §5.2: rarely used)
        middleware = mods.trace.Trace({
          RequestIdHeaderName: cfg.headerName,
          RequestIdName: cfg.idName,
          Timeout: cfg.timeout,
          Encoding: cfg.encoding,
          OpenTrace: cfg.openTrace,
          AsyncHooks: cfg.asyncHooks,
        }, app);
      } else {
        middleware = createLeanTrace(app, mods, cfg);
      }
      // Where koatty_core puts koatty_trace: unshifted by the first app.callback().
      app.middleware.unshift(middleware);
      // From now on what koatty_core's Helper.define would have made: getter-only, fixed.
      const installed = middleware;
      Object.defineProperty(app, 'tracer', { get: () => installed, configurable: false, enumerable: true });
    }
    return middleware;
  };
  Object.defineProperty(app, 'tracer', {
    get: tracerGetter,
    set(value) {
      Object.defineProperty(app, 'tracer', { value, writable: true, configurable: true, enumerable: true });
    },
    configurable: true,
    enumerable: true,
  });
  Object.defineProperty(app, kInstalled, { value: true, configurable: false, enumerable: false });
  Object.defineProperty(app, kOnLean, { value: typeof onLean === 'function' ? [onLean] : [], configurable: false, enumerable: false });
  return true;
}

/** koatty_logger's DefaultLogger as the app's koatty_core loads it, or null. */
function koattyDefaultLogger(app) {
  if (!isKoattyApp(app)) return null;
  try {
    const coreFile = findKoattyCore(app);
    if (!coreFile) return null;
    const { DefaultLogger } = createRequire(coreFile)('koatty_logger');
    return DefaultLogger ?? null;
  } catch {
    return null;
  }
}

module.exports = { installTracer, isKoattyApp, createLeanTrace, respond, koattyDefaultLogger, stats };
