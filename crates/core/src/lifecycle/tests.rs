//! The lifecycle on a real loopback listener, with a handler that hands each accepted connection
//! to the test: the test decides when a connection ends by dropping its stream and phase signal.
//! [`capturing_server`] is shared with the `conn` tests.

use super::*;
use crate::config::Limits;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// An accepted connection as the handler got it.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub remote: SocketAddr,
    pub phase: PhaseSignal,
}

/// Hands every accepted connection to the test; counts the ones turned away.
pub(crate) struct Capture {
    accepted: mpsc::UnboundedSender<Accepted>,
    pub rejected: AtomicUsize,
}

impl ConnectionHandler for Capture {
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        phase: PhaseSignal,
    ) -> BoxFuture {
        let _ = self.accepted.send(Accepted {
            stream,
            remote,
            phase,
        });
        Box::pin(async {})
    }

    fn reject(self: Arc<Self>, stream: TcpStream) -> BoxFuture {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { drop(stream) })
    }
}

/// What a test server is made of.
pub(crate) struct TestServer {
    pub server: Server,
    pub accepted: mpsc::UnboundedReceiver<Accepted>,
    pub handler: Arc<Capture>,
    pub metrics: Arc<Metrics>,
    pub limits: LiveLimits,
}

impl TestServer {
    /// The next accepted connection, within 5 s.
    pub(crate) async fn next(&mut self) -> Accepted {
        tokio::time::timeout(Duration::from_secs(5), self.accepted.recv())
            .await
            .expect("accepted in time")
            .expect("handler alive")
    }
}

/// A server on 127.0.0.1, an ephemeral port, with `limits`.
pub(crate) async fn capturing_server(limits: Limits) -> TestServer {
    capturing_server_on(None, Arc::new(Metrics::default()), limits).await
}

async fn capturing_server_on(
    listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    limits: Limits,
) -> TestServer {
    let config =
        ServerConfig::from_options(&serde_json::json!({ "hostname": "127.0.0.1", "port": 0 }))
            .unwrap();
    let (tx, accepted) = mpsc::unbounded_channel();
    let handler = Arc::new(Capture {
        accepted: tx,
        rejected: AtomicUsize::new(0),
    });
    let limits: LiveLimits = Arc::new(ArcSwap::from_pointee(limits));
    let server = Server::start(
        &config,
        handler.clone(),
        metrics.clone(),
        limits.clone(),
        listener,
    )
    .await
    .expect("bind");
    TestServer {
        server,
        accepted,
        handler,
        metrics,
        limits,
    }
}

/// `f`, which must end within 5 s (a regression fails the test instead of hanging it).
pub(crate) async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("done within 5 s")
}

/// Ends `conn` once the phase reaches `phase` (as a protocol would close it).
fn close_at(conn: Accepted, phase: Phase) -> JoinHandle<()> {
    let mut signal = conn.phase.clone();
    tokio::spawn(async move {
        signal.reached(phase).await;
        drop(conn);
    })
}

#[tokio::test]
async fn a_connection_is_counted_until_every_holder_of_its_signal_is_gone() {
    let mut t = capturing_server(Limits::default()).await;
    // What keeps an unref'd server's event loop alive (src/napi/delivery.rs).
    let any_open = t.metrics.watch_connections_open();
    assert!(!*any_open.borrow());
    let addr = t.server.local_addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let c1 = TcpStream::connect(addr).await.unwrap();
    let a = t.next().await;
    assert!(*any_open.borrow());
    assert_eq!(a.remote, c1.local_addr().unwrap());
    assert_eq!(a.stream.peer_addr().unwrap(), a.remote);
    let _c2 = TcpStream::connect(addr).await.unwrap();
    let b = t.next().await;
    assert_eq!(t.server.open_connections(), 2);
    let m = t.metrics.snapshot();
    assert_eq!((m.active_connections, m.total_connections), (2, 2));
    // A WebSocket upgraded from the connection carries a clone on: still counted.
    let carried = a.phase.clone();
    drop(a);
    assert_eq!(t.server.open_connections(), 2);
    drop(carried);
    assert_eq!(t.server.open_connections(), 1);
    assert!(*any_open.borrow());
    assert!(!t.server.wait_closed(Duration::from_millis(20)).await);
    drop(b);
    assert_eq!(t.server.open_connections(), 0);
    assert!(!*any_open.borrow());
    assert!(t.server.wait_closed(Duration::ZERO).await);
    let m = t.metrics.snapshot();
    assert_eq!((m.active_connections, m.total_connections), (0, 2));
}

