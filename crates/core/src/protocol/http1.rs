//! HTTP/1.1 on hyper: keep-alive, header limits and timeouts, requests handed to the bridge.

use crate::bridge::{simple_response, Bridge, RequestBody, RequestBodyPump, RequestHead, ResponseBody, INLINE_BODY_LIMIT};
use crate::config::Limits;
use crate::lifecycle::{BoxFuture, ConnectionHandler, Phase, PhaseSignal};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Serves HTTP/1.1 connections for one server.
pub struct Http1 {
    bridge: Bridge,
    limits: Limits,
}

impl Http1 {
    pub fn new(bridge: Bridge, limits: Limits) -> Self {
        Http1 { bridge, limits }
    }

    fn builder(&self) -> http1::Builder {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .max_header_size(self.limits.max_header_size)
            .header_read_timeout(header_read_timeout(&self.limits));
        b
    }

    async fn handle(&self, req: Request<Incoming>, remote: SocketAddr, local_port: u16) -> Response<ResponseBody> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let (parts, body) = req.into_parts();
        let declared = body.size_hint().exact();
        if let (Some(max), Some(len)) = (self.limits.max_body_size, declared) {
            if len > max {
                return closing(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
        let (body_kind, pump) = if body.is_end_stream() {
            (RequestBody::Empty, None)
        } else if declared.is_some_and(|len| len <= INLINE_BODY_LIMIT) {
            match tokio::time::timeout_at(deadline, body.collect()).await {
                Ok(Ok(collected)) => (RequestBody::Inline(collected.to_bytes()), None),
                Ok(Err(_)) => return closing(StatusCode::BAD_REQUEST),
                Err(_) => return closing(StatusCode::REQUEST_TIMEOUT),
            }
        } else {
            (RequestBody::Streamed, Some(RequestBodyPump::new(body)))
        };
        let head = RequestHead {
            id: 0,
            method: parts.method.as_str().to_owned(),
            url: parts.uri.to_string(),
            headers: crate::bridge::flat_headers(&parts.headers),
            http_version: match parts.version {
                Version::HTTP_10 => 10,
                Version::HTTP_09 => 9,
                _ => 11,
            },
            remote,
            local_port,
            encrypted: false,
            body: body_kind,
        };
        self.bridge.dispatch(head, pump, &self.limits, deadline).await
    }
}

/// hyper's header-read timer runs from the moment a connection waits for the next request head, so
/// it bounds both idle keep-alive time and slow header senders (slowloris): the smaller of
/// `keepAliveTimeout` and `headersTimeout` applies (0 = that limit is off). Doing the idle timer
/// here rather than with a per-request activity signal keeps the hot path free of extra wake-ups.
fn header_read_timeout(limits: &Limits) -> Option<Duration> {
    [limits.keep_alive_timeout, limits.headers_timeout].into_iter().filter(|d| !d.is_zero()).min()
}

fn closing(status: StatusCode) -> Response<ResponseBody> {
    let mut r = simple_response(status);
    r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

impl ConnectionHandler for Http1 {
    fn serve(self: Arc<Self>, stream: TcpStream, remote: SocketAddr, phase: PhaseSignal) -> BoxFuture {
        Box::pin(async move {
            let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
            let this = self.clone();
            let service = service_fn(move |req| {
                let this = this.clone();
                async move { Ok::<_, Infallible>(this.handle(req, remote, local_port).await) }
            });
            let conn = self.builder().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut draining_signal = phase.clone();
            let mut forced_signal = phase;
            let mut draining = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = draining_signal.reached(Phase::Draining), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = forced_signal.reached(Phase::Forced) => return,
                }
            }
        })
    }

    fn reject(self: Arc<Self>, mut stream: TcpStream) -> BoxFuture {
        Box::pin(async move {
            const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nService Unavailable";
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(BUSY).await;
                let _ = stream.shutdown().await;
            })
            .await;
        })
    }
}
