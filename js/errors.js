'use strict';
// Errors with a stable `code`, as node's own (`err.code === 'ERR_…'`).

function codedError(code, message, Type = Error) {
  const err = new Type(message);
  err.code = code;
  return err;
}

/** What a write after destroy (node's streams) or after a gRPC cancel (grpc-js) calls back with. */
function streamDestroyedError() {
  return codedError('ERR_STREAM_DESTROYED', 'Cannot call write after a stream was destroyed');
}

module.exports = { codedError, streamDestroyedError };
