'use strict';
// What `req.socket` / `res.socket` look like: the members Koa and on-finished read (remoteAddress,
// encrypted, writable, 'close'/'error' events). The real socket lives in Rust.
const { EventEmitter } = require('node:events');

class NativeSocket extends EventEmitter {
  constructor(remoteAddress, remotePort, encrypted) {
    super();
    this.remoteAddress = remoteAddress;
    this.remotePort = remotePort;
    this.remoteFamily = remoteAddress.includes(':') ? 'IPv6' : 'IPv4';
    // net.Socket has no `encrypted`; tls.TLSSocket has `encrypted === true`.
    if (encrypted) this.encrypted = true;
    this.writable = true;
    this.readable = true;
    this.destroyed = false;
  }

  _close() {
    if (this.destroyed) return;
    this.destroyed = true;
    this.writable = false;
    this.readable = false;
    process.nextTick(() => this.emit('close', false));
  }

  destroy() {
    this._close();
    return this;
  }

  end() {
    return this;
  }

  setTimeout(_ms, cb) {
    if (typeof cb === 'function') this.once('timeout', cb);
    return this;
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
