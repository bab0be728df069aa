//! The options as JavaScript gives them, read with serde. Every option name is checked at every
//! level (`deny_unknown_fields`; a typo is an error naming its dotted path, found by
//! `serde_path_to_error`), and so is every value whose rule is the same for `ConfigHelper` and the
//! constructors (the port, the `connectionPool` limits, `nativeEndpoints`). Values that the two
//! entry points word or tolerate differently are kept as given ([`Given`]) and checked in `mod.rs`.
//! Errors keep the wording of the hand-written parser this replaced (`outcomes.txt` pins them).

use super::{ConfigError, Endpoints, Protocol};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;

/// The top level of the options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Options {
    pub hostname: Option<Given<String>>,
    pub port: Option<Port>,
    pub protocol: Option<Given<String>>,
    pub trace: Option<Given<bool>>,
    /// Koatty's own settings: carried, never read here.
    #[allow(dead_code)]
    pub ext: Option<IgnoredAny>,
    #[serde(default)]
    pub connection_pool: Group<Pool>,
    pub reuse_port: Option<Given<bool>>,
    /// Read by `crate::tls`; its names are checked per protocol by [`check_ssl_names`].
    pub ssl: Option<Value>,
    /// `Some` when given, even as `null` (the helpers reject it on the wrong server).
    #[serde(default, deserialize_with = "present")]
    pub h2c: Option<Given<Option<bool>>>,
    #[serde(default, deserialize_with = "native_endpoints")]
    pub native_endpoints: Endpoints,
    /// `Some` when given, even as `null`.
    #[serde(default, deserialize_with = "present")]
    pub reflection: Option<Given<Option<bool>>>,
    /// JavaScript sends `true` for a function (the function stays there).
    pub handle_protocols: Option<Given<bool>>,
}

/// `connectionPool`; the limits are in milliseconds, bytes or counts.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub(super) struct Pool {
    #[serde(deserialize_with = "count")]
    pub max_connections: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub connection_timeout: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub keep_alive_timeout: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub request_timeout: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub headers_timeout: Option<u64>,
    #[serde(deserialize_with = "max_in_flight")]
    pub max_in_flight: Option<u64>,
    #[serde(deserialize_with = "max_header_size")]
    pub max_header_size: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub max_headers_count: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub max_body_size: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub handshake_timeout: Option<u64>,
    #[serde(deserialize_with = "count")]
    pub max_requests_per_socket: Option<u64>,
    #[allow(dead_code)]
    pub health: Group<HealthNames>,
    #[allow(dead_code)]
    pub protocol_specific: Group<ProtocolSpecificNames>,
}

/// `connectionPool.health`: the names are checked here; `js/pool.js` reads the values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct HealthNames {
    #[serde(default, deserialize_with = "threshold")]
    degraded_utilisation: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_utilisation: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    degraded_error_rate: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_error_rate: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    degraded_latency_ms: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_latency_ms: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    degraded_event_loop_lag_ms: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_event_loop_lag_ms: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    degraded_refused_stream_rate: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_refused_stream_rate: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    degraded_pong_timeout_rate: Option<f64>,
    #[serde(default, deserialize_with = "threshold")]
    overloaded_pong_timeout_rate: Option<f64>,
    #[serde(default, deserialize_with = "window_seconds")]
    window_seconds: Option<u64>,
}

/// A health threshold (`js/pool.js` compares figures with it): a non-negative number.
fn threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => Ok(n.as_f64()),
        Some(v) => Err(de::Error::custom(format!(
            "must be a non-negative number, got {v}"
        ))),
    }
}

/// The window health rates are taken over: whole seconds, 1 to 300 (the history kept).
fn window_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| (1..=300).contains(&s)) => {
            Ok(n.as_u64())
        }
        Some(v) => Err(de::Error::custom(format!(
            "must be a whole number of seconds from 1 to 300, got {v}"
        ))),
    }
}

/// `connectionPool.protocolSpecific`: the names are checked here; each protocol's settings read
/// (and check) only the values that protocol uses, so an HTTP server ignores `pingInterval`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct ProtocolSpecificNames {
    max_session_memory: Option<IgnoredAny>,
    max_header_list_size: Option<IgnoredAny>,
    max_concurrent_streams: Option<IgnoredAny>,
    initial_window_size: Option<IgnoredAny>,
    keep_alive_time: Option<IgnoredAny>,
    keep_alive_timeout: Option<IgnoredAny>,
    max_receive_message_length: Option<IgnoredAny>,
    max_send_message_length: Option<IgnoredAny>,
    default_compression_algorithm: Option<IgnoredAny>,
    ping_interval: Option<IgnoredAny>,
    pong_timeout: Option<IgnoredAny>,
    heartbeat_interval: Option<IgnoredAny>,
    max_payload: Option<IgnoredAny>,
    max_buffered_amount: Option<IgnoredAny>,
    max_receive_queue: Option<IgnoredAny>,
    keep_open_during_drain_delay: Option<IgnoredAny>,
}

