'use strict';
// The WebSocket handed to handlers (Koatty's `ctx.websocket`): the ws.WebSocket members handlers
// use — send (text/binary, callback), close(code, reason), terminate, ping, readyState,
// bufferedAmount, and the 'message' / 'close' / 'error' / 'pong' events. Frames, pings, limits and
// the closing handshake are handled in Rust (crates/core/src/protocol/ws/).
const { EventEmitter } = require('node:events');
const { codedError } = require('./errors');
const { RequestFlag, SendResult, answers, staged } = require('./wire');
const { flushWakesSoon } = require('./wakes');

const { wsSend } = answers;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
/** ws's names for the states, in its "not open" error. */
const STATE_NAMES = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'];

/** ws's error for a send or control frame on a socket that is not open. */
function notOpen(readyState) {
  return codedError('ERR_WS_NOT_OPEN', `WebSocket is not open: readyState ${readyState} (${STATE_NAMES[readyState]})`);
}

/** "No status code" (RFC 6455 §7.4.1): asks the native side for a close frame without a code. */
const NO_STATUS = 1005;
/** Largest ping/pong payload (RFC 6455 §5.5). */
const MAX_CONTROL_PAYLOAD = 125;
/** What a ping or pong adds to `bufferedAmount` besides its payload (as the native side counts). */
const CONTROL_FRAME_COST = 2;
/** ws's `closeTimeout` (and the native side's): a close frame waiting behind a Blob waits no longer. */
const CLOSE_TIMEOUT_MS = 30_000;
/** The upgrade waits for this server's `handleProtocols` (set by the native side). */
const FLAG_WS_CHOOSE_PROTOCOL = RequestFlag.WsChooseProtocol;
const BACKPRESSURE = SendResult.Backpressure;

const { propertyIsEnumerable } = Object.prototype;

/** ws's `{ binary: typeof data !== 'string', ...options }.binary`, taken by its truthiness. */
function binaryOption(options, byDefault) {
  const given = options?.binary;
  if (given !== undefined) return Boolean(given);
  // An own `binary: undefined` still replaces the default in ws's spread.
  return options != null && propertyIsEnumerable.call(options, 'binary') ? false : byDefault;
}

/** ws's test for a Blob or File, of any realm (ws 8.18+ reads one, then sends its bytes). */
function isBlob(value) {
  return (
    typeof value === 'object' &&
    typeof value.arrayBuffer === 'function' &&
    typeof value.type === 'string' &&
    typeof value.stream === 'function' &&
    (value[Symbol.toStringTag] === 'Blob' || value[Symbol.toStringTag] === 'File')
  );
}

/**
 * Payload as (buffer, text, blob) for the native call; strings stay strings (sent as text
 * frames); a Blob is read first (`_inOrder`).
 */
function payload(data) {
  if (typeof data === 'string') return [undefined, data, undefined];
  if (typeof data === 'number') return [undefined, data.toString(), undefined];
  if (!data) return [Buffer.alloc(0), undefined, undefined];
  if (Buffer.isBuffer(data)) return [data, undefined, undefined];
  if (ArrayBuffer.isView(data)) return [Buffer.from(data.buffer, data.byteOffset, data.byteLength), undefined, undefined];
  if (isBlob(data)) return [undefined, undefined, data];
  // An ArrayBuffer of any realm, an array of bytes; anything else throws node's
  // ERR_INVALID_ARG_TYPE, as ws's send does (it was sent as its String()).
  return [Buffer.from(data), undefined, undefined];
}

/** What a send waiting behind a Blob counts in `bufferedAmount` (ws counts its byte length). */
function sendLength(buf, text) {
  return buf !== undefined ? buf.length : Buffer.byteLength(text);
}

// While a Blob is read, what the handler sends after it (messages, pings, the close frame) waits
// here, in order, as ws's sender queues it: { sends: [{ run, cb, bytes, blob }], bytes, terminated }.
const kWaiting = Symbol('koattyServe.wsWaitingForBlob');

/** The subprotocols an upgrade request offers, in order (the native side checked the header). */
function offeredProtocols(req) {
  const header = req.headers['sec-websocket-protocol'];
  return header ? header.split(',').map((p) => p.trim()) : [];
}

