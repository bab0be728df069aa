//! The handler's messages to one WebSocket connection's writer.
//!
//! A send is queued at once, so it either lands before the writer's close frame (and goes out
//! before it) or fails then and there, while the send's *wake* of the writer may wait for the end
//! of the JavaScript turn ([`super::wake`]). futures-channel's queue wakes its receiver as it
//! pushes, so with it the push itself had to wait: a send made in the turn the native side closed
//! the connection on its own (a shutdown, a lost pong) was accepted, then dropped unheard.

use super::wake;
use super::WsOutbound;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Default)]
struct State {
    items: VecDeque<WsOutbound>,
    /// The writer closed the queue (its close frame is out): no send is taken any more.
    closed: bool,
    /// The sender is gone (the connection's entry left the bridge): the writer's queue ends.
    sender_gone: bool,
    /// The writer is gone.
    receiver_gone: bool,
    /// A wake is held for the end of the turn: later sends in it need none of their own.
    wake_held: bool,
    waker: Option<Waker>,
}

struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let waker = {
            let mut state = self.lock();
            state.wake_held = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A queue of messages, pings and pongs from the handler; one sender, one receiver.
pub fn message_queue() -> (MessageSender, MessageReceiver) {
    let shared = Arc::new(Shared(Mutex::new(State::default())));
    (MessageSender(shared.clone()), MessageReceiver(shared))
}

/// The handler's end (held in the bridge's entry for the connection).
pub struct MessageSender(Arc<Shared>);

impl MessageSender {
    /// Queues `item` now and wakes the writer soon (at the end of the turn when wakes are held).
    /// Gives it back if the writer closed the queue or is gone.
    pub fn send_soon(&self, item: WsOutbound) -> Result<(), WsOutbound> {
        {
            let mut state = self.0.lock();
            if state.closed || state.receiver_gone {
                return Err(item);
            }
            state.items.push_back(item);
            if std::mem::replace(&mut state.wake_held, true) {
                drop(state);
                wake::held_again();
                return Ok(());
            }
        }
        let shared = self.0.clone();
        wake::send_soon(move || shared.wake());
        Ok(())
    }
}

impl Drop for MessageSender {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.wake();
    }
}

/// The writer's end.
pub struct MessageReceiver(Arc<Shared>);

impl MessageReceiver {
    /// The next item, if one waits.
    pub fn try_recv(&mut self) -> Option<WsOutbound> {
        self.0.lock().items.pop_front()
    }

    /// The next item; `None` once the queue is closed or the sender gone and nothing is left.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WsOutbound>> {
        let mut state = self.0.lock();
        if let Some(item) = state.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if state.closed || state.sender_gone {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Takes no more sends (they fail); what was queued before can still be taken.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
    }
}

impl Drop for MessageReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        // What it held is dropped with the writer, not with the last wake held for it.
        state.items.clear();
    }
}

/// How far the writer has got with what the handler sent: the bytes queued and not yet written
/// (`bufferedAmount`), the bytes written so far, and the point at which the handler wants to hear
/// of it (a send's callback, which ws calls once its data is written — a sender that waits for
/// each callback is then paced by the peer's reading, as with ws).
#[derive(Default)]
pub struct WsProgress {
    buffered: AtomicUsize,
    /// Bytes queued since the connection opened.
    sent: AtomicU64,
    written: AtomicU64,
    /// `written` at which the handler wants a `WsWritten` event (0: it wants none).
    notify_at: AtomicU64,
}

impl WsProgress {
    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// `len` more bytes queued; returns how many were waiting before, and the bytes queued
    /// since the connection opened with these (once that many are written, these are).
    pub fn queued(&self, len: usize) -> (usize, u64) {
        let before = self.buffered.fetch_add(len, Ordering::AcqRel);
        let sent = self.sent.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        (before, sent)
    }

    /// Queued bytes that will never be written (they came after a close frame).
    pub fn dropped(&self, len: usize) {
        self.buffered.fetch_sub(len, Ordering::AcqRel);
    }

    /// `len` bytes went to the socket. Returns the total written if the handler asked to hear
    /// of it by now (once per ask).
    pub fn wrote(&self, len: usize) -> Option<u64> {
        if len == 0 {
            return None;
        }
        self.buffered.fetch_sub(len, Ordering::AcqRel);
        let total = self.written.fetch_add(len as u64, Ordering::SeqCst) + len as u64;
        self.take_notice(total)
    }

