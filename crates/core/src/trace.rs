//! Native trace mode's request-independent work (docs/TRACE.md, koatty-trace.md §2.3, §2.11):
//! the request id as koatty_trace 1.13.1 takes it (header, else query parameter, else a UUID v4),
//! and the access line's bytes as koatty_logger's winston Console transport writes them.
//!
//! The rules reproduce what the app's JavaScript would compute from the same request object, so an
//! id resolved here equals the one the JS tracer would have resolved. Anything outside the plain
//! cases (odd URLs that Node re-parses with `url.parse`, malformed percent escapes, ids that are no
//! valid header value) is left [`IdResolution::Unresolved`]: the JS tracer then runs its own rules,
//! including the errors they raise.

use crate::bridge::FlatHeaders;
use std::time::Duration;

/// What the tracer was configured with (koatty_core's mapping of the Koatty config, read at the
/// first `app.callback()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// `trace_header`, lower-cased: request headers arrive with lower-case names.
    header_key: String,
    /// `trace_id`: the query parameter (case-sensitive).
    id_name: String,
    /// `http_timeout`.
    pub timeout: Duration,
}

impl TraceSettings {
    pub fn new(header_name: &str, id_name: &str, timeout: Duration) -> TraceSettings {
        TraceSettings {
            header_key: header_name.to_ascii_lowercase(),
            id_name: id_name.to_owned(),
            timeout,
        }
    }
}

/// What native trace mode attaches to one request handed to JavaScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTrace {
    /// koatty_trace's request id: sent by the client or generated here; `Some("")` for a
    /// WebSocket upgrade without one (koatty_trace draws a new id per message, in JavaScript);
    /// `None` when the JavaScript tracer must decide (see the module documentation).
    pub id: Option<String>,
    /// The `http_timeout` timer runs natively for this request
    /// ([`crate::bridge::BridgeEvent::TraceTimeout`]).
    pub timer_armed: bool,
}

impl TraceSettings {
    /// The trace of a request with these flat headers and URL (`upgrade`: a WebSocket upgrade,
    /// whose id serves every message).
    pub fn request_trace(
        &self,
        headers: &FlatHeaders,
        url: &str,
        upgrade: bool,
        timer_armed: bool,
    ) -> RequestTrace {
        let id = match resolve_request_id(headers, url, self) {
            IdResolution::Sent(id) => Some(id),
            IdResolution::Absent if upgrade => Some(String::new()),
            IdResolution::Absent => uuid_v4(),
            IdResolution::Unresolved => None,
        };
        RequestTrace { id, timer_armed }
    }

    /// When koatty_trace's `http_timeout` fires for a request starting now, if before the
    /// request's own `deadline` (the later one never fires).
    pub fn timer_deadline(&self, deadline: tokio::time::Instant) -> Option<tokio::time::Instant> {
        if self.timeout.is_zero() {
            return None;
        }
        Some(tokio::time::Instant::now() + self.timeout).filter(|at| *at < deadline)
    }
}

/// The outcome of [`resolve_request_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdResolution {
    /// The client sent it (header or query parameter); a valid header value.
    Sent(String),
    /// The client sent none (the tracer generates one).
    Absent,
    /// Left to the JavaScript tracer (see the module documentation).
    Unresolved,
}

/// Headers for which Node's `IncomingMessage` does not join duplicates with `", "`.
const NODE_SPECIAL_HEADERS: &[&str] = &[
    "set-cookie",
    "cookie",
    "content-type",
    "content-length",
    "user-agent",
    "referer",
    "host",
    "authorization",
    "proxy-authorization",
    "if-modified-since",
    "if-unmodified-since",
    "from",
    "location",
    "max-forwards",
    "retry-after",
    "etag",
    "last-modified",
    "server",
    "age",
    "expires",
];

