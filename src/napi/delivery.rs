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
//! The wake is a libuv async handle of its own ([`super::uv`]), not a threadsafe function: node's
//! holds its mutex across the wake, and the JS thread it wakes then sleeps on that mutex.
//!
//! An I/O thread holds the wake it owes until it parks, up to [`HELD_LIMIT`] items and
//! [`HOLD_LIMIT`]: a wake made at once let the JS thread, woken on the same CPU, preempt the I/O
//! thread inside its `write` to the eventfd, take the one item and sleep again, so under the
//! WebSocket echo load every batch was one message. What one round of ready connections brings
//! now crosses in one batch. At concurrency 1 the thread parks right after its one item: no wait.
//!
//! One queue also keeps an event behind the request it belongs to (two threadsafe functions did
//! not: `js/bridge.js` held events that overtook their request).

use super::answers::answers_made;
use super::uv::{AsyncHandle, UvHandle};
use super::wire::{EventArgs, RequestArgs, StagingArea};
use napi::bindgen_prelude::*;
use napi::sys;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// At most this many crossings per callback scope; the rest follow in another scope (after the
/// microtasks of this one). Fewer than node's 1,000 per wake of a threadsafe function keeps the
/// first answers of a batch from waiting for the last items of it.
const BATCH_LIMIT: usize = 32;

/// A scope also ends after this many items whose handler did not answer before returning (a Koatty
/// handler answers from a microtask, which runs when the scope closes), so that their answers do
/// not wait for 32 handlers' synchronous parts. Handlers that answer at once (bare ones, an echo)
/// still go 32 to a scope. `bench/ab` against one scope per item (c160425), 3 interleaved rounds:
/// Koatty app HTTP/1.1 +8–10 % req/s, WebSocket −1 to +6 % msgs/s; with 32 unanswered per scope
/// the WebSocket app lost 7 %, with 1 it lost 1–9 % (another turn of the event loop per item).
const UNANSWERED_LIMIT: usize = 8;

/// At most this many crossings per wake; the rest after a turn of the event loop, so that a flood
/// does not starve its timers and I/O (node's threadsafe functions stop at 1,000 per wake too).
const TURN_LIMIT: usize = 1024;

/// A wake held by an I/O thread is made once this many crossings wait for it, so that the JS
/// thread starts on a long round while the I/O thread reads the rest of it.
const HELD_LIMIT: usize = 8;

/// How long a held wake waits for its thread to park before a timer makes it (`bound_held_wakes`).
const HOLD_LIMIT: Duration = Duration::from_millis(1);

/// One request or event for JavaScript.
pub enum Crossing {
    Request(RequestArgs),
    Event(EventArgs),
}

struct Queue {
    items: VecDeque<Crossing>,
    /// A wake is on its way to the JS thread: pushes until it takes the queue need no other.
    woken: bool,
    /// That wake is still held by the I/O thread that owes it (`HOLDING`).
    held: bool,
}

/// The JS thread's `napi_env`, kept for the handle's callbacks (which node calls without one).
struct JsEnv(sys::napi_env);

// SAFETY: only used on the JS thread (in the handle's callbacks and the env's cleanup hook).
unsafe impl Send for JsEnv {}
unsafe impl Sync for JsEnv {}

