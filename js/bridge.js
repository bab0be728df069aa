'use strict';
// One per server: receives requests and events from the native bridge (positional values, see
// src/napi/wire.rs) and routes them to the request/response objects.
const { NativeRequest } = require('./request');
const { NativeResponse } = require('./response');
const { NativeWebSocket } = require('./websocket');
const { IdTable } = require('./id-table');

const { RequestFlag, EventKind, splitFlat, staging, unstage } = require('./wire');

const FLAG_WEBSOCKET = RequestFlag.WebSocket;
const FLAG_GRPC = RequestFlag.Grpc;

const EVENT_BODY_CHUNK = EventKind.BodyChunk;
const EVENT_BODY_END = EventKind.BodyEnd;
const EVENT_BODY_ERROR = EventKind.BodyError;
const EVENT_DRAIN = EventKind.Drain;
const EVENT_TRACE_TIMEOUT = EventKind.TraceTimeout;
const EVENT_CLOSED_MIN = EventKind.Closed;
const EVENT_CLOSED_MAX = EventKind.ClosedLast;
const EVENT_WS_TEXT = EventKind.WsText;
const EVENT_WS_BINARY = EventKind.WsBinary;
const EVENT_WS_PONG = EventKind.WsPong;
const EVENT_WS_CLOSED = EventKind.WsClosed;
const EVENT_WS_PEER_CLOSING = EventKind.WsPeerClosing;
const EVENT_WS_WRITTEN = EventKind.WsWritten;
const EVENT_GRPC_MESSAGE = EventKind.GrpcMessage;
const EVENT_GRPC_INPUT_END = EventKind.GrpcInputEnd;
const EVENT_GRPC_INPUT_ERROR = EventKind.GrpcInputError;
const EVENT_GRPC_CANCELLED = EventKind.GrpcCancelled;
const EVENT_GRPC_DRAIN = EventKind.GrpcDrain;
const EVENT_CLIENT_ERROR = EventKind.ClientError;

class Bridge {
  /**
   * @param native the addon's NativeServer
   * @param handler (req, res) => any; a throw or rejection becomes a 500
   * @param onHandlerError (err) => void, for logging
   */
  /**
   * @param onUpgrade (req, client) => void, for WebSocket servers: a new connection
   */
  constructor(native, handler, onHandlerError, onUpgrade = null, onGrpcCall = null) {
    this.native = native;
    // What the answering calls (js/wire.js `answers`) take to find this server.
    this.handle = native.handle;
    this.onUpgrade = onUpgrade;
    this.onGrpcCall = onGrpcCall;
    // Open WebSockets: a Map, not an IdTable. They are long-lived, so the table's ring buys
    // nothing, and with it an idle connection measured 8.0 KB of RSS at 10,000 against 6.3 KB
    // with the Map (bench/ws/idle-memory.js).
    this.sockets = new Map();
    this.calls = new IdTable();
    // The server's trace (js/trace, which sets it): null when off, else told of each new request
    // (`request`, `upgrade`: the response's or WebSocket's trace hook) and of a handler's 500
    // (`failed`).
    this.trace = null;
    this.handler = handler;
    this.onHandlerError = onHandlerError;
    // What handlers get: the lean objects (Koatty, HttpServer), or for createServer ones that
    // survive a framework swapping their prototype (js/create-server.js sets them).
    this.Request = NativeRequest;
    this.Response = NativeResponse;
    this.open = new IdTable();
    // A request head the native side answered with an error: (code, remoteAddress, remotePort,
    // message) for createServer's 'clientError'; null: nobody listens.
    this.onClientError = null;
    this.staging = staging;
    this.onRequest = this.onRequest.bind(this);
    this.onEvent = this.onEvent.bind(this);
  }

