//! Server options: the user-facing shape (as JSON, mirroring `index.d.ts`), strict validation for
//! `ConfigHelper`, defaults, and the engine's own typed `ServerConfig`.
//!
//! Two entry points:
//! - [`resolve_options`] validates strictly (unknown keys, ranges) and fills defaults; this is what
//!   `ConfigHelper.create*Config` returns to JavaScript.
//! - [`ServerConfig::from_options`] turns already-resolved options into engine settings; it is
//!   lenient about what `NewServe` lets through (unknown protocol, absent host/port).
//!
//! Both read the options through the serde structs of [`shape`] first (option names at every
//! level, and the values both check alike), then check what each words its own way.

#[cfg(test)]
mod keys;
#[cfg(test)]
mod outcome_tests;
mod shape;

use serde_json::{Map, Value};
use shape::{check_ssl_names, non_negative, parse_port, read, Given, Group, Options, Pool};
use std::time::Duration;

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
    /// Requests served on one HTTP/1 connection, at most (node's `maxRequestsPerSocket`): the
    /// last one's response says `Connection: close`; `None` (or 0) = unlimited.
    pub max_requests_per_socket: Option<usize>,
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
            max_requests_per_socket: None,
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
    /// When a request that begins at `now` must have been answered: `requestTimeout` later, or
    /// with 0 (off, as node's) a year later, which no request lives to see.
    pub fn request_deadline(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        const OFF: Duration = Duration::from_secs(365 * 24 * 3600);
        now + if self.request_timeout.is_zero() {
            OFF
        } else {
            self.request_timeout
        }
    }

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
    pub default_compression_algorithm: Compression,
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

fn websocket_from(obj: &Map<String, Value>, given: &Options) -> Result<WsSettings, ConfigError> {
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
        choose_protocol: matches!(given.handle_protocols, Some(Given::Valid(true))),
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
        let given: Options = read(options, "")?;
        let hostname = match &given.hostname {
            None => None,
            Some(Given::Valid(s)) if s.is_empty() => None,
            Some(Given::Valid(s)) => Some(s.clone()),
            Some(Given::Invalid(_)) => {
                return Err(ConfigError::new("hostname", "must be a string"))
            }
        };
        let port = given.port.as_ref().map_or(0, |p| p.0);
        let protocol = match &given.protocol {
            Some(Given::Valid(s)) => Protocol::parse(s),
            _ => None,
        }
        .unwrap_or(Protocol::Http);
        if let Some(ssl) = &given.ssl {
            check_ssl_names(protocol, ssl, false)?;
        }
        let reuse_port = matches!(given.reuse_port, Some(Given::Valid(true)));
        let limits = given
            .connection_pool
            .given()
            .map(limits_from)
            .unwrap_or_default();
        let ssl = given.ssl.clone();
        let http2 = match protocol {
            Protocol::Http2 => Some(http2_from(obj, &given, ssl.as_ref())?),
            _ => None,
        };
        let websocket = match protocol {
            Protocol::Ws | Protocol::Wss => Some(websocket_from(obj, &given)?),
            _ => None,
        };
        let grpc = match protocol {
            Protocol::Grpc => Some(grpc_from(obj, &given)?),
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
            endpoints: given.native_endpoints,
            websocket,
            grpc,
        })
    }
}

fn limits_from(pool: &Pool) -> Limits {
    let d = Limits::default();
    let ms = |n: Option<u64>| n.map(Duration::from_millis);
    Limits {
        max_connections: pool.max_connections.map(|n| n as usize),
        max_in_flight: pool.max_in_flight.map_or(d.max_in_flight, |n| n as usize),
        keep_alive_timeout: ms(pool.keep_alive_timeout).unwrap_or(d.keep_alive_timeout),
        headers_timeout: ms(pool.headers_timeout).unwrap_or(d.headers_timeout),
        request_timeout: ms(pool.request_timeout).unwrap_or(d.request_timeout),
        // 0 = off, as for the other timeouts.
        connection_timeout: ms(pool.connection_timeout).filter(|d| !d.is_zero()),
        max_header_size: pool
            .max_header_size
            .map_or(d.max_header_size, |n| n as usize),
        max_headers_count: pool
            .max_headers_count
            .map_or(d.max_headers_count, |n| n as usize),
        max_body_size: pool.max_body_size,
        handshake_timeout: ms(pool.handshake_timeout).unwrap_or(d.handshake_timeout),
        max_requests_per_socket: pool
            .max_requests_per_socket
            .filter(|n| *n > 0)
            .map(|n| n as usize),
    }
}

