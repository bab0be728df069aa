//! What each protocol counts beyond the shared figures: HTTP/1.1 keep-alive, HTTP/2 sessions and
//! streams, WebSocket messages and close codes, gRPC calls by status, method and kind. Relaxed
//! atomics like the rest; tables are fixed (close codes, statuses, call kinds) or bounded by the
//! registered gRPC methods.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Which protocols' figures a server reports (by the protocol it was started for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sections {
    pub http1: bool,
    pub http2: bool,
    pub websocket: bool,
    pub grpc: bool,
}

impl Sections {
    pub fn of(protocol: crate::config::Protocol) -> Sections {
        use crate::config::Protocol::*;
        let (http1, http2, websocket, grpc) = match protocol {
            Http | Https => (true, false, false, false),
            // HTTP/1.1 too: clients without h2 fall back to it (allowHTTP1) and h2c ports serve both.
            Http2 => (true, true, false, false),
            // Plain HTTP requests to a WebSocket server are served too.
            Ws | Wss => (true, false, true, false),
            Grpc => (false, true, false, true),
        };
        Sections {
            http1,
            http2,
            websocket,
            grpc,
        }
    }

    pub(crate) fn to_bits(self) -> u8 {
        u8::from(self.http1)
            | u8::from(self.http2) << 1
            | u8::from(self.websocket) << 2
            | u8::from(self.grpc) << 3
    }

    pub(crate) fn from_bits(bits: u8) -> Sections {
        Sections {
            http1: bits & 1 != 0,
            http2: bits & 2 != 0,
            websocket: bits & 4 != 0,
            grpc: bits & 8 != 0,
        }
    }
}

/// HTTP/1.1 connections.
#[derive(Default)]
pub(crate) struct Http1Counters {
    /// Connections that began their first request.
    pub(crate) used_connections: AtomicU64,
    /// Requests begun on a connection that had served one before.
    pub(crate) keep_alive_reuses: AtomicU64,
    /// Connections with a request in flight (idle = open − busy).
    pub(crate) busy: AtomicI64,
}

/// HTTP/2 sessions (the HTTP/2 server's and gRPC's).
#[derive(Default)]
pub(crate) struct Http2Counters {
    pub(crate) active_streams: AtomicI64,
    /// The most streams in flight at once on one session.
    pub(crate) peak_streams: AtomicU64,
    /// RST_STREAM(REFUSED_STREAM) sent: over `maxConcurrentStreams`, or a header block too large.
    pub(crate) refused_streams: AtomicU64,
    /// RST_STREAM received from clients.
    pub(crate) reset_streams: AtomicU64,
    /// Sessions sent a GOAWAY (counted once per session: a graceful one sends two frames).
    pub(crate) goaways_sent: AtomicU64,
}

/// Close codes counted one by one: 1000–1015 (RFC 6455 §7.4.1 and the IANA registry); any
/// other (application codes 3000–4999 included) goes into one "other" slot.
const CLOSE_CODE_FIRST: u16 = 1000;
const CLOSE_CODES: usize = 16;

/// WebSocket connections (text and binary messages; control frames are not messages).
#[derive(Default)]
pub(crate) struct WsCounters {
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// The server's own keep-alive pings (`pingInterval`), not the handler's.
    pub(crate) pings_sent: AtomicU64,
    /// By the code each connection ended with ([`CLOSE_CODES`] known ones, then "other").
    close_codes: [AtomicU64; CLOSE_CODES + 1],
}

impl WsCounters {
    pub(crate) fn closed(&self, code: u16) {
        let slot = usize::from(code.wrapping_sub(CLOSE_CODE_FIRST)).min(CLOSE_CODES);
        self.close_codes[slot].fetch_add(1, Relaxed);
    }

    fn close_codes(&self) -> BTreeMap<String, u64> {
        self.close_codes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Relaxed);
                let key = if i == CLOSE_CODES {
                    "other".to_string()
                } else {
                    (CLOSE_CODE_FIRST + i as u16).to_string()
                };
                (n > 0).then_some((key, n))
            })
            .collect()
    }
}

/// gRPC status codes 0–16; anything else is counted as "other".
const GRPC_STATUSES: usize = 17;

/// A gRPC call's kind (its request and response shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Unary = 0,
    ClientStreaming = 1,
    ServerStreaming = 2,
    BidiStreaming = 3,
}

