//! The server's lifecycle end to end over loopback sockets: binding, `maxConnections` (also
//! changed at run time), and shutdown draining what is in flight and forcing what outlives it.

mod common;

use bytes::Bytes;
use common::*;
use koatty_serve_core::bridge::Bridge;
use koatty_serve_core::config::Limits;
use koatty_serve_core::lifecycle::ShutdownReport;
use koatty_serve_core::server::ServeHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_with_connection_close() {
    let h = serve(Limits::default(), Box::new(|_, _| {})).await;
    let addr = h.handle.local_addr();
    // An idle keep-alive connection is closed at once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(|| h.bridge.pending_count() > 0).await;
    let bridge = h.bridge.clone();
    let handle = Arc::new(h.handle);
    let h2 = handle.clone();
    let shutdown = tokio::spawn(async move { h2.shutdown(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // New connections are refused once shutdown began.
    assert!(TcpStream::connect(addr).await.is_err());
    let id = 1;
    bridge
        .respond(
            id,
            200,
            None,
            NO_HEADERS,
            Some(Bytes::from_static(b"done")),
            true,
        )
        .unwrap();
    let mut out = Vec::new();
    idle.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.contains("Connection: close"),
        "{text}"
    );
    let report = shutdown.await.unwrap();
    assert_eq!(report.forced, 0);
}

#[tokio::test]
async fn shutdown_forces_what_outlives_the_timeout() {
    let h = serve(Limits::default(), Box::new(|_, _| {})).await;
    let mut s = TcpStream::connect(h.handle.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(|| h.bridge.pending_count() > 0).await;
    let report = h.handle.shutdown(Duration::from_millis(100)).await;
    assert_eq!(
        report,
        ShutdownReport {
            connections_at_start: 1,
            forced: 1
        }
    );
    assert_eq!(h.handle.open_connections(), 0);
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let limits = Limits {
        max_connections: Some(1),
        ..Limits::default()
    };
    let h = serve(limits, Box::new(|_, _| {})).await;
    let addr = h.handle.local_addr();
    let _first = TcpStream::connect(addr).await.unwrap();
    until(|| h.handle.open_connections() > 0).await;
    let resp = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 503") && resp.contains("Retry-After: 1"),
        "{resp}"
    );
    assert_eq!(h.handle.metrics().snapshot().rejected_connections, 1);
}

#[tokio::test]
async fn bind_conflict_is_a_coded_error() {
    let h = serve(Limits::default(), hello()).await;
    let port = h.handle.local_addr().port();
    let config = config(serde_json::json!({ "port": port }));
    let bridge = Bridge::new(Arc::new(NullSink), 8, Default::default());
    let err = ServeHandle::start(&config, bridge, None, Default::default())
        .await
        .err()
        .expect("second bind fails");
    assert_eq!(err.code(), "EADDRINUSE");
    assert!(err.to_string().contains("EADDRINUSE"), "{err}");
}

#[tokio::test]
async fn max_connections_changes_at_run_time() {
    let h = serve(Limits::default(), hello()).await;
    let addr = h.handle.local_addr();
    let _held = TcpStream::connect(addr).await.unwrap();
    until(|| h.handle.open_connections() > 0).await;
    h.handle.update_limits(Limits {
        max_connections: Some(1),
        ..Limits::default()
    });
    let refused = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    h.handle.update_limits(Limits::default());
    let served = exchange(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

#[tokio::test]
async fn sweeps_close_idle_connections_or_all_while_the_server_keeps_accepting() {
    use koatty_serve_core::lifecycle::Sweep;
    // `/hang` is never answered; anything else gets an empty 200.
    let h = serve(
        Limits::default(),
        Box::new(|bridge: &Bridge, head| {
            if head.url != "/hang" {
                bridge
                    .respond(head.id, 200, None, NO_HEADERS, None, true)
                    .unwrap();
            }
        }),
    )
    .await;
    let addr = h.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle, 0)
        .await
        .starts_with("HTTP/1.1 200 OK"));
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(|| h.bridge.pending_count() == 1).await;

    // Idle: the idle keep-alive connection closes; the busy one stays.
    h.handle.sweep(Sweep::Idle);
    let mut rest = Vec::new();
    within(idle.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.handle.open_connections(), 1);

    // A connection accepted after the sweep is not touched by it.
    let later = exchange(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(later.starts_with("HTTP/1.1 200 OK"), "{later}");

    // All: the busy connection goes too, its request unanswered; the server still accepts.
    h.handle.sweep(Sweep::All);
    let mut cut = Vec::new();
    let _ = within(busy.read_to_end(&mut cut)).await;
    assert!(cut.is_empty(), "no response on a dropped connection");
    until(|| h.handle.open_connections() == 0).await;
    let after = exchange(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(after.starts_with("HTTP/1.1 200 OK"), "{after}");
}
