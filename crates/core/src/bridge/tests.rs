//! The bridge and the HTTP/1.1 server end to end, over real loopback sockets, with a Rust sink
//! standing in for JavaScript.

use super::*;
use crate::config::{Protocol, ServerConfig};
use crate::server::ServeHandle;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NO_HEADERS: &[&str] = &[];

type OnRequest = Box<dyn Fn(&Bridge, RequestHead) + Send + Sync>;

struct TestSink {
    bridge: OnceLock<Bridge>,
    on_request: OnRequest,
    events: mpsc::UnboundedSender<(u32, String)>,
}

impl RequestSink for TestSink {
    fn request(&self, head: RequestHead, _: Option<crate::trace::RequestTrace>) -> bool {
        (self.on_request)(self.bridge.get().expect("bridge set"), head);
        true
    }

    fn event(&self, id: u32, event: BridgeEvent) {
        let text = match &event {
            BridgeEvent::BodyChunk(b) => format!("chunk:{}", b.len()),
            BridgeEvent::BodyEnd => "end".into(),
            BridgeEvent::BodyError(m) => format!("error:{m}"),
            BridgeEvent::Drain => "drain".into(),
            BridgeEvent::Closed(r) => format!("closed:{r:?}"),
            BridgeEvent::WsMessage { data, binary, .. } => {
                format!("ws-message:{}:{binary}", data.len())
            }
            BridgeEvent::WsPong { .. } => "ws-pong".into(),
            BridgeEvent::WsClosed { code, .. } => format!("ws-closed:{code}"),
            other => format!("{other:?}"),
        };
        let _ = self.events.send((id, text));
    }
}

struct Harness {
    handle: ServeHandle,
    bridge: Bridge,
    events: mpsc::UnboundedReceiver<(u32, String)>,
}

async fn serve(limits: Limits, on_request: OnRequest) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let sink = Arc::new(TestSink {
        bridge: OnceLock::new(),
        on_request,
        events: tx,
    });
    let bridge = Bridge::new(sink.clone(), limits.max_in_flight, Default::default());
    let _ = sink.bridge.set(bridge.clone());
    let config = ServerConfig {
        hostname: Some("127.0.0.1".into()),
        port: 0,
        protocol: Protocol::Http,
        reuse_port: false,
        limits,
        ssl: None,
        http2: None,
        endpoints: Default::default(),
        websocket: None,
        grpc: None,
    };
    let handle = ServeHandle::start(&config, bridge.clone(), None, Default::default())
        .await
        .expect("bind");
    Harness {
        handle,
        bridge,
        events,
    }
}

fn hello() -> OnRequest {
    Box::new(|bridge, head| {
        let body = format!("{} {} v{}", head.method, head.url, head.http_version);
        bridge
            .respond(
                head.id,
                200,
                None,
                &["x-test", "1"],
                Some(Bytes::from(body)),
                true,
            )
            .unwrap();
    })
}

/// Sends raw bytes and reads until the server closes the connection.
async fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server closed in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn answers_with_status_headers_body_and_date() {
    let h = serve(Limits::default(), hello()).await;
    let resp = exchange(
        h.handle.local_addr(),
        "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    // Header names go out in title case (HTTP/1), as handlers write them.
    assert!(resp.contains("X-Test: 1\r\n"), "{resp}");
    assert!(resp.contains("Content-Length: 14\r\n"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("\r\ndate: "), "{resp}");
    assert!(resp.ends_with("GET /a?b=1 v11"), "{resp}");
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let h = serve(Limits::default(), hello()).await;
    let raw =
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let resp = exchange(h.handle.local_addr(), raw).await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    assert!(
        resp.contains("GET /1 v11") && resp.ends_with("GET /2 v11"),
        "{resp}"
    );
}

#[tokio::test]
async fn custom_reason_phrase_is_sent() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            b.respond(
                head.id,
                202,
                Some("Accepted Custom"),
                NO_HEADERS,
                None,
                true,
            )
            .unwrap();
        }),
    )
    .await;
    let resp = exchange(
        h.handle.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 202 Accepted Custom\r\n"),
        "{resp}"
    );
}

