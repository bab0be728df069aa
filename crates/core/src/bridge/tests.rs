//! Bridge internals that need no server: how header values cross between Rust and JavaScript,
//! and what a WebSocket send counts in `bufferedAmount`.
//! (Whole-server tests of the bridge live in `crates/core/tests/`.)

use super::*;

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
    assert_eq!(flat.as_str(), "x-ascii\0plain\0x-latin1\0aéÿ\0x-utf8\0Ã©");
    assert_eq!(
        flat.pairs().collect::<Vec<_>>(),
        [("x-ascii", "plain"), ("x-latin1", "aéÿ"), ("x-utf8", "Ã©")]
    );
}

#[test]
fn http2_fields_with_edge_whitespace_are_left_out_as_node_does() {
    let mut map = http::HeaderMap::new();
    for (name, value) in [
        ("x-t", "\tv\t"),
        ("x-s", "  v  w  "),
        ("x-only", " "),
        ("x-ok", "a\tb"),
        ("x-empty", ""),
    ] {
        map.append(
            http::header::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
    }
    let mut flat = crate::bridge::FlatHeaders::default();
    flat.extend_from_h2_map(&map);
    assert_eq!(
        flat.pairs().collect::<Vec<_>>(),
        [("x-ok", "a\tb"), ("x-empty", "")]
    );
}

#[test]
fn flat_headers_keep_empty_values_and_none_is_empty() {
    let flat: crate::bridge::FlatHeaders = [("a", ""), ("b", "c"), ("d", "")].into_iter().collect();
    assert_eq!(flat.as_str(), "a\0\0b\0c\0d\0");
    assert_eq!(
        flat.pairs().collect::<Vec<_>>(),
        [("a", ""), ("b", "c"), ("d", "")]
    );
    assert_eq!(crate::bridge::FlatHeaders::default().pairs().count(), 0);
}

#[test]
fn header_encoding_is_nodes() {
    use HeaderEncoding::{Latin1, Utf8};
    let plain = "x-a\0b";
    let accented = "x-a\0é";
    // ASCII heads are the same either way.
    assert_eq!(
        HeaderEncoding::as_node_would(plain, Some("hi"), true, false),
        Latin1
    );
    // end(nonEmptyString): UTF-8; end('') or a Buffer: latin1.
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some("hi"), true, false),
        Utf8
    );
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some(""), true, false),
        Latin1
    );
    assert_eq!(
        HeaderEncoding::as_node_would(accented, None, true, false),
        Latin1
    );
    // A chunked end: latin1.
    let chunked = "x-a\0é\0transfer-encoding\0chunked";
    assert_eq!(
        HeaderEncoding::as_node_would(chunked, Some("hi"), true, false),
        Latin1
    );
    // write(string): UTF-8 only with a Content-Length (not chunked); write('') always.
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some("hi"), false, false),
        Latin1
    );
    let sized = "x-a\0é\0Content-Length\0\x32";
    assert_eq!(
        HeaderEncoding::as_node_would(sized, Some("hi"), false, false),
        Utf8
    );
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some(""), false, false),
        Utf8
    );
    // A head writeHead fixed is chunked unless it has its own Content-Length: latin1.
    assert_eq!(
        HeaderEncoding::as_node_would(accented, Some("hi"), true, true),
        Latin1
    );
    assert_eq!(
        HeaderEncoding::as_node_would(sized, Some("hi"), true, true),
        Utf8
    );
}

#[test]
fn buffered_amount_counts_payloads_and_control_frame_heads() {
    let data = |n: usize| Bytes::from(vec![b'x'; n]);
    let message = WsOutbound::Message {
        data: data(10),
        binary: false,
    };
    assert_eq!(message.buffered_len(), 10);
    // A ping or pong counts its 2-byte frame head too, as ws counts it.
    assert_eq!(WsOutbound::Ping(data(3)).buffered_len(), 5);
    assert_eq!(WsOutbound::Pong(Bytes::new()).buffered_len(), 2);
    assert_eq!(WsOutbound::Close(1000, "bye".into()).buffered_len(), 0);
    assert_eq!(WsOutbound::Terminate.buffered_len(), 0);
}

#[test]
fn a_refused_stream_carries_the_h2_reason_hyper_resets_it_with() {
    use std::error::Error as _;
    let refused = Unanswered::marked(&RefuseStream::response(())).expect("marked");
    let reason = refused
        .source()
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::REFUSED_STREAM));
    let mut aborted = http::Response::new(());
    aborted.extensions_mut().insert(AbortConnection);
    assert!(matches!(
        Unanswered::marked(&aborted),
        Some(Unanswered::Aborted)
    ));
    assert!(Unanswered::marked(&http::Response::new(())).is_none());
}