/// `ssl` of `https` (node's `tls` options); `crate::tls` reads the values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct TlsNames {
    mode: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
    cert: Option<IgnoredAny>,
    ca: Option<IgnoredAny>,
    passphrase: Option<IgnoredAny>,
    ciphers: Option<IgnoredAny>,
    honor_cipher_order: Option<IgnoredAny>,
    secure_protocol: Option<IgnoredAny>,
    request_cert: Option<IgnoredAny>,
    reject_unauthorized: Option<IgnoredAny>,
}

/// `ssl` of `http2`: those of `https` and `allowHTTP1`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct Http2TlsNames {
    mode: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
    cert: Option<IgnoredAny>,
    ca: Option<IgnoredAny>,
    passphrase: Option<IgnoredAny>,
    ciphers: Option<IgnoredAny>,
    honor_cipher_order: Option<IgnoredAny>,
    secure_protocol: Option<IgnoredAny>,
    request_cert: Option<IgnoredAny>,
    reject_unauthorized: Option<IgnoredAny>,
    #[serde(rename = "allowHTTP1")]
    allow_http1: Option<IgnoredAny>,
}

/// `ssl` of `grpc` and `ws`/`wss` (koatty_serve 2.x's `{ enabled, keyFile, … }` shape).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct EnabledTlsNames {
    enabled: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
    cert: Option<IgnoredAny>,
    ca: Option<IgnoredAny>,
    passphrase: Option<IgnoredAny>,
    ciphers: Option<IgnoredAny>,
    honor_cipher_order: Option<IgnoredAny>,
    secure_protocol: Option<IgnoredAny>,
    key_file: Option<IgnoredAny>,
    cert_file: Option<IgnoredAny>,
    ca_file: Option<IgnoredAny>,
    client_cert_required: Option<IgnoredAny>,
    // node's names, as in `https`: `requestCert` with `rejectUnauthorized: false` asks for a
    // certificate without requiring a valid one (createSecureServer's `webSocket` option).
    request_cert: Option<IgnoredAny>,
    reject_unauthorized: Option<IgnoredAny>,
}

/// Reads `T` from `value`; an error names the dotted path of the offending option below `at`.
pub(super) fn read<T: DeserializeOwned>(value: &Value, at: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut key = at.to_string();
        let mut last = None;
        for segment in e.path().iter() {
            if !key.is_empty() {
                key.push('.');
            }
            let name = segment.to_string();
            key.push_str(&name);
            last = Some(name);
        }
        let message = e.into_inner().to_string();
        ConfigError::new(key, unknown_option(message, last.as_deref()))
    })
}

/// serde words a misspelt name "unknown field `x`, expected one of `a`, `b`"; users have seen
/// "unknown option (expected one of: a, b)".
fn unknown_option(message: String, name: Option<&str>) -> String {
    let prefix = name.map(|n| format!("unknown field `{n}`, expected "));
    match prefix.as_deref().and_then(|p| message.strip_prefix(p)) {
        Some(expected) => {
            let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            format!("unknown option (expected one of: {})", names.join(", "))
        }
        None => message,
    }
}

/// Checks the names under `ssl`, which depend on the protocol. `strict` (ConfigHelper) rejects an
/// `ssl` section on a plain HTTP server; the constructors ignore it (options switched from https
/// to http by updateConfig keep it).
pub(super) fn check_ssl_names(
    protocol: Protocol,
    ssl: &Value,
    strict: bool,
) -> Result<(), ConfigError> {
    match protocol {
        Protocol::Http if strict => Err(ConfigError::new(
            "ssl",
            format!("not an option of the {} server", protocol.as_str()),
        )),
        Protocol::Http => Ok(()),
        Protocol::Https => read::<Group<TlsNames>>(ssl, "ssl").map(drop),
        Protocol::Http2 => read::<Group<Http2TlsNames>>(ssl, "ssl").map(drop),
        Protocol::Grpc | Protocol::Ws | Protocol::Wss => {
            read::<Group<EnabledTlsNames>>(ssl, "ssl").map(drop)
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Values

/// A value of type `T`, or what was given instead: for options that each entry point words or
/// tolerates in its own way.
pub(super) enum Given<T> {
    Valid(T),
    Invalid(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&value) {
            Ok(v) => Given::Valid(v),
            Err(_) => Given::Invalid(value),
        })
    }
}

/// For `#[serde(default)]` fields: `Some` whenever the option is given, `null` included.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A port: an integer from 0 to 65535, or a string holding one (environment variables).
pub(super) struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_port(&Value::deserialize(deserializer)?)
            .map(Port)
            .map_err(de::Error::custom)
    }
}

pub(super) fn parse_port(v: &Value) -> Result<u16, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (0.0..=65535.0).contains(&n) && n.fract() == 0.0 => Ok(n as u16),
        _ => Err(format!("must be an integer from 0 to 65535, got {v}")),
    }
}

/// A non-negative integer that JavaScript holds exactly.
pub(super) fn non_negative(v: &Value) -> Result<u64, String> {
    match v.as_f64() {
        Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 9.007_199_254_740_991e15 => Ok(n as u64),
        Some(_) => Err(format!("must be a non-negative integer, got {v}")),
        None => Err(format!("must be a number, got {v}")),
    }
}

