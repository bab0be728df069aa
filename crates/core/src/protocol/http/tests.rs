//! node's response-head rules as this module applies them (keep-alive headers, `Date`,
//! `chunked` last), the client's keep-alive wish, the HTTP/2 request target and pseudo-headers as
//! node's http2 compatibility API shows them, and the choice of HTTP version per connection.

use super::*;
use crate::bridge::{BridgeEvent, RequestSink};
use crate::lifecycle::tests::capturing_server;
use crate::tls::PeerInfo;
use bytes::Bytes;

const FIVE_SECONDS: Duration = Duration::from_secs(5);

fn response(status: u16, headers: &[(&str, &str)], body: ResponseBody) -> Response<ResponseBody> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        r.headers_mut().append(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    r
}

fn full(text: &'static str) -> ResponseBody {
    ResponseBody::full(Some(Bytes::from_static(text.as_bytes())))
}

/// The head's headers as `name: value` lines, in the order they go out.
fn lines(r: &Response<ResponseBody>) -> Vec<String> {
    r.headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect()
}

/// `node_connection_headers` on a fresh response; `Date` is checked, then left out of the lines.
fn with_node_headers(
    mut r: Response<ResponseBody>,
    version: Version,
    keep_alive: bool,
    timeout: Duration,
) -> (Response<ResponseBody>, Vec<String>) {
    node_connection_headers(&mut r, version, keep_alive, timeout);
    let out = lines(&r)
        .into_iter()
        .filter(|l| !l.starts_with("date: "))
        .collect();
    (r, out)
}

#[test]
fn a_kept_alive_http11_response_says_so_with_the_timeout_after_date() {
    let r = response(200, &[("x-a", "1")], full("hi"));
    let (r, _) = with_node_headers(r, Version::HTTP_11, true, FIVE_SECONDS);
    let all = lines(&r);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0], "x-a: 1");
    // `Date` first among the server's own headers, where node writes it.
    assert!(
        all[1].starts_with("date: ") && all[1].ends_with(" GMT"),
        "{all:?}"
    );
    assert_eq!(
        all[2..],
        ["connection: keep-alive", "keep-alive: timeout=5"]
    );
    assert_eq!(r.version(), Version::HTTP_11);
}

#[test]
fn a_closing_connection_says_close_and_no_timeout() {
    let r = response(200, &[], full("hi"));
    let (_, out) = with_node_headers(r, Version::HTTP_11, false, FIVE_SECONDS);
    assert_eq!(out, ["connection: close"]);
}

