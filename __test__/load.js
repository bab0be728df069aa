'use strict';
// A bounded load generator for the lifecycle tests and bench/restart-under-load.js: `concurrency`
// workers each send one request after another (each on a new connection unless `send` says
// otherwise) until `durationMs` pass or stop() is called. The target is asked for at the moment
// each request starts (`send(i)` reads e.g. server.server.address().port itself), so a port change
// is followed as soon as the server reports it.
//
// Every outcome is recorded: status codes, errors by code, and latencies (with the start time, so
// a window such as "during a restart" can be cut out afterwards).

/** Error code of a failed request: err.code, else a short form of the message. */
function errorCode(err) {
  if (err && err.code) return err.code;
  const m = String(err && err.message || err);
  if (/timed out/.test(m)) return 'TIMEOUT';
  if (/stream reset|rstCode/.test(m)) return 'H2_RESET';
  return m.slice(0, 60);
}

/**
 * @param {object} o
 * @param {(i: number) => Promise<{status: number}>} o.send one request (i = sequence number)
 * @param {number} [o.concurrency=4]
 * @param {number} [o.durationMs=1000] upper bound; stop() ends it earlier
 * @param {number} [o.pauseMs=0] pause between a worker's requests
 * @param {() => any} [o.label] called as each request starts; kept as the sample's `label`
 *   (e.g. the port it targets)
 * @returns {{ done: Promise<Stats>, stop(): Promise<Stats>, stats: Stats }}
 */
function startLoad({ send, concurrency = 4, durationMs = 1000, pauseMs = 0, label }) {
  const t0 = Date.now();
  const stats = {
    sent: 0,
    ok: 0,
    statuses: {},
    errors: {},
    /** [{ start, end, ms, status?, error? }] relative to t0 */
    samples: [],
    startedAt: t0,
    durationMs: 0,
  };
  let stopped = false;
  let seq = 0;
  const deadline = t0 + durationMs;
  const worker = async () => {
    while (!stopped && Date.now() < deadline) {
      const i = seq++;
      const start = Date.now();
      stats.sent++;
      const sample = { start: start - t0 };
      if (label) sample.label = label();
      try {
        const r = await send(i);
        sample.status = r.status;
        stats.statuses[r.status] = (stats.statuses[r.status] || 0) + 1;
        if (r.status === 200) stats.ok++;
      } catch (err) {
        const code = errorCode(err);
        sample.error = code;
        stats.errors[code] = (stats.errors[code] || 0) + 1;
        // A failure can be synchronous (e.g. a closed h2 session): yield to the event loop so the
        // workers do not spin on microtasks and starve the I/O they are waiting for.
        await new Promise((r) => setImmediate(r));
      }
      sample.end = Date.now() - t0;
      sample.ms = sample.end - sample.start;
      stats.samples.push(sample);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(() => {
    stats.durationMs = Date.now() - t0;
    return stats;
  });
  return {
    stats,
    done,
    stop() {
      stopped = true;
      return done;
    },
  };
}

/** Percentile (0–100) of an array of numbers (nearest rank); NaN when empty. */
function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Failed requests: everything that is not an HTTP 200, as { count, byKind }. */
function failures(stats) {
  const byKind = { ...stats.errors };
  for (const [status, n] of Object.entries(stats.statuses)) if (status !== '200') byKind[`HTTP ${status}`] = n;
  return { count: Object.values(byKind).reduce((a, b) => a + b, 0), byKind };
}

/** A one-line summary for assertion messages. */
function describeStats(stats) {
  const f = failures(stats);
  return `sent ${stats.sent}, ok ${stats.ok}, failed ${f.count} ${JSON.stringify(f.byKind)}`;
}

module.exports = { startLoad, percentile, failures, describeStats, errorCode };
