//! WebSocket end to end: a `ws` server on a loopback socket, tokio-tungstenite as the client, a
//! Rust handler behind the bridge (upgrade, messages both ways, subprotocols, close codes,
//! refusals, shutdown, the in-flight cap).

mod common;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use koatty_serve_core::bridge::{ProtocolChoice, RequestBody, RequestHead, WsOutbound};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<TcpStream>;

/// A `ws` server whose handler reports every request head (upgrades and plain requests) on the
/// channel; `on_request` may act on it first.
async fn ws_server(
    options: serde_json::Value,
    on_request: impl Fn(&koatty_serve_core::bridge::Bridge, &RequestHead) + Send + Sync + 'static,
) -> (Harness, mpsc::UnboundedReceiver<RequestHead>) {
    let mut options = options;
    options["protocol"] = "ws".into();
    let (tx, heads) = mpsc::unbounded_channel();
    let h = start(
        &config(options),
        Box::new(move |bridge, head| {
            on_request(bridge, &head);
            let _ = tx.send(head);
        }),
    )
    .await;
    (h, heads)
}

async fn next_head(heads: &mut mpsc::UnboundedReceiver<RequestHead>) -> RequestHead {
    tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .expect("request in time")
        .expect("handler alive")
}

/// Opens a WebSocket to `path`, offering `protocols` when given.
async fn connect(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, tcp).await
}

/// The next data or close frame the client reads (pings and pongs skipped), within 5 s.
async fn next_frame(ws: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await.expect("open").expect("frame") {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("frame in time")
}

fn close_code(frame: &Message) -> Option<(u16, String)> {
    match frame {
        Message::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
        _ => None,
    }
}

#[tokio::test]
async fn messages_cross_both_ways_as_text_or_binary() {
    let (mut h, mut heads) = ws_server(serde_json::json!({}), |_, _| {}).await;
    let (mut ws, _) = connect(h.addr(), "/chat?room=1", None).await.unwrap();
    let head = next_head(&mut heads).await;
    assert_eq!(head.url, "/chat?room=1");
    assert!(matches!(head.body, RequestBody::Upgrade));
    let id = head.id;
    assert_eq!(h.bridge.websocket_count(), 1);

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(h.next_event().await, (id, "ws-message:hello:false".into()));
    ws.send(Message::binary(Bytes::from_static(b"bin")))
        .await
        .unwrap();
    assert_eq!(h.next_event().await, (id, "ws-message:bin:true".into()));

    let queued = h
        .bridge
        .ws_send(
            id,
            WsOutbound::Message {
                data: Bytes::from("héllo"),
                binary: false,
            },
            usize::MAX,
        )
        .unwrap();
    assert_eq!(
        queued,
        "héllo".len() as u64,
        "its end among the bytes sent on the connection"
    );
    assert_eq!(next_frame(&mut ws).await, Message::text("héllo"));
    // Text that is not UTF-8 goes out binary.
    h.bridge
        .ws_send(
            id,
            WsOutbound::Message {
                data: Bytes::from_static(b"\xff"),
                binary: false,
            },
            usize::MAX,
        )
        .unwrap();
    assert_eq!(
        next_frame(&mut ws).await,
        Message::binary(Bytes::from_static(b"\xff"))
    );
    until(|| h.bridge.ws_buffered_amount(id) == 0).await;
}

#[tokio::test]
async fn close_codes_cross_both_ways() {
    let (mut h, mut heads) = ws_server(serde_json::json!({}), |_, _| {}).await;

    // The client closes: the handler learns its code.
    let (mut ws, _) = connect(h.addr(), "/", None).await.unwrap();
    let id = next_head(&mut heads).await.id;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    // The handler side hears of the close frame after the messages before it, and answers.
    assert_eq!(h.next_event().await, (id, "ws-peer-closing".into()));
    assert_eq!(h.next_event().await, (id, "ws-closed:4000".into()));
    // The server answered the close with the same code.
    assert_eq!(
        close_code(&next_frame(&mut ws).await),
        Some((4000, "bye".into()))
    );

    // The handler closes: the client gets its code and reason.
    let (mut ws, _) = connect(h.addr(), "/", None).await.unwrap();
    let id = next_head(&mut heads).await.id;
    h.bridge
        .ws_control(id, WsOutbound::Close(4001, "done".into()))
        .unwrap();
    assert_eq!(
        close_code(&next_frame(&mut ws).await),
        Some((4001, "done".into()))
    );
    // tungstenite answers while it is read on; the closing handshake completes.
    assert!(within(ws.next()).await.is_none());
    assert_eq!(h.next_event().await, (id, "ws-closed:4001".into()));
    until(|| h.bridge.websocket_count() == 0 && h.handle.open_connections() == 0).await;
}

#[tokio::test]
async fn a_terminated_connection_reports_1006() {
    let (mut h, mut heads) = ws_server(serde_json::json!({}), |_, _| {}).await;
    let (mut ws, _) = connect(h.addr(), "/", None).await.unwrap();
    let id = next_head(&mut heads).await.id;
    h.bridge.ws_control(id, WsOutbound::Terminate).unwrap();
    assert_eq!(h.next_event().await, (id, "ws-closed:1006".into()));
    // No close frame: the socket just ends.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(!matches!(end, Some(Ok(Message::Close(Some(_))))), "{end:?}");
}

#[tokio::test]
async fn the_first_offered_subprotocol_is_chosen_unless_the_handler_chooses() {
    let (h, _heads) = ws_server(serde_json::json!({}), |_, _| {}).await;
    let (_ws, response) = connect(h.addr(), "/", Some("b, a")).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "b");

    // handleProtocols: the handler's choice goes into the 101; a failed choice refuses it.
    let (mut h, mut heads) = ws_server(
        serde_json::json!({ "handleProtocols": true }),
        |bridge, head| {
            assert!(matches!(head.body, RequestBody::UpgradeChoosingProtocol));
            let choice = if head.url == "/fail" {
                ProtocolChoice::Failed
            } else {
                ProtocolChoice::Selected("a".into())
            };
            bridge.ws_select_protocol(head.id, choice).unwrap();
        },
    )
    .await;
    let (_ws, response) = connect(h.addr(), "/", Some("b, a")).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "a");
    let refused = connect(h.addr(), "/fail", Some("b, a")).await.unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 500),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    assert_eq!(next_head(&mut heads).await.url, "/");
    let failed = next_head(&mut heads).await;
    assert_eq!(failed.url, "/fail");
    // The refused upgrade ends for the handler too; the chosen one stays open.
    assert_eq!(h.next_event().await, (failed.id, "ws-closed:1006".into()));
    assert_eq!(h.bridge.websocket_count(), 1);
}

