'use strict';

// Helpers shared by the benchmark scripts (bench/run.js, bench/koatty-protocols.js,
// bench/grpc/run.js): /proc readers, load-generator plumbing, h2load parsing, child
// start/stop over the ready-line fd, statistics and Markdown output. Linux only
// (/proc). No dependencies beyond Node's standard library.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const http2 = require('http2');
const net = require('net');
const os = require('os');
const path = require('path');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// die = dieWith('bench'): print `bench: <msg>` on stderr and exit (2 unless told).
function dieWith(prefix) {
  return (msg, code = 2) => {
    console.error(`${prefix}: ${msg}`);
    process.exit(code);
  };
}

const nproc = () => (typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);

function findInPath(cmd) {
  for (const d of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(d, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

// ---------------------------------------------------------------- /proc
// utime+stime in clock ticks: fields 14 and 15 of /proc/<pid>/stat (counted
// after the parenthesised command name, which may contain spaces). For the
// process this includes every thread (also exited ones); for
// /proc/<pid>/task/<pid>/stat it is the main (JS) thread alone.
function readTicks(file) {
  const s = fs.readFileSync(file, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // f[0] is field 3 (state)
}

// proc: all threads; js: the main (JS) thread; threads: current thread count.
function readCpu(pid) {
  return { proc: readTicks(`/proc/${pid}/stat`), js: readTicks(`/proc/${pid}/task/${pid}/stat`), threads: fs.readdirSync(`/proc/${pid}/task`).length };
}

// Machine-wide busy and total jiffies from the aggregate "cpu" line of /proc/stat.
function readMachine() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  const busy = user + nice + system + irq + softirq + (steal || 0);
  return { busy, total: busy + idle + (iowait || 0) };
}

// VmHWM and VmRSS (kB, null when absent) from /proc/<pid>/status.
function readMem(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => { const m = s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')); return m ? Number(m[1]) : null; };
  return { vmHwmKB: kb('VmHWM'), vmRssKB: kb('VmRSS') };
}

// Wait (at most maxSeconds) until the machine is < 10 % of one CPU busy for a second, twice (the
// second after a random delay, so two waiting benchmarks do not start together). `waited` leaves
// out the ~3 s that even an idle machine costs; when it never got idle, notIdle is set and
// `waited` is the whole time spent.
async function waitIdle(maxSeconds, cpus = nproc()) {
  const t0 = Date.now();
  const sample = async () => {
    const a = readMachine();
    await sleep(1000);
    const b = readMachine();
    return (b.busy - a.busy) / Math.max(1, b.total - a.total) * cpus * 100;
  };
  let busy;
  for (;;) {
    busy = await sample();
    if (busy < 10) {
      await sleep(Math.random() * 2000);
      busy = await sample();
      if (busy < 10) return { waited: Math.max(0, (Date.now() - t0) / 1000 - 3), busy };
    }
    if ((Date.now() - t0) / 1000 >= maxSeconds) return { waited: (Date.now() - t0) / 1000, busy, notIdle: true };
  }
}

// ---------------------------------------------------------------- load generators
// Runs a load generator through bash (when `bash` is given), whose `times` builtin
// reports the generator's own user+sys CPU (cpuSeconds; null without bash). Resolves
// with the exit code whatever it is; rejects only when the process cannot start.
function runTool(toolPath, args, bash = 'bash') {
  const cmd = bash || toolPath;
  const cmdArgs = bash ? ['-c', '"$0" "$@"; rc=$?; times >&2; exit $rc', toolPath, ...args] : args;
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      let cpuSeconds = null;
      const t = bash && err.trim().match(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/);
      if (t) cpuSeconds = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]);
      resolve({ code, out, err, cpuSeconds });
    });
  });
}

function toMs(value, unit) {
  const v = Number(value);
  switch (unit) {
    case 'us': return v / 1000;
    case 'ms': return v;
    case 's': return v * 1000;
    case 'm': return v * 60000;
    case 'h': return v * 3600000;
    default: return NaN;
  }
}

// h2load's summary, as printed: how long, req/s, the request counts (req, null when the line is
// missing), the status-code counts, mean/max/sd of "time for request", ALPN and TLS. What counts
// as an error is the caller's choice.
function parseH2load(out) {
  const r = {};
  let m = out.match(/finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req\/s/);
  r.loadSeconds = m ? toMs(m[1], m[2]) / 1000 : null;
  r.reqPerSec = m ? Number(m[3]) : null;
  m = out.match(/requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/);
  r.requests = m ? Number(m[3]) : null;
  r.req = m ? { total: +m[1], started: +m[2], done: +m[3], succeeded: +m[4], failed: +m[5], errored: +m[6], timeout: +m[7] } : null;
  m = out.match(/status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/);
  r.codes = m ? { s2xx: +m[1], s3xx: +m[2], s4xx: +m[3], s5xx: +m[4] } : { s2xx: 0, s3xx: 0, s4xx: 0, s5xx: 0 };
  // "time for request:  min  max  mean  sd  +/- sd"
  m = out.match(/time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/);
  r.latencyAvgMs = m ? toMs(m[5], m[6]) : null;
  r.latencyMaxMs = m ? toMs(m[3], m[4]) : null;
  r.latencySdMs = m ? toMs(m[7], m[8]) : null;
  m = out.match(/^Application protocol: (\S+)/m);
  r.alpn = m ? m[1] : null;
  m = out.match(/^TLS Protocol: (\S+)/m);
  r.tlsProtocol = m ? m[1] : null;
  m = out.match(/^Cipher: (\S+)/m);
  r.cipher = m ? m[1] : null;
  return r;
}