pub struct Delivery {
    queue: Mutex<Queue>,
    /// The wake, for any thread; `None` once released (the server stopped) or closed: no send may
    /// reach the handle after that.
    wake: RwLock<Option<AsyncHandle>>,
    /// The same handle, for the JS thread, until it closes it.
    handle: AsyncHandle,
    /// Released: the next wake delivers what is queued, then closes the handle.
    released: AtomicBool,
    /// JS thread: the handle is closing (once).
    closed: AtomicBool,
    env: JsEnv,
    /// The async resource every callback scope runs under (as a threadsafe function's own).
    async_context: AtomicPtr<sys::napi_async_context__>,
    on_request: FunctionRef<RequestArgs, ()>,
    on_event: FunctionRef<EventArgs, ()>,
    /// Where small chunks cross (`StagingArea`).
    staging: Arc<StagingArea>,
    /// node's `server.ref()`/`unref()`: whether the listening server keeps the event loop alive.
    server_referenced: AtomicBool,
    /// Whether any connection is open: it keeps the event loop alive either way, as each socket
    /// does in node (`follow_connections`).
    connections_open: AtomicBool,
    /// `connections_open` changed: the JS thread applies it at its next wake.
    reference_changed: AtomicBool,
    /// Starts the time bound of a held wake (`bound_held_wakes`), once per bound.
    hold_bound: Arc<Notify>,
    hold_bound_armed: AtomicBool,
}

