//! The option names each server accepts, as listed for the README's options table (which
//! `__test__/readme.test.js` checks against these lists). The names are enforced by the serde
//! structs of `shape.rs`; the test below keeps the two the same, in the same order (the order of
//! the "expected one of" list in error messages).

use super::shape;
use serde::de::{self, Deserialize, Deserializer, Visitor};

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
    "maxRequestsPerSocket",
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
    "degradedRefusedStreamRate",
    "overloadedRefusedStreamRate",
    "degradedPongTimeoutRate",
    "overloadedPongTimeoutRate",
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
    "requestCert",
    "rejectUnauthorized",
];

/// The names a serde-derived struct accepts, in declaration order.
pub(super) fn names<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    struct Capture<'a>(&'a mut Vec<&'static str>);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend(fields);
            Err(de::Error::custom("names taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names = vec![];
    let _ = T::deserialize(Capture(&mut names));
    names
}

#[test]
fn the_serde_structs_accept_exactly_the_listed_names() {
    let cat = |a: &[&'static str], b: &[&'static str]| [a, b].concat();
    assert_eq!(names::<shape::Options>(), BASE);
    assert_eq!(names::<shape::Pool>(), POOL);
    assert_eq!(names::<shape::HealthNames>(), HEALTH);
    assert_eq!(names::<shape::ProtocolSpecificNames>(), PROTOCOL_SPECIFIC);
    assert_eq!(names::<shape::TlsNames>(), SSL1);
    assert_eq!(names::<shape::Http2TlsNames>(), cat(SSL1, SSL2_EXTRA));
    assert_eq!(names::<shape::EnabledTlsNames>(), SSL_ENABLED);
}
