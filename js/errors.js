'use strict';
// Errors with a stable `code`, as node's own (`err.code === 'ERR_…'`).
const { inspect } = require('node:util');

function codedError(code, message, Type = Error) {
  const err = new Type(message);
  err.code = code;
  return err;
}

/** What a write after destroy (node's streams) or after a gRPC cancel (grpc-js) calls back with. */
function streamDestroyedError() {
  return codedError('ERR_STREAM_DESTROYED', 'Cannot call write after a stream was destroyed');
}

/**
 * node's ERR_INVALID_ARG_TYPE (a TypeError) for argument `name`: "The "<name>" argument must be
 * <expected>. Received …", the value described as node's own errors describe it.
 */
function invalidArgType(name, expected, value) {
  return codedError('ERR_INVALID_ARG_TYPE', `The "${name}" argument must be ${expected}.${received(value)}`, TypeError);
}

// node's `determineSpecificType` (lib/internal/errors.js).
function received(value) {
  if (value == null) return ` Received ${value}`;
  if (typeof value === 'function' && value.name) return ` Received function ${value.name}`;
  if (typeof value === 'object') {
    if (value.constructor && value.constructor.name) return ` Received an instance of ${value.constructor.name}`;
    return ` Received ${inspect(value, { depth: -1 })}`;
  }
  let shown = inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${shown})`;
}

module.exports = { codedError, streamDestroyedError, invalidArgType };
