//! Running a connection under the server's phase: drain it when shutdown begins (or when
//! `connectionTimeout` passes with no byte moved), drop it when forced.

use super::gate::Gate;
use super::watch::{Activity, HeadWatch};
use super::{until, FRESH_CONNECTION_GRACE};
use crate::config::Limits;
use crate::lifecycle::CloseConnection;
use crate::lifecycle::{Phase, PhaseSignal, Sweep};
use crate::metrics::Metrics;
use crate::pool::{Connection, GracefulClose, WireProtocol};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a connection that was idle when it was drained (nothing in flight then or since) may
/// stay with no byte moving before it is dropped. A live peer finishes the GOAWAY exchange well
/// within it; a peer that went away without a word would otherwise hold the shutdown until its
/// timeout (hyper's HTTP/2 graceful shutdown waits for a PING answer that never comes). A
/// connection that served a request during the drain is never dropped this way: its response may
/// still sit in buffers, waiting for a slow reader or a flow-control window (node waits for it
/// too), and only the shutdown's own timeout ends it.
pub(crate) const DRAINED_QUIET_LIMIT: Duration = Duration::from_millis(1000);

/// What [`drive`]'s watch over the server and the bridge decided.
enum Control {
    /// Drain the connection now (`true`), or look again (`false`).
    Drain(bool),
    /// Drop the connection.
    Drop,
}