#[tokio::test]
async fn streamed_response_is_chunked_and_reports_backpressure() {
    let results = Arc::new(Mutex::new(Vec::new()));
    let r2 = results.clone();
    let h = serve(
        Limits::default(),
        Box::new(move |b, head| {
            let mut r = r2.lock().unwrap();
            r.push(
                b.respond(
                    head.id,
                    200,
                    None,
                    NO_HEADERS,
                    Some(Bytes::from_static(b"first,")),
                    false,
                )
                .unwrap(),
            );
            r.push(
                b.write(head.id, Bytes::from(vec![b'x'; RESPONSE_HIGH_WATER_MARK]))
                    .unwrap(),
            );
            b.end(head.id, Some(Bytes::from_static(b",last"))).unwrap();
            // Writing after the end is an error, not a crash.
            assert_eq!(
                b.write(head.id, Bytes::from_static(b"late")),
                Err(BridgeError::Gone(head.id))
            );
        }),
    )
    .await;
    let resp = exchange(
        h.handle.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("Transfer-Encoding: chunked"), "{resp}");
    assert!(resp.contains("first,") && resp.contains(",last"), "{resp}");
    assert_eq!(
        *results.lock().unwrap(),
        vec![true, false],
        "second write crossed the high-water mark"
    );
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn calls_in_the_wrong_stage_are_refused_and_keep_the_request_pending() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            assert_eq!(
                b.end(head.id, None),
                Err(BridgeError::HeadersNotSent(head.id))
            );
            assert_eq!(
                b.respond(head.id, 200, None, NO_HEADERS, None, false),
                Ok(true)
            );
            assert_eq!(
                b.respond(head.id, 200, None, NO_HEADERS, None, true),
                Err(BridgeError::HeadersSent(head.id))
            );
            assert_eq!(b.end(head.id, Some(Bytes::from_static(b"ok"))), Ok(false));
        }),
    )
    .await;
    let resp = exchange(
        h.handle.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 200 OK") && resp.contains("ok"),
        "{resp}"
    );
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn unanswered_request_gets_503_at_the_deadline_and_leaves_nothing_pending() {
    let limits = Limits {
        request_timeout: Duration::from_millis(150),
        ..Limits::default()
    };
    let mut h = serve(limits, Box::new(|_, _| {})).await;
    let started = std::time::Instant::now();
    let resp = exchange(
        h.handle.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(h.events.recv().await.unwrap().1, "closed:TimedOut");
    assert_eq!(h.bridge.pending_count(), 0);
    assert_eq!(h.handle.metrics().snapshot().requests_timed_out, 1);
}

#[tokio::test]
async fn client_going_away_removes_the_pending_entry() {
    let mut h = serve(Limits::default(), Box::new(|_, _| {})).await;
    let mut s = TcpStream::connect(h.handle.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait until the request is pending, then hang up.
    while h.bridge.pending_count() == 0 {
        tokio::task::yield_now().await;
    }
    drop(s);
    let (id, ev) = tokio::time::timeout(Duration::from_secs(5), h.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev, "closed:ClientGone");
    assert_eq!(h.bridge.pending_count(), 0);
    // A late answer from the handler is refused cleanly.
    assert_eq!(
        h.bridge.respond(id, 200, None, NO_HEADERS, None, true),
        Err(BridgeError::Gone(id))
    );
}

#[tokio::test]
async fn large_request_body_is_streamed_on_demand() {
    let mut h = serve(
        Limits::default(),
        Box::new(|b, head| {
            assert!(matches!(head.body, RequestBody::Streamed));
            assert!(b.pull_body(head.id));
        }),
    )
    .await;
    let addr = h.handle.local_addr();
    let body = vec![b'a'; 300_000];
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    });
    let mut total = 0;
    let id = loop {
        let (rid, ev) = h.events.recv().await.unwrap();
        if let Some(n) = ev.strip_prefix("chunk:") {
            total += n.parse::<usize>().unwrap();
            h.bridge.pull_body(rid);
        } else {
            assert_eq!(ev, "end");
            break rid;
        }
    };
    assert_eq!(total, 300_000);
    h.bridge
        .respond(
            id,
            200,
            None,
            NO_HEADERS,
            Some(Bytes::from(total.to_string())),
            true,
        )
        .unwrap();
    let resp = client.await.unwrap();
    assert!(resp.ends_with("300000"), "{resp}");
}