/// koatty_trace's id for an HTTP request or a WebSocket upgrade: the `trace_header` header
/// (duplicates joined as Node joins them), else the `trace_id` query parameter as Koa's
/// `ctx.query` gives it (repeated → `a,b`), else none.
/// `headers` is the flat `[name, value, …]` list handed to JavaScript (names lower-case).
pub fn resolve_request_id(
    headers: &FlatHeaders,
    url: &str,
    settings: &TraceSettings,
) -> IdResolution {
    let mut values = headers
        .pairs()
        .filter(|(name, _)| *name == settings.header_key)
        .map(|(_, value)| value);
    if let Some(first) = values.next() {
        let mut joined: Option<String> = None;
        for more in values {
            if NODE_SPECIAL_HEADERS.contains(&settings.header_key.as_str()) {
                return IdResolution::Unresolved;
            }
            let j = joined.get_or_insert_with(|| first.to_owned());
            j.push_str(", ");
            j.push_str(more);
        }
        let id = joined.unwrap_or_else(|| first.to_owned());
        if !id.is_empty() {
            return checked(id);
        }
    }
    match query_values(url, &settings.id_name) {
        QueryLookup::NoQuery => IdResolution::Absent,
        QueryLookup::Unparsable => IdResolution::Unresolved,
        QueryLookup::Values(values) => {
            // `${ctx.query[name] || ''}`: one value as is (an empty one counts as none), an array
            // stringified with ','.
            let id = values.join(",");
            if values.len() < 2 && id.is_empty() {
                IdResolution::Absent
            } else {
                checked(id)
            }
        }
    }
}

fn checked(id: String) -> IdResolution {
    if is_header_value(&id) {
        IdResolution::Sent(id)
    } else {
        IdResolution::Unresolved
    }
}

/// Node's `checkInvalidHeaderChar`: `\t`, 0x20–0x7E and 0x80–0xFF only.
pub fn is_header_value(s: &str) -> bool {
    s.chars()
        .all(|c| c == '\t' || (' '..='~').contains(&c) || ('\u{80}'..='\u{ff}').contains(&c))
}

enum QueryLookup {
    NoQuery,
    /// Node would not take its fast path (`parseurl` falls back to `url.parse`), or a value needs
    /// Node's lenient decoding: left to JavaScript.
    Unparsable,
    /// The decoded values of the parameter, in order (empty: not present).
    Values(Vec<String>),
}

/// The values of `name` in the query of `url`, as Koa's `ctx.query` (`parseurl` + Node's
/// `querystring.parse`) yields them.
fn query_values(url: &str, name: &str) -> QueryLookup {
    let Some(q) = url.find('?') else {
        return QueryLookup::NoQuery;
    };
    // parseurl's fast path: an origin-form path without whitespace, '#' or other odd characters.
    if !url.starts_with('/')
        || url[1..].chars().any(|c| {
            matches!(
                c,
                '\t' | '\n' | '\x0c' | '\r' | ' ' | '#' | '\u{a0}' | '\u{feff}'
            )
        })
        || !url.is_ascii()
    {
        return QueryLookup::Unparsable;
    }
    let query = &url[q + 1..];
    // querystring.parse stops after maxKeys (1000) pairs.
    if query.bytes().filter(|&b| b == b'&').count() >= 1000 {
        return QueryLookup::Unparsable;
    }
    let mut values = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(key) = qs_decode(key) else {
            return QueryLookup::Unparsable;
        };
        if key != name {
            continue;
        }
        match qs_decode(value) {
            Some(v) => values.push(v),
            None => return QueryLookup::Unparsable,
        }
    }
    QueryLookup::Values(values)
}

/// One key or value as `querystring.parse` decodes it: `+` is a space; percent escapes are decoded
/// with `decodeURIComponent` when at least one valid `%XX` is present. `None` when
/// `decodeURIComponent` would throw (Node then decodes leniently: left to JavaScript).
fn qs_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let has_escape = bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    if !has_escape {
        return Some(s.replace('+', " "));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// ------------------------------------------------------------------------------------------------
// UUID v4

/// A random (version 4) UUID in lower case, as `crypto.randomUUID()` gives (`uuid` with
/// `fast-rng`: a thread-local CSPRNG seeded from the system). Always `Some`; the `Option` stays
/// for the callers written when the system random source could fail here.
pub fn uuid_v4() -> Option<String> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Some(
        uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut buf)
            .to_owned(),
    )
}

