'use strict';
// The library's logger, for its JavaScript messages and for the native core's events (tracing in
// Rust, forwarded through setNativeLogger): Koatty's logger (koatty_logger's DefaultLogger) when a
// Koatty app is served, else one JSON line per record on stderr.
// Level: `setLevel()` / `KOATTY_SERVE_LOG_LEVEL` (off, error, warn, info, debug, trace; Koatty's
// `warning` = warn); default warn.
const { invalidConfig } = require('./config');

const LEVELS = { off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5 };
const KOATTY_METHOD = { error: 'Error', warn: 'Warn', info: 'Info', debug: 'Debug', trace: 'Debug' };

function levelOf(name) {
  const key = String(name ?? '').trim().toLowerCase();
  return key === 'warning' ? 'warn' : key;
}

let levelName = LEVELS[levelOf(process.env.KOATTY_SERVE_LOG_LEVEL)] !== undefined ? levelOf(process.env.KOATTY_SERVE_LOG_LEVEL) : 'warn';
let threshold = LEVELS[levelName];
/** koatty_logger's DefaultLogger of the served app, once known. */
let koattyLogger = null;
let nativeBinding = null;

function write(level, message, { err, target, fields } = {}) {
  if (LEVELS[level] > threshold) return;
  if (koattyLogger) {
    const text = `[koatty_serve]${target ? ` ${target}:` : ''} ${message}${fields ? ` ${fields}` : ''}${err ? ` ${err && err.stack ? err.stack : err}` : ''}`;
    try {
      koattyLogger[KOATTY_METHOD[level]](text);
      return;
    } catch {
      // fall through to stderr
    }
  }
  const record = { time: new Date().toISOString(), level, name: 'koatty_serve', msg: message };
  if (target) record.target = target;
  if (fields) record.fields = fields;
  if (err !== undefined) record.error = err && err.stack ? err.stack : String(err);
  process.stderr.write(`${JSON.stringify(record)}\n`);
}

/** The native core's records: `(level, target, message, fields)`, level in tracing's capitals. */
function fromNative(level, target, message, fields) {
  write(level.toLowerCase(), message, { target, fields: fields || undefined });
}

/**
 * Starts forwarding the native core's events (once per process; later calls only re-apply the
 * level). Called when the first server is constructed, so a bare `require` installs nothing.
 */
function forwardNative(binding) {
  if (nativeBinding) return;
  nativeBinding = binding;
  binding.setNativeLogger(levelName, fromNative);
}

/** Sets the level for JavaScript and native records alike; throws ERR_INVALID_CONFIG on a bad name. */
function setLevel(level) {
  const name = levelOf(level);
  if (LEVELS[name] === undefined) {
    throw invalidConfig('logLevel', `'${level}' (expected off, error, warn, info, debug or trace)`);
  }
  levelName = name;
  threshold = LEVELS[name];
  if (nativeBinding) nativeBinding.setNativeLogLevel(name);
}

/** Writes through Koatty's logger from now on (koatty_logger's DefaultLogger, or null for stderr). */
function useKoattyLogger(defaultLogger) {
  koattyLogger = defaultLogger && typeof defaultLogger.Error === 'function' ? defaultLogger : null;
}

module.exports = {
  setLevel,
  getLevel: () => levelName,
  forwardNative,
  useKoattyLogger,
  debug: (m, e) => write('debug', m, { err: e }),
  info: (m, e) => write('info', m, { err: e }),
  warn: (m, e) => write('warn', m, { err: e }),
  error: (m, e) => write('error', m, { err: e }),
};
