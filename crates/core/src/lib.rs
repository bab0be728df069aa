//! koatty_serve core: everything the native server does that does not need Node.
//!
//! - [`host`]: one JavaScript server object's native side (options, listener, restart, shutdown)
//! - [`server`]: one listener started for a protocol (the seed's template method)
//! - [`config`]: options, validation and defaults
//! - [`lifecycle`]: listener, accept loop, connection tracking and shutdown, shared by every protocol
//! - [`conn`]: an accepted socket made a ready connection (first bytes, TLS), run under the phase
//! - [`protocol`]: the protocol parts plugged into the lifecycle (HTTP/1.1, HTTP/2, WebSocket, gRPC)
//! - [`logging`]: log events handed to a sink outside the core (the JavaScript logger)
//! - [`bridge`]: how requests are handed to a handler outside Rust (JavaScript) and answered
//! - [`metrics`]: counters kept without touching the JavaScript thread
//! - [`pool`]: the live connections (`getConnections()`, `closeConnection(id)`)
//! - [`trace`]: native trace mode's request ids and access lines (Koatty's tracer)

pub mod bridge;
pub mod config;
pub mod conn;
pub mod error;
pub mod host;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod tls;
pub mod trace;

pub use error::{Result, ServeError};