#[tokio::test]
async fn phases_only_move_forward() {
    let mut t = capturing_server(Limits::default()).await;
    let _c = TcpStream::connect(t.server.local_addr()).await.unwrap();
    let conn = t.next().await;
    let mut phase = conn.phase.clone();
    assert_eq!(phase.current(), Phase::Running);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), phase.reached(Phase::Draining))
            .await
            .is_err(),
        "not draining yet"
    );
    t.server.begin_closing();
    assert_eq!(phase.current(), Phase::Closing);
    // Reaching a later phase counts as reaching the earlier ones.
    tokio::time::timeout(Duration::from_secs(1), phase.reached(Phase::Draining))
        .await
        .expect("Closing is past Draining");
    t.server.begin_draining();
    assert_eq!(phase.current(), Phase::Closing, "never back to Draining");
    assert_eq!(t.server.force_close(Duration::from_millis(10)).await, 1);
    assert_eq!(phase.current(), Phase::Forced);
}

#[tokio::test]
async fn begin_draining_reaches_open_connections_and_wait_closed_sees_them_go() {
    let mut t = capturing_server(Limits::default()).await;
    let mut client = TcpStream::connect(t.server.local_addr()).await.unwrap();
    close_at(t.next().await, Phase::Draining);
    assert!(
        !t.server.wait_closed(Duration::from_millis(30)).await,
        "nothing asked it to close yet"
    );
    t.server.begin_draining();
    assert!(t.server.wait_closed(Duration::from_secs(2)).await);
    assert_eq!(t.server.open_connections(), 0);
    let mut buf = [0u8; 1];
    assert_eq!(
        within(client.read(&mut buf)).await.unwrap(),
        0,
        "the client sees EOF"
    );
}

#[tokio::test]
async fn force_close_ends_what_ignores_the_drain_and_counts_it() {
    let mut t = capturing_server(Limits::default()).await;
    let addr = t.server.local_addr();
    let _c1 = TcpStream::connect(addr).await.unwrap();
    let _c2 = TcpStream::connect(addr).await.unwrap();
    close_at(t.next().await, Phase::Forced);
    close_at(t.next().await, Phase::Draining);
    t.server.begin_draining();
    assert!(!t.server.wait_closed(Duration::from_millis(50)).await);
    assert_eq!(t.server.open_connections(), 1);
    assert_eq!(t.server.force_close(Duration::from_secs(2)).await, 1);
    assert_eq!(t.server.open_connections(), 0);
}

#[tokio::test]
async fn stop_accepting_refuses_new_connections_and_keeps_open_ones() {
    let mut t = capturing_server(Limits::default()).await;
    let addr = t.server.local_addr();
    let _c = TcpStream::connect(addr).await.unwrap();
    let conn = t.next().await;
    assert!(t.metrics.accepting());
    t.server.stop_accepting().await;
    assert!(!t.metrics.accepting(), "readiness follows the listener");
    assert!(TcpStream::connect(addr).await.is_err(), "socket closed");
    assert_eq!(conn.phase.current(), Phase::Running, "open ones untouched");
    assert_eq!(t.server.open_connections(), 1);
    // Stopping twice is harmless; nothing is left to hand over.
    t.server.stop_accepting().await;
    assert!(t.server.take_listener().await.is_none());
}

#[tokio::test]
async fn a_connection_already_in_the_backlog_is_served_not_reset_by_stop_accepting() {
    // The listener is registered and the I/O driver has seen the connection the kernel completed
    // (the sleep), but the accept loop has not run yet when it is told to stop (one-thread
    // runtime): only the backlog drain at close can serve it.
    let listener = bind(Some("127.0.0.1"), 0, false).await.unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut t = capturing_server_on(Some(listener), Default::default(), Limits::default()).await;
    t.server.stop_accepting().await;
    let conn = t.next().await;
    assert_eq!(conn.remote, client.local_addr().unwrap());
    assert_eq!(t.server.open_connections(), 1);
}

/// The drain at close takes every connection the kernel completed, also one whose readiness
/// tokio's I/O driver has not delivered yet (it was reset when the socket closed: found by this
/// test, which failed with `accept().now_or_never()`).
#[tokio::test]
async fn a_connection_the_driver_has_not_seen_yet_is_served_by_stop_accepting() {
    let mut t = capturing_server(Limits::default()).await;
    let client = std::net::TcpStream::connect(t.server.local_addr()).unwrap();
    t.server.stop_accepting().await;
    let conn = t.next().await;
    assert_eq!(conn.remote, client.local_addr().unwrap());
}