#[tokio::test]
async fn small_request_body_arrives_inline() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            let RequestBody::Inline(body) = &head.body else {
                panic!("expected inline body")
            };
            let echo = body.clone();
            b.respond(head.id, 200, None, NO_HEADERS, Some(echo), true)
                .unwrap();
        }),
    )
    .await;
    let resp = exchange(
        h.handle.local_addr(),
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(resp.ends_with("\r\n\r\nhello"), "{resp}");
}

#[tokio::test]
async fn body_over_the_limit_is_refused_with_413() {
    let limits = Limits {
        max_body_size: Some(1000),
        ..Limits::default()
    };
    let h = serve(limits, hello()).await;
    let body = "x".repeat(2000);
    let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{body}");
    let resp = exchange(h.handle.local_addr(), &raw).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(h.bridge.pending_count(), 0);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_cut_off_with_413() {
    let limits = Limits {
        max_body_size: Some(100_000),
        ..Limits::default()
    };
    let h = serve(limits, Box::new(|b, head| assert!(b.pull_body(head.id)))).await;
    let bridge = h.bridge.clone();
    let addr = h.handle.local_addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // Keep pulling on behalf of the handler while the client sends 200 KB in 10 KB chunks.
    let mut events = h.events;
    let puller = tokio::spawn(async move {
        while let Some((id, ev)) = events.recv().await {
            if ev.starts_with("chunk:") {
                bridge.pull_body(id);
            } else {
                return ev;
            }
        }
        String::new()
    });
    let chunk = format!("{:x}\r\n{}\r\n", 10_000, "y".repeat(10_000));
    for _ in 0..20 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let ev = tokio::time::timeout(Duration::from_secs(5), puller)
        .await
        .unwrap()
        .unwrap();
    assert!(ev.starts_with("error:ERR_BODY_TOO_LARGE"), "{ev}");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 413"));
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let h = serve(Limits::default(), hello()).await;
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(20_000)
    );
    let resp = exchange(h.handle.local_addr(), &raw).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[tokio::test]
async fn in_flight_cap_holds_back_further_requests() {
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let h = serve(
        limits,
        Box::new(move |_, head| s2.lock().unwrap().push(head.id)),
    )
    .await;
    let addr = h.handle.local_addr();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    a.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    b.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 1, "only one request may be in flight");
        s[0]
    };
    h.bridge
        .respond(first, 200, None, NO_HEADERS, None, true)
        .unwrap();
    let mut out = Vec::new();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = seen
        .lock()
        .unwrap()
        .get(1)
        .copied()
        .expect("second request dispatched after the first finished");
    h.bridge
        .respond(second, 204, None, NO_HEADERS, None, true)
        .unwrap();
    a.read_to_end(&mut out).await.unwrap();
    b.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("200 OK") && text.contains("204 No Content"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_with_connection_close() {
    let h = serve(Limits::default(), Box::new(|_, _| {})).await;
    let addr = h.handle.local_addr();
    // An idle keep-alive connection is closed at once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    while h.bridge.pending_count() == 0 {
        tokio::task::yield_now().await;
    }
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
    while h.bridge.pending_count() == 0 {
        tokio::task::yield_now().await;
    }
    let report = h.handle.shutdown(Duration::from_millis(100)).await;
    assert_eq!(
        report,
        crate::lifecycle::ShutdownReport {
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
    while h.handle.open_connections() == 0 {
        tokio::task::yield_now().await;
    }
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
    let config = ServerConfig {
        hostname: Some("127.0.0.1".into()),
        port,
        protocol: Protocol::Http,
        reuse_port: false,
        limits: Limits::default(),
        ssl: None,
        http2: None,
        endpoints: Default::default(),
        websocket: None,
        grpc: None,
    };
    let bridge = Bridge::new(Arc::new(NullSink), 8, Default::default());
    let err = ServeHandle::start(&config, bridge, None, Default::default())
        .await
        .err()
        .expect("second bind fails");
    assert_eq!(err.code(), "EADDRINUSE");
    assert!(err.to_string().contains("EADDRINUSE"), "{err}");
}

struct NullSink;
impl RequestSink for NullSink {
    fn request(&self, _: RequestHead, _: Option<crate::trace::RequestTrace>) -> bool {
        false
    }
    fn event(&self, _: u32, _: BridgeEvent) {}
}

#[tokio::test]
async fn native_endpoints_answer_without_the_handler_and_readiness_follows_shutdown() {
    let (tx, _events) = mpsc::unbounded_channel();
    // The handler never answers: only native answers can come back.
    let sink = Arc::new(TestSink {
        bridge: OnceLock::new(),
        on_request: Box::new(|_, _| {}),
        events: tx,
    });
    let bridge = Bridge::new(sink.clone(), 16, Default::default());
    let _ = sink.bridge.set(bridge.clone());
    let config = ServerConfig::from_options(&serde_json::json!({
        "hostname": "127.0.0.1", "port": 0, "nativeEndpoints": { "metrics": "/prom" }
    }))
    .unwrap();
    let handle = ServeHandle::start(&config, bridge.clone(), None, Default::default())
        .await
        .unwrap();
    let addr = handle.local_addr();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let live = exchange(addr, &get("/healthz")).await;
    assert!(
        live.starts_with("HTTP/1.1 200") && live.ends_with("ok"),
        "{live}"
    );
    let ready = exchange(addr, &get("/readyz")).await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let prom = exchange(addr, &get("/prom")).await;
    assert!(
        prom.contains("# TYPE koatty_serve_connections_total counter"),
        "{prom}"
    );
    assert!(prom.contains("koatty_serve_up 1\n"), "{prom}");
    // Every sample line is `name{labels} value` with a numeric value.
    let body = prom.split("\r\n\r\n").nth(1).unwrap();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    assert_eq!(
        bridge.pending_count(),
        0,
        "native answers never reach the handler"
    );
    // A keep-alive connection opened before shutdown sees readiness turn 503 once accepting stops.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    handle.lifecycle().stop_accepting().await;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn max_connections_changes_at_run_time() {
    let h = serve(Limits::default(), hello()).await;
    let addr = h.handle.local_addr();
    let _held = TcpStream::connect(addr).await.unwrap();
    while h.handle.open_connections() == 0 {
        tokio::task::yield_now().await;
    }
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

// ---- native trace mode

fn trace_settings(timeout_ms: u64) -> Option<crate::trace::TraceSettings> {
    Some(crate::trace::TraceSettings::new(
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
    while h.bridge.pending_count() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        h.events.try_recv().is_err(),
        "no timer without trace settings"
    );
}

#[tokio::test]
async fn header_values_go_out_latin1_or_utf8_as_asked() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            let encoding = if head.url.contains("utf8") {
                HeaderEncoding::Utf8
            } else {
                HeaderEncoding::Latin1
            };
            b.respond_encoded(head.id, 200, None, &["x-id", "é"], encoding, None, true)
                .unwrap();
        }),
    )
    .await;
    let raw = |path: &str| {
        let addr = h.handle.local_addr();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        }
    };
    let latin1 = raw("/latin1").await;
    assert!(
        latin1.windows(8).any(|w| w == b"X-Id: \xe9\r"),
        "{latin1:?}"
    );
    let utf8 = raw("/utf8").await;
    assert!(
        utf8.windows(9).any(|w| w == b"X-Id: \xc3\xa9\r"),
        "{utf8:?}"
    );
}

