//! The option names each server accepts, so that a typo is an error naming the key instead of a
//! silently ignored setting.

use super::{ConfigError, Protocol};
use serde_json::{Map, Value};

const BASE: &[&str] = &[
    "hostname",
    "port",
    "protocol",
    "trace",
    "ext",
    "connectionPool",
    "reusePort",
    "ssl",
    "h2c",
    "nativeEndpoints",
    "reflection",
    "handleProtocols",
];

const POOL: &[&str] = &[
    "maxConnections",
    "connectionTimeout",
    "keepAliveTimeout",
    "requestTimeout",
    "headersTimeout",
    "maxInFlight",
    "maxHeaderSize",
    "maxHeadersCount",
    "maxBodySize",
    "handshakeTimeout",
    "health",
    "protocolSpecific",
];

/// `connectionPool.health` thresholds (read by the JavaScript pool's `getHealth`).
const HEALTH: &[&str] = &[
    "degradedUtilisation",
    "overloadedUtilisation",
    "degradedErrorRate",
    "overloadedErrorRate",
    "degradedLatencyMs",
    "overloadedLatencyMs",
    "degradedEventLoopLagMs",
    "overloadedEventLoopLagMs",
    "windowSeconds",
];

const PROTOCOL_SPECIFIC: &[&str] = &[
    "maxSessionMemory",
    "maxHeaderListSize",
    "maxConcurrentStreams",
    "initialWindowSize",
    "keepAliveTime",
    "keepAliveTimeout",
    "maxReceiveMessageLength",
    "maxSendMessageLength",
    "defaultCompressionAlgorithm",
    "pingInterval",
    "pongTimeout",
    "heartbeatInterval",
    "maxPayload",
    "maxBufferedAmount",
    "maxReceiveQueue",
    "keepOpenDuringDrainDelay",
];

const SSL1: &[&str] = &[
    "mode",
    "key",
    "cert",
    "ca",
    "passphrase",
    "ciphers",
    "honorCipherOrder",
    "secureProtocol",
    "requestCert",
    "rejectUnauthorized",
];
const SSL2_EXTRA: &[&str] = &["allowHTTP1"];
const SSL_ENABLED: &[&str] = &[
    "enabled",
    "key",
    "cert",
    "ca",
    "passphrase",
    "ciphers",
    "honorCipherOrder",
    "secureProtocol",
    "keyFile",
    "certFile",
    "caFile",
    "clientCertRequired",
];

/// Keys valid under `ssl` for a protocol family (empty = no `ssl` section).
pub fn known_keys(protocol: Protocol) -> Vec<&'static str> {
    match protocol {
        Protocol::Http => vec![],
        Protocol::Https => SSL1.to_vec(),
        Protocol::Http2 => SSL1.iter().chain(SSL2_EXTRA).copied().collect(),
        Protocol::Grpc | Protocol::Ws | Protocol::Wss => SSL_ENABLED.to_vec(),
    }
}

fn check(prefix: &str, map: &Map<String, Value>, allowed: &[&str]) -> Result<(), ConfigError> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            return Err(ConfigError::new(
                path,
                format!("unknown option (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The option group `key` of `map` (named `path` in errors): absent or null is `None`, anything but
/// an object is an error.
fn group<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
    match map.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => v
            .as_object()
            .map(Some)
            .ok_or_else(|| ConfigError::new(path, "must be an object")),
    }
}

/// Rejects option names no server knows. `ssl_on_plain_server` says whether an `ssl` section on a
/// plain server is an error (ConfigHelper) or ignored (constructors: options switched from https
/// to http by updateConfig keep it).
pub(super) fn reject_unknown(
    protocol: Protocol,
    options: &Map<String, Value>,
    ssl_on_plain_server: bool,
) -> Result<(), ConfigError> {
    check("", options, BASE)?;
    if let Some(pool) = group(options, "connectionPool", "connectionPool")? {
        check("connectionPool", pool, POOL)?;
        let nested = [
            (
                "protocolSpecific",
                "connectionPool.protocolSpecific",
                PROTOCOL_SPECIFIC,
            ),
            ("health", "connectionPool.health", HEALTH),
        ];
        for (key, path, allowed) in nested {
            if let Some(map) = group(pool, key, path)? {
                check(path, map, allowed)?;
            }
        }
    }
    if let Some(ssl) = options.get("ssl").filter(|v| !v.is_null()) {
        let allowed = known_keys(protocol);
        if allowed.is_empty() && !ssl_on_plain_server {
            return Ok(());
        }
        if allowed.is_empty() {
            return Err(ConfigError::new(
                "ssl",
                format!("not an option of the {} server", protocol.as_str()),
            ));
        }
        let ssl = ssl
            .as_object()
            .ok_or_else(|| ConfigError::new("ssl", "must be an object"))?;
        check("ssl", ssl, &allowed)?;
    }
    Ok(())
}