/// A message compression algorithm, numbered as grpc-js's `compressionAlgorithms` (the values of
/// its `grpc.default_compression_algorithm` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Identity = 0,
    Deflate = 1,
    Gzip = 2,
}

impl Compression {
    pub fn from_number(n: u64) -> Option<Compression> {
        match n {
            0 => Some(Compression::Identity),
            1 => Some(Compression::Deflate),
            2 => Some(Compression::Gzip),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "identity" => Some(Compression::Identity),
            "deflate" => Some(Compression::Deflate),
            "gzip" => Some(Compression::Gzip),
            _ => None,
        }
    }

    /// From an option's value: a name, or grpc-js's number.
    pub fn from_option(value: &serde_json::Value) -> Option<Compression> {
        match value {
            serde_json::Value::String(s) => Compression::from_name(s),
            serde_json::Value::Number(n) => n.as_u64().and_then(Compression::from_number),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Deflate => "deflate",
            Compression::Gzip => "gzip",
        }
    }
}

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1: 2^31 − 1).
pub const MAX_H2_WINDOW: u32 = (1 << 31) - 1;

fn http2_from(
    obj: &Map<String, Value>,
    given: &Options,
    ssl: Option<&Value>,
) -> Result<Http2Settings, ConfigError> {
    let cleartext = match &given.h2c {
        None | Some(Given::Valid(None)) => false,
        Some(Given::Valid(Some(b))) => *b,
        Some(Given::Invalid(v)) => {
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
        initial_window_size: match num("initialWindowSize")? {
            // node's http2 throws ERR_HTTP2_INVALID_SETTING_VALUE past it; h2 asserts on it.
            Some(n) if n > MAX_H2_WINDOW as u64 => {
                return Err(ConfigError::new(
                    "connectionPool.protocolSpecific.initialWindowSize",
                    format!("must be at most {MAX_H2_WINDOW} (HTTP/2's largest window), got {n}"),
                ))
            }
            n => n.map(clamp),
        },
        max_send_buffer_size,
        keep_alive_interval: num("keepAliveTime")?
            .filter(|n| *n > 0)
            .map(Duration::from_millis),
        keep_alive_timeout: Duration::from_millis(num("keepAliveTimeout")?.unwrap_or(20_000)),
    })
}

