//! Requests and events on their way to JavaScript: one queue, in arrival order, handed over in
//! batches.
//!
//! The I/O side queues a crossing and wakes the JS thread only when no wake is on its way; the JS
//! thread takes what is queued and calls `onRequest`/`onEvent` for each, inside one callback scope
//! (up to [`BATCH_LIMIT`] items, and [`UNANSWERED_LIMIT`] whose handler answers later). A
//! threadsafe function per item (what napi-rs's `ThreadsafeFunction` is) took node's queue mutex
//! per item — contended with the I/O thread's pushes, so the JS thread slept in `futex` waits
//! (≈ 4 % of it under `wrk -c64`) — and opened a callback scope per item, whose close runs the
//! tick queue. Microtasks and ticks now run after each batch, as they do in node after a socket
//! read that held several pipelined requests.
//!
//! One queue also keeps an event behind the request it belongs to (two threadsafe functions did
//! not: `js/bridge.js` held events that overtook their request).

use super::answers::answers_made;
use super::wire::{EventArgs, RequestArgs};
use napi::bindgen_prelude::*;
use napi::sys;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// At most this many crossings per callback scope; the rest follow in another scope (after the
/// microtasks of this one). node's threadsafe functions dispatch at most 1,000 items per wake, so
/// that a flood does not starve the event loop's timers and I/O; fewer here keeps the first
/// answers of a batch from waiting for the last items of it.
const BATCH_LIMIT: usize = 32;

/// A scope also ends after this many items whose handler did not answer before returning (a Koatty
/// handler answers from a microtask, which runs when the scope closes), so that their answers do
/// not wait for 32 handlers' synchronous parts. Handlers that answer at once (bare ones, an echo)
/// still go 32 to a scope. `bench/ab` against one scope per item (c160425), 3 interleaved rounds:
/// Koatty app HTTP/1.1 +8–10 % req/s, WebSocket −1 to +6 % msgs/s; with 32 unanswered per scope
/// the WebSocket app lost 7 %, with 1 it lost 1–9 % (another turn of the event loop per item).
const UNANSWERED_LIMIT: usize = 8;

/// One request or event for JavaScript.
pub enum Crossing {
    Request(RequestArgs),
    Event(EventArgs),
}

struct Queue {
    items: VecDeque<Crossing>,
    /// A wake is on its way to the JS thread: pushes until it takes the queue need no other.
    woken: bool,
}

/// node's threadsafe function (the wake). Its calls and its release may come from any thread.
struct Wake(sys::napi_threadsafe_function);

// SAFETY: node's threadsafe-function calls are made to be called from any thread; the JS-thread
// only ones (ref/unref) are made from the JS thread (`Delivery::set_referenced` takes its `Env`).
unsafe impl Send for Wake {}
unsafe impl Sync for Wake {}

pub struct Delivery {
    queue: Mutex<Queue>,
    /// `None` once released (the server stopped) or finalized by node (its environment is gone):
    /// no call may reach node's threadsafe function after that.
    wake: RwLock<Option<Wake>>,
    on_request: FunctionRef<RequestArgs, ()>,
    on_event: FunctionRef<EventArgs, ()>,
}

