'use strict';
// Signal handling for the NewServe path, keeping koatty_serve 2.3.0's observable sequence
// (koatty-contract.md §1.6) without its defects: listeners are removed once the server has stopped,
// a throwing appStop hook is logged and the sequence goes on, and a second signal forces the exit.
const logger = require('./logger');

/** Moves every listener of `originEventName` on `event` to `process` (`targetEventName`). */
function BindProcessEvent(event, originEventName, targetEventName = 'beforeExit') {
  for (const listener of event.listeners(originEventName)) {
    if (typeof listener === 'function') process.addListener(targetEventName, listener);
  }
  event.removeAllListeners(originEventName);
}

async function runBeforeExitHooks() {
  for (const hook of process.listeners('beforeExit')) {
    try {
      await hook();
    } catch (err) {
      logger.error('appStop hook failed', err);
    }
  }
  process.removeAllListeners('beforeExit');
}

let shuttingDown = false;

async function onSignal(event, server, forceTimeout) {
  if (shuttingDown) {
    logger.warn(`Received ${event} again, exiting now`);
    process.exit(1);
  }
  shuttingDown = true;
  logger.warn(`Received kill signal (${event}), shutting down...`);
  server.status = 503;
  await runBeforeExitHooks();
  const env = process.env.NODE_ENV;
  if (!env || env === 'development') process.exit(0);
  const timer = setTimeout(() => {
    logger.error('Could not close connections in time, forcefully shutting down');
    process.exit(1);
  }, forceTimeout);
  server.Stop(() => {
    clearTimeout(timer);
    logger.warn('Closed out remaining connections');
    process.exit(0);
  });
}

/**
 * Installs SIGINT/SIGTERM handlers that stop `server`; they are removed when it has stopped, and
 * installed again when it listens again (Start() after a Stop()). The function returned removes
 * them for good.
 */
function CreateTerminus(server, options) {
  const opts = { signals: ['SIGINT', 'SIGTERM'], timeout: 60000, onSignal, ...options };
  let installed = [];
  let disposed = false;
  const install = () => {
    if (disposed || installed.length > 0) return;
    installed = opts.signals.map((signal) => {
      const handler = () => {
        Promise.resolve(opts.onSignal(signal, server, opts.timeout)).catch((err) => logger.error('shutdown failed', err));
      };
      process.on(signal, handler);
      return [signal, handler];
    });
  };
  const remove = () => {
    for (const [signal, handler] of installed) process.removeListener(signal, handler);
    installed = [];
  };
  install();
  if (server && typeof server.on === 'function') {
    server.on('stopped', remove);
    server.on('listening', install);
  }
  return () => {
    disposed = true;
    remove();
  };
}

module.exports = { CreateTerminus, BindProcessEvent };
