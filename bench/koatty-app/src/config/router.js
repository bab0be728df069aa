'use strict';
// koatty_router's config (Koatty's NewRouter(app, app.config(undefined, 'router'))). Empty under
// http/http2 (the HTTP router, as without this file); 'ws' and 'grpc' (bench/koatty-protocols.js)
// pick koatty_router's WebsocketRouter and GrpcRouter, the latter with the service's proto file.
const path = require('path');

const protocol = process.env.BENCH_PROTOCOL;
let router = {};
if (protocol === 'ws') router = { protocol: 'ws' };
if (protocol === 'grpc') router = { protocol: 'grpc', ext: { protoFile: path.join(__dirname, '..', 'proto', 'bench.proto') } };
exports.default = router;
