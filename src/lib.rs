//! koatty_serve's Node-API layer. It only converts between JavaScript and the napi-free core in
//! `crates/core`; see `src/napi/`.

mod napi;
