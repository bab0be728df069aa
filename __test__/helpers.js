'use strict';
// Shared helpers for the node tests: run the Koatty fixture app in a child process
// (decisions.md §3), talk to it over IPC, and make HTTP requests with node's own client.
const { spawn } = require('child_process');
const http = require('http');
const http2 = require('http2');
const https = require('https');
const net = require('net');
const path = require('path');

const REPO_ROOT = path.join(__dirname, '..');
const KOATTY_APP_DIR = path.join(__dirname, 'fixtures', 'koatty-app');
const KOATTY_APP_MAIN = path.join(KOATTY_APP_DIR, 'main.js');

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

function tail(text, max = 4000) {
  return text.length > max ? '…' + text.slice(-max) : text;
}

function spawnApp({ port = 0, env = {} } = {}) {
  const child = spawn(process.execPath, [KOATTY_APP_MAIN], {
    cwd: KOATTY_APP_DIR,
    env: {
      ...process.env,
      NODE_ENV: 'production',
      PORT: String(port),
      ...env,
    },
    stdio: ['pipe', 'pipe', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  children.add(child);
  const out = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => { out.stdout += d; });
  child.stderr.on('data', (d) => { out.stderr += d; });
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  return { child, out, exited };
}

function describeOutput(out) {
  return `--- child stdout ---\n${tail(out.stdout)}\n--- child stderr ---\n${tail(out.stderr)}`;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Boot the Koatty fixture app in a child process and wait for its `{"event":"listening"}` line.
 * Resolves with a handle: { child, port, info, metrics(), ipc(cmd), stop(), output() }.
 */
async function startKoattyApp({ port = 0, env = {}, timeoutMs = 30000 } = {}) {
  const { child, out, exited } = spawnApp({ port, env });
  let info;
  try {
    info = await new Promise((resolve, reject) => {
      let buffered = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`Koatty app did not report listening within ${timeoutMs} ms\n${describeOutput(out)}`));
      }, timeoutMs);
      const onData = (d) => {
        buffered += d;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line.startsWith('{"event":"listening"')) continue;
          clearTimeout(timer);
          child.stdout.off('data', onData);
          try {
            resolve(JSON.parse(line));
          } catch (err) {
            reject(new Error(`bad listening line ${line}: ${err.message}`));
          }
          return;
        }
      };
      child.stdout.on('data', onData);
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`Koatty app exited before listening (code ${code}, signal ${signal})\n${describeOutput(out)}`));
      });
    });
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw err;
  }
  if (info.error || !Number.isInteger(info.port) || info.port <= 0) {
    child.kill('SIGKILL');
    throw new Error(`Koatty app reported a bad listening line ${JSON.stringify(info)}\n${describeOutput(out)}`);
  }

  let nextId = 1;
  const pending = new Map();
  child.on('message', (msg) => {
    const entry = msg && pending.get(msg.id);
    if (!entry) return;
    pending.delete(msg.id);
    if (msg.error) entry.reject(new Error(`app IPC error: ${msg.error}`));
    else entry.resolve(msg);
  });

  function ipc(cmd, timeout = 3000) {
    const id = nextId++;
    return withTimeout(new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      child.send({ cmd, id }, (err) => {
        if (err) { pending.delete(id); reject(err); }
      });
    }), timeout, `IPC ${cmd}`).finally(() => pending.delete(id));
  }

  let stopped = null;
  /** SIGTERM (Koatty's terminus → Stop → exit 0 in production); SIGKILL after `graceMs`. */
  function stop(graceMs = 8000) {
    if (stopped) return stopped;
    stopped = (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      let timer;
      const killed = new Promise((resolve) => {
        timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, graceMs);
      });
      await Promise.race([exited, killed]);
      clearTimeout(timer);
      const result = await exited;
      return { ...result, forced: result.signal === 'SIGKILL' };
    })();
    return stopped;
  }

  return {
    child,
    info,
    port: info.port,
    exited,
    ipc,
    /** `{ metrics: getMetrics() result, counters: app-side counters }` */
    metrics: () => ipc('metrics'),
    stop,
    output: () => describeOutput(out),
  };
}

