//! Server options: the user-facing shape (as JSON, mirroring `index.d.ts`), strict validation for
//! `ConfigHelper`, defaults, and the engine's own typed `ServerConfig`.
//!
//! Two entry points:
//! - [`resolve_options`] validates strictly (unknown keys, ranges) and fills defaults; this is what
//!   `ConfigHelper.create*Config` returns to JavaScript.
//! - [`ServerConfig::from_options`] turns already-resolved options into engine settings; it is
//!   lenient about what `NewServe` lets through (unknown protocol, absent host/port).

mod keys;

use serde_json::{Map, Value};
use std::time::Duration;

pub use keys::known_keys;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending option, e.g. `connectionPool.keepAliveTimeout`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    Ws,
    Wss,
    Grpc,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "http2" => Protocol::Http2,
            "ws" => Protocol::Ws,
            "wss" => Protocol::Wss,
            "grpc" => Protocol::Grpc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Http2 => "http2",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Environment values that influence defaults, passed in explicitly so tests need not touch the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub ip: Option<String>,
    pub port: Option<String>,
    pub app_port: Option<String>,
    pub node_env: Option<String>,
}

impl Environment {
    pub fn is_production(&self) -> bool {
        self.node_env.as_deref() == Some("production")
    }
}

/// Limits and timeouts of one server (all durations already converted from milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open connections at most; `None` = unlimited.
    pub max_connections: Option<usize>,
    /// Requests handed to JavaScript and not yet answered, at most. When full, the server stops
    /// reading new requests (backpressure) instead of queueing them.
    pub max_in_flight: usize,
    /// Idle time allowed between requests on a keep-alive connection.
    pub keep_alive_timeout: Duration,
    /// Time allowed for a request's headers to arrive (→ 408 and close).
    pub headers_timeout: Duration,
    /// Time allowed for the whole request, including the handler's answer (→ 503 if unanswered).
    pub request_timeout: Duration,
    /// A connection on which no byte moved for this long drains and closes (HTTP/1, HTTP/2,
    /// gRPC; WebSockets have ping/pong); `None` (or 0) = off.
    pub connection_timeout: Option<Duration>,
    /// Request head (request line + headers) size limit in bytes (→ 431).
    pub max_header_size: usize,
    /// Request header fields, at most (→ 431); node's `maxHeadersCount` (2000; 0 = as many as
    /// `max_header_size` can hold).
    pub max_headers_count: usize,
    /// Request body size limit in bytes (→ 413); `None` = unlimited.
    pub max_body_size: Option<u64>,
    /// Time allowed for a TLS handshake (and the first bytes of a cleartext HTTP/2 detection).
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            keep_alive_timeout: Duration::from_millis(DEFAULT_KEEP_ALIVE_TIMEOUT_MS),
            headers_timeout: Duration::from_millis(DEFAULT_HEADERS_TIMEOUT_MS),
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            connection_timeout: None,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_headers_count: DEFAULT_MAX_HEADERS_COUNT,
            max_body_size: None,
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
        }
    }
}

/// Limits that a running server reads per connection or request, so they can change at run time
/// (`updateConfig`) without touching open connections.
pub type LiveLimits = std::sync::Arc<arc_swap::ArcSwap<Limits>>;

pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_HEADERS_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
/// node:http's `maxHeadersCount`.
pub const DEFAULT_MAX_HEADERS_COUNT: usize = 2000;

impl Limits {
    /// hyper's header-read timer runs from the moment a connection waits for the next request
    /// head, so it bounds both idle keep-alive time and slow header senders (slowloris): the
    /// smaller of `keepAliveTimeout` and `headersTimeout` applies (0 = that limit is off). Doing
    /// the idle timer there rather than with a per-request activity signal keeps the hot path free
    /// of extra wake-ups. A new connection that sends nothing gets the same time.
    pub fn header_read_timeout(&self) -> Option<Duration> {
        [self.keep_alive_timeout, self.headers_timeout]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
    }

    /// The header-field limit in force: 0 means "no count limit" as in node, which the head size
    /// still bounds (a field takes at least 4 bytes: `a:` and CRLF).
    pub fn header_fields_limit(&self) -> usize {
        match self.max_headers_count {
            0 => (self.max_header_size / 4).max(1),
            n => n,
        }
    }
}
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 250;
pub const DEFAULT_H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
pub const DEFAULT_H2_MAX_SEND_BUFFER: usize = 400 * 1024;

