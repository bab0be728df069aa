'use strict';
// Native trace mode's access lines: what koatty_trace hands to koatty_logger's DefaultLogger,
// written without winston's pipeline when that changes nothing (from koatty_logger's live state),
// natively formatted when the native writer can take the line.
const { createRequire } = require('node:module');

let binding = null;
try {
  binding = require('../binding');
} catch {
  // no addon (only js/ unit use): access lines are written from JavaScript
}

const LEVELS = { debug: 7, info: 6, warning: 4, error: 3 };

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
 * Lines written natively are counted in `stats.nativeLines`.
 */
function createAccessLog(L, loggerFile, stats) {
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

module.exports = { createAccessLog, DROP, CALL, DIRECT };
