//! The JavaScript surface of the addon (`binding.js`), wrapped by the hand-written `index.js`. It
//! only converts between JavaScript values and the napi-free core in `crates/core`.
//!
//! - [`runtime`]: the one tokio runtime, configured when the module loads
//! - [`server`]: `NativeServer`, one per JavaScript server object (the core's `Host`)
//! - [`answers`]: the calls that answer each request, message or gRPC call, on a server's handle
//! - [`wire`]: what crosses per request and event, and the numbers both sides read
//! - [`delivery`]: the queue that hands requests and events to JavaScript in batches
//! - [`uv`]: the libuv async handle that wakes the JS thread for it
//! - [`error`]: the one mapping from core errors to coded JavaScript errors
//! - [`config`]: `resolveConfig`, the strict validation behind `ConfigHelper`
//! - [`logging`]: the core's log events forwarded to the JavaScript logger
//! - [`trace`]: native trace mode's access lines

pub mod answers;
pub mod config;
pub mod delivery;
pub mod error;
pub mod logging;
pub mod runtime;
pub mod server;
pub mod trace;
pub mod uv;
pub mod wire;