#[tokio::test]
async fn bad_upgrades_are_refused_before_the_handler_sees_them() {
    let (h, mut heads) = ws_server(serde_json::json!({}), |_, _| {}).await;
    let upgrade = |extra: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
    };
    let no_key = exchange(h.addr(), &upgrade("Sec-WebSocket-Version: 13\r\n")).await;
    assert!(no_key.starts_with("HTTP/1.1 400 "), "{no_key}");
    assert!(
        no_key.ends_with("Missing or invalid Sec-WebSocket-Key header"),
        "{no_key}"
    );
    let old_version = exchange(
        h.addr(),
        &upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"),
    )
    .await;
    assert!(old_version.starts_with("HTTP/1.1 426 "), "{old_version}");
    assert!(heads.try_recv().is_err(), "the handler saw nothing");
    assert_eq!(h.bridge.websocket_count(), 0);
}

#[tokio::test]
async fn draining_closes_websockets_with_1001() {
    let (mut h, mut heads) = ws_server(serde_json::json!({}), |_, _| {}).await;
    let (mut ws, _) = connect(h.addr(), "/", None).await.unwrap();
    let id = next_head(&mut heads).await.id;
    h.handle.lifecycle().stop_accepting().await;
    h.handle.lifecycle().begin_draining();
    assert_eq!(
        close_code(&next_frame(&mut ws).await),
        Some((1001, "server shutting down".into()))
    );
    assert!(within(ws.next()).await.is_none());
    assert_eq!(h.next_event().await, (id, "ws-closed:1001".into()));
    assert!(
        h.handle
            .lifecycle()
            .wait_closed(Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn an_upgrade_waits_for_room_under_max_in_flight() {
    let (h, mut heads) = ws_server(
        serde_json::json!({ "connectionPool": { "maxInFlight": 1 } }),
        |_, _| {},
    )
    .await;
    let addr = h.addr();
    // A plain request the handler has not answered holds the only unit.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(get_and_close("/busy").as_bytes())
        .await
        .unwrap();
    let busy = next_head(&mut heads).await;
    assert!(matches!(busy.body, RequestBody::Empty));
    let upgrade = tokio::spawn(connect(addr, "/ws", None));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!upgrade.is_finished(), "no 101 while the cap is full");
    assert!(heads.try_recv().is_err(), "not announced either");
    h.bridge
        .respond(busy.id, 204, None, NO_HEADERS, None, true)
        .unwrap();
    let opened = tokio::time::timeout(Duration::from_secs(5), upgrade)
        .await
        .expect("upgraded once there is room")
        .unwrap();
    if let Err(e) = opened {
        panic!("upgrade failed: {e}");
    }
    assert_eq!(next_head(&mut heads).await.url, "/ws");
}