#[test]
fn request_header_values_are_read_as_latin1_like_node() {
    let mut map = http::HeaderMap::new();
    map.insert("x-ascii", http::HeaderValue::from_static("plain"));
    map.insert(
        "x-latin1",
        http::HeaderValue::from_bytes(&[b'a', 0xe9, 0xff]).unwrap(),
    );
    map.insert(
        "x-utf8",
        http::HeaderValue::from_bytes("é".as_bytes()).unwrap(),
    );
    let flat = crate::bridge::flat_headers(&map);
    assert_eq!(
        flat,
        vec!["x-ascii", "plain", "x-latin1", "aéÿ", "x-utf8", "Ã©"]
    );
}

/// Reads one response whose body is `body_len` bytes after the head (the connection stays open).
async fn read_response(s: &mut TcpStream, body_len: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                if out.len() >= end + 4 + body_len {
                    return;
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("response in time");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_whole_body_longer_than_its_content_length_is_cut_and_the_connection_closed() {
    let mismatch = Arc::new(Mutex::new(None));
    let seen = mismatch.clone();
    let h = serve(
        Limits::default(),
        Box::new(move |b, head| {
            let sent = b
                .respond_with(
                    head.id,
                    200,
                    None,
                    &["content-length", "3"],
                    Framing::default(),
                    Some(Bytes::from_static(b"abcdef")),
                    true,
                )
                .unwrap();
            *seen.lock().unwrap() = Some(sent.length_mismatch);
        }),
    )
    .await;
    // A keep-alive request: the server closes anyway.
    let resp = exchange(h.handle.local_addr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(resp.ends_with("\r\n\r\nabc"), "{resp}");
    assert!(resp.contains("Connection: close\r\n"), "{resp}");
    assert_eq!(*mismatch.lock().unwrap(), Some(true));
}

#[tokio::test]
async fn a_removed_content_length_goes_out_chunked() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            let framing = Framing {
                removed_length: true,
                ..Framing::default()
            };
            b.respond_with(head.id, 205, None, NO_HEADERS, framing, None, true)
                .unwrap();
        }),
    )
    .await;
    let resp = exchange(
        h.handle.local_addr(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("Transfer-Encoding: chunked\r\n"), "{resp}");
    assert!(!resp.contains("Content-Length"), "{resp}");
    assert!(resp.ends_with("\r\n\r\n0\r\n\r\n"), "{resp}");
}