fn grpc_from(obj: &Map<String, Value>, given: &Options) -> Result<GrpcSettings, ConfigError> {
    let specific = ProtocolSpecific::of(obj);
    let size = |key: &str, default: usize| -> Result<usize, ConfigError> {
        match specific.0.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(default),
            // grpc-js uses -1 for "unlimited".
            Some(Value::Number(n)) if n.as_i64() == Some(-1) => Ok(usize::MAX),
            Some(v) => non_negative(v)
                .map(|n| n as usize)
                .map_err(|m| ConfigError::new(format!("connectionPool.protocolSpecific.{key}"), m)),
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
            Some(v) => Compression::from_option(v).ok_or_else(|| {
                ConfigError::new(
                    "connectionPool.protocolSpecific.defaultCompressionAlgorithm",
                    format!("must be 'identity', 'deflate' or 'gzip' (or grpc-js's compressionAlgorithms 0, 1, 2), got {v}"),
                )
            })?,
        },
        http2: http2_from(obj, given, None)?,
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
            Some(v) => non_negative(v)
                .map(Some)
                .map_err(|m| ConfigError::new(format!("connectionPool.protocolSpecific.{key}"), m)),
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

/// Strict validation plus defaults, for `ConfigHelper.create<Protocol>Config`.
///
/// `protocol` is the helper's protocol family (`http`, `https`, `http2`, `grpc`, `ws`); the options'
/// own `protocol` key, when present, must belong to it (`ws`/`wss` for the WebSocket helper).
pub fn resolve_options(
    protocol: Protocol,
    options: &Value,
    env: &Environment,
) -> Result<Value, ConfigError> {
    let empty = Value::Object(Map::new());
    let options = match options {
        Value::Null => &empty,
        Value::Object(_) => options,
        _ => return Err(ConfigError::new("options", "must be an object")),
    };
    let given: Options = read(options, "")?;
    if let Some(ssl) = &given.ssl {
        check_ssl_names(protocol, ssl, true)?;
    }

    let mut out = options.as_object().cloned().unwrap_or_default();
    // hostname: given, else IP, else 127.0.0.1
    match &given.hostname {
        None => {
            let host = env
                .ip
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_HOSTNAME.into());
            out.insert("hostname".into(), Value::String(host));
        }
        Some(Given::Valid(_)) => {}
        Some(Given::Invalid(v)) => {
            return Err(ConfigError::new(
                "hostname",
                format!("must be a string, got {v}"),
            ))
        }
    }
    // port: given (0 stays 0), else PORT, else APP_PORT, else 3000
    let port = match &given.port {
        None => {
            let from_env = [&env.port, &env.app_port]
                .into_iter()
                .flatten()
                .find(|s| !s.is_empty())
                .map(|s| parse_port(&Value::String(s.clone())))
                .transpose()
                .map_err(|m| ConfigError::new("port", m))?;
            from_env.unwrap_or(DEFAULT_PORT)
        }
        Some(p) => p.0,
    };
    out.insert("port".into(), Value::from(port));

    let chosen = match &given.protocol {
        None => protocol.as_str().to_string(),
        Some(Given::Valid(s)) => {
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
        Some(Given::Invalid(v)) => {
            return Err(ConfigError::new(
                "protocol",
                format!("must be a string, got {v}"),
            ))
        }
    };
    out.insert("protocol".into(), Value::String(chosen));

    if let Some(Given::Invalid(_)) = given.trace {
        return Err(ConfigError::new("trace", "must be a boolean"));
    }
    if let Some(h2c) = &given.h2c {
        if protocol != Protocol::Http2 {
            return Err(ConfigError::new(
                "h2c",
                "only the http2 server serves cleartext HTTP/2",
            ));
        }
        if let Given::Invalid(_) = h2c {
            return Err(ConfigError::new("h2c", "must be a boolean"));
        }
    }
    match &given.handle_protocols {
        None => {}
        Some(_) if !matches!(protocol, Protocol::Ws | Protocol::Wss) => {
            return Err(ConfigError::new(
                "handleProtocols",
                "only the WebSocket server chooses subprotocols",
            ))
        }
        Some(Given::Valid(true)) => {}
        Some(_) => return Err(ConfigError::new("handleProtocols", "must be a function")),
    }
    match &given.reflection {
        Some(_) if protocol != Protocol::Grpc => {
            return Err(ConfigError::new(
                "reflection",
                "only the grpc server serves reflection",
            ))
        }
        None | Some(Given::Valid(None)) if protocol == Protocol::Grpc => {
            out.insert("reflection".into(), Value::Bool(false));
        }
        Some(Given::Invalid(_)) => {
            return Err(ConfigError::new("reflection", "must be a boolean"));
        }
        _ => {}
    }
    if let Some(Given::Invalid(_)) = given.reuse_port {
        return Err(ConfigError::new("reusePort", "must be a boolean"));
    }

    // connectionPool: write every default out.
    let no_pool = Pool::default();
    let limits = limits_from(match &given.connection_pool {
        Group::Absent => &no_pool,
        Group::Null => return Err(ConfigError::new("connectionPool", "must be an object")),
        Group::Given(pool) => pool,
    });
    let mut pool = options
        .get("connectionPool")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
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
    let resolved = Value::Object(out);
    // What the constructors check as well (protocolSpecific values, for one): options ConfigHelper
    // returns must construct.
    ServerConfig::from_options(&resolved)?;
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn native_endpoints_are_named() {
        assert_eq!(
            keys::names::<shape::EndpointPaths>(),
            ["healthz", "readyz", "metrics"]
        );
    }

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
