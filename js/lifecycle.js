'use strict';
// The parts of the shared lifecycle that are sequencing rather than I/O: the five named shutdown
// steps and config hot reload. Each step awaits one native primitive (crates/core/src/host.rs); waiting is
// done on the native side's notifications, never by polling.
const { randomUUID } = require('node:crypto');
const { isDeepStrictEqual } = require('node:util');
const logger = require('./logger');
const { invalidConfig } = require('./config');
const { flushWakesNow } = require('./wakes');

const SHUTDOWN_STEPS = [
  'stopAcceptingNewConnections',
  'waitDrainDelay',
  'waitForConnectionCompletion',
  'forceCloseRemainingConnections',
  'stopMonitoringAndCleanup',
];
const SHUTDOWN_DEFAULTS = { timeout: 30000, drainDelay: 5000, stepTimeout: 6000, skipSteps: [] };
/** A step bounded elsewhere (by its native timeout); setTimeout's largest delay. */
const UNBOUNDED = 2 ** 31 - 1;

function shutdownOptions(options) {
  const opts = { ...SHUTDOWN_DEFAULTS, ...options };
  for (const key of ['timeout', 'drainDelay', 'stepTimeout']) {
    const v = opts[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw invalidConfig(key, `must be a non-negative number of ms, got ${v}`);
  }
  if (!Array.isArray(opts.skipSteps)) throw invalidConfig('skipSteps', 'must be an array of step names');
  for (const name of opts.skipSteps) {
    if (!SHUTDOWN_STEPS.includes(name)) throw invalidConfig('skipSteps', `unknown step '${name}' (steps: ${SHUTDOWN_STEPS.join(', ')})`);
  }
  return opts;
}

/** Resolves with what `start()`'s promise resolves, or with `undefined` once `ms` pass (timer cleared). */
function within(ms, start) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    start().then((value) => {
      clearTimeout(timer);
      resolve(value);
    }, (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * The seed's five steps, each bounded: 1, 4 and 5 by `stepTimeout`, 2 lasts `drainDelay` (ending
 * early once no connection is open: nothing is left that a load balancer could still route to us),
 * 3 waits for in-flight work up to what is left of `timeout`, which bounds the whole.
 */
async function runShutdown(server, native, options) {
  const opts = shutdownOptions(options);
  const traceId = randomUUID();
  const started = Date.now();
  const deadline = started + opts.timeout;
  const left = () => Math.max(0, deadline - Date.now());
  const report = { traceId, steps: [], connectionsAtStart: 0, drained: true, forced: 0, duration: 0 };
  server.status = 503;

  // Steps 1, 4 and 5 are bounded by stepTimeout alone (even once `timeout` is spent: forcing and
  // releasing must still happen); 2 and 3 by the native side's own timeout.
  const step = async (name, bound, body, verdict = () => 'completed') => {
    // Answers held for the end of this turn go out before the step acts (js/wakes.js).
    flushWakesNow();
    const t0 = Date.now();
    if (opts.skipSteps.includes(name)) {
      report.steps.push({ name, status: 'skipped', duration: 0 });
      logger.info(`[shutdown ${traceId}] ${name} skipped`);
      return;
    }
    const result = await within(bound, body);
    const status = result === undefined ? 'timeout' : verdict(result);
    report.steps.push({ name, status, duration: Date.now() - t0 });
    logger.info(`[shutdown ${traceId}] ${name} ${status} in ${Date.now() - t0} ms`);
    return result;
  };

  report.connectionsAtStart = JSON.parse(native.metricsJson()).activeConnections;
  // WebSockets get their close frame (1001) in step 1 unless kept open through the drain delay:
  // from now on a send fails (ERR_WS_NOT_OPEN), as after ws's close(), instead of being queued
  // behind a close frame it cannot follow.
  if (server.options?.connectionPool?.protocolSpecific?.keepOpenDuringDrainDelay !== true) server._bridge.webSocketsClosing();
  // Each native step resolves `true`/an outcome (never undefined: that means the step timed out).
  await step('stopAcceptingNewConnections', opts.stepTimeout, () => native.stopAccepting().then(() => true));
  // Steps 2 and 3 are bounded on the native side (their own timeout argument).
  await step('waitDrainDelay', UNBOUNDED, () => native.waitIdle(Math.min(opts.drainDelay, left())));
  const drained = await step('waitForConnectionCompletion', UNBOUNDED, () => native.drain(left()), (r) => (r.drained ? 'completed' : 'timeout'));
  if (drained) report.drained = drained.drained;
  const forced = await step('forceCloseRemainingConnections', opts.stepTimeout, () => native.forceClose(Math.min(opts.stepTimeout, 1000)));
  if (forced !== undefined) {
    report.forced = forced;
    if (forced > 0) report.drained = false;
  }
  await step('stopMonitoringAndCleanup', opts.stepTimeout, () => {
    native.release();
    return Promise.resolve(true);
  });
  report.duration = Date.now() - started;
  return report;
}

// --- config hot reload --------------------------------------------------------------------------

/** Keys whose change needs a new listener. Everything else applies in place. */
const RESTART_KEYS = ['hostname', 'port', 'protocol', 'h2c', 'reusePort', 'nativeEndpoints'];
/** ssl keys that a running server swaps in place (new handshakes only); the rest restart. */
const SSL_IN_PLACE = ['ssl.key', 'ssl.cert', 'ssl.passphrase'];

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function merge(base, patch) {
  const out = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    out[k] = isPlainObject(v) && isPlainObject(base[k]) ? merge(base[k], v) : v;
  }
  return out;
}

function changedKeys(before, after, prefix = '') {
  const keys = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  const out = [];
  for (const k of keys) {
    const path = prefix ? `${prefix}.${k}` : k;
    const a = before?.[k];
    const b = after?.[k];
    // Recurse into groups (also one present on one side only), so keys are reported by their
    // full path and classified one by one.
    if ((isPlainObject(a) || isPlainObject(b)) && (isPlainObject(a) || a === undefined) && (isPlainObject(b) || b === undefined) && k !== 'ext') {
      out.push(...changedKeys(a ?? {}, b ?? {}, path));
    } else if (!isDeepStrictEqual(a, b)) out.push(path);
  }
  return out;
}

function needsRestart(path) {
  if (path === 'ext' || path.startsWith('ext.')) return false;
  if (path === 'ssl' || path.startsWith('ssl.')) return !SSL_IN_PLACE.includes(path);
  return RESTART_KEYS.some((k) => path === k || path.startsWith(`${k}.`));
}

/** What a change of options means: `{ next, changedKeys, requiresRestart }`. */
function analyzeConfigChanges(current, partial) {
  if (!isPlainObject(partial)) throw invalidConfig('config', 'updateConfig expects an object of options');
  const next = merge(current, partial);
  const keys = changedKeys(current, next);
  return { next, changedKeys: keys, requiresRestart: keys.some(needsRestart) };
}

module.exports = { SHUTDOWN_STEPS, runShutdown, shutdownOptions, analyzeConfigChanges, isPlainObject };
