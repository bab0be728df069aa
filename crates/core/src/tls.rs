//! TLS for every protocol, on rustls (ring): the `ssl` options as data, built once into a rustls
//! `ServerConfig` that new handshakes read (and that `reload` swaps without touching open
//! connections), plus what a handler may learn about the peer after the handshake.
//!
//! Node's option names are honoured: `key`/`cert`/`ca` as PEM text or a file path, `passphrase`
//! for encrypted PKCS#8 keys, `ciphers` as an OpenSSL cipher string, `secureProtocol`,
//! `honorCipherOrder`, `requestCert`/`rejectUnauthorized`, and the modes `auto`, `manual` and
//! `mutual_tls`. Anything that cannot be honoured is an `ERR_TLS_CONFIG` error, never ignored.

use arc_swap::ArcSwap;
use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// A TLS configuration error; JavaScript sees `code: 'ERR_TLS_CONFIG'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERR_TLS_CONFIG: {0}")]
pub struct TlsError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, TlsError> {
    Err(TlsError(message.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Auto,
    Manual,
    MutualTls,
}

/// The `ssl` section, normalised from either shape the servers accept (`SSL1Config`/`SSL2Config`
/// with `mode`, or `SSLConfig` with `enabled`, `keyFile`, `certFile`, `caFile`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    pub mode: TlsMode,
    pub key: Option<String>,
    pub cert: Option<String>,
    pub ca: Option<String>,
    pub passphrase: Option<String>,
    pub ciphers: Option<String>,
    pub honor_cipher_order: bool,
    pub secure_protocol: Option<String>,
    pub request_cert: bool,
    pub reject_unauthorized: bool,
    /// ALPN protocols offered, in preference order (set by the protocol, not the user).
    pub alpn: Vec<Vec<u8>>,
}

fn text(ssl: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, TlsError> {
    match ssl.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => err(format!("ssl.{key} must be a string, got {v}")),
    }
}

fn flag(ssl: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>, TlsError> {
    match ssl.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => err(format!("ssl.{key} must be a boolean, got {v}")),
    }
}

impl TlsOptions {
    /// Reads the `ssl` section. `None` when TLS is off (no section, or `enabled: false`).
    pub fn from_json(ssl: Option<&Value>) -> Result<Option<TlsOptions>, TlsError> {
        let ssl = match ssl {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) => m,
            Some(v) => return err(format!("ssl must be an object, got {v}")),
        };
        if flag(ssl, "enabled")? == Some(false) {
            return Ok(None);
        }
        let client_cert_required = flag(ssl, "clientCertRequired")?.unwrap_or(false);
        let mode = match text(ssl, "mode")?.as_deref() {
            None if client_cert_required => TlsMode::MutualTls,
            None | Some("auto") => TlsMode::Auto,
            Some("manual") => TlsMode::Manual,
            Some("mutual_tls") => TlsMode::MutualTls,
            Some(other) => {
                return err(format!(
                    "ssl.mode '{other}' is not one of auto, manual, mutual_tls"
                ))
            }
        };
        let mutual = mode == TlsMode::MutualTls;
        Ok(Some(TlsOptions {
            mode,
            key: text(ssl, "key")?.or(text(ssl, "keyFile")?),
            cert: text(ssl, "cert")?.or(text(ssl, "certFile")?),
            ca: text(ssl, "ca")?.or(text(ssl, "caFile")?),
            passphrase: text(ssl, "passphrase")?,
            ciphers: text(ssl, "ciphers")?,
            honor_cipher_order: flag(ssl, "honorCipherOrder")?.unwrap_or(false),
            secure_protocol: text(ssl, "secureProtocol")?,
            request_cert: flag(ssl, "requestCert")?.unwrap_or(mutual),
            reject_unauthorized: flag(ssl, "rejectUnauthorized")?.unwrap_or(true),
            alpn: Vec::new(),
        }))
    }
}

/// PEM text as given, or the contents of the file it names.
fn pem_source(what: &str, value: &str) -> Result<Vec<u8>, TlsError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).or_else(|e| err(format!("cannot read ssl.{what} file '{value}': {e}")))
}

