//! Forwards the core's log events to a JavaScript function (js/logger.js), which writes them with
//! Koatty's logger or as JSON lines. Bounded: when JavaScript falls behind, records are dropped and
//! counted rather than queued without limit or blocking a runtime thread.

use koatty_serve_core::logging::{self, ForwardLayer, LogRecord, LogSink};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use super::error::Code;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use tracing_subscriber::layer::SubscriberExt;

/// Records waiting for the JavaScript thread at most.
const QUEUE: usize = 1024;

/// `(level, target, message, fields)`; weak, so logging never keeps the process alive.
type LogFn = ThreadsafeFunction<
    FnArgs<(String, String, String, String)>,
    (),
    FnArgs<(String, String, String, String)>,
    Status,
    false,
    true,
    QUEUE,
>;

static JS_LOGGER: Mutex<Option<Arc<LogFn>>> = Mutex::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

struct JsLogSink;

impl LogSink for JsLogSink {
    fn write(&self, record: LogRecord) {
        let target = JS_LOGGER.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(f) = target else { return };
        let args = (
            record.level.to_string(),
            record.target,
            record.message,
            record.fields,
        );
        if f.call(args.into(), ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends the core's log events at `level` (`off`, `error`, `warn`, `info`, `debug`, `trace`) and
/// above to `onLog(level, target, message, fields)`. The last call wins. Throws on a bad level.
#[napi]
pub fn set_native_logger(
    level: String,
    on_log: Function<FnArgs<(String, String, String, String)>, ()>,
) -> Result<(), Code> {
    let rank = parse(&level)?;
    let f: LogFn = on_log
        .build_threadsafe_function::<FnArgs<(String, String, String, String)>>()
        .callee_handled::<false>()
        .weak::<true>()
        .max_queue_size::<QUEUE>()
        .build()
        .map_err(|e| Error::new("ERR_NATIVE_LOGGER", e.reason.clone()))?;
    *JS_LOGGER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    INSTALL.call_once(|| {
        // Another global subscriber (an embedding that set one first) keeps precedence.
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(ForwardLayer::new(JsLogSink)),
        );
    });
    logging::set_max_level(rank);
    Ok(())
}

/// Changes the forwarded level at run time (`ERR_INVALID_CONFIG` for an unknown name).
#[napi]
pub fn set_native_log_level(level: String) -> Result<(), Code> {
    logging::set_max_level(parse(&level)?);
    Ok(())
}

/// Records dropped because JavaScript was behind by more than the queue holds.
#[napi]
pub fn native_log_dropped() -> f64 {
    DROPPED.load(Ordering::Relaxed) as f64
}

fn parse(level: &str) -> Result<u8, Code> {
    logging::parse_level(level).ok_or_else(|| {
        Error::new(
            "ERR_INVALID_CONFIG",
            format!(
                "ERR_INVALID_CONFIG: log level '{level}' (expected off, error, warn, info, debug or trace)"
            ),
        )
    })
}
