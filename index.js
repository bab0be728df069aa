'use strict';
// koatty_serve (native): Koatty's server layer on a Rust core. Named exports are assigned one by one
// so that node's ESM loader can detect them (`import { NewServe } from 'koatty_serve'`).
const binding = require('./js/binding');
const { HttpServer, HttpsServer, Http2Server, WsServer, GrpcServer, BaseServer } = require('./js/server');
const { Metadata, Status } = require('./js/grpc');
const { NewServe } = require('./js/serve');
const { createServer, createSecureServer, NodeHttpServer } = require('./js/create-server');
const { CreateTerminus, BindProcessEvent } = require('./js/terminus');
const { ConfigHelper } = require('./js/config');
const pools = require('./js/pool');

exports.NewServe = NewServe;
exports.createServer = createServer;
exports.createSecureServer = createSecureServer;
exports.NodeHttpServer = NodeHttpServer;
exports.HttpServer = HttpServer;
exports.HttpsServer = HttpsServer;
exports.Http2Server = Http2Server;
exports.WsServer = WsServer;
exports.GrpcServer = GrpcServer;
exports.Metadata = Metadata;
exports.GrpcStatus = Status;
exports.BaseServer = BaseServer;
exports.ConfigHelper = ConfigHelper;
exports.CreateTerminus = CreateTerminus;
exports.BindProcessEvent = BindProcessEvent;
exports.runtimeInfo = binding.runtimeInfo;
exports.setLogLevel = require('./js/logger').setLevel;
exports.ConnectionPoolManager = pools.ConnectionPoolManager;
exports.HttpConnectionPoolManager = pools.HttpConnectionPoolManager;
exports.HttpsConnectionPoolManager = pools.HttpsConnectionPoolManager;
exports.Http2ConnectionPoolManager = pools.Http2ConnectionPoolManager;
exports.WebSocketConnectionPoolManager = pools.WebSocketConnectionPoolManager;
exports.GrpcConnectionPoolManager = pools.GrpcConnectionPoolManager;