fn load_certs(what: &str, value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = pem_source(what, value)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .or_else(|e| err(format!("ssl.{what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return err(format!("ssl.{what} holds no PEM certificate"));
    }
    Ok(certs)
}

const ENCRYPTED_KEY_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

fn load_key(value: &str, passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = pem_source("key", value)?;
    let text = String::from_utf8_lossy(&pem);
    if let Some(start) = text.find(ENCRYPTED_KEY_LABEL) {
        let Some(passphrase) = passphrase else {
            return err("ssl.key is encrypted and no ssl.passphrase was given");
        };
        let block = &text[start..];
        let end = block
            .find("-----END ENCRYPTED PRIVATE KEY-----")
            .map(|i| i + 35)
            .unwrap_or(block.len());
        let (_, der) = pkcs8::der::pem::decode_vec(&block.as_bytes()[..end])
            .or_else(|e| err(format!("ssl.key: bad encrypted PEM: {e}")))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .or_else(|e| err(format!("ssl.key: bad encrypted PKCS#8 key: {e}")))?;
        let plain = info.decrypt(passphrase.as_bytes()).or_else(|_| {
            err("ssl.key could not be decrypted: wrong ssl.passphrase (or an unsupported cipher)")
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .or_else(|e| err(format!("ssl.key holds no usable PEM private key: {e}")))
}

// --- ciphers ------------------------------------------------------------------------------------

/// The suites rustls offers with ring, under their OpenSSL names, with the OpenSSL keywords that
/// select them.
fn suite_table() -> Vec<(&'static str, SupportedCipherSuite, &'static [&'static str])> {
    use ring_provider::cipher_suite as cs;
    const TLS13: &[&str] = &["HIGH", "ALL", "DEFAULT", "TLSv1.3", "AES", "AESGCM"];
    const TLS13_CHACHA: &[&str] = &["HIGH", "ALL", "DEFAULT", "TLSv1.3", "CHACHA20"];
    const ECDSA: &[&str] = &[
        "HIGH", "ALL", "DEFAULT", "TLSv1.2", "ECDHE", "EECDH", "kECDHE", "ECDSA", "aECDSA",
    ];
    const RSA: &[&str] = &[
        "HIGH", "ALL", "DEFAULT", "TLSv1.2", "ECDHE", "EECDH", "kECDHE", "RSA", "aRSA",
    ];
    vec![
        (
            "TLS_AES_256_GCM_SHA384",
            cs::TLS13_AES_256_GCM_SHA384,
            TLS13,
        ),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_CHACHA,
        ),
        (
            "TLS_AES_128_GCM_SHA256",
            cs::TLS13_AES_128_GCM_SHA256,
            TLS13,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ECDSA,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            RSA,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ECDSA,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            RSA,
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ECDSA,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            RSA,
        ),
    ]
}

fn suite_matches(name: &str, tags: &[&str], item: &str) -> bool {
    name == item
        || tags.contains(&item)
        || match item {
            "AES128" | "AES256" | "GCM" | "CHACHA20" | "POLY1305" | "SHA256" | "SHA384" => {
                name.split(['-', '_']).any(|p| p == item)
            }
            _ => false,
        }
}

/// Parts of OpenSSL cipher names and keywords: a name made only of these is a real OpenSSL suite or
/// keyword that rustls does not offer (e.g. `DHE-RSA-AES128-GCM-SHA256`, `AES128-SHA`), skipped as
/// OpenSSL skips unavailable suites; anything else is a typo and an error.
const OPENSSL_VOCABULARY: &[&str] = &[
    "TLS",
    "SSL",
    "DHE",
    "EDH",
    "ECDHE",
    "EECDH",
    "ADH",
    "AECDH",
    "RSA",
    "DSS",
    "ECDSA",
    "PSK",
    "SRP",
    "AES",
    "AES128",
    "AES256",
    "GCM",
    "CCM",
    "CCM8",
    "CBC",
    "CBC3",
    "SHA",
    "SHA1",
    "SHA256",
    "SHA384",
    "CHACHA20",
    "POLY1305",
    "CAMELLIA",
    "CAMELLIA128",
    "CAMELLIA256",
    "ARIA",
    "ARIA128",
    "ARIA256",
    "DES",
    "3DES",
    "RC4",
    "RC2",
    "MD5",
    "NULL",
    "SEED",
    "IDEA",
    "EXP",
    "EXPORT",
    "LOW",
    "MEDIUM",
    "COMPLEMENTOFDEFAULT",
    "COMPLEMENTOFALL",
    "WITH",
    "AESGCM",
    "AESCCM",
    "kRSA",
    "aRSA",
    "aECDSA",
    "kECDHE",
    "aNULL",
    "eNULL",
    "kDHE",
    "aDSS",
    "SUITEB128",
    "SUITEB192",
    "SUITEB128ONLY",
    "SUITEB128C2",
    "SECLEVEL",
    "STRENGTH",
    "TLSv1",
    "TLSv1.0",
    "TLSv1.1",
    "TLSv1.2",
    "TLSv1.3",
    "SSLv3",
    "ECDH",
    "kEECDH",
    "kEDH",
    "GOST",
    "GOST94",
    "GOST89MAC",
];

fn known_openssl_name(item: &str) -> bool {
    item.split(['-', '_', '@', '='])
        .filter(|p| !p.is_empty())
        .all(|p| OPENSSL_VOCABULARY.contains(&p) || p.chars().all(|c| c.is_ascii_digit()))
}

/// Selects suites from an OpenSSL cipher string: names and keywords add (in order), `!X`/`-X`
/// remove, `+X` (reordering) is accepted and ignored.
pub fn select_cipher_suites(spec: &str) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let table = suite_table();
    let mut chosen: Vec<&'static str> = Vec::new();
    let mut removed: Vec<&'static str> = Vec::new();
    for item in spec
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (negative, name) = match item.as_bytes()[0] {
            b'!' | b'-' => (true, &item[1..]),
            b'+' => continue,
            _ => (false, item),
        };
        let hits: Vec<&'static str> = table
            .iter()
            .filter(|(n, _, tags)| suite_matches(n, tags, name))
            .map(|(n, _, _)| *n)
            .collect();
        if negative {
            removed.extend(hits);
            continue;
        }
        if hits.is_empty() && !known_openssl_name(name) {
            return err(format!("ssl.ciphers: unknown cipher '{name}'"));
        }
        for h in hits {
            if !chosen.contains(&h) && !removed.contains(&h) {
                chosen.push(h);
            }
        }
    }
    chosen.retain(|n| !removed.contains(n));
    if chosen.is_empty() {
        return err(format!("ssl.ciphers '{spec}' selects no cipher suite this server supports (TLS 1.2 ECDHE with AES-GCM or ChaCha20, and the TLS 1.3 suites)"));
    }
    Ok(chosen
        .iter()
        .map(|n| {
            table
                .iter()
                .find(|(t, _, _)| t == n)
                .expect("from the table")
                .1
        })
        .collect())
}

fn protocol_versions(
    secure_protocol: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    match secure_protocol {
        None | Some("TLS_method") | Some("SSLv23_method") | Some("TLS_server_method") | Some("SSLv23_server_method") => {
            Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12])
        }
        Some("TLSv1_2_method") | Some("TLSv1_2_server_method") => Ok(vec![&rustls::version::TLS12]),
        Some("TLSv1_3_method") | Some("TLSv1_3_server_method") => Ok(vec![&rustls::version::TLS13]),
        Some(p @ ("TLSv1_method" | "TLSv1_1_method" | "TLSv1_server_method" | "TLSv1_1_server_method" | "SSLv3_method")) => {
            err(format!("ssl.secureProtocol '{p}' asks for a protocol older than TLS 1.2, which this server does not offer"))
        }
        Some(other) => err(format!("ssl.secureProtocol '{other}' is not a known method (TLS_method, TLSv1_2_method, TLSv1_3_method)")),
    }
}

// --- client certificates ------------------------------------------------------------------------

/// Accepts client certificates that fail verification (node's `rejectUnauthorized: false`); the
/// verdict is recomputed after the handshake for `req.socket.authorized`.
#[derive(Debug)]
struct LenientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LenientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

// --- building -----------------------------------------------------------------------------------

struct Built {
    config: Arc<ServerConfig>,
    /// The strict verifier, when client certificates are requested (to compute `authorized`).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

fn build(options: &TlsOptions) -> Result<(Built, bool), TlsError> {
    let mut provider = ring_provider::default_provider();
    if let Some(spec) = &options.ciphers {
        provider.cipher_suites = select_cipher_suites(spec)?;
    }
    let mut versions = protocol_versions(options.secure_protocol.as_deref())?;
    versions.retain(|v| provider.cipher_suites.iter().any(|s| s.version() == *v));
    if versions.is_empty() {
        return err("ssl.ciphers and ssl.secureProtocol leave no usable combination (e.g. only TLS 1.3 suites with TLSv1_2_method)");
    }
    let provider: Arc<CryptoProvider> = Arc::new(provider);

    let (certs, key, generated) = match (&options.key, &options.cert) {
        (Some(key), Some(cert)) => (
            load_certs("cert", cert)?,
            load_key(key, options.passphrase.as_deref())?,
            false,
        ),
        (None, None) if options.mode == TlsMode::Auto => {
            let dev = rcgen::generate_simple_self_signed(vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ])
            .or_else(|e| err(format!("could not generate a development certificate: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(dev.key_pair.serialize_der()));
            (vec![dev.cert.der().clone()], key, true)
        }
        (None, _) => return err(format!("ssl.key is required in {:?} mode", options.mode)),
        (_, None) => return err(format!("ssl.cert is required in {:?} mode", options.mode)),
    };

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .or_else(|e| err(format!("TLS settings rejected: {e}")))?;
    let (builder, verifier) = if options.request_cert {
        let Some(ca) = &options.ca else {
            return err(
                "ssl.ca is required to verify client certificates (mutual_tls / requestCert)",
            );
        };
        let mut roots = RootCertStore::empty();
        for c in load_certs("ca", ca)? {
            roots
                .add(c)
                .or_else(|e| err(format!("ssl.ca holds an unusable certificate: {e}")))?;
        }
        let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .or_else(|e| {
                err(format!(
                    "cannot verify client certificates with ssl.ca: {e}"
                ))
            })?;
        let used: Arc<dyn ClientCertVerifier> = if options.reject_unauthorized {
            strict.clone()
        } else {
            Arc::new(LenientVerifier(strict.clone()))
        };
        (builder.with_client_cert_verifier(used), Some(strict))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut config = builder.with_single_cert(certs, key).or_else(|e| {
        err(format!(
            "ssl.key and ssl.cert do not form a usable pair: {e}"
        ))
    })?;
    config.ignore_client_order = options.honor_cipher_order;
    config.alpn_protocols = options.alpn.clone();
    Ok((
        Built {
            config: Arc::new(config),
            verifier,
        },
        generated,
    ))
}

/// The TLS settings of one server: built once, read by each handshake, swapped by `reload`.
pub struct TlsSource {
    options: ArcSwap<TlsOptions>,
    current: ArcSwap<Built>,
    generated_dev_certificate: bool,
}

impl fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSource")
            .field("mode", &self.options.load().mode)
            .finish()
    }
}

impl TlsSource {
    pub fn new(options: TlsOptions) -> Result<TlsSource, TlsError> {
        let (built, generated) = build(&options)?;
        Ok(TlsSource {
            options: ArcSwap::from_pointee(options),
            current: ArcSwap::from_pointee(built),
            generated_dev_certificate: generated,
        })
    }

    /// Whether `auto` mode generated a self-signed development certificate (the caller warns).
    pub fn generated_dev_certificate(&self) -> bool {
        self.generated_dev_certificate
    }

    pub fn options(&self) -> Arc<TlsOptions> {
        self.options.load_full()
    }

    /// Re-reads key and certificate (and the rest) for new handshakes; open connections keep theirs.
    /// On error the current settings stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (built, _) = build(&self.options.load())?;
        self.current.store(Arc::new(built));
        Ok(())
    }

    /// Takes over another source's settings (new key, certificate or passphrase) for new
    /// handshakes, in place: the servers holding this source need no restart.
    pub fn adopt(&self, other: &TlsSource) {
        self.options.store(other.options.load_full());
        self.current.store(other.current.load_full());
    }

    /// Whether changing from `self` to `next` needs a restart: everything but key, certificate and
    /// passphrase does (node decides the same way which settings a secure context may swap).
    pub fn needs_restart_for(&self, next: &TlsOptions) -> bool {
        let now = self.options.load();
        let strip = |o: &TlsOptions| TlsOptions {
            key: None,
            cert: None,
            passphrase: None,
            ..o.clone()
        };
        strip(&now) != strip(next)
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load().config.clone())
    }

    /// What the handler may learn about this connection's peer.
    pub fn peer_info(&self, conn: &ServerConnection) -> PeerInfo {
        let certs = conn.peer_certificates().unwrap_or(&[]);
        let verdict = match (certs.split_first(), self.current.load().verifier.as_ref()) {
            // No certificate asked for (no `requestCert`): unauthorized with no error, as node.
            (_, None) => Err(None),
            (None, Some(_)) => Err(Some("peer did not present a certificate".to_string())),
            (Some((leaf, rest)), Some(v)) => v
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map(|_| ())
                .map_err(|e| Some(e.to_string())),
        };
        PeerInfo {
            authorized: verdict.is_ok(),
            authorization_error: verdict.err().flatten(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            protocol: conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                other => format!("{other:?}"),
            }),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| openssl_name(s.suite())),
            certificate: certs.first().map(|c| describe_certificate(c.as_ref())),
            json: Default::default(),
        }
    }
}

