//! The JavaScript surface of the addon (`binding.js`), wrapped by the hand-written `index.js`.
//!
//! - [`runtime`]: the one tokio runtime, configured when the module loads
//! - [`server`]: `NativeServer`, one per JavaScript server object, and its request sink
//! - [`config`]: `resolveConfig`, the strict validation behind `ConfigHelper`
//! - [`logging`]: the core's log events forwarded to the JavaScript logger

pub mod config;
pub mod logging;
pub mod runtime;
pub mod server;