/// HTTP/2 settings (from `connectionPool.protocolSpecific` and the server kind).
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Settings {
    /// Serve cleartext HTTP/2 with prior knowledge (`h2c: true`) instead of TLS.
    pub cleartext: bool,
    /// Over TLS, let clients without `h2` ALPN use HTTP/1.1 (`ssl.allowHTTP1`, default true).
    pub allow_http1: bool,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub initial_window_size: Option<u32>,
    /// Bytes a stream may queue for sending; bounds session memory with the stream limit.
    pub max_send_buffer_size: usize,
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_timeout: Duration,
}
pub const DEFAULT_HOSTNAME: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 3000;

/// Engine settings of one server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `None` or empty = all interfaces (`::`, falling back to `0.0.0.0`).
    pub hostname: Option<String>,
    /// 0 = ephemeral.
    pub port: u16,
    pub protocol: Protocol,
    pub reuse_port: bool,
    pub limits: Limits,
    /// The raw `ssl` section (turned into TLS settings by [`ServerConfig::tls_options`]).
    pub ssl: Option<Value>,
    /// HTTP/2 settings, for the `http2` server.
    pub http2: Option<Http2Settings>,
    /// Paths answered in Rust without entering JavaScript (`nativeEndpoints`).
    pub endpoints: Endpoints,
    /// WebSocket settings, for the `ws`/`wss` server.
    pub websocket: Option<WsSettings>,
    /// gRPC settings, for the `grpc` server.
    pub grpc: Option<GrpcSettings>,
}

/// gRPC settings (from `connectionPool.protocolSpecific`).
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcSettings {
    /// Largest request message, bytes (→ RESOURCE_EXHAUSTED); grpc-js's default is 4 MiB.
    pub max_receive_message_length: usize,
    /// Largest response message, bytes.
    pub max_send_message_length: usize,
    /// How response messages are compressed unless the handler chooses, when the client accepts
    /// it (`defaultCompressionAlgorithm`; identity by default, as grpc-js's server).
    pub default_compression_algorithm: crate::protocol::grpc::Compression,
    pub http2: Http2Settings,
}

/// WebSocket settings (from `connectionPool.protocolSpecific`).
#[derive(Debug, Clone, PartialEq)]
pub struct WsSettings {
    /// How often the server pings each connection (0 = never).
    pub ping_interval: Duration,
    /// How long a pong may take before the peer is terminated.
    pub pong_timeout: Duration,
    /// How often liveness is checked (each connection's pong deadline is checked as it falls due).
    pub heartbeat_interval: Duration,
    /// Largest message (and frame) accepted, bytes (→ close 1009).
    pub max_payload: usize,
    /// Largest amount of unsent data a connection may queue, bytes (past it: terminated).
    pub max_buffered: usize,
    /// Bytes of received messages (and pongs) a connection may have waiting for the handler;
    /// reading pauses while they are spent.
    pub max_receive_queue: usize,
    /// `handleProtocols` is set: the handler chooses the subprotocol (else the first offered).
    pub choose_protocol: bool,
    /// Keep connections open through shutdown steps 1–2 (the drain delay) and close them (1001)
    /// at step 3, instead of at step 1.
    pub keep_open_during_drain_delay: bool,
}

pub const DEFAULT_WS_MAX_PAYLOAD: usize = 16 * 1024 * 1024;
pub const DEFAULT_WS_MAX_BUFFERED: usize = 16 * 1024 * 1024;
pub const DEFAULT_WS_MAX_RECEIVE_QUEUE: usize = 8 * 1024 * 1024;

fn websocket_from(obj: &Map<String, Value>) -> Result<WsSettings, ConfigError> {
    let specific = ProtocolSpecific::of(obj);
    let num = |key: &str| specific.number(key);
    Ok(WsSettings {
        ping_interval: Duration::from_millis(num("pingInterval")?.unwrap_or(30_000)),
        pong_timeout: Duration::from_millis(num("pongTimeout")?.unwrap_or(10_000)),
        heartbeat_interval: Duration::from_millis(num("heartbeatInterval")?.unwrap_or(30_000)),
        max_payload: num("maxPayload")?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_WS_MAX_PAYLOAD)
            .max(1),
        max_buffered: num("maxBufferedAmount")?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_WS_MAX_BUFFERED)
            .max(1),
        max_receive_queue: num("maxReceiveQueue")?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_WS_MAX_RECEIVE_QUEUE)
            .max(1),
        // JavaScript sends `true` for a function (the function stays there).
        choose_protocol: obj.get("handleProtocols") == Some(&Value::Bool(true)),
        keep_open_during_drain_delay: specific
            .boolean("keepOpenDuringDrainDelay")?
            .unwrap_or(false),
    })
}

