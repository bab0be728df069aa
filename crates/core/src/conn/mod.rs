//! The connection layer under the protocols: a ready connection from an accepted socket.
//!
//! Accept (in [`crate::lifecycle`]) → wait for the first bytes → TLS handshake under its timeout
//! → one [`ConnectionInfo`] and one [`ConnStream`] handed to the protocol, which never branches
//! on TLS. Also here: what every protocol's connection task does the same way — run the
//! connection under the server's phase ([`drive`]), watch its socket ([`watch`]), and configure
//! HTTP/2 ([`configure_http2`], shared by HTTP/2 and gRPC).

mod drive;
mod gate;
mod stream;
pub(crate) mod watch;

pub(crate) use drive::{drive, watch_connection, ConnRequests, Tracked};
pub(crate) use stream::ConnStream;

use crate::config::{Http2Settings, Limits};
use crate::lifecycle::{Phase, PhaseSignal};
use crate::metrics::Metrics;
use crate::tls::{PeerInfo, TlsSource};
use hyper::server::conn::http2;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The same HTTP/2 settings on hyper's builder and on hyper-util's (different types, same methods).
macro_rules! configure_http2 {
    ($b:expr, $settings:expr) => {{
        let settings: &$crate::config::Http2Settings = $settings;
        $b.timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list_size)
            .max_send_buf_size(settings.max_send_buffer_size);
        if let Some(window) = settings.initial_window_size {
            // The connection's window is four streams' worth, within HTTP/2's largest.
            let connection = window.saturating_mul(4).min($crate::config::MAX_H2_WINDOW);
            $b.initial_stream_window_size(window)
                .initial_connection_window_size(connection);
        }
        if let Some(interval) = settings.keep_alive_interval {
            $b.keep_alive_interval(interval)
                .keep_alive_timeout(settings.keep_alive_timeout);
        }
    }};
}

pub(crate) use configure_http2;

/// What a connection knows about itself, shared by its requests (and calls).
#[derive(Clone)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    /// The remote IP as text (IPv4-mapped IPv6 shown as IPv4, as node does), made once per
    /// connection: every request hands it to JavaScript.
    pub remote_ip: Arc<str>,
    pub local_port: u16,
    /// TLS details (ALPN, client certificate), when encrypted.
    pub peer: Option<Arc<PeerInfo>>,
    /// The connection's phase (and its place in the connection count), which a WebSocket
    /// upgraded from it carries on.
    pub phase: PhaseSignal,
}

/// [`ConnectionInfo::remote_ip`] for `remote`.
pub fn remote_ip_text(remote: &SocketAddr) -> Arc<str> {
    Arc::from(remote.ip().to_canonical().to_string())
}

impl ConnectionInfo {
    /// The protocol the client chose by ALPN (`h2`, `http/1.1`), when encrypted.
    pub fn alpn(&self) -> Option<&str> {
        self.peer.as_deref().and_then(|p| p.alpn.as_deref())
    }

    /// Shutdown began and no listener accepts any more (a restart's old connections still
    /// serve): a request or call that arrives now (pipelined, or on a connection that has not
    /// seen the GOAWAY yet) is new work, to be refused the way clients retry elsewhere.
    pub fn refuses_new_work(&self, metrics: &Metrics) -> bool {
        self.phase.current() >= Phase::Draining && !metrics.accepting()
    }
}

/// What the bytes waiting in a cleartext socket say of its protocol, looked at without taking
/// them (a port that serves both HTTP/1.1 and h2c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preface {
    /// The HTTP/2 client preface.
    Http2,
    /// A part of it, and nothing else yet: hyper waits for the rest with no timer of its own.
    Partial,
    /// Something else (HTTP/1.1), or nothing to look at.
    Other,
}

