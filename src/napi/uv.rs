//! The libuv async handle the delivery wakes the JS thread with: node's own libuv, the one its
//! event loop runs on (`napi_get_uv_event_loop`).
//!
//! A threadsafe function wraps the same handle, but its `napi_call_threadsafe_function` holds
//! node's queue mutex across `uv_async_send`. The JS thread, woken by that send, then takes the
//! mutex while the waking thread is still inside the send's system call: it sleeps on the mutex and
//! needs a second wake-up when the mutex is let go. `perf` of the WebSocket echo (`ws-load -c 64`)
//! saw this on every crossing: 12.6 % of the JS thread asleep in that `futex` wait, and 15 % of the
//! I/O thread switched out inside the send. `uv_async_send` alone takes no lock.
//!
//! The symbols come from the node process, as napi-sys takes Node-API's: linked against the host
//! on Unix, looked up in it on Windows.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

#[repr(C)]
pub struct UvHandle {
    _private: [u8; 0],
}

pub type UvLoop = napi::sys::uv_loop_s;
pub type AsyncCallback = unsafe extern "C" fn(handle: *mut UvHandle);
pub type CloseCallback = unsafe extern "C" fn(handle: *mut UvHandle);

/// `UV_ASYNC` in libuv's `uv_handle_type` (first of `UV_HANDLE_TYPE_MAP`, after `UV_UNKNOWN_HANDLE`).
const UV_ASYNC: c_int = 1;
/// libuv's handles hold pointers and, on Windows, 64-bit fields: this covers both.
const HANDLE_ALIGN: usize = 16;

struct Api {
    handle_size: unsafe extern "C" fn(kind: c_int) -> usize,
    async_init: unsafe extern "C" fn(*mut UvLoop, *mut UvHandle, AsyncCallback) -> c_int,
    async_send: unsafe extern "C" fn(*mut UvHandle) -> c_int,
    close: unsafe extern "C" fn(*mut UvHandle, Option<CloseCallback>),
    ref_: unsafe extern "C" fn(*mut UvHandle),
    unref: unsafe extern "C" fn(*mut UvHandle),
    handle_get_data: unsafe extern "C" fn(*const UvHandle) -> *mut c_void,
    handle_set_data: unsafe extern "C" fn(*mut UvHandle, *mut c_void),
}

#[cfg(not(windows))]
mod host {
    use super::*;

    extern "C" {
        fn uv_handle_size(kind: c_int) -> usize;
        fn uv_async_init(loop_: *mut UvLoop, handle: *mut UvHandle, cb: AsyncCallback) -> c_int;
        fn uv_async_send(handle: *mut UvHandle) -> c_int;
        fn uv_close(handle: *mut UvHandle, cb: Option<CloseCallback>);
        fn uv_ref(handle: *mut UvHandle);
        fn uv_unref(handle: *mut UvHandle);
        fn uv_handle_get_data(handle: *const UvHandle) -> *mut c_void;
        fn uv_handle_set_data(handle: *mut UvHandle, data: *mut c_void);
    }

    pub(super) fn load() -> Option<Api> {
        Some(Api {
            handle_size: uv_handle_size,
            async_init: uv_async_init,
            async_send: uv_async_send,
            close: uv_close,
            ref_: uv_ref,
            unref: uv_unref,
            handle_get_data: uv_handle_get_data,
            handle_set_data: uv_handle_set_data,
        })
    }
}

#[cfg(windows)]
mod host {
    use super::*;

    pub(super) fn load() -> Option<Api> {
        let this = libloading::os::windows::Library::this().ok()?;
        // SAFETY: libuv's exports from the node executable, with the signatures declared in `Api`;
        // the executable stays loaded for the life of the process.
        unsafe {
            macro_rules! symbol {
                ($name:literal) => {
                    *this.get(concat!($name, "\0").as_bytes()).ok()?
                };
            }
            let api = Api {
                handle_size: symbol!("uv_handle_size"),
                async_init: symbol!("uv_async_init"),
                async_send: symbol!("uv_async_send"),
                close: symbol!("uv_close"),
                ref_: symbol!("uv_ref"),
                unref: symbol!("uv_unref"),
                handle_get_data: symbol!("uv_handle_get_data"),
                handle_set_data: symbol!("uv_handle_set_data"),
            };
            std::mem::forget(this);
            Some(api)
        }
    }
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(host::load).as_ref()
}