fn openssl_name(suite: rustls::CipherSuite) -> String {
    suite_table()
        .into_iter()
        .find(|(_, s, _)| s.suite() == suite)
        .map(|(n, _, _)| n.to_string())
        .unwrap_or_else(|| format!("{suite:?}"))
}

/// The peer as node's `tlsSocket.getPeerCertificate()` describes it (a subset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerCertificate {
    pub subject: Vec<(String, String)>,
    pub issuer: Vec<(String, String)>,
    pub valid_from: String,
    pub valid_to: String,
    pub serial_number: String,
    pub fingerprint256: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerInfo {
    pub authorized: bool,
    pub authorization_error: Option<String>,
    pub alpn: Option<String>,
    pub protocol: Option<String>,
    pub cipher: Option<String>,
    pub certificate: Option<PeerCertificate>,
    /// [`PeerInfo::to_json`], written once per connection (every request hands it over).
    pub json: std::sync::OnceLock<String>,
}

impl PeerInfo {
    /// The details JavaScript reads lazily (`getPeerCertificate()`, `getCipher()`, …), as JSON;
    /// built on first use and kept (the connection's requests share it).
    pub fn to_json(&self) -> &str {
        self.json.get_or_init(|| self.build_json())
    }

    fn build_json(&self) -> String {
        let pairs = |v: &[(String, String)]| {
            let mut m = serde_json::Map::new();
            for (k, val) in v {
                m.insert(k.clone(), Value::String(val.clone()));
            }
            Value::Object(m)
        };
        let certificate = self.certificate.as_ref().map(|c| {
            serde_json::json!({
                "subject": pairs(&c.subject),
                "issuer": pairs(&c.issuer),
                "valid_from": c.valid_from,
                "valid_to": c.valid_to,
                "serialNumber": c.serial_number,
                "fingerprint256": c.fingerprint256,
            })
        });
        serde_json::json!({
            "authorized": self.authorized,
            "authorizationError": self.authorization_error,
            "alpnProtocol": self.alpn,
            "protocol": self.protocol,
            "cipher": self.cipher,
            "certificate": certificate,
        })
        .to_string()
    }
}