impl Delivery {
    /// On the JS thread: a delivery to these two functions, which keeps the event loop alive until
    /// [`Delivery::release`] (or [`Delivery::set_referenced`] `false`).
    pub fn new(
        env: &Env,
        on_request: FunctionRef<RequestArgs, ()>,
        on_event: FunctionRef<EventArgs, ()>,
        staging: Arc<StagingArea>,
        connections_open: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Self>> {
        let raw_env = env.raw();
        let name = env.create_string("koatty_serve")?;
        let mut async_context = ptr::null_mut();
        let mut event_loop = ptr::null_mut();
        // SAFETY: on the JS thread with its env.
        unsafe {
            check(sys::napi_async_init(
                raw_env,
                ptr::null_mut(),
                name.raw(),
                &mut async_context,
            ))?;
            if let Err(err) = check(sys::napi_get_uv_event_loop(raw_env, &mut event_loop)) {
                sys::napi_async_destroy(raw_env, async_context);
                return Err(err);
            }
        }
        // SAFETY: node's loop of this thread.
        let Some(handle) = (unsafe { AsyncHandle::open(event_loop, on_wake) }) else {
            // SAFETY: made above on this thread.
            unsafe { sys::napi_async_destroy(raw_env, async_context) };
            return Err(Error::new(
                Status::GenericFailure,
                "could not open a libuv async handle on node's event loop".to_owned(),
            ));
        };
        let delivery = Arc::new(Delivery {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                woken: false,
                held: false,
            }),
            wake: RwLock::new(Some(handle)),
            handle,
            released: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            env: JsEnv(raw_env),
            async_context: AtomicPtr::new(async_context),
            on_request,
            on_event,
            staging,
            server_referenced: AtomicBool::new(true),
            connections_open: AtomicBool::new(false),
            reference_changed: AtomicBool::new(false),
            hold_bound: Arc::new(Notify::new()),
            hold_bound_armed: AtomicBool::new(false),
        });
        napi::bindgen_prelude::spawn(bound_held_wakes(
            Arc::downgrade(&delivery),
            delivery.hold_bound.clone(),
        ));
        napi::bindgen_prelude::spawn(follow_connections(
            Arc::downgrade(&delivery),
            connections_open,
        ));
        // The handle's data: one reference to the delivery, given back when it has closed.
        let data = Arc::into_raw(delivery.clone()) as *mut c_void;
        handle.set_data(data);
        // SAFETY: on the JS thread; the hook is removed when the handle closes first.
        unsafe {
            sys::napi_add_env_cleanup_hook(raw_env, Some(env_cleanup), data);
        }
        Ok(delivery)
    }

    /// The queue, whether or not a panic poisoned its lock (its state is whole between pushes).
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From any thread: queues `item` and wakes the JS thread unless a wake is on its way.
    /// `false` when released: the item is dropped (a request's responder with it).
    pub fn send(self: &Arc<Self>, item: Crossing) -> bool {
        let wake = {
            let mut queue = self.lock_queue();
            queue.items.push_back(item);
            if !queue.woken {
                queue.woken = true;
                if HOLDING.get() {
                    queue.held = true;
                    drop(queue);
                    self.hold();
                    return true;
                }
                true
            } else if queue.held && queue.items.len() >= HELD_LIMIT {
                queue.held = false;
                true
            } else {
                false
            }
        };
        !wake || self.wake_or_drop()
    }

    /// On an I/O thread: the wake just owed is made when this thread parks (or by the time bound).
    fn hold(self: &Arc<Self>) {
        HELD.with_borrow_mut(|held| {
            if !held.iter().any(|d| Arc::ptr_eq(d, self)) {
                held.push(self.clone());
            }
        });
        if !self.hold_bound_armed.swap(true, Ordering::AcqRel) {
            self.hold_bound.notify_one();
        }
    }

    /// Makes the held wake, if there is one.
    fn release_held(&self) {
        if std::mem::replace(&mut self.lock_queue().held, false) {
            self.wake_or_drop();
        }
    }

    fn wake_or_drop(&self) -> bool {
        if self.wake_js() {
            return true;
        }
        // Released: nothing will take the queue.
        self.drop_queued();
        false
    }

    /// Nothing will take the queue any more: what it holds is dropped (outside the lock, as a
    /// request's responder may run code when dropped).
    fn drop_queued(&self) {
        let dropped = {
            let mut queue = self.lock_queue();
            queue.woken = false;
            std::mem::take(&mut queue.items)
        };
        drop(dropped);
    }

    fn wake_js(&self) -> bool {
        // The read guard keeps the handle from closing during the send.
        read(&self.wake).is_some_and(|wake| wake.send())
    }

    /// On the JS thread: whether the listening server keeps the event loop alive (node's
    /// `server.ref()`/`unref()`); open connections keep it alive either way.
    pub fn set_referenced(&self, _env: &Env, referenced: bool) {
        self.server_referenced.store(referenced, Ordering::Release);
        self.apply_reference();
    }

    /// On the JS thread: refs the handle while the server is referenced or a connection is open.
    fn apply_reference(&self) {
        if !self.closed.load(Ordering::Acquire) {
            self.handle.set_referenced(
                self.server_referenced.load(Ordering::Acquire)
                    || self.connections_open.load(Ordering::Acquire),
            );
        }
    }

    /// From any thread: the first connection opened or the last closed; the JS thread applies it.
    fn connections_changed(&self, open: bool) {
        self.connections_open.store(open, Ordering::Release);
        self.reference_changed.store(true, Ordering::Release);
        self.wake_js();
    }

    /// From any thread: no more wakes. What is queued is still delivered (by a last wake), then
    /// the handle closes and the event loop may end.
    pub fn release(&self) {
        let mut wake = write(&self.wake);
        if let Some(handle) = wake.take() {
            self.released.store(true, Ordering::Release);
            handle.send();
        }
    }

    /// On the JS thread, once: closes the handle (its reference to the delivery is given back in
    /// `on_closed`); what is still queued is dropped. `in_cleanup_hook`: node is tearing the
    /// environment down and runs the hook itself.
    fn close(&self, in_cleanup_hook: bool) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // No send from another thread may reach the handle from here on.
        write(&self.wake).take();
        let env = self.env.0;
        let async_context = self.async_context.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: on the JS thread with its env (still whole in its cleanup hooks).
        unsafe {
            if !async_context.is_null() {
                sys::napi_async_destroy(env, async_context);
            }
            if !in_cleanup_hook {
                sys::napi_remove_env_cleanup_hook(env, Some(env_cleanup), self.data());
            }
        }
        self.drop_queued();
        self.hold_bound.notify_one();
        self.handle.close(on_closed);
    }

    /// The handle's data (and the cleanup hook's argument): this delivery.
    fn data(&self) -> *mut c_void {
        self as *const Delivery as *mut c_void
    }

    /// On the JS thread, for a wake: the queued crossings, in callback scopes of a batch each, up to
    /// [`TURN_LIMIT`] (the rest on the loop's next turn).
    fn deliver(&self) {
        let env = self.env.0;
        // SAFETY: the JS thread, in a callback of its event loop.
        let js_env = Env::from_raw(env);
        let _handles = HandleScope::open(env);
        let (Ok(on_request), Ok(on_event)) = (
            self.on_request.borrow_back(&js_env),
            self.on_event.borrow_back(&js_env),
        ) else {
            // The environment is going away: nothing can be delivered any more.
            self.lock_queue().woken = false;
            return;
        };
        let async_context = self.async_context.load(Ordering::Acquire);
        let mut turn = 0;
        loop {
            let _scope = CallbackScope::open(env, async_context);
            let mut delivered = 0;
            let mut unanswered = 0;
            loop {
                // `woken` stays set while this runs: what arrives meanwhile is taken by this loop,
                // not by another wake (as node's threadsafe functions keep dispatching what arrives).
                let item = {
                    let mut queue = self.lock_queue();
                    if queue.items.is_empty() {
                        queue.woken = false;
                        queue.held = false;
                        return;
                    }
                    if delivered >= BATCH_LIMIT || unanswered >= UNANSWERED_LIMIT {
                        break;
                    }
                    queue.items.pop_front()
                };
                let Some(item) = item else { continue };
                delivered += 1;
                let answers_before = answers_made();
                let _values = HandleScope::open(env);
                let (called, awaits_answer) = match item {
                    Crossing::Request(args) => {
                        (self.staging.with_staging(|| on_request.call(args)), true)
                    }
                    Crossing::Event(args) => {
                        let awaits_answer = args.awaits_answer();
                        (
                            self.staging.with_staging(|| on_event.call(args)),
                            awaits_answer,
                        )
                    }
                };
                if let Err(err) = called {
                    // As a threadsafe function's call does: the throw is uncaught.
                    // SAFETY: JS thread; the exception was cleared when `call` returned it.
                    unsafe {
                        sys::napi_fatal_exception(env, JsError::from(err).into_value(env));
                    }
                }
                if awaits_answer && answers_made() == answers_before {
                    unanswered += 1;
                }
            }
            // The rest in another scope, after this one's microtasks (`_scope` closes here).
            turn += delivered;
            if turn >= TURN_LIMIT {
                // A wake of its own, on the loop's next turn (`woken` stays set).
                self.handle.send();
                return;
            }
        }
    }
}

