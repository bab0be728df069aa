//! Running a connection under the server's phase: drain it when shutdown begins (or when
//! `connectionTimeout` passes with no byte moved), drop it when forced.

use super::watch::{Activity, HeadWatch};
use super::FRESH_CONNECTION_GRACE;
use crate::config::Limits;
use crate::lifecycle::{Phase, PhaseSignal};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

/// Runs a connection until it ends; drains it (HTTP/1: `Connection: close` after the response in
/// flight, idle ones closed; HTTP/2: GOAWAY) when the phase says so, and drops it when forced.
/// Returns the connection's own outcome, or `None` when it was dropped (forced).
pub(crate) async fn drive<C: Future>(
    conn: C,
    phase: PhaseSignal,
    first: Arc<FirstRequest>,
    drain: impl Fn(std::pin::Pin<&mut C>),
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut draining_signal = phase.clone();
    let mut forced_signal = phase;
    let mut draining = false;
    let mut drained = false;
    loop {
        let quiet_left = first
            .idle
            .as_ref()
            .map(|(limit, activity)| activity.quiet_left(*limit));
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
            _ = draining_signal.reached(Phase::Draining), if !draining => draining = true,
            // A connection that has not begun a request yet may have one on the wire: give it a
            // moment before draining (hyper would close such a connection at once).
            _ = first.begun_or(FRESH_CONNECTION_GRACE), if draining && !drained => {
                drained = true;
                drain(conn.as_mut());
            }
            _ = forced_signal.reached(Phase::Forced) => return None,
        }
    }
}

/// What a connection task watches: its socket (a begun request head, and when bytes last moved if
/// there is a `connectionTimeout`) and its first request.
pub(crate) fn watch_connection<I>(limits: &Limits) -> (Arc<HeadWatch<I>>, Arc<FirstRequest>) {
    let idle = limits
        .connection_timeout
        .map(|limit| (limit, Activity::new()));
    let watch = HeadWatch::new(idle.as_ref().map(|(_, a)| a.clone()));
    (watch, Arc::new(FirstRequest::with_idle(idle)))
}

/// Whether a connection has begun its first request (set by the service, read when draining), and
/// its idle limit (`connectionTimeout`) with the clock its socket stamps.
#[derive(Default)]
pub(crate) struct FirstRequest {
    begun: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    idle: Option<(Duration, Arc<Activity>)>,
}

impl FirstRequest {
    pub(crate) fn with_idle(idle: Option<(Duration, Arc<Activity>)>) -> Self {
        FirstRequest {
            idle,
            ..Default::default()
        }
    }

    pub(crate) fn mark(&self) {
        if !self.begun.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Resolves at once if a request has begun, else when one does or `grace` passes.
    async fn begun_or(&self, grace: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.begun.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(grace) => {}
        }
    }
}