/// Health and metrics paths answered natively; `None` = off (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Liveness: 200 while the process serves, even when the JavaScript thread is busy.
    pub healthz: Option<String>,
    /// Readiness: 200 while accepting, 503 once shutdown has begun.
    pub readyz: Option<String>,
    /// Prometheus text format.
    pub metrics: Option<String>,
}

impl Endpoints {
    pub fn any(&self) -> bool {
        self.healthz.is_some() || self.readyz.is_some() || self.metrics.is_some()
    }
}

fn endpoints_from(v: Option<&Value>) -> Result<Endpoints, ConfigError> {
    let defaults = Endpoints {
        healthz: Some("/healthz".into()),
        readyz: Some("/readyz".into()),
        metrics: Some("/metrics".into()),
    };
    let obj = match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(Endpoints::default()),
        Some(Value::Bool(true)) => return Ok(defaults),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(ConfigError::new(
                "nativeEndpoints",
                format!("must be true, false or an object, got {v}"),
            ))
        }
    };
    let path = |key: &str, default: Option<String>| -> Result<Option<String>, ConfigError> {
        match obj.get(key) {
            None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(default),
            Some(Value::Bool(false)) => Ok(None),
            Some(Value::String(p)) if p.starts_with('/') => Ok(Some(p.clone())),
            Some(v) => Err(ConfigError::new(
                format!("nativeEndpoints.{key}"),
                format!("must be a path starting with '/' or a boolean, got {v}"),
            )),
        }
    };
    for key in obj.keys() {
        if !["healthz", "readyz", "metrics"].contains(&key.as_str()) {
            return Err(ConfigError::new(
                format!("nativeEndpoints.{key}"),
                "unknown option (expected one of: healthz, readyz, metrics)",
            ));
        }
    }
    Ok(Endpoints {
        healthz: path("healthz", defaults.healthz)?,
        readyz: path("readyz", defaults.readyz)?,
        metrics: path("metrics", defaults.metrics)?,
    })
}

impl ServerConfig {
    /// TLS settings for this server: `https`, `wss` and `http2` (unless `h2c`) always use TLS — with
    /// a generated development certificate when `ssl` gives none; `grpc` when `ssl.enabled`.
    pub fn tls_options(&self) -> Result<Option<crate::tls::TlsOptions>, crate::tls::TlsError> {
        let needs_tls = match self.protocol {
            Protocol::Https | Protocol::Wss => true,
            // `ws` with `ssl.enabled` is wss.
            Protocol::Ws => self.ssl.is_some(),
            Protocol::Http2 => !self.http2.as_ref().is_some_and(|h| h.cleartext),
            Protocol::Grpc => self.ssl.is_some(),
            Protocol::Http => false,
        };
        if !needs_tls {
            return Ok(None);
        }
        let parsed = crate::tls::TlsOptions::from_json(self.ssl.as_ref())?;
        let mut options = match parsed {
            Some(o) => o,
            None if matches!(self.protocol, Protocol::Grpc | Protocol::Ws) => return Ok(None),
            None => {
                crate::tls::TlsOptions::from_json(Some(&serde_json::json!({ "mode": "auto" })))?
                    .expect("auto")
            }
        };
        options.alpn = match &self.http2 {
            _ if self.protocol == Protocol::Grpc => vec![b"h2".to_vec()],
            Some(h2) if h2.allow_http1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Some(_) => vec![b"h2".to_vec()],
            None => vec![b"http/1.1".to_vec()],
        };
        Ok(Some(options))
    }