/// See [`Preface`].
pub(crate) fn peek_preface(socket: Option<drive::SocketFd>) -> Preface {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    #[cfg(unix)]
    if let Some(fd) = socket {
        let mut head = [0u8; PREFACE.len()];
        // SAFETY: a non-blocking peek into a stack buffer of the given length; `fd` is the
        // connection's open socket, owned by the task that asks.
        let n = unsafe {
            libc::recv(
                fd,
                head.as_mut_ptr().cast(),
                head.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Preface::Other;
        };
        return match n {
            0 => Preface::Other,
            n if head[..n] != PREFACE[..n] => Preface::Other,
            n if n == PREFACE.len() => Preface::Http2,
            _ => Preface::Partial,
        };
    }
    let _ = socket;
    Preface::Other
}

/// Resolves at `at`, or never.
pub(crate) async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a draining connection that has not begun its first request waits for one.
pub(crate) const FRESH_CONNECTION_GRACE: Duration = Duration::from_millis(1000);

/// Turns an accepted socket into a ready connection: waits for its first bytes (bounded by the
/// header timer a parser would run, or by `handshakeTimeout` over TLS), then does the TLS
/// handshake when `tls` is given (bounded by `handshakeTimeout`); `connectionTimeout` bounds both
/// when smaller. `None`: the connection is closed.
pub(crate) async fn establish(
    stream: TcpStream,
    remote: SocketAddr,
    phase: PhaseSignal,
    tls: Option<&TlsSource>,
    limits: &Limits,
) -> Option<(ConnStream, ConnectionInfo)> {
    // `connectionTimeout` (no byte moved for that long) holds from the accept, as node's
    // `server.timeout` does for a socket that never sends, and bounds the TLS handshake too.
    let or_sooner = |timer: Option<Duration>| match (timer, limits.connection_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let handshake_timeout = limits
        .connection_timeout
        .map_or(limits.handshake_timeout, |c| {
            c.min(limits.handshake_timeout)
        });
    let within = if tls.is_some() {
        Some(handshake_timeout)
    } else {
        or_sooner(limits.header_read_timeout())
    };
    if !first_bytes(&stream, within, &phase).await {
        return None;
    }
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let (io, peer) = match tls {
        None => (ConnStream::Plain(stream), None),
        Some(tls) => {
            let (tls_stream, peer) =
                accept_tls(tls, stream, handshake_timeout, remote, &phase).await?;
            let peer = Arc::new(peer);
            phase.connection().set_peer(peer.clone());
            (ConnStream::Tls(Box::new(tls_stream)), Some(peer))
        }
    };
    let info = ConnectionInfo {
        remote,
        remote_ip: remote_ip_text(&remote),
        local_port,
        peer,
        phase,
    };
    Some((io, info))
}

/// Waits for a new connection's first bytes before a parser (hyper, rustls) takes it, so a
/// connection that sends nothing costs no parser state or read buffer (hyper reserves 8 KiB at its
/// first read). `false`: close it — nothing came within `within` (the header or handshake timer
/// hyper/rustls would have run), or the server drains and nothing came within the grace a fresh
/// connection gets (see [`FRESH_CONNECTION_GRACE`]).
async fn first_bytes(stream: &TcpStream, within: Option<Duration>, phase: &PhaseSignal) -> bool {
    let mut draining = phase.clone();
    let mut one = [0u8; 1];
    let deadline = within.map(|d| Instant::now() + d);
    tokio::select! {
        // `peek`, not `readable()`: the latter may report a fresh socket ready with nothing to read.
        ready = stream.peek(&mut one) => return ready.is_ok(),
        _ = until(deadline) => return false,
        _ = draining.reached(Phase::Draining) => {}
    }
    let grace = Instant::now() + FRESH_CONNECTION_GRACE;
    let until = deadline.map_or(grace, |d| d.min(grace));
    matches!(
        tokio::time::timeout_at(until, stream.peek(&mut one)).await,
        Ok(Ok(_))
    )
}

/// The TLS handshake, in the connection task, under `timeout`; abandoned when the server drains.
async fn accept_tls(
    tls: &TlsSource,
    stream: TcpStream,
    timeout: Duration,
    remote: SocketAddr,
    phase: &PhaseSignal,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, PeerInfo)> {
    let handshake = tokio::time::timeout(timeout, tls.acceptor().accept(stream));
    let mut until_forced = phase.clone();
    let mut draining = phase.clone();
    // A handshake under way when the drain begins gets the grace a fresh connection gets: a live
    // client completes it within milliseconds, and one that stalled its ClientHello must not hold
    // the shutdown for the whole handshake timeout.
    let drained_past_grace = async {
        draining.reached(Phase::Draining).await;
        tokio::time::sleep(FRESH_CONNECTION_GRACE).await;
    };
    let tls_stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return None;
            }
        },
        // A handshake that completes within the grace has its request served with the drain.
        _ = drained_past_grace => {
            tracing::debug!(%remote, "TLS handshake still under way a grace after the drain began; closing");
            return None;
        }
        _ = until_forced.reached(Phase::Forced) => return None,
    };
    let peer = tls.peer_info(tls_stream.get_ref().1);
    Some((tls_stream, peer))
}

/// An HTTP/2 server builder with the server's HTTP/2 settings (HTTP/2 and gRPC alike).
pub(crate) fn http2_builder(settings: &Http2Settings) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    configure_http2!(b, settings);
    b
}

#[cfg(test)]
mod tests;