// ------------------------------------------------------------------------------------------------
// Access lines

/// A local date and time, as JavaScript's `Date` getters give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1–12
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millisecond: u32,
    /// Minutes east of UTC (`-getTimezoneOffset()`).
    pub offset_minutes: i32,
}

/// Local time of `unix_ms` in the process's time zone (`TZ`, else the system zone), or `None`
/// where the platform offers no `localtime_r`.
pub fn local_time(unix_ms: i64) -> Option<LocalTime> {
    #[cfg(unix)]
    {
        let secs = unix_ms.div_euclid(1000);
        let millisecond = unix_ms.rem_euclid(1000) as u32;
        // time_t is narrower than i64 on some 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let t: libc::time_t = secs.try_into().ok()?;
        // SAFETY: localtime_r only writes the tm we own; a zeroed tm is a valid initial value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::localtime_r(&t, &mut tm) };
        if r.is_null() {
            return None;
        }
        Some(LocalTime {
            year: tm.tm_year + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec.min(59) as u32,
            millisecond,
            offset_minutes: (tm.tm_gmtoff / 60) as i32,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = unix_ms;
        None
    }
}

/// fecha's `YYYY-MM-DD HH:mm:ss.SSS Z` (koatty_logger's timestamp), e.g. `2026-11-24 09:18:56.617 -03:30`.
pub fn push_timestamp(out: &mut String, t: &LocalTime) {
    use std::fmt::Write;
    let sign = if t.offset_minutes < 0 { '-' } else { '+' };
    let off = t.offset_minutes.unsigned_abs();
    let _ = write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {sign}{:02}:{:02}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.millisecond,
        off / 60,
        off % 60
    );
}

/// The variable parts of koatty_trace's access line (§2.11.1); values are inserted unescaped, as
/// koatty_trace does.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// ERROR instead of INFO.
    pub failed: bool,
    pub action: &'a str,
    pub status: i64,
    pub start_ms: i64,
    pub request_id: &'a str,
    pub end_ms: i64,
    pub path: &'a str,
}

/// `[<timestamp>]  INFO {"action":…,"path":…}` + `eol`: what printf + util.format + the Console
/// transport write for `DefaultLogger.Info(line)`.
pub fn push_access_line(out: &mut String, line: &AccessLine<'_>, now: &LocalTime, eol: &str) {
    use std::fmt::Write;
    out.push('[');
    push_timestamp(out, now);
    out.push_str(if line.failed { "]  ERROR " } else { "]  INFO " });
    let _ = write!(
        out,
        "{{\"action\":\"{}\",\"status\":\"{}\",\"startTime\":\"{}\",\"duration\":\"{}\",\"requestId\":\"{}\",\"endTime\":\"{}\",\"path\":\"{}\"}}",
        line.action,
        line.status,
        line.start_ms,
        line.end_ms - line.start_ms,
        line.request_id,
        line.end_ms,
        line.path
    );
    out.push_str(eol);
}

