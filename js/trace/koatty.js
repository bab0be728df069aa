'use strict';
// Native trace mode's side of Koatty's internals: finding the app's koatty_core / koatty_trace /
// koatty_logger, reading the app's trace config, and putting the server's tracer
// (./emulation.js) where koatty_core would have put koatty_trace, so that koatty_core 1.11.x never
// inserts koatty_trace.
//
// koatty_core's `app.callback()` unshifts koatty_trace's middleware unless `app.tracer` is truthy.
// `installTracer` defines `app.tracer` as a getter when the server is constructed (NewServe runs
// before any `app.callback()`); the getter's first read — koatty_core's check in the first
// `app.callback()` — reads the config, looks the @ExceptionHandler class up and unshifts the lean
// middleware at `app.middleware[0]`, exactly when and where koatty_core would have put
// koatty_trace's. With `open_trace` or `async_hooks` (or option values koatty_trace would choke
// on) the original `Trace()` is installed instead, so those apps see koatty_trace itself.
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');
const logger = require('../logger');
const { createLeanTrace } = require('./emulation');

const kInstalled = Symbol.for('koatty_serve.tracer');
// Servers of the app waiting for the lean tracer's config (to switch their native side on).
const kOnLean = Symbol('koattyServe.onLeanTracer');

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
        middleware = createLeanTrace(app, mods, cfg, (headerName, idName, timeoutMs) => {
          for (const onLean of app[kOnLean] || []) onLean(headerName, idName, timeoutMs);
        });
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

module.exports = { installTracer, isKoattyApp, koattyDefaultLogger };
