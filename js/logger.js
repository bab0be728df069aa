'use strict';
// Minimal leveled logger for the JS layer: Koatty's logger when the app has one, else stderr lines.
const levels = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold = levels[process.env.KOATTY_SERVE_LOG_LEVEL] ?? levels.warn;

function write(level, message, err) {
  if (levels[level] < threshold) return;
  const line = `[koatty_serve] ${level.toUpperCase()} ${message}${err ? `: ${err && err.stack ? err.stack : err}` : ''}`;
  process.stderr.write(line + '\n');
}

module.exports = {
  setLevel(level) {
    if (levels[level] !== undefined) threshold = levels[level];
  },
  debug: (m, e) => write('debug', m, e),
  info: (m, e) => write('info', m, e),
  warn: (m, e) => write('warn', m, e),
  error: (m, e) => write('error', m, e),
};