impl Delivery {
    /// On the JS thread: a delivery to these two functions, which keeps the event loop alive until
    /// [`Delivery::release`] (or [`Delivery::set_referenced`] `false`).
    pub fn new(
        env: &Env,
        on_request: FunctionRef<RequestArgs, ()>,
        on_event: FunctionRef<EventArgs, ()>,
    ) -> Result<Arc<Self>> {
        let delivery = Arc::new(Delivery {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                woken: false,
            }),
            wake: RwLock::new(None),
            on_request,
            on_event,
        });
        let name = env.create_string("koatty_serve")?;
        // node holds this reference until it finalizes the threadsafe function (`finalize`).
        let context = Arc::into_raw(delivery.clone()) as *mut c_void;
        let mut wake = ptr::null_mut();
        // SAFETY: on the JS thread with its env; `context` stays valid until `finalize` runs.
        let status = unsafe {
            sys::napi_create_threadsafe_function(
                env.raw(),
                ptr::null_mut(),
                ptr::null_mut(),
                name.raw(),
                0,
                1,
                context,
                Some(finalize),
                context,
                Some(deliver),
                &mut wake,
            )
        };
        if status != sys::Status::napi_ok {
            // SAFETY: node did not take it.
            drop(unsafe { Arc::from_raw(context as *const Delivery) });
            return Err(Error::new(
                Status::from(status),
                "could not create the threadsafe function".to_owned(),
            ));
        }
        *write(&delivery.wake) = Some(Wake(wake));
        Ok(delivery)
    }

    /// The queue, whether or not a panic poisoned its lock (its state is whole between pushes).
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From any thread: queues `item` and wakes the JS thread unless a wake is on its way.
    /// `false` when released: the item is dropped (a request's responder with it).
    pub fn send(&self, item: Crossing) -> bool {
        let wake = {
            let mut queue = self.lock_queue();
            queue.items.push_back(item);
            !std::mem::replace(&mut queue.woken, true)
        };
        if !wake || self.wake_js() {
            return true;
        }
        // Released: nothing will take the queue. Dropped outside the lock.
        let dropped = {
            let mut queue = self.lock_queue();
            queue.woken = false;
            std::mem::take(&mut queue.items)
        };
        drop(dropped);
        false
    }

    fn wake_js(&self) -> bool {
        let wake = read(&self.wake);
        let Some(Wake(wake)) = wake.as_ref() else {
            return false;
        };
        // SAFETY: not released or finalized while the read guard is held.
        unsafe {
            sys::napi_call_threadsafe_function(
                *wake,
                ptr::null_mut(),
                sys::ThreadsafeFunctionCallMode::nonblocking,
            ) == sys::Status::napi_ok
        }
    }

    /// On the JS thread: whether waiting for requests keeps the event loop alive.
    pub fn set_referenced(&self, env: &Env, referenced: bool) {
        if let Some(Wake(wake)) = read(&self.wake).as_ref() {
            // SAFETY: on the JS thread, the function not released (read guard held).
            unsafe {
                if referenced {
                    sys::napi_ref_threadsafe_function(env.raw(), *wake);
                } else {
                    sys::napi_unref_threadsafe_function(env.raw(), *wake);
                }
            }
        }
    }

    /// No more wakes: what is queued is still delivered (the wake on its way is), then node
    /// finalizes the threadsafe function and the event loop may end.
    pub fn release(&self) {
        if let Some(Wake(wake)) = write(&self.wake).take() {
            // SAFETY: taken out under the write lock: no call is in progress or can follow.
            unsafe {
                sys::napi_release_threadsafe_function(
                    wake,
                    sys::ThreadsafeFunctionReleaseMode::release,
                );
            }
        }
    }

    /// On the JS thread, for a wake: the queued crossings, a scope's worth (the rest in another).
    fn deliver(&self, env: sys::napi_env) {
        // SAFETY: called by node on the JS thread with its env.
        let js_env = Env::from_raw(env);
        let (Ok(on_request), Ok(on_event)) = (
            self.on_request.borrow_back(&js_env),
            self.on_event.borrow_back(&js_env),
        ) else {
            // The environment is going away: nothing can be delivered any more.
            self.lock_queue().woken = false;
            return;
        };
        let mut delivered = 0;
        let mut unanswered = 0;
        loop {
            // `woken` stays set while this runs: what arrives meanwhile is taken by this loop, not
            // by another wake (as node's threadsafe functions keep dispatching what arrives).
            let item = {
                let mut queue = self.lock_queue();
                if queue.items.is_empty() {
                    queue.woken = false;
                    return;
                }
                if delivered >= BATCH_LIMIT || unanswered >= UNANSWERED_LIMIT {
                    drop(queue);
                    // The rest in another scope, after this one's microtasks: a wake of its own,
                    // taken on the event loop's next turn. Released, there is no other: now.
                    if self.wake_js() {
                        return;
                    }
                    delivered = 0;
                    unanswered = 0;
                    continue;
                }
                queue.items.pop_front()
            };
            let Some(item) = item else { continue };
            delivered += 1;
            let answers_before = answers_made();
            let mut scope = ptr::null_mut();
            // SAFETY: JS thread; each item's values live in a scope of their own.
            unsafe { sys::napi_open_handle_scope(env, &mut scope) };
            let (called, awaits_answer) = match item {
                Crossing::Request(args) => (on_request.call(args), true),
                Crossing::Event(args) => {
                    let awaits_answer = args.awaits_answer();
                    (on_event.call(args), awaits_answer)
                }
            };
            if let Err(err) = called {
                // As a threadsafe function's call does: the throw is uncaught.
                // SAFETY: JS thread; the exception was cleared when `call` returned it.
                unsafe {
                    sys::napi_fatal_exception(env, JsError::from(err).into_value(env));
                }
            }
            // SAFETY: the scope opened above.
            unsafe { sys::napi_close_handle_scope(env, scope) };
            if awaits_answer && answers_made() == answers_before {
                unanswered += 1;
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// node's `call_js_cb`. `env` is null while node tears the environment down: nothing runs then
/// (what is queued is dropped with the delivery).
unsafe extern "C" fn deliver(
    env: sys::napi_env,
    _js_callback: sys::napi_value,
    context: *mut c_void,
    _data: *mut c_void,
) {
    if env.is_null() || context.is_null() {
        return;
    }
    // SAFETY: `context` is the delivery `new` leaked for node, valid until `finalize`. A panic
    // must not unwind into node.
    let delivery = unsafe { &*(context as *const Delivery) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| delivery.deliver(env))).is_err() {
        // The batch in hand is lost (its requests wait for their deadline, as any the handler
        // never answers); what is still queued gets a wake of its own, or it would wait forever.
        let pending = {
            let mut queue = delivery.lock_queue();
            queue.woken = !queue.items.is_empty();
            queue.woken
        };
        if pending && !delivery.wake_js() {
            delivery.lock_queue().woken = false;
        }
    }
}

/// node is done with the threadsafe function (released and drained, or its environment gone).
unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: the reference `new` leaked for node, given back once.
    let delivery = unsafe { Arc::from_raw(data as *const Delivery) };
    *write(&delivery.wake) = None;
}
