//! Counters kept on the I/O threads with relaxed atomics, read on demand by `getMetrics()`: no
//! lock, no task and no JavaScript involved in counting.
//!
//! Latency goes into a fixed log-scale histogram (four buckets per power of two of microseconds,
//! so a percentile is within ~19 % of the true value); the per-second history is a ring of slots
//! keyed by the second they count, reset by the first event of a new second.

mod protocols;

pub use protocols::{
    ActiveCalls, CallKind, GrpcFigures, Http1Figures, Http2Figures, MethodFigures, MethodStats,
    Sections, WebSocketFigures,
};
use protocols::{GrpcCounters, Http1Counters, Http2Counters, WsCounters};

use crate::pool::{Connection, Registry, WireProtocol};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BUCKETS: usize = 128;
/// Seconds of per-second history kept.
pub const HISTORY_SECONDS: usize = 300;

struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn bucket_of(us: u64) -> usize {
        if us < 2 {
            return 0;
        }
        let log2_x4 = (us as f64).log2() * 4.0;
        (log2_x4 as usize).min(BUCKETS - 1)
    }

    /// Upper bound of a bucket, in µs.
    fn bucket_limit(i: usize) -> f64 {
        2f64.powf((i + 1) as f64 / 4.0)
    }

    fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The latency under which `q` of the requests finished, in ms (0 with no data).
    fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::bucket_limit(i) / 1000.0;
            }
        }
        Self::bucket_limit(BUCKETS - 1) / 1000.0
    }

    fn average_ms(&self) -> f64 {
        let n = self.count.load(Relaxed);
        if n == 0 {
            0.0
        } else {
            self.sum_us.load(Relaxed) as f64 / n as f64 / 1000.0
        }
    }
}

#[derive(Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    latency_sum_us: AtomicU64,
    ws_messages_in: AtomicU64,
    ws_messages_out: AtomicU64,
    ws_closed: AtomicU64,
    pong_timeouts: AtomicU64,
    refused_streams: AtomicU64,
    reset_streams: AtomicU64,
}

/// One second of history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondSample {
    /// Unix time of the second, in seconds.
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub connections: u64,
    pub average_latency_ms: f64,
    /// WebSocket messages received and sent, connections ended and those ended for a missing
    /// pong.
    pub ws_messages_in: u64,
    pub ws_messages_out: u64,
    pub ws_closed: u64,
    pub pong_timeouts: u64,
    /// HTTP/2 streams refused by the server and reset by clients.
    pub refused_streams: u64,
    pub reset_streams: u64,
}

struct History {
    slots: Vec<Slot>,
}

