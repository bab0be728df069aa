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
    // Set by the request: ends the connection natively (as destroying node's socket does).
    if (typeof this._onDestroy === 'function') this._onDestroy();
    this._close();
    return this;
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
        const socketHeard = this.emit('timeout');
        const told = typeof this._onTimeout === 'function' && this._onTimeout(this);
        // Nobody listens: the connection goes, as node destroys the socket.
        if (!socketHeard && !told) {
          if (typeof this._abortConnection === 'function') this._abortConnection();
          else this.destroy();
        }
      }, delay);
    }
    return this;
  }

  _clearTimer() {
    if (this._timer) {
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