#[test]
fn http10_keeps_alive_only_with_a_known_length() {
    let (r, out) = with_node_headers(
        response(200, &[], full("hi")),
        Version::HTTP_10,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: keep-alive", "keep-alive: timeout=5"]);
    // Answered in the request's version, so hyper applies HTTP/1.0's keep-alive rules.
    assert_eq!(r.version(), Version::HTTP_10);
    let unsized_body = || ResponseBody::without_length(Some(Bytes::from_static(b"hi")));
    let (_, out) = with_node_headers(
        response(200, &[], unsized_body()),
        Version::HTTP_10,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: close"], "no length: framed by the close");
    let (_, out) = with_node_headers(
        response(200, &[("content-length", "2")], unsized_body()),
        Version::HTTP_10,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(
        out,
        [
            "content-length: 2",
            "connection: keep-alive",
            "keep-alive: timeout=5"
        ]
    );
    // HTTP/1.1 frames an unsized body chunked: the connection lives on.
    let (_, out) = with_node_headers(
        response(200, &[], unsized_body()),
        Version::HTTP_11,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: keep-alive", "keep-alive: timeout=5"]);
}

#[test]
fn the_handlers_connection_header_is_kept_unless_the_connection_closes() {
    // Its own `close`: kept, nothing added.
    let (_, out) = with_node_headers(
        response(200, &[("connection", "close")], full("x")),
        Version::HTTP_11,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: close"]);
    // Its own `keep-alive` on a connection that lives on: kept, and no `Keep-Alive` added
    // (node writes that only with its own `Connection`).
    let (_, out) = with_node_headers(
        response(200, &[("connection", "keep-alive")], full("x")),
        Version::HTTP_11,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: keep-alive"]);
    // The connection closes anyway (client asked, or draining): only `close`.
    let (_, out) = with_node_headers(
        response(200, &[("connection", "keep-alive")], full("x")),
        Version::HTTP_11,
        false,
        FIVE_SECONDS,
    );
    assert_eq!(out, ["connection: close"]);
}

#[test]
fn the_handlers_keep_alive_and_date_are_kept() {
    let date = "Thu, 01 Jan 1970 00:00:00 GMT";
    let r = response(
        200,
        &[("keep-alive", "timeout=99"), ("date", date)],
        full("x"),
    );
    let (r, out) = with_node_headers(r, Version::HTTP_11, true, FIVE_SECONDS);
    assert_eq!(out, ["keep-alive: timeout=99", "connection: keep-alive"]);
    assert_eq!(r.headers()[http::header::DATE], date);
}

#[test]
fn keep_alive_timeout_zero_sends_no_timeout_hint() {
    let (_, out) = with_node_headers(
        response(200, &[], full("x")),
        Version::HTTP_11,
        true,
        Duration::ZERO,
    );
    assert_eq!(out, ["connection: keep-alive"]);
    // Whole seconds, rounded down.
    let (_, out) = with_node_headers(
        response(200, &[], full("x")),
        Version::HTTP_11,
        true,
        Duration::from_millis(65_900),
    );
    assert_eq!(out, ["connection: keep-alive", "keep-alive: timeout=65"]);
}

#[test]
fn switching_protocols_is_left_alone() {
    let mut r = response(101, &[("upgrade", "websocket")], ResponseBody::full(None));
    node_connection_headers(&mut r, Version::HTTP_11, false, FIVE_SECONDS);
    assert_eq!(lines(&r), ["upgrade: websocket"]);
}

#[test]
fn a_transfer_coding_gets_chunked_last() {
    let (_, out) = with_node_headers(
        response(200, &[("transfer-encoding", "gzip")], full("x")),
        Version::HTTP_11,
        true,
        FIVE_SECONDS,
    );
    assert_eq!(
        out,
        [
            "transfer-encoding: gzip",
            "transfer-encoding: chunked",
            "connection: keep-alive",
            "keep-alive: timeout=5"
        ]
    );
}

#[test]
fn chunked_is_appended_only_when_it_is_not_last_already() {
    let run = |values: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        chunked_last(&mut h);
        h.get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&[]), Vec::<String>::new());
    assert_eq!(run(&["chunked"]), ["chunked"]);
    assert_eq!(run(&["gzip, Chunked "]), ["gzip, Chunked "]);
    assert_eq!(run(&["gzip"]), ["gzip", "chunked"]);
    assert_eq!(run(&["chunked, gzip"]), ["chunked, gzip", "chunked"]);
    // Only the last line counts.
    assert_eq!(run(&["chunked", "gzip"]), ["chunked", "gzip", "chunked"]);
}

#[test]
fn keep_alive_values_follow_the_timeout_in_use() {
    assert_eq!(keep_alive_value(5), "timeout=5");
    assert_eq!(keep_alive_value(7), "timeout=7");
    // The per-thread cache holds the last value only; it must not serve a stale one.
    assert_eq!(keep_alive_value(5), "timeout=5");
    assert_eq!(keep_alive_value(0), "timeout=0");
}

fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().version(version).uri("/");
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap()
}

#[test]
fn the_client_keeps_alive_by_hypers_rules() {
    let wants = |v, h: &[(&str, &str)]| client_wants_keep_alive(&request(v, h));
    assert_eq!(wants(Version::HTTP_11, &[]), Some(true));
    assert_eq!(
        wants(Version::HTTP_11, &[("connection", "close")]),
        Some(false)
    );
    // A token in a list, any case, on any of several lines.
    assert_eq!(
        wants(
            Version::HTTP_11,
            &[("connection", "upgrade"), ("connection", "x, CLOSE")]
        ),
        Some(false)
    );
    assert_eq!(
        wants(Version::HTTP_11, &[("connection", "closed")]),
        Some(true),
        "a token, not a prefix"
    );
    assert_eq!(wants(Version::HTTP_10, &[]), Some(false));
    assert_eq!(
        wants(Version::HTTP_10, &[("connection", "Keep-Alive")]),
        Some(true)
    );
    assert_eq!(wants(Version::HTTP_2, &[]), Some(false));
    // Transfer-Encoding: hyper decides alone.
    assert_eq!(
        wants(Version::HTTP_11, &[("transfer-encoding", "chunked")]),
        None
    );
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn http2_targets_are_path_and_query() {
    let path = |uri: &str| h2_path(&uri.parse().unwrap());
    assert_eq!(path("https://example.com:8443/a/b?x=1&y"), "/a/b?x=1&y");
    assert_eq!(path("/only/path"), "/only/path");
    // Authority form (CONNECT) has no path.
    assert_eq!(path("example.com:443"), "/");
}

#[test]
fn http2_headers_lead_with_the_pseudo_headers() {
    let p = parts(
        "POST",
        "https://example.com:8443/a?x=1",
        &[("x-a", "1"), ("x-b", "é")],
    );
    let flat = |p: &http::request::Parts, encrypted: bool| {
        let path = h2_path(&p.uri);
        let headers = h2_headers(p, &path, encrypted);
        headers
            .pairs()
            .flat_map(|(n, v)| [n.to_owned(), v.to_owned()])
            .collect::<Vec<_>>()
    };
    assert_eq!(
        flat(&p, false),
        [
            ":method",
            "POST",
            ":authority",
            "example.com:8443",
            ":scheme",
            "https",
            ":path",
            "/a?x=1",
            "x-a",
            "1",
            "x-b",
            // Read as latin1, as node reads header bytes.
            "Ã©",
        ]
    );
    // No scheme or authority in the target: the connection says which scheme.
    let p = parts("GET", "/p", &[]);
    assert_eq!(
        flat(&p, true),
        [":method", "GET", ":scheme", "https", ":path", "/p"]
    );
    assert_eq!(
        flat(&p, false),
        [":method", "GET", ":scheme", "http", ":path", "/p"]
    );
}

#[test]
fn hyper_gets_a_header_count_only_when_it_is_not_its_own() {
    let limits = |count: usize| Limits {
        max_headers_count: count,
        ..Limits::default()
    };
    assert_eq!(custom_max_headers(&limits(100)), None);
    assert_eq!(custom_max_headers(&limits(2000)), Some(2000));
    // 0: as many as the head size can hold (4 bytes a field at least).
    assert_eq!(
        custom_max_headers(&limits(0)),
        Some(Limits::default().max_header_size / 4)
    );
}

#[test]
fn closing_answers_carry_connection_close() {
    let r = closing(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()[http::header::CONNECTION], "close");
    assert!(matches!(r.body(), ResponseBody::Full(Some(b)) if b == "Payload Too Large"));
}

// ---- the HTTP version of a connection

struct NoSink;

impl RequestSink for NoSink {
    fn request(&self, _: RequestHead, _: Option<crate::trace::RequestTrace>) -> bool {
        false
    }
    fn event(&self, _: u32, _: BridgeEvent) {}
}

fn protocol(http2: Option<Http2Settings>) -> HttpProtocol {
    HttpProtocol::new(
        Bridge::new(Arc::new(NoSink), 1, Default::default()),
        Default::default(),
        None,
        http2,
        Endpoints::default(),
        None,
    )
}

fn http2_settings(options: serde_json::Value) -> Http2Settings {
    ServerConfig::from_options(&options)
        .unwrap()
        .http2
        .expect("http2 settings")
}

#[tokio::test]
async fn the_connections_http_version_follows_alpn_or_h2c() {
    let mut t = capturing_server(Limits::default()).await;
    let _c = TcpStream::connect(t.server.local_addr()).await.unwrap();
    let conn = t.next().await;
    let info = |alpn: Option<&str>, encrypted: bool| ConnectionInfo {
        remote: conn.remote,
        remote_ip: crate::conn::remote_ip_text(&conn.remote),
        local_port: 0,
        peer: encrypted.then(|| {
            Arc::new(PeerInfo {
                alpn: alpn.map(str::to_owned),
                ..PeerInfo::default()
            })
        }),
        phase: conn.phase.clone(),
    };
    let h2 = http2_settings(serde_json::json!({ "protocol": "http2" }));
    let h2c = http2_settings(serde_json::json!({ "protocol": "http2", "h2c": true }));
    let h2_only = http2_settings(serde_json::json!({
        "protocol": "http2", "ssl": { "mode": "auto", "allowHTTP1": false }
    }));
    let plain = info(None, false);
    assert!(matches!(protocol(None).mode_for(&plain), Some(Mode::Http1)));
    assert!(matches!(
        protocol(Some(h2.clone())).mode_for(&plain),
        Some(Mode::Http1)
    ));
    assert!(matches!(
        protocol(Some(h2c)).mode_for(&plain),
        Some(Mode::Detect)
    ));
    let chose_h2 = info(Some("h2"), true);
    let chose_h1 = info(Some("http/1.1"), true);
    let chose_none = info(None, true);
    assert!(matches!(
        protocol(Some(h2.clone())).mode_for(&chose_h2),
        Some(Mode::Http2)
    ));
    assert!(matches!(
        protocol(Some(h2.clone())).mode_for(&chose_h1),
        Some(Mode::Http1)
    ));
    assert!(matches!(
        protocol(Some(h2)).mode_for(&chose_none),
        Some(Mode::Http1)
    ));
    // allowHTTP1: false refuses a client that did not choose h2.
    assert!(matches!(
        protocol(Some(h2_only.clone())).mode_for(&chose_h2),
        Some(Mode::Http2)
    ));
    assert!(protocol(Some(h2_only.clone()))
        .mode_for(&chose_h1)
        .is_none());
    assert!(protocol(Some(h2_only)).mode_for(&chose_none).is_none());
}

#[test]
fn methods_are_node_s_upper_case_list() {
    assert!(NODE_METHODS.windows(2).all(|w| w[0] < w[1]), "sorted");
    for m in [
        "GET",
        "M-SEARCH",
        "QUERY",
        "UNSUBSCRIBE",
        "CONNECT",
        "PATCH",
    ] {
        assert!(
            is_node_method(&http::Method::from_bytes(m.as_bytes()).unwrap()),
            "{m}"
        );
    }
    for m in ["FOOBAR", "get", "Get", "PRI", "BREW"] {
        assert!(
            !is_node_method(&http::Method::from_bytes(m.as_bytes()).unwrap()),
            "{m}"
        );
    }
}
