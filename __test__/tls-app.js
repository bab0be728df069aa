'use strict';
// A fake app (an object whose callback() returns a (req, res) handler) shared by https.test.js and
// http2.test.js, plus Start/Stop helpers. The handler reads only the node http / http2-compat request
// and response APIs that the native server promises (decisions.md §11).
const crypto = require('crypto');
const path = require('path');
const { withTimeout } = require('./helpers');

const { pattern } = require(path.join(__dirname, 'fixtures', 'koatty-app', 'lib', 'pattern'));

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

/** What the handler can tell about the peer certificate (getPeerCertificate() subset). */
function peerSummary(socket) {
  if (!socket || typeof socket.getPeerCertificate !== 'function') return { available: false };
  const cert = socket.getPeerCertificate();
  if (cert === null || cert === undefined) return { available: true, isNull: true };
  return {
    available: true,
    empty: typeof cert === 'object' && Object.keys(cert).length === 0,
    subjectCN: cert.subject ? cert.subject.CN : undefined,
    issuerCN: cert.issuer ? cert.issuer.CN : undefined,
    serialNumber: cert.serialNumber,
  };
}

/** Write `total` pattern bytes in 64 KiB chunks, honouring write() === false / 'drain'. */
function pump(res, total, done) {
  const chunk = 64 * 1024;
  let offset = 0;
  const step = () => {
    while (offset < total) {
      const n = Math.min(chunk, total - offset);
      const ok = res.write(pattern(offset, n));
      offset += n;
      if (ok === false) { res.once('drain', step); return; }
    }
    done();
  };
  step();
}

/**
 * Build the fake app. `state` counts handler calls and the /drip streams' lifecycle:
 *   /hello            'hello' (text/plain)
 *   /id?i=N           'id:N'
 *   /inspect          JSON: what the handler sees of req and req.socket
 *   /echo             streams the request body back (backpressure-aware); x-had-content-length
 *   /count            JSON { bytes, chunks, sha256 } of the request body
 *   /download?size=N  N pattern bytes (lib/pattern.js), streamed in 64 KiB writes
 *   /head             x-head: yes; body 'head body' unless HEAD
 *   /drip             16 KiB every 10 ms until the client goes away (max 10 s)
 */
function makeApp() {
  const state = { calls: 0, dripStarted: 0, dripClosed: 0, handlerErrors: [] };
  const routes = {
    '/hello': (req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      res.end('hello');
    },
    // A reason phrase HTTP/2 cannot carry: node's http2 ignores it (HTTP/1 refuses it).
    '/bad-reason': (req, res) => {
      let refused = 'no';
      try {
        res.writeHead(200, 'a\r\nb', { 'Content-Type': 'text/plain' });
      } catch (err) {
        refused = err.code;
      }
      res.end(`refused:${refused}`);
    },
    '/id': (req, res) => {
      const i = new URL(req.url, 'http://x').searchParams.get('i');
      res.setHeader('Content-Type', 'text/plain');
      res.end(`id:${i}`);
    },
    '/inspect': (req, res) => {
      const s = req.socket;
      const out = {
        method: req.method,
        url: req.url,
        authority: req.authority,
        scheme: req.scheme,
        httpVersion: req.httpVersion,
        httpVersionMajor: req.httpVersionMajor,
        headers: req.headers,
        encrypted: s ? s.encrypted === true : null,
        authorized: s ? s.authorized : null,
        authorizationError: s ? s.authorizationError : undefined,
        alpnProtocol: s ? s.alpnProtocol : null,
        peer: peerSummary(s),
      };
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(out));
    },
    '/echo': (req, res) => {
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('X-Had-Content-Length', req.headers['content-length'] ?? 'none');
      req.on('data', (c) => {
        if (res.write(c) === false) {
          req.pause();
          res.once('drain', () => req.resume());
        }
      });
      req.on('end', () => res.end());
    },
    '/count': (req, res) => {
      let bytes = 0;
      let chunks = 0;
      const hash = crypto.createHash('sha256');
      req.on('data', (c) => { bytes += c.length; chunks++; hash.update(c); });
      req.on('end', () => {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ bytes, chunks, sha256: hash.digest('hex') }));
      });
    },
    '/download': (req, res) => {
      const size = Number(new URL(req.url, 'http://x').searchParams.get('size') || 1024 * 1024);
      res.setHeader('Content-Type', 'application/octet-stream');
      pump(res, size, () => res.end());
    },
    '/head': (req, res) => {
      res.setHeader('Content-Type', 'text/plain');
      res.setHeader('X-Head', 'yes');
      if (req.method === 'HEAD') res.end();
      else res.end('head body');
    },
    '/drip': (req, res) => {
      state.dripStarted++;
      let closed = false;
      let timer = null;
      const onClose = () => {
        if (closed) return;
        closed = true;
        clearInterval(timer);
        state.dripClosed++;
      };
      res.on('close', onClose);
      res.setHeader('Content-Type', 'application/octet-stream');
      let offset = 0;
      const started = Date.now();
      timer = setInterval(() => {
        if (closed) return;
        if (Date.now() - started > 10000) { res.end(); onClose(); return; }
        res.write(pattern(offset, 16 * 1024));
        offset += 16 * 1024;
      }, 10);
    },
  };
  const handler = (req, res) => {
    state.calls++;
    const route = routes[req.url.split('?')[0]];
    if (!route) {
      res.statusCode = 404;
      res.end('no route');
      return undefined;
    }
    return route(req, res);
  };
  return { app: { callback: () => handler }, state };
}

function start(server, timeout = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.Start(() => {
      server.off('error', reject);
      resolve(server.server.address().port);
    });
  }), timeout, `${server.constructor.name}.Start`);
}

function stop(server, timeout = 5000) {
  return withTimeout(new Promise((resolve) => server.Stop(() => resolve())), timeout, `${server.constructor.name}.Stop`);
}

/** Assert-style helper: `fn` throws synchronously with code ERR_TLS_CONFIG and a message matching `re`. */
function tlsConfigError(fn) {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return null;
}

module.exports = { makeApp, start, stop, pattern, sha256, tlsConfigError };
