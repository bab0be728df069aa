//! koatty_serve's Node-API layer. It only converts between JavaScript and the napi-free core in
//! `crates/core`; see `src/napi/`.

// The #[napi] items are reached from JavaScript only, which a test build cannot see.
#![cfg_attr(test, allow(dead_code))]

mod napi;
