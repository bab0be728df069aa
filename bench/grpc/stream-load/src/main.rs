//! grpc-stream-load: gRPC load over cleartext HTTP/2 (prior knowledge) for bench/grpc, built on the
//! `h2` crate like ../shared/tools/loadgen's grpc-load, with what server streaming needs:
//!
//! - response messages are counted (the 5-byte gRPC prefixes are parsed across DATA frames), so the
//!   result has messages/s as well as calls/s, and a call is ok only with `:status` 200,
//!   `grpc-status` 0 and, with `-n N`, exactly N messages;
//! - the client's small-DATA-frame budget (h2 ≥ 0.4.20 closes the connection with ENHANCE_YOUR_CALM
//!   "too_many_data_frames" when a peer sends many small DATA frames faster than they are consumed,
//!   which is what @grpc/grpc-js does with one frame per streamed message) is raised, and the windows
//!   are 4 MiB per stream and connection;
//! - every call has a timeout (`-T`, default 5 s): a call that gets no answer is counted as timed
//!   out and its stream reset, instead of stalling its loop for the rest of the run;
//! - `-H 'name: value'` (repeatable) adds a request header, e.g. the `grpc-accept-encoding` every
//!   @grpc/grpc-js client sends; `compressed=` counts the response messages whose 5-byte prefix has
//!   the compressed flag set (the messages are not decompressed).
//!
//! Usage: grpc-stream-load [-c CONNS] [-m STREAMS] [-d SECS] [-w WARMUP] [-t THREADS] [-n MESSAGES]
//!                         [-T TIMEOUT_SECS] [-H 'NAME: VALUE']... -b BODYFILE -p PATH HOST:PORT
//! Last line: RESULT rps=<calls/s> mps=<messages/s> ok=<n> failed=<n> timeouts=<n> msgs=<n> secs=<f>
//!            conns=<n> p50_ms=<f> p99_ms=<f> compressed=<n>
//!            (latency: request sent → trailers received; counts over the measured window)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{Method, Request};
use tokio::net::TcpStream;

struct Args {
    conns: usize,
    streams: usize,
    secs: f64,
    warmup: f64,
    threads: usize,
    messages: Option<u64>,
    timeout: f64,
    body: String,
    path: String,
    addr: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        conns: 4,
        streams: 8,
        secs: 8.0,
        warmup: 2.0,
        threads: 1,
        messages: None,
        timeout: 5.0,
        body: String::new(),
        path: String::new(),
        addr: "127.0.0.1:3000".into(),
        headers: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned();
        let num = |what: &str| -> f64 { v.clone().unwrap_or_default().parse().unwrap_or_else(|_| usage(&format!("{what} needs a number"))) };
        match argv[i].as_str() {
            "-c" => { a.conns = num("-c") as usize; i += 2; }
            "-m" => { a.streams = num("-m") as usize; i += 2; }
            "-d" => { a.secs = num("-d"); i += 2; }
            "-w" => { a.warmup = num("-w"); i += 2; }
            "-t" => { a.threads = num("-t") as usize; i += 2; }
            "-n" => { a.messages = Some(num("-n") as u64); i += 2; }
            "-T" => { a.timeout = num("-T"); i += 2; }
            "-b" => { a.body = v.unwrap_or_else(|| usage("-b FILE")); i += 2; }
            "-p" => { a.path = v.unwrap_or_else(|| usage("-p PATH")); i += 2; }
            "-H" => {
                let h = v.unwrap_or_else(|| usage("-H 'NAME: VALUE'"));
                let (name, value) = h.split_once(':').unwrap_or_else(|| usage("-H 'NAME: VALUE'"));
                let name = http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).unwrap_or_else(|_| usage("-H: bad header name"));
                let value = http::HeaderValue::from_str(value.trim()).unwrap_or_else(|_| usage("-H: bad header value"));
                a.headers.push((name, value));
                i += 2;
            }
            "-h" | "--help" => usage(""),
            s => {
                a.addr = s.trim_start_matches("http://").trim_end_matches('/').to_string();
                i += 1;
            }
        }
    }
    if a.body.is_empty() || a.path.is_empty() {
        usage("-b and -p are required");
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("grpc-stream-load: {msg}");
    }
    eprintln!("usage: grpc-stream-load [-c CONNS] [-m STREAMS] [-d SECS] [-w WARMUP] [-t THREADS] [-n MESSAGES] [-T TIMEOUT] [-H 'NAME: VALUE']... -b BODY -p PATH HOST:PORT");
    std::process::exit(2)
}

