'use strict';
// The numbers both sides of the bridge read, declared once in Rust (src/napi/wire.rs) and read
// here from the binding; module-level constants keep the hot path free of property lookups.
const { RequestFlag, EventKind, SendResult, FramingFlag } = require('./binding');
// The calls that answer a request, message or gRPC call: free functions taking the server's
// handle (`bridge.handle`), which cost less per call than methods of NativeServer
// (src/napi/answers.rs).
const { respond, write, end, wsSend, grpcWrite, grpcReply, grpcEnd } = require('./binding');

module.exports = { RequestFlag, EventKind, SendResult, FramingFlag, answers: { respond, write, end, wsSend, grpcWrite, grpcReply, grpcEnd } };