thread_local! {
    /// This thread is one of the runtime's workers (it has parked once): its wakes of the JS
    /// thread wait until it parks, so that what it reads in one round of its ready connections
    /// reaches JavaScript in one batch.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    /// The deliveries this thread may owe a wake to.
    static HELD: RefCell<Vec<Arc<Delivery>>> = const { RefCell::new(Vec::new()) };
}

/// The runtime's `on_thread_park`: a worker about to sleep makes the wakes it held.
pub fn on_io_thread_park() {
    HOLDING.set(true);
    for delivery in HELD.take() {
        delivery.release_held();
    }
}

/// Bounds how long a held wake may wait when its thread stays busy without parking: about
/// [`HOLD_LIMIT`], or longer when that thread's tasks each take long, since the runtime looks at
/// its timers every 61 tasks (a storm of TLS handshakes, ≈ 1 ms of CPU each, held a request's
/// wake for tens of ms; its answer then waited as long behind them, as before holding).
async fn bound_held_wakes(delivery: Weak<Delivery>, armed: Arc<Notify>) {
    loop {
        armed.notified().await;
        tokio::time::sleep(HOLD_LIMIT).await;
        let Some(delivery) = delivery.upgrade() else {
            return;
        };
        delivery.hold_bound_armed.store(false, Ordering::Release);
        delivery.release_held();
        if delivery.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        // Its time bound's task ends.
        self.hold_bound.notify_one();
    }
}

