//! The connection layer on real loopback sockets accepted by the lifecycle (see
//! [`crate::lifecycle::tests::capturing_server`]): first bytes, TLS, the phase, HTTP/2 settings.

use super::*;
use crate::bridge::CloseConnection;
use crate::config::ServerConfig;
use crate::lifecycle::tests::{capturing_server, within, Accepted, TestServer};
use crate::pool::WireProtocol;
use std::time::Instant as StdInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A server with `limits`, one client connected to it, and that connection as accepted.
async fn accepted(limits: Limits) -> (TestServer, TcpStream, Accepted) {
    let mut t = capturing_server(limits).await;
    let client = TcpStream::connect(t.server.local_addr()).await.unwrap();
    let conn = t.next().await;
    (t, client, conn)
}

/// Runs `establish` for an accepted connection in its own task.
fn establish_in_task(
    conn: Accepted,
    tls: Option<Arc<TlsSource>>,
    limits: Limits,
) -> tokio::task::JoinHandle<Option<(ConnStream, ConnectionInfo)>> {
    tokio::spawn(async move {
        establish(
            conn.stream,
            conn.remote,
            conn.phase,
            tls.as_deref(),
            &limits,
        )
        .await
    })
}

fn limits_with(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

async fn outcome(
    task: tokio::task::JoinHandle<Option<(ConnStream, ConnectionInfo)>>,
) -> Option<(ConnStream, ConnectionInfo)> {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("establish ended in time")
        .unwrap()
}

#[tokio::test]
async fn establish_waits_for_the_first_bytes_and_leaves_them_to_the_parser() {
    let (t, mut client, conn) = accepted(Limits::default()).await;
    let task = establish_in_task(conn, None, Limits::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "nothing sent yet: still waiting");
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (mut io, info) = outcome(task).await.expect("ready");
    assert!(matches!(io, ConnStream::Plain(_)));
    assert_eq!(info.remote, client.local_addr().unwrap());
    assert_eq!(info.local_port, t.server.local_addr().port());
    assert!(info.peer.is_none() && info.alpn().is_none());
    // Peeked, not read: the parser gets every byte.
    let mut first = [0u8; 16];
    within(io.read_exact(&mut first)).await.unwrap();
    assert_eq!(&first, b"GET / HTTP/1.1\r\n");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_timer() {
    let limits = limits_with(|l| l.keep_alive_timeout = Duration::from_millis(100));
    let (_t, mut client, conn) = accepted(limits.clone()).await;
    let started = StdInstant::now();
    assert!(outcome(establish_in_task(conn, None, limits))
        .await
        .is_none());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let mut buf = [0u8; 1];
    assert_eq!(within(client.read(&mut buf)).await.unwrap(), 0, "closed");
}

#[tokio::test]
async fn with_both_header_timers_off_a_silent_connection_waits() {
    let limits = limits_with(|l| {
        l.keep_alive_timeout = Duration::ZERO;
        l.headers_timeout = Duration::ZERO;
    });
    let (_t, _client, conn) = accepted(limits.clone()).await;
    let task = establish_in_task(conn, None, limits);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!task.is_finished());
    task.abort();
}

#[tokio::test]
async fn while_draining_a_fresh_connection_is_served_if_its_bytes_come_and_closed_if_not() {
    let limits = limits_with(|l| l.headers_timeout = Duration::from_millis(150));
    let mut t = capturing_server(limits.clone()).await;
    let addr = t.server.local_addr();
    let mut talking = TcpStream::connect(addr).await.unwrap();
    let talking_conn = t.next().await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let silent_conn = t.next().await;
    t.server.begin_draining();
    let served = establish_in_task(talking_conn, None, limits.clone());
    let closed = establish_in_task(silent_conn, None, limits);
    talking.write_all(b"G").await.unwrap();
    assert!(outcome(served).await.is_some());
    // Its header timer (150 ms) is shorter than the grace a fresh connection gets when draining.
    let started = StdInstant::now();
    assert!(outcome(closed).await.is_none());
    assert!(started.elapsed() < FRESH_CONNECTION_GRACE);
}

// ---- TLS

/// A TLS server source with a generated development certificate (ALPN `http/1.1`), as `https`
/// without key and certificate gets.
fn dev_tls() -> Arc<TlsSource> {
    let config = ServerConfig::from_options(&serde_json::json!({ "protocol": "https" })).unwrap();
    let options = config.tls_options().unwrap().expect("https uses TLS");
    Arc::new(TlsSource::new(options).unwrap())
}

/// Accepts any server certificate (the development certificate is self-signed).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_client(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_tls_handshake_gives_an_encrypted_stream_and_the_peer_details() {
    let (_t, client, conn) = accepted(Limits::default()).await;
    let task = establish_in_task(conn, Some(dev_tls()), Limits::default());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = within(tls_client(&[b"http/1.1"]).connect(name, client))
        .await
        .expect("handshake");
    let (mut io, info) = outcome(task).await.expect("ready");
    assert!(matches!(io, ConnStream::Tls(_)));
    assert_eq!(info.alpn(), Some("http/1.1"));
    assert!(info.peer.is_some());
    tls.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within(io.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping", "decrypted by the server side");
}

#[tokio::test]
async fn a_stalled_tls_handshake_ends_at_handshake_timeout() {
    let limits = limits_with(|l| l.handshake_timeout = Duration::from_millis(150));
    let (_t, mut client, conn) = accepted(limits.clone()).await;
    let task = establish_in_task(conn, Some(dev_tls()), limits);
    // The first byte of a TLS record, then nothing.
    client.write_all(&[0x16]).await.unwrap();
    let started = StdInstant::now();
    assert!(outcome(task).await.is_none());
    let waited = started.elapsed();
    // Well before the header timer (60 s by default): the handshake's own timeout.
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_port_fails_the_handshake_at_once() {
    let (_t, mut client, conn) = accepted(Limits::default()).await;
    let task = establish_in_task(conn, Some(dev_tls()), Limits::default());
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = StdInstant::now();
    assert!(outcome(task).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(1));
}

// ---- the phase

fn info_for(conn: &Accepted) -> ConnectionInfo {
    ConnectionInfo {
        remote: conn.remote,
        remote_ip: super::remote_ip_text(&conn.remote),
        local_port: 0,
        peer: None,
        phase: conn.phase.clone(),
    }
}

#[tokio::test]
async fn new_work_is_refused_only_when_draining_and_no_listener_accepts() {
    let (t, _client, conn) = accepted(Limits::default()).await;
    let info = info_for(&conn);
    assert!(!info.refuses_new_work(&t.metrics), "running and accepting");
    t.server.begin_draining();
    assert!(
        !info.refuses_new_work(&t.metrics),
        "draining, but a listener still accepts: served"
    );
    t.server.stop_accepting().await;
    assert!(info.refuses_new_work(&t.metrics));

    // Not accepting but still running (a restart's listener handed over): served.
    let (t, _client, conn) = accepted(Limits::default()).await;
    let info = info_for(&conn);
    let _listener = t.server.take_listener().await.unwrap();
    assert!(!t.metrics.accepting());
    assert!(!info.refuses_new_work(&t.metrics));
}

/// A connection task's `drive` with a connection that never ends by itself; each drain request
/// is reported on the channel.
fn drive_forever(
    phase: PhaseSignal,
    requests: Arc<ConnRequests>,
) -> (
    tokio::task::JoinHandle<Option<()>>,
    mpsc::UnboundedReceiver<()>,
) {
    let (drained_tx, drained) = mpsc::unbounded_channel();
    let task = tokio::spawn(drive(
        std::future::pending::<()>(),
        phase,
        requests,
        move |_| {
            let _ = drained_tx.send(());
        },
    ));
    (task, drained)
}

async fn drained_in(rx: &mut mpsc::UnboundedReceiver<()>, within: Duration) -> bool {
    tokio::time::timeout(within, rx.recv()).await.is_ok()
}

#[tokio::test]
async fn drive_returns_the_connections_own_outcome() {
    let (_t, _client, conn) = accepted(Limits::default()).await;
    let (_, requests) =
        watch_connection::<()>(&Limits::default(), None, &conn.phase, WireProtocol::Http1);
    let ended = drive(async { 42 }, conn.phase, requests, |_| {}).await;
    assert_eq!(ended, Some(42));
}

#[tokio::test]
async fn drive_drains_a_busy_connection_when_the_server_drains_and_drops_it_when_forced() {
    let (t, _client, conn) = accepted(Limits::default()).await;
    let (_, requests) =
        watch_connection::<()>(&Limits::default(), None, &conn.phase, WireProtocol::Http1);
    let _request = requests.started();
    let (task, mut drained) = drive_forever(conn.phase, requests);
    assert!(!drained_in(&mut drained, Duration::from_millis(30)).await);
    t.server.begin_draining();
    assert!(drained_in(&mut drained, Duration::from_secs(1)).await);
    assert!(!task.is_finished(), "the request in flight finishes first");
    assert_eq!(t.server.force_close(Duration::from_secs(1)).await, 1);
    let ended = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended, None, "dropped");
}

#[tokio::test]
async fn drive_drains_a_connection_idle_past_connection_timeout() {
    let limits = limits_with(|l| l.connection_timeout = Some(Duration::from_millis(100)));
    let (t, _client, conn) = accepted(limits.clone()).await;
    let phase = conn.phase.clone();
    let (_, requests) = watch_connection::<()>(&limits, None, &conn.phase, WireProtocol::Http1);
    let started = StdInstant::now();
    let (_task, mut drained) = drive_forever(conn.phase, requests);
    assert!(drained_in(&mut drained, Duration::from_secs(2)).await);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        phase.current(),
        Phase::Running,
        "the server is not draining"
    );
    drop(t);
}