    /// The handler wants a `WsWritten` event once `at` bytes are written. Returns the total if
    /// they already are (then no event comes).
    pub fn notify_when_written(&self, at: u64) -> Option<u64> {
        self.notify_at.store(at, Ordering::SeqCst);
        self.take_notice(self.written.load(Ordering::SeqCst))
    }

    /// Whichever of the writer and the handler sees `written` reach `notify_at` first takes the
    /// notice (SeqCst on both: at least one of them sees the other's store).
    fn take_notice(&self, written: u64) -> Option<u64> {
        let at = self.notify_at.load(Ordering::SeqCst);
        (at != 0
            && written >= at
            && self
                .notify_at
                .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok())
        .then_some(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn message(n: u8) -> WsOutbound {
        WsOutbound::Message {
            data: Bytes::from(vec![n]),
            binary: true,
        }
    }

    fn byte(item: Option<WsOutbound>) -> Option<u8> {
        match item? {
            WsOutbound::Message { data, .. } => Some(data[0]),
            _ => None,
        }
    }

    struct CountingWaker(AtomicUsize);
    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wakes, and the count.
    fn counting_waker() -> (Waker, Arc<CountingWaker>) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (Waker::from(counter.clone()), counter)
    }

    #[test]
    fn a_send_is_queued_at_once_and_its_wake_held_to_the_end_of_the_turn() {
        let (tx, mut rx) = message_queue();
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        wake::deferring_wakes(|| {
            for n in 0..3 {
                assert!(tx.send_soon(message(n)).is_ok());
            }
        });
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "the wake waits");
        assert_eq!(byte(rx.try_recv()), Some(0), "the items do not");
        assert_eq!(
            wake::flush_deferred_wakes(),
            1,
            "one wake for the turn's sends"
        );
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(byte(rx.try_recv()), Some(1));
        assert_eq!(byte(rx.try_recv()), Some(2));
    }

    #[test]
    fn a_long_turn_of_sends_wakes_the_writer_every_max_held_sends() {
        let (tx, mut rx) = message_queue();
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        wake::deferring_wakes(|| {
            for n in 0..200u32 {
                // The writer takes what waits and waits again (its waker registered).
                while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {}
                assert!(tx.send_soon(message(n as u8)).is_ok());
            }
        });
        let woken = counter.0.load(Ordering::SeqCst);
        assert!(
            woken >= 3,
            "woken during the turn, not only at its end: {woken}"
        );
        wake::flush_deferred_wakes();
    }

    #[test]
    fn a_send_after_the_writer_closed_fails_at_once_and_the_ones_before_are_kept() {
        let (tx, mut rx) = message_queue();
        wake::deferring_wakes(|| {
            assert!(tx.send_soon(message(1)).is_ok());
            rx.close();
            assert!(
                tx.send_soon(message(2)).is_err(),
                "refused in the same turn"
            );
        });
        wake::flush_deferred_wakes();
        assert_eq!(byte(rx.try_recv()), Some(1));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn the_handler_hears_once_when_what_it_waits_for_is_written() {
        let progress = WsProgress::default();
        assert_eq!(progress.queued(10), (0, 10));
        assert_eq!(progress.notify_when_written(6), None, "nothing written yet");
        assert_eq!(progress.wrote(4), None, "4 of 6");
        assert_eq!(progress.wrote(3), Some(7), "past 6: the writer tells");
        assert_eq!(progress.wrote(3), None, "once per ask");
        assert_eq!(progress.buffered(), 0);
        assert_eq!(
            progress.notify_when_written(9),
            Some(10),
            "already written: told at once"
        );
        assert_eq!(progress.wrote(1), None);
    }

    #[test]
    fn the_queue_ends_when_the_sender_goes_and_sends_fail_when_the_writer_does() {
        let (tx, mut rx) = message_queue();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(tx.send_soon(message(1)).is_ok());
        drop(tx);
        assert_eq!(byte(rx.try_recv()), Some(1));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));

        let (tx, rx) = message_queue();
        drop(rx);
        assert!(tx.send_soon(message(1)).is_err());
    }
}
