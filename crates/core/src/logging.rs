//! The core's log events (`tracing`) handed to a sink outside the core: the addon forwards them to
//! the JavaScript logger (Koatty's logger when the app has one, else JSON lines). The level check
//! is one atomic load, before any formatting; a dropped level costs nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Levels as numbers, most severe first; a record is kept when its rank ≤ the maximum.
pub const OFF: u8 = 0;
const ERROR: u8 = 1;
const WARN: u8 = 2;
const INFO: u8 = 3;
const DEBUG: u8 = 4;
const TRACE: u8 = 5;

static MAX_LEVEL: AtomicU8 = AtomicU8::new(WARN);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => ERROR,
        Level::WARN => WARN,
        Level::INFO => INFO,
        Level::DEBUG => DEBUG,
        Level::TRACE => TRACE,
    }
}

/// `off`, `error`, `warn` (or Koatty's `warning`), `info`, `debug`, `trace`.
pub fn parse_level(name: &str) -> Option<u8> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => OFF,
        "error" => ERROR,
        "warn" | "warning" => WARN,
        "info" => INFO,
        "debug" => DEBUG,
        "trace" => TRACE,
        _ => return None,
    })
}

/// Sets the most verbose level forwarded. Callsites cache whether they are enabled, so the cache
/// is rebuilt (rare: a configuration change).
pub fn set_max_level(level: u8) {
    MAX_LEVEL.store(level.min(TRACE), Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

pub fn max_level() -> u8 {
    MAX_LEVEL.load(Ordering::Relaxed)
}

/// One log event, formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub level: &'static str,
    /// The module that logged (`koatty_serve_core::protocol::http`, `h2::proto`, …).
    pub target: String,
    pub message: String,
    /// The event's other fields, `name=value` separated by spaces (empty when there are none).
    pub fields: String,
}

/// Where records go. Must not block: it is called on runtime threads.
pub trait LogSink: Send + Sync + 'static {
    fn write(&self, record: LogRecord);
}

/// A `tracing` layer that hands enabled events to a [`LogSink`].
pub struct ForwardLayer<K> {
    sink: K,
}

impl<K: LogSink> ForwardLayer<K> {
    pub fn new(sink: K) -> Self {
        ForwardLayer { sink }
    }
}

impl<S: Subscriber, K: LogSink> Layer<S> for ForwardLayer<K> {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        rank(metadata.level()) <= max_level()
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if rank(metadata.level()) > max_level() {
            return;
        }
        let mut fields = FieldText::default();
        event.record(&mut fields);
        self.sink.write(LogRecord {
            level: metadata.level().as_str(),
            target: metadata.target().to_owned(),
            message: fields.message,
            fields: fields.rest,
        });
    }
}

#[derive(Default)]
struct FieldText {
    message: String,
    rest: String,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.push(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.push(field, format_args!("{value:?}"));
        }
    }
}

impl FieldText {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{}={}", field.name(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<LogRecord>>>);

    impl LogSink for Collected {
        fn write(&self, record: LogRecord) {
            self.0.lock().unwrap().push(record);
        }
    }

    #[test]
    fn events_are_formatted_and_filtered_by_the_live_level() {
        let sink = Collected::default();
        let subscriber = tracing_subscriber::registry().with(ForwardLayer::new(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            set_max_level(WARN);
            let remote = "127.0.0.1:5000";
            tracing::warn!(%remote, attempts = 3, "accept failed; backing off");
            tracing::info!("dropped at warn");
            set_max_level(INFO);
            tracing::info!("kept at info");
            set_max_level(OFF);
            tracing::error!("dropped when off");
            set_max_level(WARN);
        });
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].level, "WARN");
        assert_eq!(got[0].message, "accept failed; backing off");
        assert_eq!(got[0].fields, "remote=127.0.0.1:5000 attempts=3");
        assert!(got[0].target.ends_with("logging::tests"));
        assert_eq!(got[1].message, "kept at info");
        assert_eq!(parse_level("warning"), Some(WARN));
        assert_eq!(parse_level("verbose"), None);
    }
}