/** Run the Koatty app expecting it to exit by itself; resolves { code, signal, stdout, stderr }. */
async function runKoattyAppToExit({ port = 0, env = {}, timeoutMs = 30000 } = {}) {
  const { child, out, exited } = spawnApp({ port, env });
  let timer;
  const result = await Promise.race([
    exited,
    new Promise((resolve) => {
      timer = setTimeout(() => { child.kill('SIGKILL'); resolve({ code: null, signal: 'SIGKILL', timedOut: true }); }, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  return { ...result, stdout: out.stdout, stderr: out.stderr, output: describeOutput(out) };
}

/** An http.Agent with keep-alive on (defaults: one socket, so requests reuse it). */
function keepAliveAgent(options = {}) {
  return new http.Agent({ keepAlive: true, maxSockets: 1, ...options });
}

/**
 * One HTTP request with node's http client. Resolves with
 * { status, statusMessage, headers, rawHeaders, body (Buffer), text(), json(), reusedSocket, localPort }.
 * `body` may be a Buffer/string (sent with Content-Length) or an array of chunks (sent chunked).
 * Without `agent` each request gets its own connection (node 20's global agent keeps sockets alive,
 * which would make tests depend on one another); pass `keepAliveAgent()` to reuse connections.
 */
function request(options = {}) {
  return sendRequest(http, options, null);
}

/**
 * Like `request`, over TLS with node's https client. `tls` holds tls.connect options (ca, cert, key,
 * minVersion, maxVersion, ciphers, ALPNProtocols, rejectUnauthorized, servername, …). The result also
 * has `tls`: { protocol, cipher, alpnProtocol, authorized, peerCertificate } read from the client socket.
 */
function httpsRequest({ tls = {}, ...options } = {}) {
  return sendRequest(https, options, tls);
}

function tlsInfo(socket) {
  if (!socket || typeof socket.getProtocol !== 'function') return null;
  return {
    protocol: socket.getProtocol(),
    cipher: socket.getCipher(),
    alpnProtocol: socket.alpnProtocol,
    authorized: socket.authorized,
    peerCertificate: socket.getPeerCertificate(),
  };
}

function sendRequest(mod, { port, host = '127.0.0.1', method = 'GET', path: p = '/', headers = {}, body, agent = false, timeout = 15000 } = {}, tls) {
  return new Promise((resolve, reject) => {
    const hdrs = { ...headers };
    if (body !== undefined && !Array.isArray(body) && !Object.keys(hdrs).some((h) => h.toLowerCase() === 'content-length')) {
      hdrs['Content-Length'] = Buffer.byteLength(body);
    }
    const req = mod.request({ ...(tls || {}), host, port, method, path: p, headers: hdrs, agent }, (res) => {
      const tlsState = tls ? tlsInfo(res.socket) : undefined;
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        resolve({
          status: res.statusCode,
          statusMessage: res.statusMessage,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          httpVersion: res.httpVersion,
          body: buf,
          text: () => buf.toString('utf8'),
          json: () => {
            try { return JSON.parse(buf.toString('utf8')); } catch (err) {
              throw new Error(`response is not JSON (${res.statusCode}): ${buf.toString('utf8').slice(0, 300)}`);
            }
          },
          reusedSocket: req.reusedSocket,
          localPort: res.socket && res.socket.localPort,
          ...(tls ? { tls: tlsState } : {}),
        });
      });
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`request ${method} ${p} timed out after ${timeout} ms`)));
    req.on('error', reject);
    if (Array.isArray(body)) {
      for (const c of body) req.write(c);
      req.end();
    } else {
      req.end(body);
    }
  });
}

/** Poll `fn` until `predicate(value)` holds or `timeoutMs` passes; resolves with the last value. */
async function pollUntil(fn, predicate, { timeoutMs = 5000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value = await fn();
  while (!predicate(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, intervalMs));
    value = await fn();
  }
  return value;
}

/** A plain TCP server holding a port on 127.0.0.1 (for bind-error tests). */
function occupyPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => s.destroy());
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      resolve({ port: srv.address().port, close: () => new Promise((r) => srv.close(() => r())) });
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------
// HTTP/2 client helpers (node's http2 client)

/** `http2.connect(authority, options)`, resolved once connected (rejects on an early error). */
function h2connect(authority, options = {}, timeoutMs = 10000) {
  return withTimeout(new Promise((resolve, reject) => {
    const session = http2.connect(authority, options);
    const onError = (err) => { session.destroy(); reject(err); };
    session.once('error', onError);
    session.once('connect', () => {
      session.off('error', onError);
      session.on('error', () => {}); // later session errors surface on the streams
      resolve(session);
    });
  }), timeoutMs, `http2.connect ${authority}`);
}

/** Close an h2 session and wait for it (destroys it after `ms`). */
function h2close(session, ms = 3000) {
  if (!session || session.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { session.destroy(); resolve(); }, ms);
    session.close(() => { clearTimeout(timer); resolve(); });
  });
}