/// Runs a connection until it ends; drains it (HTTP/1: `Connection: close` after the response in
/// flight, idle ones closed; HTTP/2: GOAWAY) when the phase says so, and drops it when forced, or
/// when drained with nothing in flight and no byte moving for [`DRAINED_QUIET_LIMIT`].
/// A sweep (node's `closeIdleConnections`/`closeAllConnections`) drains it when it has nothing in
/// flight (HTTP/1), or drops it.
/// Returns the connection's own outcome, or `None` when it was dropped.
pub(crate) async fn drive<C: Future>(
    conn: C,
    phase: PhaseSignal,
    requests: Arc<ConnRequests>,
    drain: impl Fn(std::pin::Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut draining_signal = phase.clone();
    let mut sweep_signal = phase.clone();
    let mut forced_signal = phase;
    let mut draining = false;
    loop {
        let drained = requests.is_drained();
        let quiet_left = requests
            .idle_limit
            .map(|limit| requests.activity.quiet_left(limit));
        // What the server and the bridge may ask of the connection, polled only when one of them
        // woke the task (the connection itself wakes it several times per request).
        let control = Gate::new(async {
            // Each branch says whether the connection is to be drained now, or to be dropped.
            tokio::select! {
                // connectionTimeout: no byte moved for that long. The connection drains as at
                // shutdown, so a request still in flight (a quiet long poll) completes first.
                _ = tokio::time::sleep(quiet_left.unwrap_or_default()), if quiet_left.is_some() && !drained => {
                    let idle = quiet_left.is_some_and(|left| left.is_zero());
                    if idle {
                        tracing::debug!("connection idle past connectionTimeout; closing");
                    }
                    Control::Drain(idle)
                }
                // HTTP/2 (and gRPC) connections go at a restart too: GOAWAY lets clients move
                // over without a lost request. HTTP/1 ones only at shutdown: closing an idle
                // keep-alive connection races a client that is reusing it.
                _ = draining_signal.reached(requests.drain_phase()), if !draining => {
                    draining = true;
                    Control::Drain(false)
                }
                // A connection that has not begun a request yet may have one on the wire: give
                // it a moment before draining (hyper would close such a connection at once).
                _ = requests.begun_or(FRESH_CONNECTION_GRACE), if draining && !drained => Control::Drain(true),
                // The bridge wants no further request on it (a body overran its
                // Content-Length): drained as at shutdown — HTTP/1 closes once the response in
                // flight is out.
                _ = requests.close_wanted(), if !drained => Control::Drain(true),
                // HTTP/2 (or not known yet: no request ever came): hyper's graceful HTTP/2
                // shutdown waits for a PING answer; an HTTP/1 connection closes by itself once
                // its response is out, and may still be handing it to a slow reader.
                _ = requests.settled(DRAINED_QUIET_LIMIT), if drained && requests.may_hang_in_shutdown() => {
                    tracing::debug!("drained connection quiet with nothing in flight; closing");
                    Control::Drop
                }
                sweep = sweep_signal.next_sweep() => match sweep {
                    Sweep::All => Control::Drop,
                    // An idle HTTP/1 connection closes at once; one with a request in flight is
                    // left alone, as node does, and so is one busy when the sweep was asked for
                    // (even if idle by now). One that has not begun a request stays too, as
                    // with node: this task may learn of the sweep only when its first request
                    // arrives, which would then be dropped unanswered.
                    Sweep::Idle => {
                        let spared = requests.connection.busy_at_sweep.swap(false, Ordering::AcqRel);
                        Control::Drain(
                            !drained
                                && !spared
                                && requests.begun.load(Ordering::Acquire)
                                && requests.is_idle_http1(),
                        )
                    }
                },
                _ = forced_signal.reached(Phase::Forced) => Control::Drop,
                // A part of the h2c preface and nothing more within the header timer.
                _ = until(requests.detect_deadline.get().copied()), if requests.undetected() => {
                    if requests.undetected() {
                        tracing::debug!("no request and no complete HTTP/2 preface within the header timeout; closing");
                        Control::Drop
                    } else {
                        Control::Drain(false)
                    }
                }
            }
        });
        let drain_now = tokio::select! {
            biased;
            ended = conn.as_mut() => return Some(ended),
            control = control => match control {
                Control::Drain(now) => now,
                Control::Drop => return None,
            },
        };
        if drain_now {
            requests.mark_drained();
            drain(conn.as_mut());
        }
    }
}

/// What a connection task watches: its socket (a begun request head, when bytes last moved, how
/// many, and HTTP/2's control frames) and its requests. The connection's entry among the live
/// ones (`phase`'s) learns what it speaks and how to close it gracefully.
pub(crate) fn watch_connection<I>(
    limits: &Limits,
    socket: Option<SocketFd>,
    phase: &PhaseSignal,
    protocol: WireProtocol,
) -> (Arc<HeadWatch<I>>, Arc<ConnRequests>) {
    let activity = Activity::new();
    let connection = phase.connection().clone();
    let metrics = phase.metrics().clone();
    let watch = HeadWatch::new(activity.clone(), connection.clone(), metrics.clone());
    let requests = Arc::new(ConnRequests {
        begun: AtomicBool::new(false),
        close_wanted: AtomicBool::new(false),
        drained: AtomicBool::new(false),
        served_while_draining: AtomicBool::new(false),
        http2: AtomicBool::new(matches!(protocol, WireProtocol::Http2 | WireProtocol::Grpc)),
        connection: connection.clone(),
        metrics: metrics.clone(),
        served: AtomicUsize::new(0),
        changed: Notify::new(),
        close: Notify::new(),
        activity,
        idle_limit: limits.connection_timeout,
        socket,
        detect_deadline: std::sync::OnceLock::new(),
    });
    if protocol != WireProtocol::Unknown {
        metrics.connections.set_protocol(&connection, protocol);
    }
    let closer: Arc<dyn GracefulClose> = requests.clone();
    connection.set_closer(Arc::downgrade(&closer));
    (watch, requests)
}

/// A connection's requests: whether the first has begun (read when draining), how many are in
/// flight (a response not yet fully handed to the connection), and the clock its socket stamps
/// with its idle limit (`connectionTimeout`).
pub(crate) struct ConnRequests {
    begun: AtomicBool,
    /// The bridge asked for the connection to close after its response in flight.
    close_wanted: AtomicBool,
    /// The connection was asked to drain (see [`drive`]).
    drained: AtomicBool,
    /// A request was in flight when the drain began, or began after: its response may still be
    /// on its way out, so the connection is not dropped for being quiet.
    served_while_draining: AtomicBool,
    /// The connection speaks HTTP/2 (known from the start, or from its first request).
    http2: AtomicBool,
    /// Its entry among the live connections; `streams` there counts the requests in flight (a
    /// response not yet fully handed to the connection).
    connection: Arc<Connection>,
    metrics: Arc<Metrics>,
    /// Requests begun on the connection so far (`maxRequestsPerSocket`).
    served: AtomicUsize,
    /// Woken when the first request begins, and (while draining) when the last one in flight
    /// ends: nothing waits on it per request while the connection runs normally.
    changed: Notify,
    /// Woken when the bridge asks for the connection to close.
    close: Notify,
    activity: Arc<Activity>,
    idle_limit: Option<Duration>,
    /// The connection's socket, to ask the kernel whether bytes are still on their way out.
    socket: Option<SocketFd>,
    /// A port serving HTTP/1.1 and h2c, whose client sent a part of the HTTP/2 preface: by then it
    /// must have begun a request or turned out to speak HTTP/2 (see [`ConnRequests::detect_within`]).
    detect_deadline: std::sync::OnceLock<tokio::time::Instant>,
}

/// A socket's file descriptor (Unix), for [`unsent_bytes`].
pub(crate) type SocketFd = i32;

/// Bytes the kernel still holds for the peer (sent but not acknowledged, or not sent yet): a
/// response handed over before the drain may still be on its way to a slow reader.
fn unsent_bytes(socket: Option<SocketFd>) -> usize {
    #[cfg(target_os = "linux")]
    if let Some(fd) = socket {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int; `fd` is the connection's open socket (the connection
        // task that owns it is the one asking).
        if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } == 0 {
            return n.max(0) as usize;
        }
    }
    let _ = socket;
    0
}

