'use strict';
// The benchmark service definition and the one JS handler both servers run (bench/grpc/bench.proto,
// loaded with koatty_proto's proto-loader options).
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const { Greeter } = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(__dirname, 'bench.proto'), LOAD_OPTIONS)).helloworld;

const implementation = {
  SayHello(call, callback) {
    callback(null, { message: `Hello ${call.request.name}` });
  },
  SayHelloStream(call) {
    const { name, count } = call.request;
    const message = `Hello ${name}`;
    for (let i = 0; i < count; i++) call.write({ message, index: i });
    call.end();
  },
};

/** One line on stdout for run.js. */
function report(info) {
  process.stdout.write(JSON.stringify({ event: 'listening', pid: process.pid, ...info }) + '\n');
}

module.exports = { grpc, Greeter, implementation, report, LOAD_OPTIONS };
