//! Sends that wake the I/O side, held back until the end of a JavaScript turn.
//!
//! Every answer the handler gives (a response head, a WebSocket message, a gRPC reply) wakes the
//! task waiting for it; when the I/O thread is parked, that wake is an eventfd write and a
//! cross-CPU wake-up, which profiles of a Koatty app put at ≈ 13 % of the JS thread. While a
//! turn of the event loop answers several requests, their sends are queued here (on the JS
//! thread, so without a lock) and made together at its end: the first wakes the I/O thread, the
//! others find it awake. The JS side asks for the flush once per turn (`setImmediate`).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

type Send = Box<dyn FnOnce()>;

thread_local! {
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    static DEFERRED: RefCell<Vec<Send>> = const { RefCell::new(Vec::new()) };
    /// When the oldest held send was held.
    static HELD_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Sends that needed no wake of their own (one already held serves them: [`held_again`]).
    static ALSO_HELD: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` with this thread's wake-up sends held until [`flush_deferred_wakes`].
pub fn deferring_wakes<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFERRING.set(false);
        }
    }
    DEFERRING.set(true);
    let _reset = Reset;
    f()
}

/// At most this many sends wait: a turn that answers more flushes them as it goes (a bounded
/// queue, and a bounded delay for the first answers of a long turn).
const MAX_HELD: usize = 64;

/// Nor does a send wait longer than this for the ones after it. With a slow handler (a Koatty
/// app spends ≈ 45 µs on a request) a turn of 64 answers held the first for ≈ 3 ms: with one
/// request in flight per client, the clients waited and the JS thread then idled for lack of
/// new requests (a quarter of its time, 64 WebSocket clients). 100 µs fixed that but cost an
/// HTTP/2 app 8 % (its 512 streams keep the JS thread busy; the wakes were pure cost); 300 µs
/// keeps both (bench/RESULTS.md).
const MAX_HOLD: Duration = Duration::from_micros(300);

/// Makes `send` now, or at the next flush inside [`deferring_wakes`]; sends keep their order.
pub(crate) fn send_soon(send: impl FnOnce() + 'static) {
    if !DEFERRING.get() {
        send();
        return;
    }
    let held = DEFERRED.with_borrow_mut(|d| {
        d.push(Box::new(send));
        d.len()
    });
    flush_at_limits(held + ALSO_HELD.get());
}

/// Counts a send whose wake is among the held ones already (a WebSocket's later messages in the
/// turn): it waits as they do, so it counts towards the same limits, and the writer still starts
/// on a long turn's messages every `MAX_HELD` sends or `MAX_HOLD`.
pub(crate) fn held_again() {
    if !DEFERRING.get() {
        return;
    }
    ALSO_HELD.set(ALSO_HELD.get() + 1);
    flush_at_limits(DEFERRED.with_borrow(|d| d.len()) + ALSO_HELD.get());
}

fn flush_at_limits(held: usize) {
    let now = Instant::now();
    let since = match HELD_SINCE.get() {
        Some(since) if held > 1 => since,
        _ => {
            HELD_SINCE.set(Some(now));
            now
        }
    };
    if held >= MAX_HELD || now.duration_since(since) >= MAX_HOLD {
        flush_deferred_wakes();
    }
}

/// Makes every held send, in order; returns how many there were.
pub fn flush_deferred_wakes() -> usize {
    HELD_SINCE.set(None);
    ALSO_HELD.set(0);
    let sends = DEFERRED.take();
    let n = sends.len();
    for send in sends {
        send();
    }
    n
}

/// Whether sends are waiting for [`flush_deferred_wakes`] on this thread.
#[cfg(test)]
fn has_deferred_wakes() -> bool {
    DEFERRED.with_borrow(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn held_sends_run_in_order_at_the_flush_and_others_at_once() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        send_soon(move || l.borrow_mut().push(0));
        assert_eq!(*log.borrow(), [0], "outside deferring_wakes: at once");
        deferring_wakes(|| {
            for i in 1..=3 {
                let l = log.clone();
                send_soon(move || l.borrow_mut().push(i));
            }
        });
        assert!(has_deferred_wakes());
        assert_eq!(*log.borrow(), [0]);
        assert_eq!(flush_deferred_wakes(), 3);
        assert_eq!(*log.borrow(), [0, 1, 2, 3]);
        assert!(!has_deferred_wakes());
    }

    #[test]
    fn a_long_turn_flushes_as_it_goes() {
        let count = Rc::new(Cell::new(0));
        deferring_wakes(|| {
            for _ in 0..MAX_HELD {
                let c = count.clone();
                send_soon(move || c.set(c.get() + 1));
            }
        });
        assert_eq!(count.get(), MAX_HELD, "the 64th send flushed the held ones");
        assert!(!has_deferred_wakes());
    }

    #[test]
    fn a_send_held_past_max_hold_goes_with_the_next() {
        let count = Rc::new(Cell::new(0));
        deferring_wakes(|| {
            let c = count.clone();
            send_soon(move || c.set(c.get() + 1));
            std::thread::sleep(MAX_HOLD + Duration::from_micros(50));
            let c = count.clone();
            send_soon(move || c.set(c.get() + 1));
            assert_eq!(count.get(), 2, "the first waited MAX_HOLD: both went");
            let c = count.clone();
            send_soon(move || c.set(c.get() + 1));
            assert_eq!(count.get(), 2, "a new hold starts its own clock");
        });
        assert_eq!(flush_deferred_wakes(), 1);
        assert_eq!(count.get(), 3);
    }

    #[test]
    fn a_panic_inside_does_not_leave_sends_held() {
        let _ = std::panic::catch_unwind(|| deferring_wakes(|| panic!("handler side")));
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        send_soon(move || r.set(true));
        assert!(ran.get());
    }
}
