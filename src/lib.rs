//! koatty_serve's Node-API layer. It only converts between JavaScript and the napi-free core in
//! `crates/core`; see `src/napi/`.

// The #[napi] items are reached from JavaScript only, which a test build cannot see.
#![cfg_attr(test, allow(dead_code))]

mod napi;

/// The I/O threads allocate and free small buffers per request (frames, headers, channel nodes);
/// glibc's allocator spent ≈ 15 % of a gRPC I/O thread on them in a profile, mimalloc a fraction.
/// Only Rust's allocations use it; memory handed to JavaScript is freed by Rust's own finalizers.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
