'use strict';
require('reflect-metadata');
const { Controller, GetMapping } = require('koatty');

class HelloController {
  constructor(ctx) { this.ctx = ctx; }
  async index() { return 'hello'; }
}
const P = HelloController.prototype;
GetMapping('/')(P, 'index', Object.getOwnPropertyDescriptor(P, 'index'));
Controller('/')(HelloController);
exports.HelloController = HelloController;