/**
 * One request on an h2 session. Resolves with { status, headers, body (Buffer), text(), json(), stream }.
 * `body`: Buffer/string (sent with content-length unless `contentLength: false`) or an array of chunks
 * (no content-length). `headers` are extra request headers (lower-case names).
 */
function h2request(session, { method = 'GET', path: p = '/', headers = {}, body, contentLength = true, timeout = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const hdrs = { ':method': method, ':path': p, ...headers };
    const hasBody = body !== undefined;
    if (hasBody && !Array.isArray(body) && contentLength && hdrs['content-length'] === undefined) {
      hdrs['content-length'] = String(Buffer.byteLength(body));
    }
    let stream;
    try {
      stream = session.request(hdrs, { endStream: !hasBody });
    } catch (err) {
      reject(err);
      return;
    }
    let responseHeaders = null;
    const chunks = [];
    stream.setTimeout(timeout, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on('response', (h) => { responseHeaders = h; });
    stream.on('data', (c) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => {
      const buf = Buffer.concat(chunks);
      if (!responseHeaders) { reject(new Error(`h2 ${method} ${p}: stream ended without response headers`)); return; }
      resolve({
        status: responseHeaders[':status'],
        headers: responseHeaders,
        body: buf,
        text: () => buf.toString('utf8'),
        json: () => {
          try { return JSON.parse(buf.toString('utf8')); } catch (err) {
            throw new Error(`response is not JSON (${responseHeaders[':status']}): ${buf.toString('utf8').slice(0, 300)}`);
          }
        },
        stream,
      });
    });
    stream.on('close', () => {
      if (!responseHeaders) reject(new Error(`h2 ${method} ${p}: stream closed (rstCode ${stream.rstCode}) before a response`));
      else if (stream.rstCode && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
        reject(new Error(`h2 ${method} ${p}: stream reset with code ${stream.rstCode}`));
      }
    });
    if (hasBody) {
      if (Array.isArray(body)) {
        for (const c of body) stream.write(c);
        stream.end();
      } else {
        stream.end(body);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Raw sockets and external tools

/**
 * A raw TCP connection that writes `send` (if any) and records when and how the peer closed it.
 * Returns { socket, connected (Promise), closed (Promise<{ ms, bytes, data }>), destroy() }, `ms`
 * counting from the connection.
 */
function rawConnection({ port, host = '127.0.0.1', send } = {}) {
  const socket = net.connect({ port, host });
  const chunks = [];
  let t0 = Date.now();
  const connected = new Promise((resolve, reject) => {
    socket.once('connect', () => { t0 = Date.now(); if (send !== undefined) socket.write(send); resolve(); });
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  socket.on('data', (d) => chunks.push(d));
  const closed = new Promise((resolve) => {
    socket.once('close', () => {
      const data = Buffer.concat(chunks);
      resolve({ ms: Date.now() - t0, bytes: data.length, data });
    });
  });
  return { socket, connected, closed, destroy: () => socket.destroy() };
}

/** Run a program asynchronously (never execFileSync here: in-process servers need the event loop). */
function runProgram(file, args, { timeoutMs = 30000, input } = {}) {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); resolve({ code: null, error: err, stdout, stderr }); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Whether `file` is on PATH (and runs with `args`); `{ ok, output }`. */
function probeProgram(file, args = ['--version']) {
  const { spawnSync } = require('child_process');
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 10000 });
  if (r.error) return { ok: false, output: '' };
  return { ok: true, output: `${r.stdout}${r.stderr}` };
}

/**
 * After the calling file's (or suite's) last test: if the process is still alive 5 s later, a
 * handle was kept open after Stop — say so and fail the run instead of hanging it.
 */
function failIfKeptAlive(file) {
  const { after } = require('node:test');
  after(() => {
    setTimeout(() => {
      console.error(`${path.basename(file)}: process still alive 5 s after the last test; a handle is kept open after Stop`);
      process.exit(1);
    }, 5000).unref();
  });
}

module.exports = {
  REPO_ROOT,
  KOATTY_APP_DIR,
  startKoattyApp,
  runKoattyAppToExit,
  keepAliveAgent,
  request,
  httpsRequest,
  h2connect,
  h2close,
  h2request,
  rawConnection,
  runProgram,
  probeProgram,
  pollUntil,
  occupyPort,
  withTimeout,
  sleep,
  failIfKeptAlive,
};
