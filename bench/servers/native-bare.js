'use strict';
// c. this package (the native addon, loaded from the repo root) serving the
// plain "hello" handler through the same fake app as js-serve-bare.
const { startNative } = require('./_native');

startNative('HttpServer', { protocol: 'http' });