#[tokio::test]
async fn a_response_complete_by_its_length_stays_open_until_end() {
    let id = Arc::new(Mutex::new(None));
    let stored = id.clone();
    let mut h = serve(
        Limits::default(),
        Box::new(move |b, head| {
            b.respond(head.id, 200, None, &["content-length", "4"], None, false)
                .unwrap();
            b.write(head.id, Bytes::from_static(b"abcd")).unwrap();
            *stored.lock().unwrap() = Some(head.id);
        }),
    )
    .await;
    let mut s = TcpStream::connect(h.handle.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut s, 4).await;
    assert!(resp.ends_with("abcd"), "{resp}");
    let id = id.lock().unwrap().expect("request seen");
    // All announced bytes are out, but the handler has not ended: still pending, no 'close'.
    assert_eq!(h.bridge.pending_count(), 1);
    assert_eq!(h.bridge.end(id, None), Ok(false));
    assert!(h.events.try_recv().is_err(), "no event for the request");
}

#[tokio::test]
async fn destroy_before_the_head_closes_the_connection_without_a_response() {
    let h = serve(
        Limits::default(),
        Box::new(|b, head| {
            assert!(b.destroy(head.id));
        }),
    )
    .await;
    let resp = exchange(h.handle.local_addr(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(resp, "");
    assert_eq!(h.bridge.pending_count(), 0);
}

#[test]
fn header_encoding_is_nodes() {
    use HeaderEncoding::{Latin1, Utf8};
    let plain = "x-a\0b";
    let accented = "x-a\0é";
    // ASCII heads are the same either way.
    assert_eq!(
        HeaderEncoding::as_node_would(plain, Some("hi"), true),
        Latin1
    );
    // end(nonEmptyString): UTF-8; end('') or a Buffer: latin1.
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some("hi"), true),
        Utf8
    );
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some(""), true),
        Latin1
    );
    assert_eq!(HeaderEncoding::as_node_would(accented, None, true), Latin1);
    // A chunked end: latin1.
    let chunked = "x-a\0é\0transfer-encoding\0chunked";
    assert_eq!(
        HeaderEncoding::as_node_would(chunked, Some("hi"), true),
        Latin1
    );
    // write(string): UTF-8 only with a Content-Length (not chunked); write('') always.
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some("hi"), false),
        Latin1
    );
    let sized = "x-a\0é\0Content-Length\0\x32";
    assert_eq!(
        HeaderEncoding::as_node_would(sized, Some("hi"), false),
        Utf8
    );
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some(""), false),
        Utf8
    );
}
