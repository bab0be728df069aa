'use strict';
// `koatty_serve/config`
const { ConfigHelper } = require('./js/config');

exports.ConfigHelper = ConfigHelper;
