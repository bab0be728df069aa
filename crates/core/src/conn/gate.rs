//! A future polled only when it asked to be: [`Gate`].
//!
//! A connection task is polled several times per request or message (bytes readable, an answer
//! from the handler, the socket writable), and a `select!` polls every branch each time. The
//! branches that watch the server (its phase, sweeps, a close asked by the bridge) rarely change,
//! yet polling one costs a lock: a `Notified` that waits re-checks its waker under the `Notify`'s
//! mutex on every poll (tokio 1.x), and a `watch` wait is one. Behind a gate they are polled once,
//! and then only after one of them woke the task.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

pin_project_lite::pin_project! {
    /// `inner`, polled at its first poll and afterwards only when a waker it was given has been
    /// woken since its last poll.
    pub(crate) struct Gate<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        waker: Waker,
        polled: bool,
    }
}

/// The waker the inner future gets: it marks the gate open and wakes the task.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gate<F> {
    pub(crate) fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        Gate {
            inner,
            signal,
            waker,
            polled: false,
        }
    }
}

impl<F: Future> Future for Gate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The task's waker first, then the flag: a wake between the two finds the new waker.
        this.signal.task.register(cx.waker());
        // Cleared before the poll, so a wake during it opens the gate again.
        let woken = this.signal.woken.swap(false, Ordering::AcqRel);
        if *this.polled && !woken {
            return Poll::Pending;
        }
        *this.polled = true;
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Counts its polls.
    struct Counted<F> {
        inner: std::pin::Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: std::future::Future> std::future::Future for Counted<F> {
        type Output = F::Output;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn polls_the_inner_future_only_after_it_was_woken() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let inner = Counted {
            inner: Box::pin(notify.clone().notified_owned()),
            polls: polls.clone(),
        };
        let mut gate = Box::pin(Gate::new(inner));
        let mut other = Box::pin(tokio::time::sleep(Duration::from_millis(1)));
        // The task is polled again and again for another reason (its own timer): the gate stays
        // shut.
        for _ in 0..5 {
            tokio::select! {
                biased;
                _ = &mut gate => panic!("not notified yet"),
                _ = &mut other => other.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(1)),
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // The notification wakes the inner future's waker: the gate opens and the future completes.
        let notifier = notify.clone();
        tokio::spawn(async move { notifier.notify_waiters() });
        tokio::time::timeout(Duration::from_secs(5), &mut gate)
            .await
            .expect("the gate opened when its future was woken");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