    /// Engine settings from resolved options. Unknown protocols serve HTTP (as koatty_serve 2.3.0
    /// does); absent host/port mean all interfaces / ephemeral.
    pub fn from_options(options: &Value) -> Result<ServerConfig, ConfigError> {
        let obj = options
            .as_object()
            .ok_or_else(|| ConfigError::new("options", "must be an object"))?;
        let hostname = match obj.get("hostname") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ConfigError::new("hostname", "must be a string")),
        };
        let port = match obj.get("port") {
            None | Some(Value::Null) => 0,
            Some(v) => parse_port(v)?,
        };
        let protocol = obj
            .get("protocol")
            .and_then(Value::as_str)
            .and_then(Protocol::parse)
            .unwrap_or(Protocol::Http);
        keys::reject_unknown(protocol, obj, false)?;
        let reuse_port = obj
            .get("reusePort")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let limits = match obj.get("connectionPool") {
            None | Some(Value::Null) => Limits::default(),
            Some(pool) => limits_from(pool)?,
        };
        let ssl = obj.get("ssl").filter(|v| !v.is_null()).cloned();
        let http2 = match protocol {
            Protocol::Http2 => Some(http2_from(obj, ssl.as_ref())?),
            _ => None,
        };
        let endpoints = endpoints_from(obj.get("nativeEndpoints"))?;
        let websocket = match protocol {
            Protocol::Ws | Protocol::Wss => Some(websocket_from(obj)?),
            _ => None,
        };
        let grpc = match protocol {
            Protocol::Grpc => Some(grpc_from(obj)?),
            _ => None,
        };
        Ok(ServerConfig {
            hostname,
            port,
            protocol,
            reuse_port,
            limits,
            ssl,
            http2,
            endpoints,
            websocket,
            grpc,
        })
    }
}

fn ms(pool: &Map<String, Value>, key: &str) -> Result<Option<Duration>, ConfigError> {
    match pool.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = non_negative(v, &format!("connectionPool.{key}"))?;
            Ok(Some(Duration::from_millis(n)))
        }
    }
}

fn count(pool: &Map<String, Value>, key: &str) -> Result<Option<u64>, ConfigError> {
    match pool.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => non_negative(v, &format!("connectionPool.{key}")).map(Some),
    }
}

fn limits_from(pool: &Value) -> Result<Limits, ConfigError> {
    let pool = pool
        .as_object()
        .ok_or_else(|| ConfigError::new("connectionPool", "must be an object"))?;
    let d = Limits::default();
    let max_in_flight = count(pool, "maxInFlight")?
        .map(|n| n as usize)
        .unwrap_or(d.max_in_flight);
    if max_in_flight == 0 {
        return Err(ConfigError::new(
            "connectionPool.maxInFlight",
            "must be at least 1",
        ));
    }
    let max_header_size = count(pool, "maxHeaderSize")?
        .map(|n| n as usize)
        .unwrap_or(d.max_header_size);
    if max_header_size < 1024 {
        return Err(ConfigError::new(
            "connectionPool.maxHeaderSize",
            "must be at least 1024 bytes",
        ));
    }
    Ok(Limits {
        max_connections: count(pool, "maxConnections")?.map(|n| n as usize),
        max_in_flight,
        keep_alive_timeout: ms(pool, "keepAliveTimeout")?.unwrap_or(d.keep_alive_timeout),
        headers_timeout: ms(pool, "headersTimeout")?.unwrap_or(d.headers_timeout),
        request_timeout: ms(pool, "requestTimeout")?.unwrap_or(d.request_timeout),
        // 0 = off, as for the other timeouts.
        connection_timeout: ms(pool, "connectionTimeout")?.filter(|d| !d.is_zero()),
        max_header_size,
        max_headers_count: count(pool, "maxHeadersCount")?
            .map(|n| n as usize)
            .unwrap_or(d.max_headers_count),
        max_body_size: count(pool, "maxBodySize")?,
        handshake_timeout: ms(pool, "handshakeTimeout")?.unwrap_or(d.handshake_timeout),
    })
}

