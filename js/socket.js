'use strict';
// What `req.socket` / `res.socket` look like: the members Koa and on-finished read (remoteAddress,
// encrypted, writable, 'close'/'error' events) and, over TLS, the tls.TLSSocket members handlers use
// (authorized, getPeerCertificate, alpnProtocol, getCipher, getProtocol). The real socket lives in Rust.
const { EventEmitter } = require('node:events');

const kTls = Symbol('tlsDetails');

class NativeSocket extends EventEmitter {
  constructor(remoteAddress, remotePort, encrypted, authorized, tlsDetails) {
    super();
    this.remoteAddress = remoteAddress;
    this.remotePort = remotePort;
    this.remoteFamily = remoteAddress.includes(':') ? 'IPv6' : 'IPv4';
    // net.Socket has no `encrypted`; tls.TLSSocket has `encrypted === true`.
    if (encrypted) {
      this.encrypted = true;
      this.authorized = authorized;
      this[kTls] = tlsDetails;
    }
    this.writable = true;
    this.readable = true;
    this.destroyed = false;
    // The request this socket stands for (set by it), and its response (set by the bridge; none
    // for a WebSocket's upgrade request): told of a timeout, ended by destroy(). Fields, not
    // closures made per request.
    this._request = null;
    this._response = null;
    this._timer = null;
  }

  // TLS details arrive as JSON and are parsed only if a handler asks.
  _tls() {
    const raw = this[kTls];
    if (typeof raw !== 'string') return raw ?? null;
    const parsed = JSON.parse(raw);
    this[kTls] = parsed;
    return parsed;
  }

  get authorizationError() {
    const t = this._tls();
    return t && !t.authorized ? t.authorizationError : null;
  }

  get alpnProtocol() {
    const t = this._tls();
    return (t && t.alpnProtocol) || false;
  }

  getPeerCertificate() {
    const t = this._tls();
    return (t && t.certificate) || {};
  }

  getCipher() {
    const t = this._tls();
    return t ? { name: t.cipher, standardName: t.cipher, version: t.protocol } : null;
  }

  getProtocol() {
    const t = this._tls();
    return t ? t.protocol : null;
  }

  _close() {
    this._clearTimer();
    if (this.destroyed) return;
    this.destroyed = true;
    this.writable = false;
    this.readable = false;
    process.nextTick(() => this.emit('close', false));
  }

  destroy() {
    // Ends the connection natively (as destroying node's socket does).
    if (this._request !== null) this._request.destroy();
    this._close();
    return this;
  }

  /**
   * The socket's timeout, as node's server passes it on: to the request while its body is still
   * arriving (node's `!req.complete`: only a streamed body can be; an empty or inline one was
   * received whole before the handler ran), and to the response. Whether anybody listened.
   */
  _tellTimeout() {
    const req = this._request;
    const res = this._response;
    if (res === null) return false;
    const reqHeard = req._streamed && !req.complete && req.emit('timeout', this);
    return res.emit('timeout', this) || reqHeard;
  }

  end() {
    return this;
  }

  /**
   * node's socket timeout as its http server uses it: after `ms` the socket emits 'timeout', and
   * the request (while not complete) and the response are told; when nobody listens anywhere the
   * connection is destroyed. 0 clears it. (node restarts the timer on activity; here it runs from
   * the call, which is what `res.setTimeout`/`req.setTimeout` users rely on.)
   */
  setTimeout(ms, cb) {
    if (typeof cb === 'function') this.once('timeout', cb);
    this._clearTimer();
    const delay = Number(ms);
    if (delay > 0 && !this.destroyed) {
      this._timer = setTimeout(() => {
        this._timer = null;
        this.emit('timeout');
        // Nobody listens on the request or the response: the connection goes, as node's server
        // destroys the socket (the socket's own listeners, `socket.setTimeout(ms, cb)`'s too, run
        // first but do not keep it).
        if (!this._tellTimeout()) {
          if (this._response !== null) this._response.destroy();
          else this.destroy();
        }
      }, delay);
    }
    return this;
  }

  _clearTimer() {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  setNoDelay() {
    return this;
  }

  setKeepAlive() {
    return this;
  }

  ref() {
    return this;
  }

  unref() {
    return this;
  }
}

module.exports = { NativeSocket };
