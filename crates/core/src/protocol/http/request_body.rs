//! A streamed HTTP request body, read off hyper and fed to the handler one frame per pull, so a
//! large upload is never buffered whole in Rust and a slow handler slows the client down (TCP
//! backpressure).

use crate::bridge::{BodyChunks, BodyFeed, BodySource};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::time::Instant;

/// Bytes of a streamed body read ahead of the handler's pulls. 256 KiB made a body the handler
/// never reads cost ≈ 360 KiB per HTTP/1.1 connection (node ≈ 77) and ≈ 340 KiB per HTTP/2 stream
/// (83 MiB per connection of 250); 64 KiB (node's read size) takes that to ≈ 138 KiB, with upload
/// throughput unchanged (bench/RESULTS.md, session 16).
const READ_AHEAD: usize = 64 * 1024;

/// Request body still arriving when the response has been sent is read and dropped up to this
/// many bytes (node keeps reading too, so the client can finish sending and read the answer);
/// past it the connection is closed.
pub const DISCARD_AFTER_RESPONSE_LIMIT: u64 = 8 * 1024 * 1024;

/// ... and for at most this long (never past the request deadline).
pub const DISCARD_AFTER_RESPONSE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The request body broke: a malformed body (bad chunk) is answered 400 if the handler has not
/// answered yet; a client that went away ends the request. Either way the handler sees the error.
fn body_failed(to_handler: &BodyChunks, e: &hyper::Error) {
    let error = format!("ERR_REQUEST_BODY: request body failed: {e}");
    let malformed = e.is_parse()
        || e.is_user()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                )
            });
    if malformed {
        to_handler.fail(StatusCode::BAD_REQUEST, error);
    } else {
        // The client went away mid-body: node's `req` gets `Error('aborted')`, code ECONNRESET,
        // and apps filter client aborts on that.
        to_handler.broken(format!("ECONNRESET: aborted ({e})"));
    }
}

/// A hyper request body to be streamed to the handler.
pub struct RequestBodyPump {
    body: hyper::body::Incoming,
    /// `Expect: 100-continue`: nothing is read (so hyper sends no `100 Continue`) until the
    /// handler first reads; a handler that answers first (417, 401) refuses the upload, as node's
    /// `'checkContinue'` allows.
    awaits_continue: bool,
}

impl RequestBodyPump {
    pub fn new(body: hyper::body::Incoming) -> Self {
        RequestBodyPump {
            body,
            awaits_continue: false,
        }
    }

    /// A body the client sends only after `100 Continue`.
    pub fn after_continue(body: hyper::body::Incoming) -> Self {
        RequestBodyPump {
            body,
            awaits_continue: true,
        }
    }

    async fn run(mut self, feed: BodyFeed) {
        let BodyFeed {
            mut pulls,
            to_handler,
            max_body_size,
            deadline,
        } = feed;
        let mut received: u64 = 0;
        // Up to READ_AHEAD bytes are read before the handler asks for them: a read is always
        // outstanding, so a client that resets or sends a malformed body is noticed even while the
        // handler is not reading (otherwise the request would hold its slot until requestTimeout).
        let mut ready: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let mut ready_bytes = 0usize;
        let mut ended = false;
        let mut wanted = false;
        let mut reading = !self.awaits_continue;
        loop {
            if wanted {
                if let Some(chunk) = ready.pop_front() {
                    ready_bytes -= chunk.len();
                    wanted = false;
                    to_handler.chunk(chunk);
                } else if ended {
                    to_handler.end();
                    return;
                }
            }
            tokio::select! {
                pull = pulls.recv() => match pull {
                    Some(()) => {
                        wanted = true;
                        reading = true;
                    }
                    // Answered without asking for the body after `Expect: 100-continue`: the client
                    // was never told to send it (hyper closes the connection after the response).
                    None if !reading => return,
                    // The request is answered (or gone): drop what is still arriving.
                    None => return self.discard_rest(ended, received, max_body_size, deadline).await,
                },
                frame = self.body.frame(), if reading && !ended && ready_bytes < READ_AHEAD => match frame {
                    None => ended = true,
                    Some(Err(e)) => return body_failed(&to_handler, &e),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        received += data.len() as u64;
                        to_handler.received(data.len());
                        if max_body_size.is_some_and(|max| received > max) {
                            to_handler.fail(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "ERR_BODY_TOO_LARGE: request body too large".into(),
                            );
                            return;
                        }
                        if !data.is_empty() {
                            ready_bytes += data.len();
                            ready.push_back(data);
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return to_handler.fail(
                        StatusCode::REQUEST_TIMEOUT,
                        "ERR_REQUEST_TIMEOUT: request body not received in time".into(),
                    );
                }
            }
        }
    }

    /// The response went out before the body was read: keep reading and dropping it, so the
    /// client can finish sending and read the answer (node does the same; a connection closed
    /// with unread data makes clients see EPIPE or a reset instead of the status). Bounded by
    /// `DISCARD_AFTER_RESPONSE_LIMIT`, `DISCARD_AFTER_RESPONSE_TIME`, the body limit and the
    /// request deadline; past a bound the body is dropped and hyper closes the connection.
    async fn discard_rest(
        mut self,
        ended: bool,
        received: u64,
        max_body_size: Option<u64>,
        deadline: Instant,
    ) {
        if ended {
            return;
        }
        let limit = DISCARD_AFTER_RESPONSE_LIMIT
            .min(max_body_size.map_or(u64::MAX, |max| max.saturating_sub(received)));
        let until = deadline.min(Instant::now() + DISCARD_AFTER_RESPONSE_TIME);
        let mut dropped: u64 = 0;
        let _ = tokio::time::timeout_at(until, async {
            while let Some(Ok(frame)) = self.body.frame().await {
                if let Ok(data) = frame.into_data() {
                    dropped += data.len() as u64;
                    if dropped > limit {
                        tracing::debug!(dropped, "request body past the discard limit; closing");
                        return;
                    }
                }
            }
        })
        .await;
    }
}

impl BodySource for RequestBodyPump {
    fn feed(self, feed: BodyFeed) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.run(feed)
    }
}