class NativeWebSocket extends EventEmitter {
  constructor(bridge, id, req, flags = 0) {
    super();
    Object.defineProperty(this, '_bridge', { value: bridge });
    Object.defineProperty(this, '_id', { value: id });
    Object.defineProperty(this, '_choosingProtocol', { value: (flags & FLAG_WS_CHOOSE_PROTOCOL) !== 0 });
    this.readyState = OPEN;
    // The native side selected the first subprotocol offered (the header is valid, or the upgrade
    // was refused), unless `handleProtocols` chooses (`_selectProtocol`).
    this.protocol = this._choosingProtocol ? '' : offeredProtocols(req)[0] ?? '';
    this.extensions = '';
    this.binaryType = 'nodebuffer';
    this.url = req.url;
    this.isPaused = false;
    this[kWaiting] = null;
    // Send callbacks waiting for their bytes to be written, as ws calls them: position (bytes
    // queued on the connection up to the send's end), callback, … oldest first; null while none.
    this._unwritten = null;
    Object.defineProperty(this, '_socket', { value: req.socket, enumerable: false });
  }

  get bufferedAmount() {
    if (this.readyState === CLOSED) return 0;
    return this._bridge.native.wsBufferedAmount(this._id) + (this[kWaiting]?.bytes ?? 0);
  }

  /** `send(data[, options][, cb])`: strings go as text frames unless `options.binary`. */
  send(data, options, cb) {
    if (typeof options === 'function') {
      cb = options;
      options = undefined;
    }
    // Converted first: what ws cannot send throws also once the socket is closing, as in ws.
    let [buf, text, blob] = payload(data);
    if (this.readyState !== OPEN) {
      const err = notOpen(this.readyState);
      if (typeof cb === 'function') process.nextTick(cb, err);
      return;
    }
    const binary = binaryOption(options, text === undefined);
    if (binary && text !== undefined) {
      buf = Buffer.from(text);
      text = undefined;
    }
    if (blob === undefined && this[kWaiting] === null) {
      this._queued(wsSend(this._bridge.handle, this._id, staged(buf), text, binary), cb);
      return;
    }
    // (Staged only when it goes: the staging area is shared by every send of this thread.)
    const send = (bytes) => this._queued(wsSend(this._bridge.handle, this._id, staged(bytes ?? buf), text, binary), cb);
    this._inOrder(send, cb, blob === undefined ? sendLength(buf, text) : blob.size, blob);
  }

  /**
   * `send(bytes)` after what waits — at once unless a Blob is being read — or, with `blob`, once
   * that is read, with its bytes (ws 8.18+). `bytes`: counted in `bufferedAmount` meanwhile, and
   * against `maxBufferedAmount` as the native side counts what it queues (0: not counted).
   */
  _inOrder(send, cb, bytes, blob) {
    const waiting = this[kWaiting];
    if (waiting === null && blob === undefined) {
      send();
      return;
    }
    if (bytes > 0) {
      // Past the limit the connection is terminated; one send larger than it may wait when
      // nothing else does (it goes out alone, as the native side lets it).
      const before = this._bridge.native.wsBufferedAmount(this._id) + (waiting?.bytes ?? 0);
      if (before > 0 && before + bytes > this._bridge.native.wsMaxBufferedAmount()) {
        this._bridge.native.wsTerminate(this._id);
        this._queued(BACKPRESSURE, cb);
        return;
      }
    }
    if (waiting === null) {
      this._readBlob((this[kWaiting] = { sends: [], bytes, terminated: false, closeTimer: undefined }), blob, send, cb);
      return;
    }
    waiting.bytes += bytes;
    waiting.sends.push({ run: send, cb, bytes, blob });
  }

  /** Reads `blob`, sends it, then what waited behind it, up to the next Blob. */
  _readBlob(waiting, blob, send, cb) {
    blob.arrayBuffer().then((arrayBuffer) => {
      if (waiting.terminated || this.readyState === CLOSED) {
        // As ws: nothing more goes out; the callbacks hear why (the sends stay waiting).
        const err = new Error('The socket was closed while the blob was being read');
        process.nextTick(() => this._failWaiting(waiting, err, cb));
        return;
      }
      waiting.bytes -= blob.size;
      try {
        send(Buffer.from(arrayBuffer));
        while (waiting.sends.length > 0) {
          const next = waiting.sends.shift();
          if (next.blob !== undefined) {
            this._readBlob(waiting, next.blob, next.run, next.cb);
            return;
          }
          waiting.bytes -= next.bytes;
          next.run();
        }
        this[kWaiting] = null;
      } catch (err) {
        // A listener's throw ('error' on backpressure) goes where a throwing 'message' listener's
        // goes ('handlerError'), not to an unhandled rejection of this read.
        this._bridge.onHandlerError(err);
      }
    }, (err) => {
      // As ws: the callbacks get the error, nothing after the Blob is sent, what was sent before
      // still goes out, and 'error' is emitted. ws then ends the socket without a close frame (the
      // peer sees 1006); here the close frame is 1011 (README).
      process.nextTick(() => {
        this._failWaiting(waiting, err, cb);
        if (this.readyState === CLOSED) return;
        this.readyState = CLOSING;
        if (!waiting.terminated) {
          waiting.terminated = true;
          clearTimeout(waiting.closeTimer);
          this._bridge.native.wsClose(this._id, 1011, '');
          flushWakesSoon();
        }
        this.emit('error', err);
      });
    });
  }