#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    msgs: AtomicU64,
    compressed: AtomicU64,
    conn_errors: AtomicU64,
    connected: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    lat_us: std::sync::Mutex<Vec<u32>>,
}

impl Shared {
    fn note_err(&self, e: String) {
        let mut g = self.first_error.lock().unwrap();
        if g.is_none() {
            *g = Some(e);
        }
    }
}

fn grpc_status_ok(h: &http::HeaderMap) -> Option<bool> {
    h.get("grpc-status").map(|v| v.as_bytes() == b"0")
}

/// Counts gRPC messages in a response body split into arbitrary chunks.
#[derive(Default)]
struct MessageCounter {
    buf: BytesMut,
    /// Bytes of the current message still to skip.
    skip: usize,
    count: u64,
    /// Messages whose prefix has the compressed flag.
    compressed: u64,
}

impl MessageCounter {
    fn feed(&mut self, mut chunk: Bytes) {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len());
                chunk.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return;
                }
            }
            if chunk.is_empty() {
                return;
            }
            // Need the 5-byte prefix.
            let want = 5 - self.buf.len();
            let n = want.min(chunk.len());
            self.buf.extend_from_slice(&chunk[..n]);
            chunk.advance(n);
            if self.buf.len() < 5 {
                return;
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            self.compressed += u64::from(self.buf[0] == 1);
            self.buf.clear();
            self.count += 1;
            self.skip = len;
        }
    }
}

/// One call: Ok((messages, compressed messages)).
async fn one_call(sr: &mut SendRequest<Bytes>, a: &Args, body: &Bytes) -> Result<(u64, u64), String> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}{}", a.addr, a.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in &a.headers {
        req = req.header(name, value);
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    *sr = sr.clone().ready().await.map_err(|e| format!("ready: {e}"))?;
    let (resp_fut, mut send) = sr.send_request(req, false).map_err(|e| format!("send_request: {e}"))?;
    send.send_data(body.clone(), true).map_err(|e| format!("send_data: {e}"))?;
    let resp = resp_fut.await.map_err(|e| format!("response: {e}"))?;
    if resp.status() != 200 {
        return Err(format!(":status {}", resp.status()));
    }
    if let Some(ok) = grpc_status_ok(resp.headers()) {
        return if ok { Ok((0, 0)) } else { Err(format!("grpc-status {:?} (trailers-only)", resp.headers().get("grpc-status"))) };
    }
    let mut rb = resp.into_body();
    let mut counter = MessageCounter::default();
    while let Some(chunk) = rb.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = rb.flow_control().release_capacity(chunk.len());
        counter.feed(chunk);
    }
    let trailers = rb.trailers().await.map_err(|e| format!("trailers: {e}"))?;
    match trailers.as_ref().and_then(grpc_status_ok) {
        Some(true) => Ok((counter.count, counter.compressed)),
        Some(false) => Err(format!(
            "grpc-status {:?} {:?}",
            trailers.as_ref().unwrap().get("grpc-status"),
            trailers.as_ref().unwrap().get("grpc-message")
        )),
        None => Err("no grpc-status trailer".into()),
    }
}

