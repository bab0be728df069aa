//! Running a connection under the server's phase: drain it when shutdown begins (or when
//! `connectionTimeout` passes with no byte moved), drop it when forced.

use super::watch::{Activity, HeadWatch};
use super::FRESH_CONNECTION_GRACE;
use crate::bridge::CloseConnection;
use crate::config::Limits;
use crate::lifecycle::{Phase, PhaseSignal};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Once a draining connection has no request in flight, how long it may stay with no byte moving
/// (counted from its last response handed over at the latest) before it is dropped. A live peer
/// finishes the GOAWAY exchange and reads its last response well within it; a peer that went away
/// without a word would otherwise hold the shutdown until its timeout (hyper's HTTP/2 graceful
/// shutdown waits for a PING answer that never comes). The cost: a client that stops reading for
/// this long in the middle of its last response during a drain loses the rest of it.
pub(crate) const DRAINED_QUIET_LIMIT: Duration = Duration::from_millis(1000);

/// Runs a connection until it ends; drains it (HTTP/1: `Connection: close` after the response in
/// flight, idle ones closed; HTTP/2: GOAWAY) when the phase says so, and drops it when forced, or
/// when drained with nothing in flight and no byte moving for [`DRAINED_QUIET_LIMIT`].
/// Returns the connection's own outcome, or `None` when it was dropped.
pub(crate) async fn drive<C: Future>(
    conn: C,
    phase: PhaseSignal,
    requests: Arc<ConnRequests>,
    drain: impl Fn(std::pin::Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut draining_signal = phase.clone();
    let mut forced_signal = phase;
    let mut draining = false;
    let mut drained = false;
    loop {
        let quiet_left = requests
            .idle_limit
            .map(|limit| requests.activity.quiet_left(limit));
        tokio::select! {
            ended = conn.as_mut() => return Some(ended),
            // connectionTimeout: no byte moved for that long. The connection drains as at
            // shutdown, so a request still in flight (a quiet long poll) completes first.
            _ = tokio::time::sleep(quiet_left.unwrap_or_default()), if quiet_left.is_some() && !drained => {
                if quiet_left.is_some_and(|left| left.is_zero()) {
                    tracing::debug!("connection idle past connectionTimeout; closing");
                    drained = true;
                    drain(conn.as_mut());
                }
            }
            // HTTP/2 (and gRPC) connections go at a restart too: GOAWAY lets clients move over
            // without a lost request. HTTP/1 ones only at shutdown: closing an idle keep-alive
            // connection races a client that is reusing it.
            _ = draining_signal.reached(requests.drain_phase()), if !draining => draining = true,
            // A connection that has not begun a request yet may have one on the wire: give it a
            // moment before draining (hyper would close such a connection at once).
            _ = requests.begun_or(FRESH_CONNECTION_GRACE), if draining && !drained => {
                drained = true;
                drain(conn.as_mut());
            }
            // The bridge wants no further request on it (a body overran its Content-Length):
            // drained as at shutdown — HTTP/1 closes once the response in flight is out.
            _ = requests.close_wanted(), if !drained => {
                drained = true;
                drain(conn.as_mut());
            }
            _ = requests.settled(DRAINED_QUIET_LIMIT), if drained => {
                tracing::debug!("drained connection quiet with nothing in flight; closing");
                return None;
            }
            _ = forced_signal.reached(Phase::Forced) => return None,
        }
    }
}

/// What a connection task watches: its socket (a begun request head, and when bytes last moved)
/// and its requests.
pub(crate) fn watch_connection<I>(limits: &Limits) -> (Arc<HeadWatch<I>>, Arc<ConnRequests>) {
    let activity = Activity::new();
    let watch = HeadWatch::new(activity.clone());
    let requests = ConnRequests {
        activity,
        idle_limit: limits.connection_timeout,
        ..Default::default()
    };
    (watch, Arc::new(requests))
}

/// A connection's requests: whether the first has begun (read when draining), how many are in
/// flight (a response not yet fully handed to the connection), and the clock its socket stamps
/// with its idle limit (`connectionTimeout`).
#[derive(Default)]
pub(crate) struct ConnRequests {
    begun: AtomicBool,
    /// The bridge asked for the connection to close after its response in flight.
    close_wanted: AtomicBool,
    /// The connection speaks HTTP/2 (known from the start, or from its first request).
    http2: AtomicBool,
    in_flight: AtomicUsize,
    /// Woken when the first request begins and when the last one in flight ends.
    changed: Notify,
    activity: Arc<Activity>,
    idle_limit: Option<Duration>,
}

impl ConnRequests {
    /// A request began; it counts as in flight until the guard (moved into its response body)
    /// is dropped.
    pub(crate) fn started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.begun.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
        InFlight(self.clone())
    }

    /// Resolves once the connection was asked to close (see [`CloseConnection`]).
    async fn close_wanted(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.close_wanted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Marks the connection as HTTP/2 (see [`drive`]).
    pub(crate) fn speaks_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// The phase from which the connection is drained.
    fn drain_phase(&self) -> Phase {
        if self.http2.load(Ordering::Relaxed) {
            Phase::Retiring
        } else {
            Phase::Draining
        }
    }

    /// Resolves at once if a request has begun, else when one does or `grace` passes.
    async fn begun_or(&self, grace: Duration) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.begun.load(Ordering::Acquire) {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(grace) => {}
        }
    }

    /// Resolves once no request is in flight and no byte has moved for `quiet`.
    async fn settled(&self, quiet: Duration) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                notified.await;
                continue;
            }
            let left = self.activity.quiet_left(quiet);
            if left.is_zero() {
                return;
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
        self.changed.notify_waiters();
    }
}

/// Holds a request in flight (see [`ConnRequests::started`]).
pub(crate) struct InFlight(Arc<ConnRequests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
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