  /** The callbacks of a Blob that will not be sent and of every send behind it get `err`. */
  _failWaiting(waiting, err, cb) {
    if (typeof cb === 'function') cb(err);
    for (const { cb: next } of waiting.sends) if (typeof next === 'function') next(err);
  }

  /** What a native send returned: the bytes queued, or a negative SendResult (Backpressure:
   * terminated for too much unsent; others: gone). */
  _queued(queued, cb) {
    flushWakesSoon();
    if (queued === BACKPRESSURE) {
      // Terminated: CLOSING until its 'close', as after terminate().
      this._stopSending();
      const err = codedError('ERR_WS_BACKPRESSURE', 'ERR_WS_BACKPRESSURE: too much unsent data queued for a slow peer; the connection was terminated');
      if (typeof cb === 'function') process.nextTick(cb, err);
      this.emit('error', err);
      return;
    }
    if (queued < 0) {
      // The native side has closed it (its close frame went out, or the connection ended).
      if (this.readyState === OPEN) this.readyState = CLOSING;
      if (typeof cb === 'function') process.nextTick(cb, codedError('ERR_WS_NOT_OPEN', 'WebSocket is closed'));
      return;
    }
    if (typeof cb === 'function') this._whenWritten(queued, cb);
  }

  /**
   * `cb` is called once the bytes up to `position` are written to the socket, as ws calls a
   * send's callback: a sender that waits for each callback is paced by the peer's reading (it
   * was called at once, and such a sender ran into `maxBufferedAmount`).
   */
  _whenWritten(position, cb) {
    const unwritten = (this._unwritten ??= []);
    unwritten.push(position, cb);
    if (unwritten.length === 2) this._askWritten(position);
  }

  /** The native side tells (`WsWritten`) once `position` bytes are written, or says they are. */
  _askWritten(position) {
    const total = this._bridge.native.wsNotifyWhenWritten(this._id, position);
    // -1: not yet (an event comes); -2: the connection is gone ('close' fails the callbacks).
    if (total >= 0) process.nextTick(() => this._onWritten(total));
  }

  /** `total` bytes are written: the callbacks of the sends they cover, in order. */
  _onWritten(total) {
    if (this._unwritten === null || this.readyState === CLOSED) return;
    this._settleWritten(total);
    if (this._unwritten !== null) this._askWritten(this._unwritten[0]);
  }

  _settleWritten(total) {
    const unwritten = this._unwritten;
    let done = 0;
    while (done < unwritten.length && unwritten[done] <= total) {
      process.nextTick(unwritten[done + 1], null);
      done += 2;
    }
    unwritten.splice(0, done);
    if (unwritten.length === 0) this._unwritten = null;
  }

  /** `ping([data][, mask][, cb])` as ws: a payload over 125 bytes throws ws's RangeError. */
  ping(data, mask, cb) {
    this._control('wsPing', data, mask, cb);
  }

  /** `pong([data][, mask][, cb])`: an unsolicited pong (pings are answered in Rust already). */
  pong(data, mask, cb) {
    this._control('wsPong', data, mask, cb);
  }