fn name_parts(name: &x509_cert::name::Name) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let text = atv.to_string();
            if let Some((k, v)) = text.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn describe_certificate(der: &[u8]) -> PeerCertificate {
    use x509_cert::der::Decode;
    let fingerprint256 = hex_colon(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    match x509_cert::Certificate::from_der(der) {
        Ok(cert) => {
            let tbs = &cert.tbs_certificate;
            PeerCertificate {
                subject: name_parts(&tbs.subject),
                issuer: name_parts(&tbs.issuer),
                valid_from: tbs.validity.not_before.to_string(),
                valid_to: tbs.validity.not_after.to_string(),
                serial_number: tbs
                    .serial_number
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect(),
                fingerprint256,
            }
        }
        Err(_) => PeerCertificate {
            fingerprint256,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[SupportedCipherSuite]) -> Vec<String> {
        v.iter().map(|s| openssl_name(s.suite())).collect()
    }

    #[test]
    fn cipher_strings_follow_openssl() {
        assert_eq!(
            names(&select_cipher_suites("ECDHE-RSA-AES128-GCM-SHA256").unwrap()),
            ["ECDHE-RSA-AES128-GCM-SHA256"]
        );
        let high = select_cipher_suites("HIGH:!CHACHA20:!aECDSA").unwrap();
        assert!(
            names(&high)
                .iter()
                .all(|n| !n.contains("CHACHA") && !n.contains("ECDSA")),
            "{:?}",
            names(&high)
        );
        assert!(names(&high).contains(&"TLS_AES_256_GCM_SHA384".to_string()));
        // node's default cipher string mixes suites rustls lacks (DHE, CBC): those are skipped.
        let node_default = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA256:DHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:DHE-RSA-AES256-SHA384:ECDHE-RSA-AES256-SHA256:DHE-RSA-AES256-SHA256:HIGH:!aNULL:!eNULL:!EXPORT:!DES:!RC4:!MD5:!PSK:!SRP:!CAMELLIA";
        assert_eq!(select_cipher_suites(node_default).unwrap().len(), 9);
        assert!(select_cipher_suites("NOPE-CIPHER")
            .unwrap_err()
            .0
            .contains("NOPE-CIPHER"));
        assert!(
            select_cipher_suites("DHE-RSA-AES128-GCM-SHA256").is_err(),
            "nothing usable selected"
        );
    }

    #[test]
    fn old_protocols_are_refused() {
        assert!(protocol_versions(Some("TLSv1_method")).is_err());
        assert!(protocol_versions(Some("bogus")).is_err());
        assert_eq!(protocol_versions(Some("TLSv1_2_method")).unwrap().len(), 1);
        assert_eq!(protocol_versions(None).unwrap().len(), 2);
    }

    #[test]
    fn auto_mode_generates_a_dev_certificate_and_manual_needs_files() {
        let auto = TlsOptions::from_json(Some(&json!({"mode": "auto"})))
            .unwrap()
            .unwrap();
        assert!(TlsSource::new(auto).unwrap().generated_dev_certificate());
        let manual = TlsOptions::from_json(Some(&json!({"mode": "manual"})))
            .unwrap()
            .unwrap();
        assert!(TlsSource::new(manual)
            .unwrap_err()
            .0
            .contains("ssl.key is required"));
        let missing = TlsOptions::from_json(Some(
            &json!({"mode": "manual", "key": "/nonexistent.pem", "cert": "/nonexistent.pem"}),
        ))
        .unwrap()
        .unwrap();
        assert!(TlsSource::new(missing)
            .unwrap_err()
            .0
            .contains("cannot read ssl.cert file"));
        assert_eq!(
            TlsOptions::from_json(Some(&json!({"enabled": false}))).unwrap(),
            None
        );
        assert!(TlsOptions::from_json(Some(&json!({"mode": "strict"}))).is_err());
    }

    #[test]
    fn mismatched_key_and_cert_are_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let options = TlsOptions::from_json(Some(&json!({
            "mode": "manual", "key": a.key_pair.serialize_pem(), "cert": b.cert.pem()
        })))
        .unwrap()
        .unwrap();
        let e = TlsSource::new(options).unwrap_err();
        assert!(e.0.contains("do not form a usable pair"), "{e}");
        let good = TlsOptions::from_json(Some(&json!({
            "mode": "manual", "key": a.key_pair.serialize_pem(), "cert": a.cert.pem()
        })))
        .unwrap()
        .unwrap();
        let source = TlsSource::new(good).unwrap();
        assert!(!source.generated_dev_certificate());
        source.reload().unwrap();
    }
}