#[tokio::test]
async fn drive_drains_a_connection_the_bridge_wants_closed() {
    let (_t, _client, conn) = accepted(Limits::default()).await;
    let (_, requests) =
        watch_connection::<()>(&Limits::default(), None, &conn.phase, WireProtocol::Http1);
    let _request = requests.started();
    let (_task, mut drained) = drive_forever(conn.phase, requests.clone());
    assert!(!drained_in(&mut drained, Duration::from_millis(30)).await);
    requests.close_after_response();
    assert!(drained_in(&mut drained, Duration::from_secs(1)).await);
}

// ---- HTTP/2 settings

/// Reads frames from the server until its SETTINGS and its connection WINDOW_UPDATE have come:
/// `(settings as (id, value), connection window increment)`.
async fn server_preamble(io: &mut tokio::io::DuplexStream) -> (Vec<(u16, u32)>, u32) {
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    let (mut settings, mut increment) = (None, None);
    while settings.is_none() || increment.is_none() {
        let mut head = [0u8; 9];
        io.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        match kind {
            SETTINGS if flags & 0x1 == 0 => {
                settings = Some(
                    payload
                        .chunks_exact(6)
                        .map(|e| {
                            (
                                u16::from_be_bytes([e[0], e[1]]),
                                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                            )
                        })
                        .collect(),
                );
            }
            WINDOW_UPDATE if stream == 0 => {
                increment = Some(
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff,
                );
            }
            _ => {}
        }
    }
    (settings.unwrap(), increment.unwrap())
}

#[tokio::test]
async fn the_http2_builder_announces_the_configured_window_and_limits() {
    let config = ServerConfig::from_options(&serde_json::json!({
        "protocol": "http2", "h2c": true,
        "connectionPool": { "protocolSpecific": {
            "initialWindowSize": 300_000, "maxConcurrentStreams": 7, "maxHeaderListSize": 10_000
        } }
    }))
    .unwrap();
    let settings = config.http2.expect("http2 settings");
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let service = hyper::service::service_fn(|_req| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    });
    let conn =
        http2_builder(&settings).serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let conn = tokio::spawn(conn);
    // The client preface and an empty SETTINGS frame.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (announced, increment) =
        tokio::time::timeout(Duration::from_secs(2), server_preamble(&mut client))
            .await
            .expect("server preamble in time");
    let get = |id: u16| announced.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
    // SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE.
    assert_eq!(get(0x3), Some(7), "{announced:?}");
    assert_eq!(get(0x4), Some(300_000), "{announced:?}");
    assert_eq!(get(0x6), Some(10_000), "{announced:?}");
    // The connection window is four stream windows (from the protocol's 65 535).
    assert_eq!(increment, 4 * 300_000 - 65_535);
    conn.abort();
}