  /** ping/pong, checked in ws's order: not open → cb(err); payload over 125 bytes → RangeError. */
  _control(nativeCall, data, mask, cb) {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    } else if (typeof mask === 'function') {
      cb = mask;
    }
    const [buf, text, blob] = payload(data);
    if (this.readyState !== OPEN) {
      if (typeof cb === 'function') process.nextTick(cb, notOpen(this.readyState));
      return;
    }
    const bytes = blob === undefined ? buf ?? Buffer.from(text) : undefined;
    if ((blob?.size ?? bytes.length) > MAX_CONTROL_PAYLOAD) throw new RangeError('The data size must not be greater than 125 bytes');
    // Counted in bufferedAmount (payload + frame head) and against maxBufferedAmount, as sends are.
    const send = (read) => {
      // A Blob whose bytes outgrew its size.
      if (read !== undefined && read.length > MAX_CONTROL_PAYLOAD) {
        if (typeof cb === 'function') process.nextTick(cb, new RangeError('The data size must not be greater than 125 bytes'));
        return;
      }
      this._queued(this._bridge.native[nativeCall](this._id, read ?? bytes), cb);
    };
    this._inOrder(send, cb, (blob?.size ?? bytes.length) + CONTROL_FRAME_COST, blob);
  }

  /**
   * A server with `handleProtocols` chose (`protocol`: a string, or false for none) or failed
   * (`failed`: the upgrade is refused); the native side answers the upgrade request now.
   */
  _selectProtocol(protocol, failed = false) {
    if (!failed && protocol) this.protocol = protocol;
    this._bridge.native.wsSelectProtocol(this._id, !failed && protocol ? protocol : null, failed);
  }

  close(code, reason = '') {
    if (this.readyState === CLOSED || this.readyState === CLOSING) return;
    // No code: a close frame without one (the peer sees 1005), as ws sends it.
    if (code === undefined) code = NO_STATUS;
    else if (code !== 1000 && (code < 3000 || code > 4999) && ![1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].includes(code)) {
      throw codedError('ERR_WS_INVALID_CLOSE_CODE', `First argument must be a valid error code number, got ${code}`);
    }
    const text = String(reason ?? '');
    if (Buffer.byteLength(text) > 123) throw codedError('ERR_WS_INVALID_CLOSE_REASON', 'The message must not be greater than 123 bytes');
    this.readyState = CLOSING;
    const waiting = this[kWaiting];
    if (waiting !== null) {
      // As ws's close timer: a Blob whose read never ends does not keep the socket open.
      waiting.closeTimer = setTimeout(() => this.terminate(), CLOSE_TIMEOUT_MS);
    }
    // After a Blob being read and what waits behind it, as ws queues its close frame.
    this._inOrder(() => {
      if (waiting !== null) clearTimeout(waiting.closeTimer);
      this._bridge.native.wsClose(this._id, code, text);
      flushWakesSoon();
    }, undefined, 0, undefined);
  }

  /**
   * The connection is going without waiting for what the handler sends (terminated, or the
   * server's own close frame in a shutdown): sends fail from here, as after close(), and so do
   * those waiting behind a Blob.
   */
  _stopSending() {
    if (this.readyState === OPEN) this.readyState = CLOSING;
    if (this[kWaiting] !== null) this[kWaiting].terminated = true;
  }

  terminate() {
    if (this.readyState === CLOSED) return;
    this._stopSending();
    this._bridge.native.wsTerminate(this._id);
    flushWakesSoon();
  }

  pause() {
    this.isPaused = true;
  }

  resume() {
    this.isPaused = false;
  }

  _onMessage(data, isBinary) {
    this.emit('message', data, isBinary);
  }

  _onPong(data) {
    this.emit('pong', data ?? Buffer.alloc(0));
  }

  // The peer's close frame (or a protocol error), after every message before it was handled: as
  // ws, CLOSING from here (sends fail), and the close frame goes out after what those messages'
  // handlers sent.
  _onPeerClosing() {
    if (this.readyState === OPEN) this.readyState = CLOSING;
    this._inOrder(() => {
      this._bridge.native.wsCloseReply(this._id);
      flushWakesSoon();
    }, undefined, 0, undefined);
  }

  _onClose(code, reason, written) {
    this.readyState = CLOSED;
    if (this[kWaiting] !== null) clearTimeout(this[kWaiting].closeTimer);
    // What went out before the end succeeded; sends never written (the connection ended first):
    // their callbacks get an error, as ws's.
    if (this._unwritten !== null && written > 0) this._settleWritten(written);
    const unwritten = this._unwritten;
    this._unwritten = null;
    for (let i = 1; unwritten !== null && i < unwritten.length; i += 2) {
      process.nextTick(unwritten[i], codedError('ERR_WS_NOT_OPEN', 'WebSocket is closed'));
    }
    this._socket._close();
    this.emit('close', code, Buffer.from(reason ?? ''));
  }
}

for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
  Object.defineProperty(NativeWebSocket, name, { value, enumerable: true });
  Object.defineProperty(NativeWebSocket.prototype, name, { value, enumerable: true });
}

module.exports = { NativeWebSocket, offeredProtocols };
