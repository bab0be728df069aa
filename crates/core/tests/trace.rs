//! Native trace mode end to end: koatty_trace's `http_timeout` timer runs in Rust while a request
//! waits for its response head, and only notifies the handler side.

mod common;

use bytes::Bytes;
use common::*;
use koatty_serve_core::config::Limits;
use koatty_serve_core::trace::TraceSettings;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn trace_settings(timeout_ms: u64) -> Option<TraceSettings> {
    Some(TraceSettings::new(
        "X-Request-Id",
        "requestId",
        Duration::from_millis(timeout_ms),
    ))
}

#[tokio::test]
async fn trace_timer_notifies_only_when_the_head_is_late_and_the_request_stays_pending() {
    let mut h = serve(Limits::default(), Box::new(|_, _| {})).await;
    h.bridge.set_trace(trace_settings(100));
    let addr = h.handle.local_addr();
    let client = tokio::spawn(exchange(
        addr,
        "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    let (id, ev) = tokio::time::timeout(Duration::from_secs(5), h.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, "TraceTimeout");
    // Only a notification: the handler still answers (koatty_trace's timeout error).
    assert_eq!(h.bridge.pending_count(), 1);
    h.bridge
        .respond(
            id,
            500,
            None,
            &["content-type", "application/json"],
            Some(Bytes::from_static(b"{}")),
            true,
        )
        .unwrap();
    let resp = client.await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 500"), "{resp}");
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn trace_timer_is_silent_for_a_timely_answer_and_off_without_settings() {
    let mut h = serve(Limits::default(), hello()).await;
    h.bridge.set_trace(trace_settings(50));
    let resp = exchange(
        h.handle.local_addr(),
        "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(h.events.try_recv().is_err(), "no event after the answer");

    // Switched off: a late answer gets no notification.
    let mut h = serve(Limits::default(), Box::new(|_, _| {})).await;
    h.bridge.set_trace(trace_settings(50));
    h.bridge.set_trace(None);
    let mut s = TcpStream::connect(h.handle.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    until(|| h.bridge.pending_count() > 0).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        h.events.try_recv().is_err(),
        "no timer without trace settings"
    );
}
