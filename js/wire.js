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

module.exports = { RequestFlag, EventKind, SendResult, FramingFlag, splitFlat, answers: { respond, write, end, wsSend, grpcWrite, grpcReply, grpcEnd } };
