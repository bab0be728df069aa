//! HTTP/1.1 end to end: a whole server on a loopback socket, raw clients, and a Rust handler
//! standing in for JavaScript behind the bridge (answers, streaming, request bodies, limits, the
//! in-flight cap, node's framing rules, native endpoints).

mod common;

use bytes::Bytes;
use common::*;
use koatty_serve_core::bridge::{
    BridgeError, Framing, HeaderEncoding, RequestBody, RESPONSE_HIGH_WATER_MARK,
};
use koatty_serve_core::config::Limits;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    until(|| h.bridge.pending_count() > 0).await;
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

#[tokio::test]
async fn native_endpoints_answer_without_the_handler_and_readiness_follows_shutdown() {
    // The handler never answers: only native answers can come back.
    let config = config(serde_json::json!({ "nativeEndpoints": { "metrics": "/prom" } }));
    let Harness { handle, bridge, .. } = start(&config, silent()).await;
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
async fn refused_request_heads_are_reported_with_node_codes_after_the_native_answer() {
    let mut h = serve(Limits::default(), hello()).await;
    for (raw, status, code) in [
        (
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            "400",
            "HPE_INVALID_HEADER_TOKEN",
        ),
        (
            "GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            "400",
            "HPE_INVALID_VERSION",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            "400",
            "HPE_INVALID_CONTENT_LENGTH",
        ),
    ] {
        let answer = exchange(h.addr(), raw).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{raw:?}: {answer}"
        );
        assert_eq!(h.next_event().await, (0, format!("client-error:{code}")));
    }
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(exchange(h.addr(), &big).await.starts_with("HTTP/1.1 431"));
    assert_eq!(
        h.next_event().await,
        (0, "client-error:HPE_HEADER_OVERFLOW".to_string())
    );
}