// Percentiles from h2load's --log-file (one line per request: start time µs,
// status, duration µs).
function logPercentiles(file) {
  let text;
  try { text = fs.readFileSync(file, 'latin1'); } catch { return null; }
  const lines = text.split('\n');
  const d = new Float64Array(lines.length);
  let n = 0;
  for (const line of lines) {
    const t2 = line.lastIndexOf('\t');
    if (t2 < 0) continue;
    const v = Number(line.slice(t2 + 1));
    if (Number.isFinite(v)) d[n++] = v;
  }
  if (!n) return null;
  const a = d.subarray(0, n).sort();
  const q = (p) => a[Math.min(n - 1, Math.ceil(p * n) - 1)] / 1000;
  return { n, p50Ms: q(0.5), p75Ms: q(0.75), p90Ms: q(0.9), p99Ms: q(0.99) };
}

// ---------------------------------------------------------------- children
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Starts `node <args>` with stdout+stderr to logFile and fd 3 a pipe on which the child writes one
// JSON line when it listens. ready: that line parsed (rejects after 30 s, on a bad line or on exit).
function startReadyChild(args, { cwd, env, logFile }) {
  const fd = fs.openSync(logFile, 'w');
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', fd, fd, 'pipe'] });
  fs.closeSync(fd);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('not ready after 30 s')), 30000);
    child.stdio[3].on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try { resolve(JSON.parse(buf.slice(0, nl))); } catch { reject(new Error(`bad ready line: ${buf.slice(0, nl)}`)); }
    });
    child.stdio[3].on('error', () => {});
    exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`exited before ready (code ${code}, signal ${signal})`)); });
  });
  return { child, ready, exited };
}

// SIGTERM a child from startReadyChild; SIGKILL if it has not exited after graceMs.
async function stopChild(h, graceMs) {
  if (h.child.exitCode === null && h.child.signalCode === null) {
    try { process.kill(h.child.pid, 'SIGTERM'); } catch { /* gone */ }
    if (await Promise.race([h.exited.then(() => 'exited'), sleep(graceMs).then(() => 'timeout')]) === 'timeout') {
      try { process.kill(h.child.pid, 'SIGKILL'); } catch { /* gone */ }
      await h.exited;
    }
  }
}

// GET / over HTTP/2 with TLS (ca: the PEM to trust): { status, headers (without :status), body, tls }.
function getOnceH2(port, ca) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca });
    const timer = setTimeout(() => { session.destroy(); reject(new Error('timeout')); }, 5000);
    const done = (err, v) => { clearTimeout(timer); session.close(); if (err) reject(err); else resolve(v); };
    session.on('error', (e) => done(e));
    const req = session.request({ ':path': '/', ':method': 'GET' });
    let headers = {};
    let body = '';
    req.setEncoding('utf8');
    req.on('response', (h) => { headers = h; });
    req.on('data', (d) => { body += d; });
    req.on('close', () => {
      if (!headers[':status']) done(new Error(`stream closed without a response (rstCode ${req.rstCode})`));
    });
    req.on('end', () => {
      const sock = session.socket;
      const tlsInfo = sock ? { protocol: sock.getProtocol(), cipher: sock.getCipher().name, alpn: session.alpnProtocol } : { alpn: session.alpnProtocol };
      const { ':status': status, ...rest } = headers;
      done(null, { status, headers: rest, body, tls: tlsInfo });
    });
    req.on('error', (e) => done(e));
    req.end();
  });
}

// ---------------------------------------------------------------- stats and output
// Nulls and non-finite values are left out.
function median(xs) {
  const a = xs.filter((x) => x != null && Number.isFinite(x)).sort((p, q) => p - q);
  if (!a.length) return null;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}
function spread(xs) {
  const a = xs.filter((x) => x != null && Number.isFinite(x));
  return a.length ? { min: Math.min(...a), max: Math.max(...a) } : null;
}
// n counts the finite values, or (countNonFinite) every non-null one.
function stat(xs, { countNonFinite = false } = {}) {
  return { median: median(xs), ...(spread(xs) || { min: null, max: null }), n: xs.filter((x) => x != null && (countNonFinite || Number.isFinite(x))).length };
}

function fmt(x, d = 0) {
  if (x == null || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

// A Markdown table; pad: columns padded to a common width.
function table(header, rows, { pad = false } = {}) {
  if (!pad) return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(w[i])).join(' | ')} |`;
  return [line(header), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

// "commit <short> [+ uncommitted changes in N source files]"; null when git fails.
function gitState(root) {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  if (head.status !== 0) return null;
  const st = spawnSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src', 'crates', 'js', 'index.js', 'Cargo.toml', 'Cargo.lock'], { cwd: root, encoding: 'utf8' });
  const dirty = (st.stdout || '').trim().split('\n').filter(Boolean).length;
  return `commit ${head.stdout.trim()}${dirty ? ` + uncommitted changes in ${dirty} source file${dirty > 1 ? 's' : ''}` : ''}`;
}

module.exports = {
  sleep, dieWith, nproc, findInPath,
  readTicks, readCpu, readMachine, readMem, waitIdle,
  runTool, toMs, parseH2load, logPercentiles,
  freePort, startReadyChild, stopChild, getOnceH2,
  median, spread, stat, fmt, table, gitState,
};
