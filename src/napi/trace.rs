//! Native trace mode's access lines (js/tracer.js).

use koatty_serve_core::trace;
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Native trace mode's access line (koatty-trace.md §2.11.1), formatted as koatty_logger's winston
/// Console transport would and written to fd 1 in one `write(2)`, from the JavaScript thread at
/// the moment koatty_trace would write it (so lines stay in order with those JavaScript writes).
/// `endTime` and the timestamp are now. Returns `null` when all was written, else the bytes left
/// (fd 1 would block), for JavaScript to queue on its stdout stream. Throws
/// `ERR_TRACE_LOCAL_TIME` where the platform gives no local time (see `traceLocalOffset`).
#[napi]
pub fn trace_access_line(
    failed: bool,
    action: String,
    status: i32,
    start_ms: f64,
    request_id: String,
    path: String,
) -> Result<Option<Buffer>, &'static str> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now = trace::local_time(now_ms).ok_or_else(|| {
        napi::Error::new(
            "ERR_TRACE_LOCAL_TIME",
            "ERR_TRACE_LOCAL_TIME: no local time on this platform",
        )
    })?;
    let line = trace::AccessLine {
        failed,
        action: &action,
        status: status.into(),
        start_ms: start_ms as i64,
        request_id: &request_id,
        end_ms: now_ms,
        path: &path,
    };
    let mut out = String::with_capacity(256);
    trace::push_access_line(&mut out, &line, &now, "\n");
    let written = trace::write_stdout(out.as_bytes());
    Ok((written < out.len()).then(|| Buffer::from(&out.as_bytes()[written..])))
}

/// Minutes east of UTC at `unixMs` in this process's time zone as the native access lines see it,
/// or `null` where they cannot (the JS tracer then formats lines itself).
#[napi]
pub fn trace_local_offset(unix_ms: f64) -> Option<i32> {
    trace::local_time(unix_ms as i64).map(|t| t.offset_minutes)
}