  // Requests and events arrive in one queue, in order (src/napi/delivery.rs): an event never
  // overtakes its request, so one for an id not (or no longer) known is dropped (e.g. a late
  // 'drain', or an HTTP event for an upgraded connection).
  onRequest(id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetails, traceId) {
    if (typeof body === 'number') body = unstage(body);
    if ((flags & FLAG_GRPC) !== 0) {
      const metadata = splitFlat(headers);
      const call = this.onGrpcCall(this, id, url, metadata, remoteAddress, remotePort);
      this.calls.set(id, call);
      // A unary or server-streaming call comes whole: its message, and the client done sending.
      if (body !== undefined && body !== null && call !== undefined) {
        try {
          call._onMessage(body);
          call._onInputEnd();
        } catch (err) {
          this.onHandlerError(err);
        }
      }
      return;
    }
    const req = new this.Request(this, id, method, url, headers, body, flags, remoteAddress, remotePort, tlsDetails);
    if ((flags & FLAG_WEBSOCKET) !== 0) {
      const client = new NativeWebSocket(this, id, req, flags);
      if (this.trace !== null) this.trace.upgrade(req, client, traceId);
      this.sockets.set(id, client);
      try {
        this.onUpgrade(req, client);
      } catch (err) {
        this.onHandlerError(err);
        client.terminate();
      }
      return;
    }
    const res = new this.Response(this, id, req);
    // The socket's timeout tells the request (while incomplete) and the response, as node's
    // server does; with nobody listening it destroys the response.
    req.socket._response = res;
    this.open.set(id, res);
    if (this.trace !== null) this.trace.request(req, res, traceId, flags);
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
    if (typeof chunk === 'number') chunk = unstage(chunk);
    // Routed by kind first: a WebSocket message or gRPC event finds its owner in one lookup.
    if (kind >= EVENT_GRPC_MESSAGE) {
      if (kind === EVENT_CLIENT_ERROR) {
        if (this.onClientError !== null) {
          const [code, address, port, text] = message.split('\0');
          this.onClientError(code, address, Number(port), text);
        }
        return;
      }
      const call = this.calls.get(id);
      if (call === undefined) return;
      return this.onCallEvent(call, id, kind, chunk, message);
    }
    if (kind >= EVENT_WS_TEXT) {
      const client = this.sockets.get(id);
      if (client === undefined) return;
      return this.onSocketEvent(client, id, kind, chunk, message);
    }
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
      case EVENT_TRACE_TIMEOUT:
        if (res._trace !== null) res._trace.timerFired();
        break;
      default:
        if (kind >= EVENT_CLOSED_MIN && kind <= EVENT_CLOSED_MAX) {
          this.open.delete(id);
          res._onClose();
        }
    }
  }

  onSocketEvent(client, id, kind, chunk, message) {
    try {
      switch (kind) {
        case EVENT_WS_TEXT:
          client._onMessage(chunk, false);
          break;
        case EVENT_WS_BINARY:
          client._onMessage(chunk, true);
          break;
        case EVENT_WS_PONG:
          client._onPong(chunk);
          break;
        case EVENT_WS_PEER_CLOSING:
          client._onPeerClosing();
          break;
        case EVENT_WS_WRITTEN:
          client._onWritten(Number(message));
          break;
        case EVENT_WS_CLOSED: {
          this.sockets.delete(id);
          // "<code> <bytes written> <reason>"
          const space = message.indexOf(' ');
          const second = message.indexOf(' ', space + 1);
          client._onClose(Number(message.slice(0, space)), message.slice(second + 1), Number(message.slice(space + 1, second)));
          break;
        }
      }
    } catch (err) {
      // A throwing 'message' listener must not break the connection loop for others.
      this.onHandlerError(err);
    }
  }

  onCallEvent(call, id, kind, chunk, message) {
    try {
      switch (kind) {
        case EVENT_GRPC_MESSAGE:
          call._onMessage(chunk);
          break;
        case EVENT_GRPC_INPUT_END:
          call._onInputEnd();
          break;
        case EVENT_GRPC_INPUT_ERROR:
          call._onInputError(message);
          break;
        case EVENT_GRPC_CANCELLED:
          this.calls.delete(id);
          call._onCancel(Number(message));
          break;
        case EVENT_GRPC_DRAIN:
          call._onDrain();
          break;
      }
    } catch (err) {
      // A listener of the call threw (its 'data', 'end', 'drain'…): the call fails as if its
      // handler had thrown; its input is not whole any more.
      this.onHandlerError(err);
      call._failed(err);
    }
  }

  /** The server is closing every WebSocket (shutdown step 1): each is CLOSING from here. */
  webSocketsClosing() {
    for (const client of this.sockets.values()) client._stopSending();
  }

  forgetCall(id) {
    this.calls.delete(id);
  }

  forget(id) {
    this.open.delete(id);
  }

  // A handler threw or rejected: answer 500 if nothing was sent, else cut the response off.
  fail(res, err) {
    try {
      this.onHandlerError(err, res.req);
    } catch {
      // logging must not break the server
    }
    if (res.writableEnded || res.destroyed) return;
    if (!res.headersSent) {
      for (const name of res.getHeaderNames()) res.removeHeader(name);
      if (this.trace !== null) this.trace.failed(res.req, res);
      res._removedContLen = false;
      // The handler's reason may be what threw (ERR_INVALID_CHAR).
      res.statusMessage = undefined;
      res.statusCode = 500;
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.end('Internal Server Error');
    } else {
      res.destroy();
    }
  }
}

module.exports = { Bridge };