async fn conn_main(a: Arc<Args>, body: Bytes, sh: Arc<Shared>) {
    let tcp = match TcpStream::connect(a.addr.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            sh.conn_errors.fetch_add(1, Ordering::Relaxed);
            sh.note_err(format!("connect: {e}"));
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(4 << 20)
        .initial_connection_window_size(4 << 20)
        .data_frame_budget(1 << 30);
    let (sr, conn) = match builder.handshake::<_, Bytes>(tcp).await {
        Ok(x) => x,
        Err(e) => {
            sh.conn_errors.fetch_add(1, Ordering::Relaxed);
            sh.note_err(format!("h2 handshake: {e}"));
            return;
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sh.connected.fetch_add(1, Ordering::Relaxed);
    let timeout = Duration::from_secs_f64(a.timeout);
    let mut tasks = Vec::with_capacity(a.streams);
    for _ in 0..a.streams {
        let mut sr = sr.clone();
        let a = a.clone();
        let body = body.clone();
        let sh = sh.clone();
        tasks.push(tokio::spawn(async move {
            while !sh.stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = tokio::time::timeout(timeout, one_call(&mut sr, &a, &body)).await;
                let measuring = sh.measuring.load(Ordering::Relaxed);
                match r {
                    Ok(Ok((n, compressed))) if a.messages.is_none_or(|want| want == n) => {
                        if measuring {
                            sh.ok.fetch_add(1, Ordering::Relaxed);
                            sh.msgs.fetch_add(n, Ordering::Relaxed);
                            sh.compressed.fetch_add(compressed, Ordering::Relaxed);
                            let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            sh.lat_us.lock().unwrap().push(us);
                        }
                    }
                    Ok(Ok((n, _))) => {
                        if measuring {
                            sh.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        sh.note_err(format!("{n} messages, expected {:?}", a.messages));
                    }
                    Ok(Err(e)) => {
                        if measuring {
                            sh.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        sh.note_err(e.clone());
                        if e.starts_with("ready") || e.starts_with("send_request") {
                            break; // the connection is gone
                        }
                    }
                    Err(_) => {
                        if measuring {
                            sh.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        sh.note_err(format!("no answer within {:.1} s", a.timeout));
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let a = Arc::new(parse_args());
    let body = Bytes::from(std::fs::read(&a.body).unwrap_or_else(|e| {
        eprintln!("grpc-stream-load: cannot read body file {}: {e}", a.body);
        std::process::exit(2)
    }));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(a.threads.max(1)).enable_all().build().expect("runtime");
    let code = rt.block_on(async move {
        let sh = Arc::new(Shared::default());
        let mut handles = Vec::with_capacity(a.conns);
        for _ in 0..a.conns {
            handles.push(tokio::spawn(conn_main(a.clone(), body.clone(), sh.clone())));
        }
        let t_conn = Instant::now();
        while (sh.connected.load(Ordering::Relaxed) + sh.conn_errors.load(Ordering::Relaxed)) < a.conns as u64
            && t_conn.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if a.warmup > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
        }
        sh.measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
        sh.measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let ok = sh.ok.load(Ordering::Relaxed);
        let failed = sh.failed.load(Ordering::Relaxed);
        let timeouts = sh.timeouts.load(Ordering::Relaxed);
        let msgs = sh.msgs.load(Ordering::Relaxed);
        let compressed = sh.compressed.load(Ordering::Relaxed);
        sh.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for h in handles {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        let mut lat = std::mem::take(&mut *sh.lat_us.lock().unwrap());
        lat.sort_unstable();
        let connected = sh.connected.load(Ordering::Relaxed);
        println!(
            "grpc-stream-load: {} conns x {} streams ({} connected), {:.2}s measured: {} ok ({} messages), {} failed, {} timed out, {:.1} calls/s, {:.1} messages/s",
            a.conns, a.streams, connected, elapsed, ok, msgs, failed, timeouts, ok as f64 / elapsed, msgs as f64 / elapsed
        );
        if let Some(e) = sh.first_error.lock().unwrap().as_ref() {
            println!("grpc-stream-load: first error: {e}");
        }
        println!(
            "RESULT rps={:.1} mps={:.1} ok={} failed={} timeouts={} msgs={} secs={:.3} conns={} p50_ms={:.3} p99_ms={:.3} compressed={}",
            ok as f64 / elapsed, msgs as f64 / elapsed, ok, failed, timeouts, msgs, elapsed, connected, pct(&lat, 50.0), pct(&lat, 99.0), compressed
        );
        if connected == 0 || ok == 0 { 1 } else { 0 }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}