/// The current Unix second. Read for every counted event (per request, and per WebSocket message
/// each way): on Linux the coarse clock, a few ns instead of ~20 (its ≤ 4 ms lag is nothing at a
/// second's resolution).
fn unix_second() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `now`.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
            return now.tv_sec.max(0) as u64;
        }
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl History {
    fn new() -> Self {
        History {
            slots: (0..HISTORY_SECONDS).map(|_| Slot::default()).collect(),
        }
    }

    /// The slot for this second, cleared if it still holds an older second.
    fn slot(&self) -> &Slot {
        let now = unix_second();
        let slot = &self.slots[(now as usize) % HISTORY_SECONDS];
        let held = slot.second.load(Relaxed);
        if held != now
            && slot
                .second
                .compare_exchange(held, now, Relaxed, Relaxed)
                .is_ok()
        {
            // A few events of the new second may race with this reset; history is approximate.
            slot.requests.store(0, Relaxed);
            slot.errors.store(0, Relaxed);
            slot.connections.store(0, Relaxed);
            slot.latency_sum_us.store(0, Relaxed);
            slot.ws_messages_in.store(0, Relaxed);
            slot.ws_messages_out.store(0, Relaxed);
            slot.ws_closed.store(0, Relaxed);
            slot.pong_timeouts.store(0, Relaxed);
            slot.refused_streams.store(0, Relaxed);
            slot.reset_streams.store(0, Relaxed);
        }
        slot
    }

    fn samples(&self, last: usize) -> Vec<SecondSample> {
        let now = unix_second();
        let oldest = now.saturating_sub(last.min(HISTORY_SECONDS) as u64 - 1);
        let mut out: Vec<SecondSample> = self
            .slots
            .iter()
            .filter_map(|s| {
                let second = s.second.load(Relaxed);
                (second >= oldest && second <= now).then(|| {
                    let requests = s.requests.load(Relaxed);
                    SecondSample {
                        second,
                        requests,
                        errors: s.errors.load(Relaxed),
                        connections: s.connections.load(Relaxed),
                        average_latency_ms: if requests == 0 {
                            0.0
                        } else {
                            s.latency_sum_us.load(Relaxed) as f64 / requests as f64 / 1000.0
                        },
                        ws_messages_in: s.ws_messages_in.load(Relaxed),
                        ws_messages_out: s.ws_messages_out.load(Relaxed),
                        ws_closed: s.ws_closed.load(Relaxed),
                        pong_timeouts: s.pong_timeouts.load(Relaxed),
                        refused_streams: s.refused_streams.load(Relaxed),
                        reset_streams: s.reset_streams.load(Relaxed),
                    }
                })
            })
            .collect();
        out.sort_by_key(|s| s.second);
        out
    }
}

pub struct Metrics {
    started: Instant,
    /// Per-request counting (off only with `KOATTY_SERVE_METRICS=off`, to measure its cost);
    /// connection counts and readiness are kept either way.
    per_request: bool,
    pub(crate) active_connections: AtomicU64,
    pub(crate) total_connections: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    /// Listeners accepting right now (a restart briefly has two); readiness needs one.
    listeners: std::sync::atomic::AtomicI64,
    /// Mirrors `accepting()` for those who wait for it to change (the health service's Watch).
    accepting_changed: tokio::sync::watch::Sender<bool>,
    /// Whether any connection is open, for those who wait for it to change.
    connections_open_changed: tokio::sync::watch::Sender<bool>,
    requests_total: AtomicU64,
    requests_active: AtomicU64,
    requests_failed: AtomicU64,
    requests_timed_out: AtomicU64,
    requests_aborted: AtomicU64,
    responses_5xx: AtomicU64,
    ws_dead_peers: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: Histogram,
    history: History,
    /// Every live connection (`getConnections()`), and how many speak each protocol.
    pub(crate) connections: Registry,
    http1: Http1Counters,
    http2: Http2Counters,
    ws: WsCounters,
    grpc: GrpcCounters,
    /// [`Sections`] as bits: whose figures the snapshot carries.
    sections: AtomicU8,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    pub uptime_ms: u64,
    pub active_connections: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub requests_total: u64,
    pub requests_active: u64,
    pub requests_failed: u64,
    pub requests_timed_out: u64,
    pub requests_aborted: u64,
    pub responses_5xx: u64,
    /// WebSocket peers terminated for missing a pong.
    pub ws_dead_peers: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_per_second: f64,
    /// (failed + timed out + 5xx answers) / requests.
    pub error_rate: f64,
    pub average_latency_ms: f64,
    pub p50_latency_ms: f64,
    pub p90_latency_ms: f64,
    pub p99_latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http1: Option<Http1Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<Http2Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebSocketFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcFigures>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            per_request: per_request_metrics(),
            active_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            listeners: std::sync::atomic::AtomicI64::new(0),
            accepting_changed: tokio::sync::watch::Sender::new(false),
            connections_open_changed: tokio::sync::watch::Sender::new(false),
            requests_total: AtomicU64::new(0),
            requests_active: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            requests_timed_out: AtomicU64::new(0),
            requests_aborted: AtomicU64::new(0),
            responses_5xx: AtomicU64::new(0),
            ws_dead_peers: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            latency: Histogram::new(),
            history: History::new(),
            connections: Registry::default(),
            http1: Http1Counters::default(),
            http2: Http2Counters::default(),
            ws: WsCounters::default(),
            grpc: GrpcCounters::default(),
            sections: AtomicU8::new(0),
        }
    }
}

