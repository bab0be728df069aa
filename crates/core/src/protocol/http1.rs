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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
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
            .header_read_timeout(non_zero(self.limits.headers_timeout));
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

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn closing(status: StatusCode) -> Response<ResponseBody> {
    let mut r = simple_response(status);
    r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Requests in progress on one connection, so the keep-alive timer runs only while it is idle.
#[derive(Default)]
struct Activity {
    busy: AtomicUsize,
    served: AtomicUsize,
    changed: Notify,
}

impl Activity {
    fn begin(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    fn end(&self) {
        self.served.fetch_add(1, Ordering::AcqRel);
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Resolves once the connection has been idle (after at least one request) for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle = self.busy.load(Ordering::Acquire) == 0 && self.served.load(Ordering::Acquire) > 0;
            if !idle {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(timeout) => return,
                _ = changed => {}
            }
        }
    }
}

struct ActivityScope(Arc<Activity>);
impl Drop for ActivityScope {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl ConnectionHandler for Http1 {
    fn serve(self: Arc<Self>, stream: TcpStream, remote: SocketAddr, phase: PhaseSignal) -> BoxFuture {
        Box::pin(async move {
            let activity = Arc::new(Activity::default());
            let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
            let this = self.clone();
            let act = activity.clone();
            let service = service_fn(move |req| {
                let this = this.clone();
                let act = act.clone();
                async move {
                    act.begin();
                    let _scope = ActivityScope(act);
                    Ok::<_, Infallible>(this.handle(req, remote, local_port).await)
                }
            });
            let conn = self.builder().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let keep_alive = self.limits.keep_alive_timeout;
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
                    _ = activity.idle_for(keep_alive), if !draining && !keep_alive.is_zero() => {
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