impl CallKind {
    pub fn of(request_stream: bool, response_stream: bool) -> CallKind {
        match (request_stream, response_stream) {
            (false, false) => CallKind::Unary,
            (true, false) => CallKind::ClientStreaming,
            (false, true) => CallKind::ServerStreaming,
            (true, true) => CallKind::BidiStreaming,
        }
    }
}

/// gRPC calls.
#[derive(Default)]
pub(crate) struct GrpcCounters {
    pub(crate) calls_started: AtomicU64,
    by_status: [AtomicU64; GRPC_STATUSES + 1],
    /// Calls of registered methods in progress, by [`CallKind`].
    active: [AtomicI64; 4],
}

impl GrpcCounters {
    pub(crate) fn call_began(&self, kind: CallKind) {
        self.active[kind as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn call_ended(&self, kind: CallKind) {
        self.active[kind as usize].fetch_sub(1, Relaxed);
    }

    pub(crate) fn status_sent(&self, code: i32) {
        let slot = usize::try_from(code).map_or(GRPC_STATUSES, |c| c.min(GRPC_STATUSES));
        self.by_status[slot].fetch_add(1, Relaxed);
    }
}

/// A registered gRPC method's calls (kept with the method registry, so bounded by it).
#[derive(Default, Debug)]
pub struct MethodStats {
    calls: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl MethodStats {
    pub(crate) fn record(&self, latency: std::time::Duration) {
        self.calls.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    pub fn figures(&self) -> MethodFigures {
        let calls = self.calls.load(Relaxed);
        MethodFigures {
            calls,
            average_latency_ms: if calls == 0 {
                0.0
            } else {
                self.latency_sum_us.load(Relaxed) as f64 / calls as f64 / 1000.0
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Http1Figures {
    pub keep_alive_reuses: u64,
    /// Requests per connection that served any, on average.
    pub requests_per_connection: f64,
    /// Open connections with no request in flight.
    pub idle_connections: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Http2Figures {
    pub sessions: u64,
    pub active_streams: u64,
    pub max_streams_per_session: u64,
    pub refused_streams: u64,
    pub reset_streams: u64,
    pub goaways_sent: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketFigures {
    pub connections: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pings_sent: u64,
    pub pong_timeouts: u64,
    /// Connections ended, by close code ("1000", …, "other").
    pub close_codes: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcFigures {
    pub calls_started: u64,
    /// Calls ended, by the status sent ("0", …, "16", "other"); a call the client reset counts
    /// as CANCELLED (1).
    pub calls_by_status: BTreeMap<String, u64>,
    /// Registered methods' finished calls (filled by the host, which holds the registry).
    pub calls_by_method: BTreeMap<String, MethodFigures>,
    pub active_streams: ActiveCalls,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodFigures {
    pub calls: u64,
    pub average_latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCalls {
    pub unary: u64,
    pub client_streaming: u64,
    pub server_streaming: u64,
    pub bidi_streaming: u64,
}

fn gauge(n: &AtomicI64) -> u64 {
    n.load(Relaxed).max(0) as u64
}

impl Http1Counters {
    pub(crate) fn figures(&self, open: u64) -> Http1Figures {
        let used = self.used_connections.load(Relaxed);
        let reuses = self.keep_alive_reuses.load(Relaxed);
        Http1Figures {
            keep_alive_reuses: reuses,
            requests_per_connection: if used == 0 {
                0.0
            } else {
                (used + reuses) as f64 / used as f64
            },
            idle_connections: open.saturating_sub(gauge(&self.busy)),
        }
    }
}

impl Http2Counters {
    pub(crate) fn figures(&self, sessions: u64) -> Http2Figures {
        Http2Figures {
            sessions,
            active_streams: gauge(&self.active_streams),
            max_streams_per_session: self.peak_streams.load(Relaxed),
            refused_streams: self.refused_streams.load(Relaxed),
            reset_streams: self.reset_streams.load(Relaxed),
            goaways_sent: self.goaways_sent.load(Relaxed),
        }
    }
}

impl WsCounters {
    pub(crate) fn figures(&self, connections: u64, pong_timeouts: u64) -> WebSocketFigures {
        WebSocketFigures {
            connections,
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            pings_sent: self.pings_sent.load(Relaxed),
            pong_timeouts,
            close_codes: self.close_codes(),
        }
    }
}

impl GrpcCounters {
    pub(crate) fn figures(&self) -> GrpcFigures {
        GrpcFigures {
            calls_started: self.calls_started.load(Relaxed),
            calls_by_status: self
                .by_status
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let n = n.load(Relaxed);
                    let key = if i == GRPC_STATUSES {
                        "other".to_string()
                    } else {
                        i.to_string()
                    };
                    (n > 0).then_some((key, n))
                })
                .collect(),
            calls_by_method: BTreeMap::new(),
            active_streams: ActiveCalls {
                unary: gauge(&self.active[CallKind::Unary as usize]),
                client_streaming: gauge(&self.active[CallKind::ClientStreaming as usize]),
                server_streaming: gauge(&self.active[CallKind::ServerStreaming as usize]),
                bidi_streaming: gauge(&self.active[CallKind::BidiStreaming as usize]),
            },
        }
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one metric family (`samples`: label pairs after `protocol`, value).
pub(crate) fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    protocol: &str,
    samples: &[(Vec<(&str, String)>, f64)],
) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP koatty_serve_{name} {help}\n# TYPE koatty_serve_{name} {kind}\n"
    );
    for (labels, value) in samples {
        let _ = write!(out, "koatty_serve_{name}{{protocol=\"{protocol}\"");
        for (k, v) in labels {
            let _ = write!(out, ",{k}=\"{}\"", label_value(v));
        }
        let _ = writeln!(out, "}} {value}");
    }
}

/// One sample per entry of `counts`, labelled with its code (close codes, gRPC statuses).
fn by_code(counts: &BTreeMap<String, u64>) -> Vec<(Vec<(&'static str, String)>, f64)> {
    counts
        .iter()
        .map(|(code, n)| (vec![("code", code.clone())], *n as f64))
        .collect()
}

/// `value` alone, labelled with its protocol only.
fn one(value: f64) -> [(Vec<(&'static str, String)>, f64); 1] {
    [(Vec::new(), value)]
}

impl Http1Figures {
    pub(crate) fn prometheus(&self, out: &mut String) {
        let p = "http1";
        family(
            out,
            "keep_alive_reuses_total",
            "counter",
            "Requests served on an already used HTTP/1.1 connection.",
            p,
            &one(self.keep_alive_reuses as f64),
        );
        family(
            out,
            "requests_per_connection",
            "gauge",
            "Requests per HTTP/1.1 connection that served any, on average.",
            p,
            &one(self.requests_per_connection),
        );
        family(
            out,
            "idle_connections",
            "gauge",
            "Open HTTP/1.1 connections with no request in flight.",
            p,
            &one(self.idle_connections as f64),
        );
    }
}

impl Http2Figures {
    pub(crate) fn prometheus(&self, out: &mut String) {
        let p = "http2";
        family(
            out,
            "sessions",
            "gauge",
            "Open HTTP/2 sessions.",
            p,
            &one(self.sessions as f64),
        );
        family(
            out,
            "streams_active",
            "gauge",
            "HTTP/2 streams in flight.",
            p,
            &one(self.active_streams as f64),
        );
        family(
            out,
            "streams_per_session_max",
            "gauge",
            "The most streams in flight at once on one session.",
            p,
            &one(self.max_streams_per_session as f64),
        );
        family(
            out,
            "streams_refused_total",
            "counter",
            "Streams refused (RST_STREAM REFUSED_STREAM sent).",
            p,
            &one(self.refused_streams as f64),
        );
        family(
            out,
            "streams_reset_total",
            "counter",
            "Streams reset by the client.",
            p,
            &one(self.reset_streams as f64),
        );
        family(
            out,
            "goaways_sent_total",
            "counter",
            "Sessions sent a GOAWAY.",
            p,
            &one(self.goaways_sent as f64),
        );
    }
}

impl WebSocketFigures {
    pub(crate) fn prometheus(&self, out: &mut String) {
        let p = "websocket";
        family(
            out,
            "websocket_connections",
            "gauge",
            "Open WebSocket connections.",
            p,
            &one(self.connections as f64),
        );
        family(
            out,
            "messages_received_total",
            "counter",
            "WebSocket messages received.",
            p,
            &one(self.messages_in as f64),
        );
        family(
            out,
            "messages_sent_total",
            "counter",
            "WebSocket messages sent.",
            p,
            &one(self.messages_out as f64),
        );
        family(
            out,
            "message_received_bytes_total",
            "counter",
            "Payload bytes of WebSocket messages received.",
            p,
            &one(self.bytes_in as f64),
        );
        family(
            out,
            "message_sent_bytes_total",
            "counter",
            "Payload bytes of WebSocket messages sent.",
            p,
            &one(self.bytes_out as f64),
        );
        family(
            out,
            "pings_sent_total",
            "counter",
            "Keep-alive pings sent.",
            p,
            &one(self.pings_sent as f64),
        );
        family(
            out,
            "pong_timeouts_total",
            "counter",
            "Connections terminated for a pong missing past pongTimeout.",
            p,
            &one(self.pong_timeouts as f64),
        );
        if !self.close_codes.is_empty() {
            family(
                out,
                "closes_total",
                "counter",
                "WebSocket connections ended, by close code.",
                p,
                &by_code(&self.close_codes),
            );
        }
    }
}

impl GrpcFigures {
    pub(crate) fn prometheus(&self, out: &mut String) {
        let p = "grpc";
        family(
            out,
            "calls_started_total",
            "counter",
            "gRPC calls received.",
            p,
            &one(self.calls_started as f64),
        );
        if !self.calls_by_status.is_empty() {
            family(
                out,
                "calls_ended_total",
                "counter",
                "gRPC calls ended, by the status sent (a client reset counts as 1, CANCELLED).",
                p,
                &by_code(&self.calls_by_status),
            );
        }
        let a = &self.active_streams;
        family(
            out,
            "calls_active",
            "gauge",
            "Calls of registered methods in progress, by kind.",
            p,
            &[
                (vec![("kind", "unary".into())], a.unary as f64),
                (
                    vec![("kind", "client_streaming".into())],
                    a.client_streaming as f64,
                ),
                (
                    vec![("kind", "server_streaming".into())],
                    a.server_streaming as f64,
                ),
                (
                    vec![("kind", "bidi_streaming".into())],
                    a.bidi_streaming as f64,
                ),
            ],
        );
        if !self.calls_by_method.is_empty() {
            // A summary without quantiles: `_sum` and `_count` per method.
            use std::fmt::Write;
            let name = "method_duration_milliseconds";
            let _ = write!(out, "# HELP koatty_serve_{name} Time from a registered method's call to its status, by method.\n# TYPE koatty_serve_{name} summary\n");
            for (method, f) in &self.calls_by_method {
                let sum = f.average_latency_ms * f.calls as f64;
                let count = f.calls as f64;
                let method = label_value(method);
                let _ = writeln!(
                    out,
                    "koatty_serve_{name}_sum{{protocol=\"{p}\",method=\"{method}\"}} {sum}"
                );
                let _ = writeln!(
                    out,
                    "koatty_serve_{name}_count{{protocol=\"{p}\",method=\"{method}\"}} {count}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_and_statuses_fall_into_fixed_tables() {
        let ws = WsCounters::default();
        for code in [1000, 1000, 1001, 1006, 1015, 4000, 0, 65535] {
            ws.closed(code);
        }
        let codes = ws.close_codes();
        assert_eq!(codes.get("1000"), Some(&2));
        assert_eq!(codes.get("1015"), Some(&1));
        assert_eq!(codes.get("other"), Some(&3));
        assert_eq!(codes.len(), 5);

        let grpc = GrpcCounters::default();
        for code in [0, 0, 14, 16, 17, -1] {
            grpc.status_sent(code);
        }
        let f = grpc.figures();
        assert_eq!(f.calls_by_status.get("0"), Some(&2));
        assert_eq!(f.calls_by_status.get("16"), Some(&1));
        assert_eq!(f.calls_by_status.get("other"), Some(&2));
    }

    #[test]
    fn sections_round_trip_through_bits() {
        use crate::config::Protocol;
        for p in [
            Protocol::Http,
            Protocol::Http2,
            Protocol::Ws,
            Protocol::Grpc,
        ] {
            let s = Sections::of(p);
            assert_eq!(Sections::from_bits(s.to_bits()), s);
        }
    }
}