fn http2_from(obj: &Map<String, Value>, ssl: Option<&Value>) -> Result<Http2Settings, ConfigError> {
    let cleartext = match obj.get("h2c") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ConfigError::new(
                "h2c",
                format!("must be a boolean, got {v}"),
            ))
        }
    };
    let allow_http1 = match ssl.and_then(|s| s.get("allowHTTP1")) {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ConfigError::new(
                "ssl.allowHTTP1",
                format!("must be a boolean, got {v}"),
            ))
        }
    };
    let specific = ProtocolSpecific::of(obj);
    let num = |key: &str| specific.number(key);
    let clamp = |n: u64| n.min(u32::MAX as u64) as u32;
    let max_concurrent_streams = num("maxConcurrentStreams")?
        .map(clamp)
        .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    let max_send_buffer_size = match num("maxSessionMemory")? {
        // node's maxSessionMemory is in MiB for the whole session: share it among the streams.
        Some(mib) => {
            ((mib.max(1) << 20) / max_concurrent_streams.max(1) as u64).max(16 * 1024) as usize
        }
        None => DEFAULT_H2_MAX_SEND_BUFFER,
    };
    Ok(Http2Settings {
        cleartext,
        allow_http1,
        max_concurrent_streams,
        max_header_list_size: num("maxHeaderListSize")?
            .map(clamp)
            .unwrap_or(DEFAULT_H2_MAX_HEADER_LIST_SIZE),
        initial_window_size: num("initialWindowSize")?.map(clamp),
        max_send_buffer_size,
        keep_alive_interval: num("keepAliveTime")?
            .filter(|n| *n > 0)
            .map(Duration::from_millis),
        keep_alive_timeout: Duration::from_millis(num("keepAliveTimeout")?.unwrap_or(20_000)),
    })
}

fn grpc_from(obj: &Map<String, Value>) -> Result<GrpcSettings, ConfigError> {
    let specific = ProtocolSpecific::of(obj);
    let size = |key: &str, default: usize| -> Result<usize, ConfigError> {
        match specific.0.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(default),
            // grpc-js uses -1 for "unlimited".
            Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(usize::MAX),
            Some(v) => non_negative(v, &format!("connectionPool.protocolSpecific.{key}"))
                .map(|n| n as usize),
        }
    };
    Ok(GrpcSettings {
        max_receive_message_length: size("maxReceiveMessageLength", 4 * 1024 * 1024)?,
        max_send_message_length: size("maxSendMessageLength", usize::MAX)?,
        default_compression_algorithm: match specific
            .0
            .and_then(|m| m.get("defaultCompressionAlgorithm"))
        {
            None | Some(Value::Null) => Default::default(),
            Some(v) => crate::protocol::grpc::Compression::from_option(v).ok_or_else(|| {
                ConfigError::new(
                    "connectionPool.protocolSpecific.defaultCompressionAlgorithm",
                    format!("must be 'identity', 'deflate' or 'gzip' (or grpc-js's compressionAlgorithms 0, 1, 2), got {v}"),
                )
            })?,
        },
        http2: http2_from(obj, None)?,
    })
}

/// `connectionPool.protocolSpecific`, read by the protocol settings.
struct ProtocolSpecific<'a>(Option<&'a Map<String, Value>>);

impl<'a> ProtocolSpecific<'a> {
    fn of(options: &'a Map<String, Value>) -> Self {
        ProtocolSpecific(
            options
                .get("connectionPool")
                .and_then(|p| p.get("protocolSpecific"))
                .and_then(Value::as_object),
        )
    }

    /// A non-negative integer setting, `None` when absent.
    fn number(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.0.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => non_negative(v, &format!("connectionPool.protocolSpecific.{key}")).map(Some),
        }
    }

    /// A boolean setting, `None` when absent.
    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.0.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(ConfigError::new(
                format!("connectionPool.protocolSpecific.{key}"),
                format!("must be a boolean, got {v}"),
            )),
        }
    }
}

fn non_negative(v: &Value, key: &str) -> Result<u64, ConfigError> {
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9.007_199_254_740_991e15 => Ok(n as u64),
        Some(_) => Err(ConfigError::new(
            key,
            format!("must be a non-negative integer, got {v}"),
        )),
        None => Err(ConfigError::new(key, format!("must be a number, got {v}"))),
    }
}

fn parse_port(v: &Value) -> Result<u16, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (0.0..=65535.0).contains(&n) && n.fract() == 0.0 => Ok(n as u16),
        _ => Err(ConfigError::new(
            "port",
            format!("must be an integer from 0 to 65535, got {v}"),
        )),
    }
}

