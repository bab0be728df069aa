'use strict';
// koatty_router options: plain HTTP routing.
exports.default = {
  protocol: 'http',
};