/// An open `uv_async_t` on node's event loop. Its `send` may be called from any thread until it is
/// closed; everything else only on the loop's thread.
#[derive(Clone, Copy)]
pub struct AsyncHandle(*mut UvHandle);

// SAFETY: `uv_async_send` is made to be called from any thread; the other calls are documented as
// JS-thread only, and their callers keep to that.
unsafe impl Send for AsyncHandle {}
unsafe impl Sync for AsyncHandle {}

fn layout(api: &Api) -> Layout {
    // SAFETY: a plain query of libuv.
    let size = unsafe { (api.handle_size)(UV_ASYNC) };
    Layout::from_size_align(size.max(1), HANDLE_ALIGN).expect("libuv handle size")
}

impl AsyncHandle {
    /// On the loop's thread: a handle that calls `callback` on that thread after any `send`.
    /// `None` if this process has no libuv to give one.
    ///
    /// # Safety
    /// `event_loop` is node's loop of the calling thread.
    pub unsafe fn open(event_loop: *mut UvLoop, callback: AsyncCallback) -> Option<Self> {
        let api = api()?;
        let layout = layout(api);
        // SAFETY: a non-zero size; freed in `free` with the same layout.
        let handle = unsafe { alloc_zeroed(layout) } as *mut UvHandle;
        if handle.is_null() {
            return None;
        }
        // SAFETY: memory of libuv's size for an async handle, on the loop's thread.
        unsafe {
            if (api.async_init)(event_loop, handle, callback) != 0 {
                dealloc(handle as *mut u8, layout);
                return None;
            }
        }
        Some(AsyncHandle(handle))
    }

    /// From any thread, until closed: the callback runs once more on the loop's thread (several
    /// sends before it runs make one call).
    pub fn send(self) -> bool {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: open (the caller's guarantee).
        unsafe { (api.async_send)(self.0) == 0 }
    }

    /// On the loop's thread: whether the handle keeps the loop alive.
    pub fn set_referenced(self, referenced: bool) {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: open, on the loop's thread.
        unsafe {
            if referenced {
                (api.ref_)(self.0)
            } else {
                (api.unref)(self.0)
            }
        }
    }

    /// On the loop's thread: what [`AsyncHandle::data`] returns in the handle's callbacks.
    pub fn set_data(self, data: *mut c_void) {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: open, on the loop's thread.
        unsafe { (api.handle_set_data)(self.0, data) }
    }

    /// The `data` last set, for a raw handle handed to a callback.
    ///
    /// # Safety
    /// `handle` is one this module opened and not yet freed.
    pub unsafe fn data(handle: *mut UvHandle) -> *mut c_void {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: the caller's guarantee.
        unsafe { (api.handle_get_data)(handle) }
    }

    /// On the loop's thread, once: closes the handle; `on_closed` runs on a later turn of the loop,
    /// and must [`AsyncHandle::free`] it. No `send` may follow.
    pub fn close(self, on_closed: CloseCallback) {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: open, on the loop's thread, closed once (the caller's guarantee).
        unsafe { (api.close)(self.0, Some(on_closed)) }
    }

    /// In the close callback: gives back the handle's memory.
    ///
    /// # Safety
    /// `handle` was opened here and its close callback is running.
    pub unsafe fn free(handle: *mut UvHandle) {
        let api = api().expect("an open handle has its libuv");
        // SAFETY: allocated in `open` with this layout.
        unsafe { dealloc(handle as *mut u8, layout(api)) }
    }
}