/// Strict validation plus defaults, for `ConfigHelper.create<Protocol>Config`.
///
/// `protocol` is the helper's protocol family (`http`, `https`, `http2`, `grpc`, `ws`); the options'
/// own `protocol` key, when present, must belong to it (`ws`/`wss` for the WebSocket helper).
pub fn resolve_options(
    protocol: Protocol,
    options: &Value,
    env: &Environment,
) -> Result<Value, ConfigError> {
    let input = match options {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(ConfigError::new("options", "must be an object")),
    };
    keys::reject_unknown(protocol, &input, true)?;

    let mut out = input.clone();
    // hostname: given, else IP, else 127.0.0.1
    match input.get("hostname") {
        None | Some(Value::Null) => {
            let host = env
                .ip
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_HOSTNAME.into());
            out.insert("hostname".into(), Value::String(host));
        }
        Some(Value::String(_)) => {}
        Some(v) => {
            return Err(ConfigError::new(
                "hostname",
                format!("must be a string, got {v}"),
            ))
        }
    }
    // port: given (0 stays 0), else PORT, else APP_PORT, else 3000
    let port = match input.get("port") {
        None | Some(Value::Null) => {
            let from_env = [&env.port, &env.app_port]
                .into_iter()
                .flatten()
                .find(|s| !s.is_empty())
                .map(|s| parse_port(&Value::String(s.clone())))
                .transpose()?;
            from_env.unwrap_or(DEFAULT_PORT)
        }
        Some(v) => parse_port(v)?,
    };
    out.insert("port".into(), Value::from(port));

    let given = input.get("protocol");
    let chosen = match given {
        None | Some(Value::Null) => protocol.as_str().to_string(),
        Some(Value::String(s)) => {
            let p = Protocol::parse(s)
                .ok_or_else(|| ConfigError::new("protocol", format!("unknown protocol '{s}'")))?;
            let family_ok = p == protocol || (protocol == Protocol::Ws && p == Protocol::Wss);
            if !family_ok {
                return Err(ConfigError::new(
                    "protocol",
                    format!("'{s}' does not belong to the {} helper", protocol.as_str()),
                ));
            }
            s.clone()
        }
        Some(v) => {
            return Err(ConfigError::new(
                "protocol",
                format!("must be a string, got {v}"),
            ))
        }
    };
    out.insert("protocol".into(), Value::String(chosen));

    if let Some(t) = input.get("trace") {
        if !t.is_boolean() && !t.is_null() {
            return Err(ConfigError::new("trace", "must be a boolean"));
        }
    }
    if let Some(h) = input.get("h2c") {
        if protocol != Protocol::Http2 {
            return Err(ConfigError::new(
                "h2c",
                "only the http2 server serves cleartext HTTP/2",
            ));
        }
        if !h.is_boolean() && !h.is_null() {
            return Err(ConfigError::new("h2c", "must be a boolean"));
        }
    }
    match input.get("handleProtocols") {
        None | Some(Value::Null) => {}
        Some(_) if !matches!(protocol, Protocol::Ws | Protocol::Wss) => {
            return Err(ConfigError::new(
                "handleProtocols",
                "only the WebSocket server chooses subprotocols",
            ))
        }
        Some(Value::Bool(true)) => {}
        Some(_) => return Err(ConfigError::new("handleProtocols", "must be a function")),
    }
    match input.get("reflection") {
        Some(_) if protocol != Protocol::Grpc => {
            return Err(ConfigError::new(
                "reflection",
                "only the grpc server serves reflection",
            ))
        }
        None | Some(Value::Null) if protocol == Protocol::Grpc => {
            out.insert("reflection".into(), Value::Bool(false));
        }
        Some(r) if !r.is_boolean() && !r.is_null() => {
            return Err(ConfigError::new("reflection", "must be a boolean"));
        }
        _ => {}
    }
    endpoints_from(input.get("nativeEndpoints"))?;
    if let Some(r) = input.get("reusePort") {
        if !r.is_boolean() && !r.is_null() {
            return Err(ConfigError::new("reusePort", "must be a boolean"));
        }
    }

    // connectionPool: validate through the engine's own parser, then write every default out.
    let pool_in = input
        .get("connectionPool")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let limits = limits_from(&pool_in)?;
    let mut pool = pool_in.as_object().cloned().unwrap_or_default();
    let production = env.is_production();
    let set = |pool: &mut Map<String, Value>, key: &str, v: Value| {
        if pool.get(key).is_none_or(Value::is_null) {
            pool.insert(key.into(), v);
        }
    };
    set(
        &mut pool,
        "maxConnections",
        Value::from(if production { 10_000 } else { 1_000 }),
    );
    set(&mut pool, "maxInFlight", Value::from(limits.max_in_flight));
    set(
        &mut pool,
        "keepAliveTimeout",
        Value::from(limits.keep_alive_timeout.as_millis() as u64),
    );
    set(
        &mut pool,
        "headersTimeout",
        Value::from(limits.headers_timeout.as_millis() as u64),
    );
    set(
        &mut pool,
        "requestTimeout",
        Value::from(limits.request_timeout.as_millis() as u64),
    );
    set(
        &mut pool,
        "connectionTimeout",
        Value::from(if production { 30_000 } else { 60_000 }),
    );
    set(
        &mut pool,
        "maxHeaderSize",
        Value::from(limits.max_header_size),
    );
    set(
        &mut pool,
        "maxHeadersCount",
        Value::from(limits.max_headers_count),
    );
    set(
        &mut pool,
        "handshakeTimeout",
        Value::from(limits.handshake_timeout.as_millis() as u64),
    );
    out.insert("connectionPool".into(), Value::Object(pool));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_options_is_lenient_like_new_serve() {
        let c = ServerConfig::from_options(
            &json!({"hostname": null, "port": null, "protocol": "bogus"}),
        )
        .unwrap();
        assert_eq!(c.hostname, None);
        assert_eq!(c.port, 0);
        assert_eq!(c.protocol, Protocol::Http);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn reflection_is_a_grpc_boolean_defaulting_to_off() {
        let env = Environment::default();
        let off = resolve_options(Protocol::Grpc, &json!({}), &env).unwrap();
        assert_eq!(off["reflection"], json!(false));
        let on = resolve_options(Protocol::Grpc, &json!({"reflection": true}), &env).unwrap();
        assert_eq!(on["reflection"], json!(true));
        let bad = resolve_options(Protocol::Grpc, &json!({"reflection": "no"}), &env);
        assert_eq!(bad.unwrap_err().key, "reflection");
        let http = resolve_options(Protocol::Http, &json!({"reflection": true}), &env);
        assert_eq!(http.unwrap_err().key, "reflection");
    }

    #[test]
    fn zero_stays_zero() {
        let c = ServerConfig::from_options(
            &json!({"port": 0, "connectionPool": {"keepAliveTimeout": 0}}),
        )
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.limits.keep_alive_timeout, Duration::ZERO);
        let r =
            resolve_options(Protocol::Http, &json!({"port": 0}), &Environment::default()).unwrap();
        assert_eq!(r["port"], 0);
    }

    #[test]
    fn string_ports_from_env_are_numbers() {
        let env = Environment {
            port: Some("".into()),
            app_port: Some("4567".into()),
            ..Default::default()
        };
        let r = resolve_options(Protocol::Http, &json!({}), &env).unwrap();
        assert_eq!(r["port"], 4567);
        assert_eq!(r["hostname"], "127.0.0.1");
        let c = ServerConfig::from_options(&json!({"port": "8080"})).unwrap();
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let env = Environment::default();
        let e = resolve_options(Protocol::Http, &json!({"port": 70000}), &env).unwrap_err();
        assert_eq!(e.key, "port");
        let e = resolve_options(
            Protocol::Http,
            &json!({"connectionPool": {"requestTimeout": -1}}),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.key, "connectionPool.requestTimeout");
        let e = resolve_options(
            Protocol::Http,
            &json!({"connectionPool": {"maxConection": 1}}),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.key, "connectionPool.maxConection");
        assert!(e.message.contains("unknown"), "{e}");
        let e = resolve_options(Protocol::Http, &json!({"protocol": "grpc"}), &env).unwrap_err();
        assert_eq!(e.key, "protocol");
    }

    #[test]
    fn defaults_are_filled_and_given_values_kept() {
        let env = Environment {
            node_env: Some("production".into()),
            ..Default::default()
        };
        let r = resolve_options(
            Protocol::Http,
            &json!({"hostname": "0.0.0.0", "port": 8080, "connectionPool": {"maxConnections": 5}}),
            &env,
        )
        .unwrap();
        assert_eq!(r["hostname"], "0.0.0.0");
        assert_eq!(r["protocol"], "http");
        assert_eq!(r["connectionPool"]["maxConnections"], 5);
        assert_eq!(r["connectionPool"]["keepAliveTimeout"], 5000);
        assert_eq!(r["connectionPool"]["requestTimeout"], 300000);
        // the resolved options are accepted by the engine
        let c = ServerConfig::from_options(&r).unwrap();
        assert_eq!(c.limits.max_connections, Some(5));
        assert_eq!(c.port, 8080);
    }
}