impl ConnRequests {
    /// A request began; it counts as in flight until the guard (moved into its response body)
    /// is dropped.
    pub(crate) fn started(self: &Arc<Self>) -> InFlight {
        // SeqCst with `drained`: one of the two sees the other (a request starting as the drain
        // begins is counted as served during it).
        let before = self.connection.streams.fetch_add(1, Ordering::SeqCst);
        let http2 = self.http2.load(Ordering::Relaxed);
        self.metrics.request_began(&self.connection, before, http2);
        if self.drained.load(Ordering::SeqCst) {
            self.served_while_draining.store(true, Ordering::SeqCst);
        }
        if !self.begun.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
        InFlight(self.clone(), http2)
    }

    /// Counts a request begun on the connection; returns its ordinal (1 for the first).
    pub(crate) fn count_request(&self) -> usize {
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Resolves once the connection was asked to close (see [`CloseConnection`]).
    async fn close_wanted(&self) {
        loop {
            let notified = self.close.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.close_wanted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// What the connection turned out to speak, from its first request (a cleartext port serving
    /// both HTTP/1.1 and h2c). Call before [`ConnRequests::started`].
    pub(crate) fn learned(&self, http2: bool) {
        if self.connection.protocol() == WireProtocol::Unknown {
            let protocol = if http2 {
                WireProtocol::Http2
            } else {
                WireProtocol::Http1
            };
            self.metrics
                .connections
                .set_protocol(&self.connection, protocol);
        }
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    /// The phase from which the connection is drained.
    fn drain_phase(&self) -> Phase {
        if self.http2.load(Ordering::Relaxed) {
            Phase::Retiring
        } else {
            Phase::Draining
        }
    }

    /// Resolves at once if a request has begun or the connection speaks HTTP/2, else when one
    /// begins or `grace` passes. HTTP/2's own graceful shutdown (a GOAWAY that still admits every
    /// stream, a PING, then the GOAWAY naming the last one) covers a request already on the wire;
    /// waiting would only hold an idle session's GOAWAY (and the shutdown) for the whole grace.
    async fn begun_or(&self, grace: Duration) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.begun_or_http2() {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(grace) => {}
        }
    }

    /// Whether hyper's own graceful shutdown of this connection may wait on the peer forever.
    fn may_hang_in_shutdown(&self) -> bool {
        self.http2.load(Ordering::Relaxed) || !self.begun.load(Ordering::Acquire)
    }

    /// No request in flight on an HTTP/1 connection (or one whose protocol is not known yet).
    fn is_idle_http1(&self) -> bool {
        !self.http2.load(Ordering::Relaxed) && self.connection.streams.load(Ordering::SeqCst) == 0
    }

    fn is_drained(&self) -> bool {
        self.drained.load(Ordering::SeqCst)
    }

    /// The client sent a part of the HTTP/2 preface and nothing else yet: hyper waits for the rest
    /// with no timer. Unless a request begins or the connection turns out to speak HTTP/2 within
    /// `within` (the header timer a parser would run), it is dropped.
    pub(crate) fn detect_within(&self, within: Duration) {
        let _ = self
            .detect_deadline
            .set(tokio::time::Instant::now() + within);
    }

    /// Still waiting to know what the connection speaks (see [`ConnRequests::detect_within`]).
    fn undetected(&self) -> bool {
        if self.begun_or_http2() {
            return false;
        }
        // hyper answers an HTTP/2 preface with its SETTINGS at once; HTTP/1 writes nothing
        // before a request. A preface that came in pieces is known this way.
        if self.connection.bytes_out.load(Ordering::Relaxed) > 0 {
            self.learned(true);
            return false;
        }
        true
    }

    /// A request has begun, or the connection speaks HTTP/2 (known before its first request).
    fn begun_or_http2(&self) -> bool {
        self.begun.load(Ordering::Acquire) || self.http2.load(Ordering::Relaxed)
    }

    /// The connection closes after the response in flight: drained (`closeConnection(id)`,
    /// `connectionTimeout`, a sweep) or asked to close by the bridge.
    pub(crate) fn closing(&self) -> bool {
        self.is_drained() || self.close_wanted.load(Ordering::Acquire)
    }

    /// The drain began (see [`ConnRequests::settled`]).
    fn mark_drained(&self) {
        self.drained.store(true, Ordering::SeqCst);
        if self.connection.streams.load(Ordering::SeqCst) > 0 {
            self.served_while_draining.store(true, Ordering::SeqCst);
        }
    }

    /// Resolves once no request is in flight and no byte has moved for `quiet` — never for a
    /// connection that served a request during the drain.
    async fn settled(&self, quiet: Duration) {
        loop {
            if self.served_while_draining.load(Ordering::SeqCst) {
                return std::future::pending().await;
            }
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.connection.streams.load(Ordering::Acquire) > 0 {
                notified.await;
                continue;
            }
            let left = self.activity.quiet_left(quiet);
            if left.is_zero() {
                if unsent_bytes(self.socket) == 0 {
                    return;
                }
                // Still on its way to the peer: look again after another quiet period (bounded
                // by the shutdown's timeout).
                tokio::time::sleep(quiet).await;
                continue;
            }
            // Sleep until the connection could have been quiet long enough, then look again.
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}

impl CloseConnection for ConnRequests {
    fn close_after_response(&self) {
        self.close_wanted.store(true, Ordering::Release);
        self.close.notify_waiters();
    }
}

/// `closeConnection(id)`: drained as at shutdown, this connection alone (HTTP/1: closed after the
/// response in flight, at once when idle; HTTP/2 and gRPC: GOAWAY, open streams finish).
impl GracefulClose for ConnRequests {
    fn close_gracefully(&self) {
        self.close_after_response();
    }
}

/// Holds a request in flight (see [`ConnRequests::started`]); whether it is an HTTP/2 stream.
pub(crate) struct InFlight(Arc<ConnRequests>, bool);

impl InFlight {
    /// The connection the request came on.
    pub(crate) fn connection(&self) -> &Arc<ConnRequests> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let after = self.0.connection.streams.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.metrics.request_ended(after, self.1);
        // Only a draining connection waits for its requests to end (see `settled`).
        if after == 0 && self.0.drained.load(Ordering::SeqCst) {
            // The body was handed to the connection, not yet written: the quiet time a drained
            // connection gets before it is dropped counts from here.
            self.0.activity.touch();
            self.0.changed.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
