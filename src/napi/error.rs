//! The one mapping from core errors to JavaScript: an `Error` whose `code` is the core's stable
//! code (`ServeError::code`) and whose message is the core's text. `#[napi]` functions return
//! `Result<T, Code>` (napi's `Result` with this status type) to throw it.

use koatty_serve_core::ServeError;

/// The `code` of a thrown JavaScript error.
pub type Code = &'static str;

pub fn js_error(e: ServeError) -> napi::Error<Code> {
    napi::Error::new(e.code(), e.to_string())
}