#[tokio::test]
async fn take_listener_hands_the_socket_over_with_its_backlog() {
    let mut old = capturing_server(Limits::default()).await;
    let addr = old.server.local_addr();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let listener = old.server.take_listener().await.expect("still bound");
    assert_eq!(listener.local_addr().unwrap(), addr);
    assert!(!old.metrics.accepting());
    assert!(
        old.server.take_listener().await.is_none(),
        "handed over once"
    );
    let mut new = capturing_server_on(Some(listener), old.metrics.clone(), Limits::default()).await;
    assert_eq!(new.server.local_addr(), addr);
    assert!(new.metrics.accepting());
    let conn = new.next().await;
    assert_eq!(conn.remote, client.local_addr().unwrap());
    assert!(
        old.accepted.try_recv().is_err(),
        "the old server took nothing"
    );
}

#[tokio::test]
async fn shutdown_reports_what_was_open_and_what_had_to_be_forced() {
    let mut t = capturing_server(Limits::default()).await;
    let addr = t.server.local_addr();
    let _c1 = TcpStream::connect(addr).await.unwrap();
    let _c2 = TcpStream::connect(addr).await.unwrap();
    let polite = close_at(t.next().await, Phase::Closing);
    close_at(t.next().await, Phase::Forced);
    let report = t.server.shutdown(Duration::from_millis(50)).await;
    assert_eq!(
        report,
        ShutdownReport {
            connections_at_start: 2,
            forced: 1
        }
    );
    assert!(polite.is_finished());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn retire_asks_connections_to_close_only_after_its_timeout() {
    let mut t = capturing_server(Limits::default()).await;
    let _c = TcpStream::connect(t.server.local_addr()).await.unwrap();
    let conn = t.next().await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut signal = conn.phase.clone();
    tokio::spawn(async move {
        signal.reached(Phase::Retiring).await;
        let _ = seen_tx.send(signal.current());
        signal.reached(Phase::Closing).await;
        let _ = seen_tx.send(signal.current());
        drop(conn);
    });
    let started = tokio::time::Instant::now();
    let report = t.server.retire(Duration::from_millis(50)).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(within(seen.recv()).await, Some(Phase::Retiring));
    assert_eq!(within(seen.recv()).await, Some(Phase::Closing));
    assert_eq!(
        report,
        ShutdownReport {
            connections_at_start: 1,
            forced: 0
        }
    );
}

#[tokio::test]
async fn max_connections_is_read_at_each_accept_and_turns_the_rest_away() {
    let mut t = capturing_server(Limits {
        max_connections: Some(1),
        ..Limits::default()
    })
    .await;
    let addr = t.server.local_addr();
    let _c1 = TcpStream::connect(addr).await.unwrap();
    let _held = t.next().await;
    let mut c2 = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    // Rejected: the handler's `reject` closes it.
    assert_eq!(within(c2.read(&mut buf)).await.unwrap(), 0);
    assert_eq!(t.handler.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(t.metrics.snapshot().rejected_connections, 1);
    assert_eq!(t.server.open_connections(), 1);
    // Raised at run time: the next connection is served.
    t.limits.store(Arc::new(Limits::default()));
    let _c3 = TcpStream::connect(addr).await.unwrap();
    let _served = t.next().await;
    assert_eq!(t.server.open_connections(), 2);
    assert_eq!(t.handler.rejected.load(Ordering::SeqCst), 1);
}

// SO_REUSEPORT is Unix-only; on Windows `reusePort` is ignored.
#[cfg(unix)]
#[tokio::test]
async fn bind_shares_a_port_only_with_reuse_port() {
    let first = bind(Some("127.0.0.1"), 0, true).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let second = bind(Some("127.0.0.1"), port, true).await;
    assert!(second.is_ok(), "reusePort on both: shared");
    let err = bind(Some("127.0.0.1"), port, false).await.unwrap_err();
    assert_eq!(err.code(), "EADDRINUSE");
    assert_eq!(
        err.to_string(),
        format!("listen EADDRINUSE: address already in use 127.0.0.1:{port}")
    );
    // A bracketed literal is an address, not a name to look up.
    let bracketed = bind(Some("[127.0.0.1]"), 0, false).await.unwrap();
    assert!(bracketed.local_addr().unwrap().ip().is_loopback());
}
