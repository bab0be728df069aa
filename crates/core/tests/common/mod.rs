//! What the whole-server tests share: a server on 127.0.0.1:0 whose handler is a Rust closure
//! standing in for JavaScript (the addon's sink is a queue into JavaScript), and raw
//! clients over real loopback sockets. Only the core's public API is used.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use koatty_serve_core::bridge::{Bridge, BridgeEvent, ClientError, RequestHead, RequestSink};
use koatty_serve_core::config::{Limits, ServerConfig};
use koatty_serve_core::server::ServeHandle;
use koatty_serve_core::trace::RequestTrace;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub const NO_HEADERS: &[&str] = &[];

pub type OnRequest = Box<dyn Fn(&Bridge, RequestHead) + Send + Sync>;

/// The handler side: `on_request` sees each request; events are reported as short strings.
pub struct TestSink {
    bridge: OnceLock<Bridge>,
    on_request: OnRequest,
    events: mpsc::UnboundedSender<(u32, String)>,
}

impl RequestSink for TestSink {
    fn request(&self, head: RequestHead, _: Option<RequestTrace>) -> bool {
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
                format!("ws-message:{}:{binary}", String::from_utf8_lossy(data))
            }
            BridgeEvent::WsPong { .. } => "ws-pong".into(),
            BridgeEvent::WsClosed { code, .. } => format!("ws-closed:{code}"),
            // As js/websocket.js does once it has handled what came before the peer's close.
            BridgeEvent::WsPeerClosing => {
                if let Some(bridge) = self.bridge.get() {
                    let _ =
                        bridge.ws_control(id, koatty_serve_core::bridge::WsOutbound::CloseReply);
                }
                "ws-peer-closing".into()
            }
            other => format!("{other:?}"),
        };
        let _ = self.events.send((id, text));
    }

    fn client_error(&self, error: ClientError) {
        let _ = self
            .events
            .send((0, format!("client-error:{}", error.code)));
    }
}

/// A sink that delivers nothing (the handler side is closing).
pub struct NullSink;

impl RequestSink for NullSink {
    fn request(&self, _: RequestHead, _: Option<RequestTrace>) -> bool {
        false
    }
    fn event(&self, _: u32, _: BridgeEvent) {}
}

pub struct Harness {
    pub handle: ServeHandle,
    pub bridge: Bridge,
    pub events: mpsc::UnboundedReceiver<(u32, String)>,
}

impl Harness {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The next event, within 5 s.
    pub async fn next_event(&mut self) -> (u32, String) {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("event in time")
            .expect("sink alive")
    }
}

/// Server settings from options as JavaScript gives them, on 127.0.0.1 and an ephemeral port.
pub fn config(options: serde_json::Value) -> ServerConfig {
    let mut options = options;
    let obj = options.as_object_mut().expect("options object");
    obj.insert("hostname".into(), "127.0.0.1".into());
    obj.entry("port").or_insert(0.into());
    ServerConfig::from_options(&options).expect("valid options")
}

/// An HTTP/1.1 server with `limits`.
pub async fn serve(limits: Limits, on_request: OnRequest) -> Harness {
    let mut config = config(serde_json::json!({}));
    config.limits = limits;
    start(&config, on_request).await
}

/// A server for `config`.
pub async fn start(config: &ServerConfig, on_request: OnRequest) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let sink = Arc::new(TestSink {
        bridge: OnceLock::new(),
        on_request,
        events: tx,
    });
    let bridge = Bridge::new(
        sink.clone(),
        config.limits.max_in_flight,
        Default::default(),
    );
    let _ = sink.bridge.set(bridge.clone());
    let handle = ServeHandle::start(config, bridge.clone(), None, Default::default())
        .await
        .expect("bind");
    Harness {
        handle,
        bridge,
        events,
    }
}

/// Answers `200` with `x-test: 1` and `<method> <url> v<version>`.
pub fn hello() -> OnRequest {
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

/// Never answers.
pub fn silent() -> OnRequest {
    Box::new(|_, _| {})
}

/// Sends raw bytes and reads until the server closes the connection.
pub async fn exchange(addr: SocketAddr, raw: &str) -> String {
    String::from_utf8_lossy(&exchange_bytes(addr, raw).await).into_owned()
}

/// As [`exchange`], keeping the bytes as they came.
pub async fn exchange_bytes(addr: SocketAddr, raw: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server closed in time")
        .unwrap();
    out
}

/// `GET <path>` asking the server to close after the response.
pub fn get_and_close(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Reads one response whose body is `body_len` bytes after the head (the connection stays open).
pub async fn read_response(s: &mut TcpStream, body_len: usize) -> String {
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

/// `f`, which must end within 5 s (a regression fails the test instead of hanging it).
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("done within 5 s")
}

/// Waits (yielding) until `done` holds, for at most 5 s.
pub async fn until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition reached in time");
}