/// `KOATTY_SERVE_METRICS=off` (or 0/false/no) turns per-request metrics off: a benchmark switch
/// (bench/run.js `--group bookkeeping`), read once per process.
fn per_request_metrics() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("KOATTY_SERVE_METRICS")
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
                .as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.total_connections.fetch_add(1, Relaxed);
        if self.active_connections.fetch_add(1, Relaxed) == 0 {
            self.publish_connections_open();
        }
        self.history.slot().connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        if self.active_connections.fetch_sub(1, Relaxed) == 1 {
            self.publish_connections_open();
        }
    }

    /// On the first connection opening and the last closing; what is published is read under the
    /// channel's lock, so racing transitions settle on the count as it is.
    fn publish_connections_open(&self) {
        self.connections_open_changed.send_if_modified(|published| {
            let now = self.active_connections.load(Relaxed) > 0;
            std::mem::replace(published, now) != now
        });
    }

    /// Follows whether any connection is open (on any listener of this server).
    pub fn watch_connections_open(&self) -> tokio::sync::watch::Receiver<bool> {
        self.connections_open_changed.subscribe()
    }

    pub(crate) fn listener_started(&self) {
        self.listeners.fetch_add(1, Relaxed);
        self.publish_accepting();
    }

    pub(crate) fn listener_stopped(&self) {
        self.listeners.fetch_sub(1, Relaxed);
        self.publish_accepting();
    }

    /// Read under the channel's lock, so concurrent starts and stops publish the final value.
    fn publish_accepting(&self) {
        self.accepting_changed.send_if_modified(|published| {
            let now = self.accepting();
            std::mem::replace(published, now) != now
        });
    }

    /// Whether a listener is accepting (readiness): false from the first shutdown step on.
    pub fn accepting(&self) -> bool {
        self.listeners.load(Relaxed) > 0
    }

    /// Follows `accepting()`.
    pub fn watch_accepting(&self) -> tokio::sync::watch::Receiver<bool> {
        self.accepting_changed.subscribe()
    }

    pub(crate) fn connection_rejected(&self) {
        self.rejected_connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_started(&self) {
        if !self.per_request {
            return;
        }
        self.requests_total.fetch_add(1, Relaxed);
        self.requests_active.fetch_add(1, Relaxed);
    }

    pub(crate) fn ws_dead_peer(&self) {
        self.ws_dead_peers.fetch_add(1, Relaxed);
        self.history.slot().pong_timeouts.fetch_add(1, Relaxed);
    }

    /// Whose figures the snapshot carries (the protocol the server was started for).
    pub fn set_sections(&self, sections: Sections) {
        self.sections.store(sections.to_bits(), Relaxed);
    }

    /// The live connections (`getConnections()`, `closeConnection(id)`).
    pub fn connections(&self) -> &Registry {
        &self.connections
    }

    /// A request (HTTP/2 stream, gRPC call) began on `conn`, which had `in_flight_before` in
    /// flight. Per connection: its request count; per protocol: keep-alive reuse and busy
    /// connections (HTTP/1.1), streams in flight and their peak (HTTP/2).
    pub(crate) fn request_began(&self, conn: &Connection, in_flight_before: usize, http2: bool) {
        let served_before = conn.requests.fetch_add(1, Relaxed);
        if !self.per_request {
            return;
        }
        if http2 {
            self.http2.active_streams.fetch_add(1, Relaxed);
            let now = in_flight_before as u64 + 1;
            // A plain load first: the peak rarely moves, and a read-modify-write every stream
            // would bounce the line between I/O threads.
            if now > self.http2.peak_streams.load(Relaxed) {
                self.http2.peak_streams.fetch_max(now, Relaxed);
            }
        } else {
            if served_before > 0 {
                self.http1.keep_alive_reuses.fetch_add(1, Relaxed);
            } else {
                self.http1.used_connections.fetch_add(1, Relaxed);
            }
            if in_flight_before == 0 {
                self.http1.busy.fetch_add(1, Relaxed);
            }
        }
    }

    /// A request of [`Metrics::request_began`] ended, leaving `in_flight_after` on its connection.
    pub(crate) fn request_ended(&self, in_flight_after: usize, http2: bool) {
        if !self.per_request {
            return;
        }
        if http2 {
            self.http2.active_streams.fetch_sub(1, Relaxed);
        } else if in_flight_after == 0 {
            self.http1.busy.fetch_sub(1, Relaxed);
        }
    }

    /// The server refused an HTTP/2 stream (RST_STREAM REFUSED_STREAM). One refused after the
    /// connection's GOAWAY (a stream that crossed it, refused by the drain of a shutdown or a
    /// restart) counts in the total but not in the history the health rates are taken from: it
    /// tells of a connection ending, not of overload (`getHealth()` read `overloaded` for a
    /// minute after a shutdown, and after the restart that followed it).
    pub(crate) fn h2_stream_refused(&self, after_goaway: bool) {
        self.http2.refused_streams.fetch_add(1, Relaxed);
        if !after_goaway {
            self.history.slot().refused_streams.fetch_add(1, Relaxed);
        }
    }

    /// A client reset an HTTP/2 stream.
    pub(crate) fn h2_stream_reset(&self) {
        self.http2.reset_streams.fetch_add(1, Relaxed);
        self.history.slot().reset_streams.fetch_add(1, Relaxed);
    }

    /// An HTTP/2 session was sent its (first) GOAWAY.
    pub(crate) fn h2_goaway_sent(&self) {
        self.http2.goaways_sent.fetch_add(1, Relaxed);
    }

    pub(crate) fn ws_message_in(&self, bytes: usize) {
        if !self.per_request {
            return;
        }
        self.ws.messages_in.fetch_add(1, Relaxed);
        self.ws.bytes_in.fetch_add(bytes as u64, Relaxed);
        self.history.slot().ws_messages_in.fetch_add(1, Relaxed);
    }

    pub(crate) fn ws_message_out(&self, bytes: usize) {
        if !self.per_request {
            return;
        }
        self.ws.messages_out.fetch_add(1, Relaxed);
        self.ws.bytes_out.fetch_add(bytes as u64, Relaxed);
        self.history.slot().ws_messages_out.fetch_add(1, Relaxed);
    }

    pub(crate) fn ws_ping_sent(&self) {
        self.ws.pings_sent.fetch_add(1, Relaxed);
    }

    /// A WebSocket connection ended with `code` (1006 when no close frame was exchanged).
    pub(crate) fn ws_closed(&self, code: u16) {
        self.ws.closed(code);
        self.history.slot().ws_closed.fetch_add(1, Relaxed);
    }

    /// A gRPC call arrived; `kind` when it is a registered method's.
    pub(crate) fn grpc_call_began(&self, kind: Option<CallKind>) {
        if !self.per_request {
            return;
        }
        self.grpc.calls_started.fetch_add(1, Relaxed);
        if let Some(kind) = kind {
            self.grpc.call_began(kind);
        }
    }

    /// A gRPC call of [`Metrics::grpc_call_began`] ended with status `code`.
    pub(crate) fn grpc_call_ended(&self, kind: Option<CallKind>, code: i32) {
        if !self.per_request {
            return;
        }
        self.grpc.status_sent(code);
        if let Some(kind) = kind {
            self.grpc.call_ended(kind);
        }
    }

    /// Whether per-request counting is on (see [`per_request_metrics`]).
    pub(crate) fn counts_requests(&self) -> bool {
        self.per_request
    }

    pub(crate) fn bytes_received(&self, n: usize) {
        if !self.per_request {
            return;
        }
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// A response completed: its status, body bytes and time since the request was handed over.
    pub(crate) fn request_finished(&self, status: u16, bytes: usize, latency: Duration) {
        if !self.per_request {
            return;
        }
        self.requests_active.fetch_sub(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
        self.latency.record(latency);
        let slot = self.history.slot();
        slot.requests.fetch_add(1, Relaxed);
        slot.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
        if status >= 500 {
            self.responses_5xx.fetch_add(1, Relaxed);
            slot.errors.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn request_failed(&self) {
        if !self.per_request {
            return;
        }
        self.requests_active.fetch_sub(1, Relaxed);
        self.requests_failed.fetch_add(1, Relaxed);
        let slot = self.history.slot();
        slot.requests.fetch_add(1, Relaxed);
        slot.errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn request_aborted(&self) {
        if !self.per_request {
            return;
        }
        self.requests_active.fetch_sub(1, Relaxed);
        self.requests_aborted.fetch_add(1, Relaxed);
    }

    /// Counted in addition to the abort that removes the entry.
    pub(crate) fn request_timed_out(&self) {
        if !self.per_request {
            return;
        }
        self.requests_timed_out.fetch_add(1, Relaxed);
        // A timed-out request is a request of its second too (its abort is not counted there), so
        // a window where everything times out shows an error rate of 1, not 0.
        let slot = self.history.slot();
        slot.requests.fetch_add(1, Relaxed);
        slot.errors.fetch_add(1, Relaxed);
    }

    /// Per-second samples of the last `seconds` seconds (at most [`HISTORY_SECONDS`]), oldest
    /// first; seconds without any event are absent.
    pub fn history(&self, seconds: usize) -> Vec<SecondSample> {
        self.history.samples(seconds.max(1))
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let uptime = self.started.elapsed();
        let total_connections = self.total_connections.load(Relaxed);
        let requests_total = self.requests_total.load(Relaxed);
        let responses_5xx = self.responses_5xx.load(Relaxed);
        let failed = self.requests_failed.load(Relaxed)
            + self.requests_timed_out.load(Relaxed)
            + responses_5xx;
        let sections = Sections::from_bits(self.sections.load(Relaxed));
        MetricsSnapshot {
            uptime_ms: uptime.as_millis() as u64,
            active_connections: self.active_connections.load(Relaxed),
            total_connections,
            rejected_connections: self.rejected_connections.load(Relaxed),
            requests_total,
            requests_active: self.requests_active.load(Relaxed),
            requests_failed: self.requests_failed.load(Relaxed),
            requests_timed_out: self.requests_timed_out.load(Relaxed),
            requests_aborted: self.requests_aborted.load(Relaxed),
            responses_5xx,
            ws_dead_peers: self.ws_dead_peers.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connections_per_second: total_connections as f64 / uptime.as_secs_f64().max(1e-3),
            error_rate: if requests_total == 0 {
                0.0
            } else {
                (failed as f64 / requests_total as f64).min(1.0)
            },
            average_latency_ms: self.latency.average_ms(),
            p50_latency_ms: self.latency.quantile_ms(0.50),
            p90_latency_ms: self.latency.quantile_ms(0.90),
            p99_latency_ms: self.latency.quantile_ms(0.99),
            http1: sections.http1.then(|| {
                self.http1
                    .figures(self.connections.open(WireProtocol::Http1))
            }),
            http2: sections.http2.then(|| {
                let sessions = self.connections.open(WireProtocol::Http2)
                    + self.connections.open(WireProtocol::Grpc);
                self.http2.figures(sessions)
            }),
            websocket: sections.websocket.then(|| {
                self.ws.figures(
                    self.connections.open(WireProtocol::WebSocket),
                    self.ws_dead_peers.load(Relaxed),
                )
            }),
            grpc: sections.grpc.then(|| self.grpc.figures()),
        }
    }
}

impl MetricsSnapshot {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self, pending_requests: usize, ready: bool) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            out.push_str(&format!(
                "# HELP koatty_serve_{name} {help}\n# TYPE koatty_serve_{name} {kind}\n"
            ));
            for (labels, value) in samples {
                out.push_str(&format!("koatty_serve_{name}{labels} {value}\n"));
            }
        };
        metric(
            "up",
            "gauge",
            "1 while the server accepts connections.",
            &[("", if ready { 1.0 } else { 0.0 })],
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the server was created.",
            &[("", self.uptime_ms as f64 / 1000.0)],
        );
        metric(
            "connections_active",
            "gauge",
            "Open connections.",
            &[("", self.active_connections as f64)],
        );
        metric(
            "connections_total",
            "counter",
            "Connections accepted.",
            &[("", self.total_connections as f64)],
        );
        metric(
            "connections_rejected_total",
            "counter",
            "Connections turned away at maxConnections.",
            &[("", self.rejected_connections as f64)],
        );
        metric(
            "requests_total",
            "counter",
            "Requests handed to the application.",
            &[("", self.requests_total as f64)],
        );
        metric(
            "requests_active",
            "gauge",
            "Requests not finished.",
            &[("", self.requests_active as f64)],
        );
        metric(
            "requests_pending",
            "gauge",
            "Requests awaiting the application's answer or streaming it.",
            &[("", pending_requests as f64)],
        );
        metric(
            "request_errors_total",
            "counter",
            "Requests that failed, by kind.",
            &[
                ("{kind=\"failed\"}", self.requests_failed as f64),
                ("{kind=\"timeout\"}", self.requests_timed_out as f64),
                ("{kind=\"aborted\"}", self.requests_aborted as f64),
                ("{kind=\"status_5xx\"}", self.responses_5xx as f64),
            ],
        );
        metric(
            "received_bytes_total",
            "counter",
            "Request body bytes received.",
            &[("", self.bytes_in as f64)],
        );
        metric(
            "sent_bytes_total",
            "counter",
            "Response body bytes sent.",
            &[("", self.bytes_out as f64)],
        );
        metric(
            "request_duration_milliseconds",
            "summary",
            "Time from handing a request over to its response completing.",
            &[
                ("{quantile=\"0.5\"}", self.p50_latency_ms),
                ("{quantile=\"0.9\"}", self.p90_latency_ms),
                ("{quantile=\"0.99\"}", self.p99_latency_ms),
            ],
        );
        // Each protocol's own figures, labelled with it.
        if let Some(f) = &self.http1 {
            f.prometheus(&mut out);
        }
        if let Some(f) = &self.http2 {
            f.prometheus(&mut out);
        }
        if let Some(f) = &self.websocket {
            f.prometheus(&mut out);
        }
        if let Some(f) = &self.grpc {
            f.prometheus(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_latencies() {
        let m = Metrics::default();
        for _ in 0..98 {
            m.request_started();
            m.request_finished(200, 10, Duration::from_millis(1));
        }
        for _ in 0..2 {
            m.request_started();
            m.request_finished(503, 10, Duration::from_millis(100));
        }
        let s = m.snapshot();
        assert!((0.9..1.25).contains(&s.p50_latency_ms), "{s:?}");
        assert!((0.9..1.25).contains(&s.p90_latency_ms), "{s:?}");
        assert!((90.0..125.0).contains(&s.p99_latency_ms), "{s:?}");
        assert!((2.9..3.1).contains(&s.average_latency_ms), "{s:?}");
        assert_eq!(s.responses_5xx, 2);
        assert!((s.error_rate - 0.02).abs() < 1e-9);
        assert_eq!(s.bytes_out, 1000);
        let h = m.history(10);
        assert_eq!(h.iter().map(|x| x.requests).sum::<u64>(), 100);
        assert_eq!(h.iter().map(|x| x.errors).sum::<u64>(), 2);
    }
}
