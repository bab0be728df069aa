'use strict';
// The numbers both sides of the bridge read, declared once in Rust (src/napi/wire.rs) and read
// here from the binding; module-level constants keep the hot path free of property lookups.
// Also the calls that answer a request, message or gRPC call (`answers`): free functions taking
// the server's handle (`bridge.handle`), which cost less per call than methods of NativeServer
// (src/napi/answers.rs).
const { RequestFlag, EventKind, SendResult, FramingFlag, respond, write, end, wsSend, grpcWrite, grpcReply, grpcEnd } = require('./binding');

/**
 * `name\0value\0…` (how headers and metadata cross) as `[name, value, …]`; '' is `[]`. An
 * indexOf/slice loop: `split('\0')` goes through V8's runtime and cost twice as much for a
 * request's few headers (5 % of the JS thread under a bare handler's load).
 */
function splitFlat(text) {
  const out = [];
  if (text === '') return out;
  let from = 0;
  for (;;) {
    const at = text.indexOf('\0', from);
    if (at < 0) {
      out.push(from === 0 ? text : text.slice(from));
      return out;
    }
    out.push(text.slice(from, at));
    from = at + 1;
  }
}

// Small bodies and chunks cross staged (src/napi/wire.rs `StagingArea`), both ways, through this
// buffer, given to the native side with each server (`connect`). One per thread, shared by its
// servers: one call is made at a time.
//
// Inbound: the native side copies them to its start and passes their length, and they are copied
// out at once, before anything else runs (the next one overwrites it). Each gets memory of its
// own, as node's and ws's chunks do: from node's shared pool, another client's data would sit in
// the same ArrayBuffer (`chunk.buffer`). Small ones (up to 64 bytes) then live in V8's heap: ≈ 90
// ns against ≈ 800 ns for a Buffer node makes from C++ (a malloc'ed backing store, an ArrayBuffer
// and a prototype set per Buffer); at 1–4 KiB both cost about the same.
//
// Outbound (`staged`): an answering call's small chunk is copied here and passed as its length.
// Reading a Buffer through Node-API moves one that lives in V8's heap out to a malloc'ed backing
// store, which an echo paid for every message it sent back (src/napi/wire.rs `Chunk`).
const staging = Buffer.allocUnsafeSlow(4096);

function unstage(length) {
  const chunk = Buffer.allocUnsafeSlow(length);
  staging.copy(chunk, 0, 0, length);
  return chunk;
}

// Chunks up to this many bytes are staged on their way out: the copy costs less than reading a
// Buffer through Node-API even when it needs no move.
const SEND_STAGED_LIMIT = 1024;

// The length a typed array really has: a subclass's own `length` or `byteLength` getter is not
// asked (a wrong one would send stale bytes of the area: another connection's).
const byteLengthOf = Function.prototype.call.bind(Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), 'byteLength').get);

/** What an answering call takes for `bytes` (a Uint8Array, or undefined): small ones staged. */
function staged(bytes) {
  if (bytes === undefined) return bytes;
  // 0 also for a detached one (its ArrayBuffer transferred away), which `set` would refuse: node
  // writes nothing for it, ws an empty frame.
  const length = byteLengthOf(bytes);
  if (length > SEND_STAGED_LIMIT) return bytes;
  if (length !== 0) staging.set(bytes);
  return length;
}

module.exports = { RequestFlag, EventKind, SendResult, FramingFlag, splitFlat, staging, unstage, staged, answers: { respond, write, end, wsSend, grpcWrite, grpcReply, grpcEnd } };
