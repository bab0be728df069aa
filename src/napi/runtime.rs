//! One tokio runtime for every server in the process (napi's `tokio_rt` runtime, configured here).

use napi_derive::napi;
use std::sync::atomic::{AtomicUsize, Ordering};

static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Worker threads: `KOATTY_SERVE_WORKERS` if set, else one fewer than the cores (the Node main
/// thread needs one), at least one.
fn worker_threads() -> usize {
    std::env::var("KOATTY_SERVE_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .saturating_sub(1)
                .max(1)
        })
}

#[napi_derive::module_init]
fn init() {
    let workers = worker_threads();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("koatty-serve-io")
        .on_thread_park(crate::napi::delivery::on_io_thread_park)
        .enable_all()
        .build()
    {
        Ok(rt) => {
            WORKERS.store(workers, Ordering::Relaxed);
            ::napi::bindgen_prelude::create_custom_tokio_runtime(rt);
        }
        // napi falls back to its default runtime; the addon still works.
        Err(_) => WORKERS.store(0, Ordering::Relaxed),
    }
}

#[napi(object)]
pub struct RuntimeInfo {
    pub native: bool,
    /// `release` or `debug`: benchmarks refuse debug builds.
    pub build_profile: String,
    pub worker_threads: u32,
    pub version: String,
}

#[napi]
pub fn runtime_info() -> RuntimeInfo {
    RuntimeInfo {
        native: true,
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_string(),
        worker_threads: WORKERS.load(Ordering::Relaxed) as u32,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}
