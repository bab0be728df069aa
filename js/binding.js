'use strict';
// The generated napi loader (`napi build --js binding.js`), with a clear error when no binary fits.
let binding;
try {
  binding = require('../binding.js');
} catch (cause) {
  const err = new Error(
    `koatty_serve: no native binary for ${process.platform}-${process.arch} could be loaded. ` +
      'Install the matching platform package (npm installs it as an optional dependency), ' +
      'or build from source with `npm run build`. Cause: ' + (cause && cause.message),
  );
  err.code = 'ERR_KOATTY_SERVE_NATIVE_MISSING';
  err.cause = cause;
  throw err;
}
module.exports = binding;
