'use strict';
// Errors with a stable `code`, as node's own (`err.code === 'ERR_…'`).

function codedError(code, message, Type = Error) {
  const err = new Type(message);
  err.code = code;
  return err;
}

module.exports = { codedError };
