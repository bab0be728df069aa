'use strict';
// One per server: receives requests and events from the native bridge (positional values, see
// src/napi/server.rs) and routes them to the request/response objects.
const { NativeRequest } = require('./request');
const { NativeResponse } = require('./response');

const EVENT_BODY_CHUNK = 1;
const EVENT_BODY_END = 2;
const EVENT_BODY_ERROR = 3;
const EVENT_DRAIN = 4;
const EVENT_CLOSED_MIN = 10;

class Bridge {
  /**
   * @param native the addon's NativeServer
   * @param handler (req, res) => any; a throw or rejection becomes a 500
   * @param onHandlerError (err) => void, for logging
   */
  constructor(native, handler, onHandlerError, trace = false) {
    this.native = native;
    this.trace = trace === true;
    this.handler = handler;
    this.onHandlerError = onHandlerError;
    this.open = new Map();
    this.onRequest = this.onRequest.bind(this);
    this.onEvent = this.onEvent.bind(this);
  }

  onRequest(id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetails) {
    const req = new NativeRequest(this, id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetails);
    const res = new NativeResponse(this, id, req);
    this.open.set(id, res);
    if (this.trace) res.setHeader('X-Request-Id', req.traceId);
    try {
      const result = this.handler(req, res);
      if (result !== undefined && result !== null && typeof result.then === 'function') {
        result.then(undefined, (err) => this.fail(res, err));
      }
    } catch (err) {
      this.fail(res, err);
    }
  }

  onEvent(id, kind, chunk, message) {
    const res = this.open.get(id);
    if (res === undefined) return;
    switch (kind) {
      case EVENT_BODY_CHUNK:
        res.req._onChunk(chunk);
        break;
      case EVENT_BODY_END:
        res.req._onEnd();
        break;
      case EVENT_BODY_ERROR:
        res.req._onBodyError(message || 'request body failed');
        break;
      case EVENT_DRAIN:
        res._onDrain();
        break;
      default:
        if (kind >= EVENT_CLOSED_MIN) {
          this.open.delete(id);
          res._onClose();
        }
    }
  }

  forget(id) {
    this.open.delete(id);
  }

  // A handler threw or rejected: answer 500 if nothing was sent, else cut the response off.
  fail(res, err) {
    try {
      this.onHandlerError(err);
    } catch {
      // logging must not break the server
    }
    if (res.writableEnded || res.destroyed) return;
    if (!res.headersSent) {
      for (const name of res.getHeaderNames()) res.removeHeader(name);
      res.statusCode = 500;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end('Internal Server Error');
    } else {
      res.destroy();
    }
  }
}

module.exports = { Bridge };