/// Writes `data` to the process's standard output (fd 1) with as few `write(2)` calls as the
/// kernel allows (one for a line, unless the pipe is nearly full). Returns how many bytes were
/// written: fewer than `data.len()` when fd 1 would block (Node keeps it non-blocking) or failed;
/// the caller hands the rest to Node's own stream, which queues it in order.
pub fn write_stdout(data: &[u8]) -> usize {
    #[cfg(unix)]
    {
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            // SAFETY: writes from a live slice of the given length to fd 1.
            let n = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                done += n as usize;
            } else if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                break;
            }
        }
        done
    }
    #[cfg(not(unix))]
    {
        let _ = data;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TraceSettings {
        TraceSettings::new("X-Request-Id", "requestId", Duration::from_secs(10))
    }

    fn h(pairs: &[(&str, &str)]) -> FlatHeaders {
        pairs.iter().copied().collect()
    }

    fn sent(s: &str) -> IdResolution {
        IdResolution::Sent(s.to_owned())
    }

    #[test]
    fn header_wins_over_query_and_duplicates_join_as_node_joins_them() {
        let s = settings();
        let one = h(&[("x-request-id", "h-1")]);
        assert_eq!(resolve_request_id(&one, "/a?requestId=q", &s), sent("h-1"));
        let two = h(&[
            ("x-request-id", "a"),
            ("accept", "*/*"),
            ("x-request-id", "b"),
        ]);
        assert_eq!(resolve_request_id(&two, "/a", &s), sent("a, b"));
        // an empty header is no id: the query decides
        let empty = h(&[("x-request-id", "")]);
        assert_eq!(
            resolve_request_id(&empty, "/a?requestId=q-9", &s),
            sent("q-9")
        );
        // a custom trace_header is looked up lower-case
        let custom = TraceSettings::new("X-Trace-Id", "traceId", Duration::from_secs(1));
        let t = h(&[("x-trace-id", "t-1")]);
        assert_eq!(
            resolve_request_id(&t, "/a?traceId=t-2", &custom),
            sent("t-1")
        );
        assert_eq!(
            resolve_request_id(&FlatHeaders::default(), "/a?traceId=t-3", &custom),
            sent("t-3")
        );
        // duplicates of a header Node does not join: left to JavaScript
        let ua = TraceSettings::new("User-Agent", "requestId", Duration::from_secs(1));
        let dup = h(&[("user-agent", "a"), ("user-agent", "b")]);
        assert_eq!(resolve_request_id(&dup, "/", &ua), IdResolution::Unresolved);
    }

    #[test]
    fn query_follows_node_querystring() {
        let s = settings();
        let r = |url: &str| resolve_request_id(&FlatHeaders::default(), url, &s);
        assert_eq!(r("/td/str"), IdResolution::Absent);
        assert_eq!(r("/td/str?x=1"), IdResolution::Absent);
        assert_eq!(r("/td/str?requestId=q-123"), sent("q-123"));
        assert_eq!(r("/td/str?requestId=a&requestId=b"), sent("a,b"));
        assert_eq!(r("/td/str?requestId=&requestId="), sent(","));
        assert_eq!(r("/td/str?requestId="), IdResolution::Absent);
        assert_eq!(r("/td/str?requestId"), IdResolution::Absent);
        assert_eq!(r("/td/str?requestId=a+b%20c"), sent("a b c"));
        assert_eq!(r("/td/str?requestid=lower"), IdResolution::Absent);
        assert_eq!(r("/td/str?request%49d=enc"), sent("enc"));
        // latin1 range: a valid header value (sent as latin1 or UTF-8 by the response's body type)
        assert_eq!(r("/td/str?requestId=%C3%A9"), sent("é"));
        // no valid escape: taken as is
        assert_eq!(r("/td/str?requestId=50%"), sent("50%"));
        assert_eq!(r("/td/str?requestId=%zz"), sent("%zz"));
    }

    #[test]
    fn what_javascript_must_decide_is_left_unresolved() {
        let s = settings();
        let r = |url: &str| resolve_request_id(&FlatHeaders::default(), url, &s);
        // not a header value: koatty_trace's ctx.set throws (Koa's plain 500)
        assert_eq!(r("/td/str?requestId=a%0Ab"), IdResolution::Unresolved);
        assert_eq!(r("/td/str?requestId=%E4%B8%AD"), IdResolution::Unresolved);
        // decodeURIComponent would throw: Node decodes leniently
        assert_eq!(r("/td/str?requestId=%41%"), IdResolution::Unresolved);
        assert_eq!(r("/td/str?requestId=%E9"), IdResolution::Unresolved);
        // parseurl leaves its fast path
        assert_eq!(r("/td/str?requestId=a#frag"), IdResolution::Unresolved);
        assert_eq!(r("http://h/td?requestId=a"), IdResolution::Unresolved);
        let many = format!("/x?{}requestId=z", "a=1&".repeat(1000));
        assert_eq!(r(&many), IdResolution::Unresolved);
        let ctl = h(&[("x-request-id", "a\u{1}b")]);
        assert_eq!(resolve_request_id(&ctl, "/", &s), IdResolution::Unresolved);
        let wide = h(&[("x-request-id", "\u{fffd}")]);
        assert_eq!(resolve_request_id(&wide, "/", &s), IdResolution::Unresolved);
    }

    #[test]
    fn header_value_check_is_nodes() {
        assert!(is_header_value("abc\t~ é\u{ff}\u{80}"));
        for bad in ["a\nb", "\u{7f}", "\u{100}", "中", "\u{0}"] {
            assert!(!is_header_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn uuids_are_lower_case_v4_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let u = uuid_v4().expect("always Some");
            assert_eq!(u.len(), 36);
            let b = u.as_bytes();
            assert_eq!((b[8], b[13], b[18], b[23]), (b'-', b'-', b'-', b'-'));
            assert_eq!(b[14], b'4', "{u}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{u}");
            assert!(u
                .chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn timestamps_are_fechas() {
        let t = |offset_minutes| LocalTime {
            year: 2026,
            month: 1,
            day: 4,
            hour: 9,
            minute: 8,
            second: 7,
            millisecond: 6,
            offset_minutes,
        };
        let f = |lt: LocalTime| {
            let mut s = String::new();
            push_timestamp(&mut s, &lt);
            s
        };
        assert_eq!(f(t(0)), "2026-01-04 09:08:07.006 +00:00");
        assert_eq!(f(t(480)), "2026-01-04 09:08:07.006 +08:00");
        assert_eq!(f(t(-210)), "2026-01-04 09:08:07.006 -03:30");
        assert_eq!(f(t(-30)), "2026-01-04 09:08:07.006 -00:30");
        assert_eq!(f(t(345)), "2026-01-04 09:08:07.006 +05:45");
    }

    #[cfg(unix)]
    #[test]
    fn local_time_of_the_epoch_is_consistent_with_its_offset() {
        // Whatever the zone, local time minus the offset is UTC.
        let lt = local_time(86_400_000 * 365 + 1234).expect("localtime_r");
        let local_minutes = (lt.hour * 60 + lt.minute) as i32;
        let utc_minutes = (local_minutes - lt.offset_minutes).rem_euclid(24 * 60);
        assert_eq!(utc_minutes, 0, "{lt:?}");
        assert_eq!((lt.second, lt.millisecond), (1, 234));
    }

    #[test]
    fn access_lines_are_koatty_traces() {
        let now = LocalTime {
            year: 2026,
            month: 11,
            day: 24,
            hour: 9,
            minute: 18,
            second: 56,
            millisecond: 617,
            offset_minutes: 0,
        };
        let mut out = String::new();
        let line = AccessLine {
            failed: false,
            action: "GET",
            status: 200,
            start_ms: 1_000,
            request_id: "id\"raw",
            end_ms: 1_003,
            path: "/td/str",
        };
        push_access_line(&mut out, &line, &now, "\n");
        assert_eq!(
            out,
            "[2026-11-24 09:18:56.617 +00:00]  INFO {\"action\":\"GET\",\"status\":\"200\",\"startTime\":\"1000\",\"duration\":\"3\",\"requestId\":\"id\"raw\",\"endTime\":\"1003\",\"path\":\"/td/str\"}\n"
        );
        out.clear();
        let failed = AccessLine {
            failed: true,
            status: 500,
            end_ms: 1_000,
            ..line
        };
        push_access_line(&mut out, &failed, &now, "\n");
        assert!(
            out.starts_with(
                "[2026-11-24 09:18:56.617 +00:00]  ERROR {\"action\":\"GET\",\"status\":\"500\""
            ),
            "{out}"
        );
        assert!(out.contains("\"duration\":\"0\""), "{out}");
    }
}