/// Tells the delivery when the first connection opens and the last closes, until it closes.
async fn follow_connections(
    delivery: Weak<Delivery>,
    mut open: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = *open.borrow_and_update();
        match delivery.upgrade() {
            Some(delivery) if !delivery.closed.load(Ordering::Acquire) => {
                delivery.connections_changed(now)
            }
            _ => return,
        }
        if open.changed().await.is_err() {
            return;
        }
    }
}

/// A napi handle scope, closed when dropped (also when a panic unwinds through it).
struct HandleScope(sys::napi_env, sys::napi_handle_scope);

impl HandleScope {
    fn open(env: sys::napi_env) -> Self {
        let mut scope = ptr::null_mut();
        // SAFETY: on the JS thread with its env.
        unsafe { sys::napi_open_handle_scope(env, &mut scope) };
        HandleScope(env, scope)
    }
}

impl Drop for HandleScope {
    fn drop(&mut self) {
        if !self.1.is_null() {
            // SAFETY: opened in `open`, closed once, innermost first (drop order).
            unsafe { sys::napi_close_handle_scope(self.0, self.1) };
        }
    }
}

/// A callback scope under the delivery's async resource: its close runs the tick queue and the
/// microtasks, as node does after each callback from its event loop.
struct CallbackScope(sys::napi_env, sys::napi_callback_scope);

impl CallbackScope {
    fn open(env: sys::napi_env, async_context: sys::napi_async_context) -> Self {
        let mut scope = ptr::null_mut();
        if !async_context.is_null() {
            // SAFETY: on the JS thread with its env; the context lives until the handle closes.
            unsafe {
                sys::napi_open_callback_scope(env, ptr::null_mut(), async_context, &mut scope)
            };
        }
        CallbackScope(env, scope)
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        if !self.1.is_null() {
            // SAFETY: opened in `open`, closed once.
            unsafe { sys::napi_close_callback_scope(self.0, self.1) };
        }
    }
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(
            Status::from(status),
            "could not set up the delivery to JavaScript".to_owned(),
        ))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The handle's callback, on the JS thread after one or more wakes.
unsafe extern "C" fn on_wake(handle: *mut UvHandle) {
    // SAFETY: the data `new` set: a reference to the delivery, held until `on_closed`.
    let delivery = unsafe { &*(AsyncHandle::data(handle) as *const Delivery) };
    if delivery.closed.load(Ordering::Acquire) {
        return;
    }
    // A plain load first: every wake passes here, and the flag is rarely set.
    if delivery.reference_changed.load(Ordering::Acquire)
        && delivery.reference_changed.swap(false, Ordering::AcqRel)
    {
        delivery.apply_reference();
    }
    // A panic must not unwind into libuv.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| delivery.deliver())).is_err() {
        // The batch in hand is lost (its requests wait for their deadline, as any the handler
        // never answers); what is still queued gets a wake of its own, or it would wait forever.
        let pending = {
            let mut queue = delivery.lock_queue();
            queue.woken = !queue.items.is_empty();
            queue.woken
        };
        if pending {
            delivery.handle.send();
        }
    }
    if delivery.released.load(Ordering::Acquire) && !delivery.lock_queue().woken {
        delivery.close(false);
    }
}

/// The handle has closed: its memory and its reference to the delivery are given back.
unsafe extern "C" fn on_closed(handle: *mut UvHandle) {
    // SAFETY: the reference `new` leaked for the handle, given back once, then the handle's memory.
    unsafe {
        drop(Arc::from_raw(AsyncHandle::data(handle) as *const Delivery));
        AsyncHandle::free(handle);
    }
}

/// node tears the environment down (the process exits, or a worker thread ends): the handle must
/// close before node closes the loop.
unsafe extern "C" fn env_cleanup(data: *mut c_void) {
    // SAFETY: the handle's data, still open (a close removes this hook first).
    let delivery = unsafe { &*(data as *const Delivery) };
    delivery.close(true);
}