/// An optional [`non_negative`] setting (`null` = absent).
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => non_negative(&v).map(Some).map_err(de::Error::custom),
    }
}

fn max_in_flight<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match count(d)? {
        Some(0) => Err(de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

fn max_header_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match count(d)? {
        Some(n) if n < 1024 => Err(de::Error::custom("must be at least 1024 bytes")),
        n => Ok(n),
    }
}

/// `nativeEndpoints`: `true` (every endpoint at its default path), `false`/`null` (off), or an
/// object of paths.
fn native_endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Endpoints, D::Error> {
    let on = Endpoints {
        healthz: Some("/healthz".into()),
        readyz: Some("/readyz".into()),
        metrics: Some("/metrics".into()),
    };
    match Shape::<EndpointPaths>::deserialize(d)? {
        Shape::Null | Shape::Bool(false) => Ok(Endpoints::default()),
        Shape::Bool(true) => Ok(on),
        Shape::Object(p) => Ok(Endpoints {
            healthz: p.healthz.or(on.healthz),
            readyz: p.readyz.or(on.readyz),
            metrics: p.metrics.or(on.metrics),
        }),
        Shape::Other(v) => Err(de::Error::custom(format!(
            "must be true, false or an object, got {v}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointPaths {
    #[serde(default)]
    healthz: EndpointPath,
    #[serde(default)]
    readyz: EndpointPath,
    #[serde(default)]
    metrics: EndpointPath,
}

/// One native endpoint's path: absent, `null` or `true` = the default path; `false` = off.
#[derive(Default)]
enum EndpointPath {
    #[default]
    Default,
    Off,
    At(String),
}

impl EndpointPath {
    fn or(self, default: Option<String>) -> Option<String> {
        match self {
            EndpointPath::Default => default,
            EndpointPath::Off => None,
            EndpointPath::At(p) => Some(p),
        }
    }
}

impl<'de> Deserialize<'de> for EndpointPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null | Value::Bool(true) => Ok(EndpointPath::Default),
            Value::Bool(false) => Ok(EndpointPath::Off),
            Value::String(p) if p.starts_with('/') => Ok(EndpointPath::At(p)),
            v => Err(de::Error::custom(format!(
                "must be a path starting with '/' or a boolean, got {v}"
            ))),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Option groups

/// An option group: absent, `null`, or an object of the options `T`; anything else is an error
/// ("must be an object").
#[derive(Default)]
pub(super) enum Group<T> {
    #[default]
    Absent,
    Null,
    Given(T),
}

impl<T> Group<T> {
    pub fn given(&self) -> Option<&T> {
        match self {
            Group::Given(t) => Some(t),
            Group::Absent | Group::Null => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Group<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Shape::<T>::deserialize(deserializer)? {
            Shape::Null => Ok(Group::Null),
            Shape::Object(t) => Ok(Group::Given(t)),
            Shape::Bool(_) | Shape::Other(_) => Err(de::Error::custom("must be an object")),
        }
    }
}

/// A value that may be an object of the options `T`. The object is read through the same
/// deserializer, so an error inside it keeps its path; any other value is kept for the message.
enum Shape<T> {
    Null,
    Bool(bool),
    Object(T),
    Other(Value),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shape<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor(PhantomData))
    }
}

struct ShapeVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ShapeVisitor<T> {
    type Value = Shape<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape<T>, E> {
        Ok(Shape::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Shape<T>, E> {
        Ok(Shape::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Shape<T>, E> {
        Ok(Shape::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Shape<T>, E> {
        Ok(Shape::Other(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Shape<T>, E> {
        Ok(Shape::Other(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Shape<T>, E> {
        Ok(Shape::Other(n.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Shape<T>, E> {
        Ok(Shape::Other(s.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Shape<T>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Shape::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Shape::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_s_unknown_field_is_worded_as_before_in_each_of_its_forms() {
        let reword = |m: &str, name| unknown_option(m.to_string(), Some(name));
        assert_eq!(
            reword("unknown field `x`, expected one of `a`, `b`, `c`", "x"),
            "unknown option (expected one of: a, b, c)"
        );
        assert_eq!(
            reword("unknown field `x`, expected `a` or `b`", "x"),
            "unknown option (expected one of: a, b)"
        );
        assert_eq!(
            reword("unknown field `x`, expected `a`", "x"),
            "unknown option (expected one of: a)"
        );
        // A name holding a backtick is still read from the path, not from the message.
        assert_eq!(
            reword("unknown field `a`b`, expected `c` or `d`", "a`b"),
            "unknown option (expected one of: c, d)"
        );
        assert_eq!(reword("must be an object", "x"), "must be an object");
        let Err(e) = read::<Options>(&serde_json::json!({"ssl": null, "x`y": 1}), "") else {
            panic!("accepted an unknown name");
        };
        assert_eq!(e.key, "x`y");
        assert!(e
            .message
            .starts_with("unknown option (expected one of: hostname, port,"));
    }
}
