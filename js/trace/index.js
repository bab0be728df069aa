'use strict';
// Trace, behind one boundary (docs/TRACE.md). In native trace mode the server is Koatty's tracer:
// ./koatty.js finds koatty_trace in a Koatty app and puts ./emulation.js's middleware in its place
// (its access lines: ./access-log.js). This module connects a server to them. The request path sees
// `bridge.trace` (null when off) and each response's `_trace` hook (null when off), nothing else.
const { installTracer, isKoattyApp, koattyDefaultLogger } = require('./koatty');
const { createLeanTrace, respond, stats, NativeTrace } = require('./emulation');

/** `X-Request-Id: <req.traceId>`; an id that is no valid header value is replaced by a new UUID. */
function echoTraceId(req, res) {
  try {
    res.setHeader('X-Request-Id', req.traceId);
  } catch {
    req._replaceTraceId();
    res.setHeader('X-Request-Id', req.traceId);
  }
}

/** `trace: true` on an app that is not traced natively: every response echoes `X-Request-Id`. */
const ECHO = {
  request(req, res) {
    echoTraceId(req, res);
  },
  upgrade() {},
  // The server's 500 cleared every header.
  failed(req, res) {
    echoTraceId(req, res);
  },
};

/**
 * A server's `trace` option (`enabled`). On a Koatty app it installs the server's tracer instead
 * of koatty_trace (app.tracer is defined now, before any app.callback()), for good; once the
 * tracer has read the app's config (first app.callback()), request ids, the trace headers and the
 * http_timeout timer come from the native side (`bridge.trace` is a NativeTrace). On another app
 * it echoes X-Request-Id, and may change at run time: the returned function takes the new value.
 */
function traceServer(app, bridge, native, enabled) {
  const traced = enabled && installTracer(app, (headerName, idName, timeoutMs) => {
    bridge.trace = new NativeTrace(headerName);
    native.setTrace(headerName, idName, timeoutMs);
  });
  const setEnabled = (on) => {
    if (!traced) bridge.trace = on ? ECHO : null;
  };
  setEnabled(enabled);
  return setEnabled;
}

module.exports = { traceServer, installTracer, isKoattyApp, createLeanTrace, respond, koattyDefaultLogger, stats };
