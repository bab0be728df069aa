//! gRPC on HTTP/2: Rust routes calls by path and moves raw message bytes (JavaScript deserialises
//! with the service definition's own functions). tonic reads request messages (framing, gzip and
//! deflate, the size limit → RESOURCE_EXHAUSTED); response messages are framed here
//! ([`ResponseBody`]), identity unless the server's `defaultCompressionAlgorithm` or the handler
//! asks for compression (per message, grpc-js's `WriteFlags.NoCompress` opts out), and the status
//! goes out as trailers. Deadlines (`grpc-timeout`), client cancellation, the standard health
//! service ([`health`]) and server reflection ([`reflection`]) are handled here.

pub mod health;
pub mod reflection;

use crate::bridge::grpc::{
    CallCancel, CallGuard, CallOutput, CallStatus, OpenedCall, OutMessage, OutState,
    GRPC_HIGH_WATER_MARK,
};
use crate::bridge::{Bridge, BridgeEvent, RequestBody, RequestHead, Unanswered};
use crate::config::Compression;
use crate::config::{GrpcSettings, LiveLimits, ServerConfig};
use crate::conn::watch::Watched;
use crate::conn::{
    drive, establish, http2_builder, watch_connection, ConnStream, ConnectionInfo, Tracked,
};
use crate::lifecycle::{BoxFuture, ConnectionHandler, PhaseSignal};
use crate::metrics::{CallKind, MethodFigures, MethodStats};
use crate::pool::WireProtocol;
use crate::tls::TlsSource;
use arc_swap::ArcSwap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tonic::codec::{
    BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder,
};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status, Streaming};

/// Request messages of one call handed to JavaScript and not yet taken, at most.
const MESSAGES_IN_FLIGHT: usize = 16;

/// Messages cross as raw bytes; JavaScript runs the definition's (de)serialisers.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

/// tonic's default codec buffers are 8 KiB per call and direction; most messages are far smaller,
/// and two 8 KiB allocations per unary call kept glibc's allocator consolidating (≈ 15 % of the
/// I/O thread in a profile). Buffers start at 1 KiB and grow (at least doubling) for large ones.
fn buffer_settings() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// `grpc-timeout` (e.g. `100m`, `5S`) as a duration.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the client can read of a response compression (grpc compression spec).
trait IfAccepted {
    fn if_accepted(self, request: &http::HeaderMap) -> Compression;
}

impl IfAccepted for Compression {
    /// This algorithm if the client lists it in `grpc-accept-encoding`, else identity: a server
    /// sends uncompressed what the client cannot read (grpc compression spec).
    fn if_accepted(self, request: &http::HeaderMap) -> Compression {
        let listed = request
            .get_all("grpc-accept-encoding")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|name| name.trim() == self.name());
        if self == Compression::Identity || listed {
            self
        } else {
            Compression::Identity
        }
    }
}

/// `grpc-accept-encoding` of every response (not trailers-only): the request encodings this
/// server reads, as a grpc-js server sends it.
pub const ACCEPT_ENCODING: &str = "identity,deflate,gzip";

/// Request encodings tonic decompresses (those [`ACCEPT_ENCODING`] lists).
const REQUEST_ENCODINGS: [CompressionEncoding; 2] =
    [CompressionEncoding::Gzip, CompressionEncoding::Deflate];

/// The request's `grpc-encoding`: none, identity, gzip or deflate; another is UNIMPLEMENTED
/// naming what is accepted (as tonic answers it).
fn request_encoding(request: &http::HeaderMap) -> Result<Option<CompressionEncoding>, Status> {
    match request.get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => Ok(None),
        Some(b"gzip") => Ok(Some(CompressionEncoding::Gzip)),
        Some(b"deflate") => Ok(Some(CompressionEncoding::Deflate)),
        Some(other) => {
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(other)
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                MetadataValue::from_static(ACCEPT_ENCODING),
            );
            Err(status)
        }
    }
}

/// tonic's server framing for the health and reflection services: requests in every encoding
/// [`ACCEPT_ENCODING`] lists, identity responses.
fn grpc_service() -> tonic::server::Grpc<RawCodec> {
    REQUEST_ENCODINGS
        .into_iter()
        .fold(tonic::server::Grpc::new(RawCodec), |grpc, encoding| {
            grpc.accept_compressed(encoding)
        })
}

/// Adds the encoding headers a grpc-js server sends with every response head (not with a
/// trailers-only answer): `grpc-accept-encoding`, and `grpc-encoding` if not yet set (identity).
fn advertise_encodings(headers: &mut http::HeaderMap) {
    if headers.contains_key("grpc-status") {
        return;
    }
    headers.insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static(ACCEPT_ENCODING),
    );
    headers
        .entry("grpc-encoding")
        .or_insert(http::HeaderValue::from_static("identity"));
}

/// The gRPC server part plugged into the lifecycle.
pub struct GrpcProtocol {
    bridge: Bridge,
    limits: LiveLimits,
    tls: Option<Arc<TlsSource>>,
    /// Swapped by `updateConfig`: calls and connections that start afterwards take the new one.
    settings: ArcSwap<GrpcSettings>,
    /// Registered methods; others are UNIMPLEMENTED.
    methods: MethodRegistry,
}

/// What the handler side registered, shared by every listener of a server (kept on the bridge).
pub type MethodRegistry = Arc<SharedRegistry>;

/// The current [`GrpcRegistry`], replaced as a whole, with a change signal for the health Watch.
pub struct SharedRegistry {
    current: ArcSwap<GrpcRegistry>,
    changed: tokio::sync::watch::Sender<()>,
}

impl Default for SharedRegistry {
    fn default() -> Self {
        SharedRegistry {
            current: ArcSwap::from_pointee(GrpcRegistry::default()),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }
}

impl SharedRegistry {
    pub fn load(&self) -> arc_swap::Guard<Arc<GrpcRegistry>> {
        self.current.load()
    }

    pub fn store(&self, registry: GrpcRegistry) {
        self.current.store(Arc::new(registry));
        self.changed.send_replace(());
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }
}

/// Registered methods by path (`/package.Service/Method`), and reflection over them when on.
#[derive(Default, Debug)]
pub struct GrpcRegistry {
    methods: HashMap<String, MethodEntry>,
    /// Methods whose response is a stream (server streaming and bidi): long-lived by design, so
    /// `requestTimeout` does not bound them (a client deadline still does).
    streamed_responses: std::collections::HashSet<String>,
    reflection: Option<reflection::Reflection>,
}

/// Whether a method's request is one message or a stream of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestShape {
    Single,
    Stream,
}

/// A registered method: its request shape and what its calls count (`callsByMethod`).
#[derive(Debug)]
struct MethodEntry {
    shape: RequestShape,
    stats: Arc<MethodStats>,
}

/// What a call's path names, looked up once per call.
#[derive(Default)]
struct MethodLookup {
    /// `None`: not a registered method.
    shape: Option<RequestShape>,
    single_response: bool,
    stats: Option<Arc<MethodStats>>,
}

impl MethodLookup {
    fn kind(&self) -> Option<CallKind> {
        self.shape
            .map(|s| CallKind::of(s == RequestShape::Stream, !self.single_response))
    }
}

impl GrpcRegistry {
    pub fn new(methods: impl IntoIterator<Item = (String, RequestShape)>) -> Self {
        GrpcRegistry {
            methods: methods
                .into_iter()
                .map(|(path, shape)| {
                    let stats = Default::default();
                    (path, MethodEntry { shape, stats })
                })
                .collect(),
            streamed_responses: Default::default(),
            reflection: None,
        }
    }

    /// Keeps the call figures of the methods `old` registered too (registering more services
    /// replaces the registry, not what its methods counted).
    pub fn keeping_figures_of(mut self, old: &GrpcRegistry) -> Self {
        for (path, entry) in self.methods.iter_mut() {
            if let Some(before) = old.methods.get(path) {
                entry.stats = before.stats.clone();
            }
        }
        self
    }

    /// Each registered method's finished calls and their average latency.
    pub fn method_figures(&self) -> std::collections::BTreeMap<String, MethodFigures> {
        self.methods
            .iter()
            .map(|(path, e)| (path.clone(), e.stats.figures()))
            .collect()
    }

    fn lookup(&self, path: &str) -> MethodLookup {
        match self.methods.get(path) {
            Some(entry) => MethodLookup {
                shape: Some(entry.shape),
                single_response: self.single_response(path),
                stats: Some(entry.stats.clone()),
            },
            None => MethodLookup {
                single_response: true,
                ..Default::default()
            },
        }
    }

    /// Marks these methods' responses as streams.
    pub fn with_streamed_responses(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.streamed_responses = paths.into_iter().collect();
        self
    }

    /// Turns reflection on, over the registered services and these serialised
    /// `FileDescriptorProto`s (possibly none). Also returns why descriptors were dropped, if they
    /// were.
    pub fn with_reflection(mut self, files: &[Vec<u8>]) -> (Self, Option<String>) {
        let services = self
            .methods
            .keys()
            .filter_map(|p| Some(p.strip_prefix('/')?.rsplit_once('/')?.0.to_string()))
            .collect();
        let (reflection, problem) = reflection::Reflection::build(&services, files);
        self.reflection = Some(reflection);
        (self, problem)
    }

    pub fn request_shape(&self, path: &str) -> Option<RequestShape> {
        self.methods.get(path).map(|e| e.shape)
    }

    /// Whether the method answers with one message (unary, client streaming).
    pub fn single_response(&self, path: &str) -> bool {
        !self.streamed_responses.contains(path)
    }

    /// How many methods are registered.
    pub fn method_count(&self) -> usize {
        self.methods.len()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.methods.contains_key(path)
    }

    /// Whether any method of `service` (`package.Service`) is registered.
    pub fn has_service(&self, service: &str) -> bool {
        self.methods.keys().any(|p| {
            p.strip_prefix('/')
                .and_then(|p| p.strip_prefix(service))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

impl GrpcProtocol {
    pub fn new(
        bridge: Bridge,
        limits: LiveLimits,
        tls: Option<Arc<TlsSource>>,
        settings: GrpcSettings,
        methods: MethodRegistry,
    ) -> Self {
        GrpcProtocol {
            bridge,
            limits,
            tls,
            settings: ArcSwap::from_pointee(settings),
            methods,
        }
    }

    async fn call(
        &self,
        req: Request<Incoming>,
        conn: &ConnectionInfo,
        method: &MethodLookup,
    ) -> Response<tonic::body::Body> {
        let path = req.uri().path().to_owned();
        let registered = method.shape;
        let single_response = method.single_response;
        if registered.is_none() {
            let mut response = if path == health::CHECK || path == health::WATCH {
                let metrics = self.bridge.metrics().clone();
                health::serve(req, metrics, self.methods.clone(), conn.phase.clone()).await
            } else if let Some(reflection) = reflection::Reflection::serves(&path)
                .then(|| self.methods.load().reflection.clone())
                .flatten()
            {
                reflection.serve(req).await
            } else {
                return Status::unimplemented(format!("method {path} is not implemented"))
                    .into_http();
            };
            advertise_encodings(response.headers_mut());
            return response;
        }
        let (max_receive, default_compression) = {
            let settings = self.settings.load();
            (
                settings.max_receive_message_length,
                settings.default_compression_algorithm,
            )
        };
        let encoding = match request_encoding(req.headers()) {
            Ok(encoding) => encoding,
            Err(status) => {
                let mut response = status.into_http();
                fix_status_headers(response.headers_mut());
                return response;
            }
        };
        let client_deadline = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        // A call answered with one message is bounded by requestTimeout like an HTTP request (0 =
        // off); streamed responses are long-lived by design and only the client's deadline ends
        // them.
        let request_timeout = self.limits.load().request_timeout;
        let server_deadline =
            (single_response && !request_timeout.is_zero()).then_some(request_timeout);
        let deadline = match (client_deadline, server_deadline) {
            (Some(c), Some(s)) => Some(c.min(s)),
            (c, s) => c.or(s),
        };
        // A single request message is awaited within the client's deadline and requestTimeout,
        // whatever the response's shape.
        let first_message_within = match (client_deadline, !request_timeout.is_zero()) {
            (Some(c), true) => Some(c.min(request_timeout)),
            (Some(c), false) => Some(c),
            (None, true) => Some(request_timeout),
            (None, false) => None,
        };
        let call = JsCall {
            bridge: self.bridge.clone(),
            conn: conn.clone(),
            deadline,
            single_request: registered == Some(RequestShape::Single),
            first_message_within,
        };
        let (mut parts, body) = req.into_parts();
        let target = parts.extensions.remove::<CallTarget>();
        // tonic reports a client's RST_STREAM on the request stream as a clean end; remember it.
        let reset = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = ResetWatch {
            inner: body,
            reset: reset.clone(),
        };
        let input = Streaming::new_request(RawDecoder, body, encoding, Some(max_receive));
        let (metadata, messages) = match call.start(&parts.headers, target, reset, input).await {
            Ok(head) => head,
            Err(status) => {
                let mut response = status.into_http();
                fix_status_headers(response.headers_mut());
                return response;
            }
        };
        // The handler's choice, else the server's; identity unless the client reads it.
        let compression = messages
            .state
            .compression()
            .unwrap_or(default_compression)
            .if_accepted(&parts.headers);
        let mut head = http::HeaderMap::with_capacity(3 + metadata.len());
        head.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        head.insert(
            "grpc-encoding",
            http::HeaderValue::from_static(compression.name()),
        );
        advertise_encodings(&mut head);
        head.extend(metadata.into_headers());
        let mut response = Response::new(tonic::body::Body::new(ResponseBody {
            messages,
            compression,
            buf: BytesMut::new(),
            ending: None,
            done: false,
        }));
        *response.headers_mut() = head;
        response
    }
}

/// The tonic status for a call's end as the handler gave it.
fn status_of(status: CallStatus) -> Status {
    Status::with_metadata(
        Code::from_i32(status.code),
        status.details,
        metadata_map(&status.trailers),
    )
}

/// Response metadata from flat pairs; names and values that are not valid gRPC metadata (or are
/// reserved for the transport) are left out.
fn metadata_map(flat: &[String]) -> MetadataMap {
    let mut headers = http::HeaderMap::new();
    for pair in flat.chunks_exact(2) {
        let name = pair[0].to_ascii_lowercase();
        if name.starts_with(':')
            || matches!(
                name.as_str(),
                "content-type" | "te" | "content-length" | "connection" | "host"
            )
            || (name.starts_with("grpc-") && name != "grpc-previous-rpc-attempts")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&pair[1]),
        ) {
            headers.append(n, v);
        }
    }
    MetadataMap::from_headers(headers)
}

/// Status headers as grpc-js clients expect them: tonic reports size limits as OUT_OF_RANGE where
/// gRPC (and grpc-js) use RESOURCE_EXHAUSTED, and percent-encodes more of `grpc-message` than the
/// spec's "outside 0x20–0x7E, and %" (grpc-js then shows `%3F` for `?`).
fn fix_status_headers(headers: &mut http::HeaderMap) {
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode(m.as_bytes()));
    if let Some(message) = &message {
        if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"11")
            && message.contains("message length too large")
        {
            headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        }
        if let Ok(v) = http::HeaderValue::from_str(&percent_encode_spec(message)) {
            headers.insert("grpc-message", v);
        }
    }
}

/// What the gRPC spec percent-encodes in `grpc-message`: every byte outside 0x20–0x7E, and '%'
/// (`percent_encoding` always encodes non-ASCII bytes; `CONTROLS` adds 0x00–0x1F and 0x7F).
const GRPC_MESSAGE_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn percent_decode(bytes: &[u8]) -> String {
    percent_encoding::percent_decode(bytes)
        .decode_utf8_lossy()
        .into_owned()
}

fn percent_encode_spec(message: &str) -> String {
    percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE_ENCODE).to_string()
}

/// Response messages ready together go out in one DATA frame, up to this size.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The response buffer grows by at least this much (as tonic's encoder buffer with
/// [`buffer_settings`]), so a burst of small streamed messages does not reallocate for each.
const BUFFER_STEP: usize = 1024;

/// The response body of a call answered by JavaScript: each message with its 5-byte prefix,
/// compressed when the call's encoding is not identity and the message allows it, then the status
/// as trailers (as grpc-js clients expect them, see [`fix_status_headers`]).
struct ResponseBody {
    messages: OutStream,
    compression: Compression,
    buf: BytesMut,
    /// The status that ends the call, once it came (sent after the messages buffered before it).
    ending: Option<Status>,
    done: bool,
}

impl ResponseBody {
    /// Appends one framed message to `buf` (nothing on error).
    fn encode(&mut self, message: OutMessage) -> Result<(), Status> {
        let offset = self.buf.len();
        let compressed = message.compress && self.compression != Compression::Identity;
        let need = 5 + message.data.len();
        if self.buf.capacity() - offset < need {
            self.buf.reserve(need.max(BUFFER_STEP));
        }
        self.buf.put_bytes(0, 5);
        if compressed {
            if let Err(err) = compress(self.compression, &message.data, &mut self.buf) {
                self.buf.truncate(offset);
                return Err(Status::internal(format!("Error compressing: {err}")));
            }
        } else {
            self.buf.extend_from_slice(&message.data);
        }
        let len = self.buf.len() - offset - 5;
        let Ok(len) = u32::try_from(len) else {
            self.buf.truncate(offset);
            return Err(Status::resource_exhausted(format!(
                "Cannot return body with more than 4GB of data but got {len} bytes"
            )));
        };
        self.buf[offset] = u8::from(compressed);
        self.buf[offset + 1..offset + 5].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// `data` compressed with `algorithm` (zlib's default level, as grpc-js and tonic) onto `out`.
fn compress(algorithm: Compression, data: &[u8], out: &mut BytesMut) -> std::io::Result<()> {
    use std::io::Write;
    let level = flate2::Compression::new(6);
    match algorithm {
        Compression::Identity => out.extend_from_slice(data),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out.writer(), level);
            encoder.write_all(data)?;
            encoder.finish()?;
        }
        Compression::Deflate => {
            let mut encoder = flate2::write::ZlibEncoder::new(out.writer(), level);
            encoder.write_all(data)?;
            encoder.finish()?;
        }
    }
    Ok(())
}

/// The status as trailers.
fn status_trailers(status: &Status) -> Result<http_body::Frame<Bytes>, Status> {
    let mut trailers = http::HeaderMap::with_capacity(3);
    status.add_header(&mut trailers)?;
    fix_status_headers(&mut trailers);
    Ok(http_body::Frame::trailers(trailers))
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.ending.is_none() {
            loop {
                match Pin::new(&mut this.messages).poll_next(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        if let Err(status) = this.encode(message) {
                            this.ending = Some(status);
                            break;
                        }
                        if this.buf.len() >= YIELD_THRESHOLD {
                            break;
                        }
                    }
                    Poll::Ready(Some(Err(status))) => {
                        this.ending = Some(status);
                        break;
                    }
                    // The handler side went away without a status: OK, as tonic ends such a body.
                    Poll::Ready(None) => {
                        this.ending = Some(Status::ok(""));
                        break;
                    }
                    Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                    Poll::Pending => break,
                }
            }
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(this.buf.split().freeze()))));
        }
        let status = this.ending.take().unwrap_or_else(|| Status::ok(""));
        this.done = true;
        Poll::Ready(Some(status_trailers(&status)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A tower service from a closure (tonic's `StreamingService` is implemented for tower services).
#[derive(Clone)]
struct TowerFn<F>(F);

fn tower_fn<F>(f: F) -> TowerFn<F> {
    TowerFn(f)
}

impl<F, Fut, Req, Res> tonic::codegen::Service<Req> for TowerFn<F>
where
    F: FnMut(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Res, Status>>,
{
    type Response = Res;
    type Error = Status;
    type Future = Fut;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Fut {
        (self.0)(req)
    }
}

/// One call handed to JavaScript.
struct JsCall {
    bridge: Bridge,
    conn: ConnectionInfo,
    deadline: Option<Duration>,
    /// The method takes one request message (unary, server streaming).
    single_request: bool,
    /// How long that message may take to arrive.
    first_message_within: Option<Duration>,
}

/// Response messages of the health and reflection services (framed by tonic).
pub(crate) type ResponseStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl JsCall {
    /// Announces the call to JavaScript and waits for the response head: the initial metadata
    /// and the stream of response messages, or the status of a trailers-only answer.
    async fn start(
        self,
        request: &http::HeaderMap,
        target: Option<CallTarget>,
        reset: Arc<std::sync::atomic::AtomicBool>,
        mut input: Streaming<Bytes>,
    ) -> Result<(MetadataMap, OutStream), Status> {
        let JsCall {
            bridge,
            conn,
            deadline,
            single_request,
            first_message_within,
        } = self;
        let deadline_at = deadline.map(|d| tokio::time::Instant::now() + d);
        let (path, authority) = target.map(|t| (t.path, t.authority)).unwrap_or_default();
        // A single-request call reaches the handler, and takes a unit of maxInFlight, only with
        // its whole request: the message and the client's half-close, as a grpc-js server waits for
        // them (a client that never finishes sending holds no slot; outside probe). It then crosses
        // into JavaScript with the call, once, instead of as two more events.
        let whole = if single_request {
            let message = match next_message(&mut input, first_message_within).await? {
                Some(message) => message,
                None if reset.load(Ordering::Acquire) => {
                    return Err(Status::cancelled("client cancelled"))
                }
                // As a grpc-js server answers it (the handler is not called).
                None => {
                    return Err(Status::unimplemented(format!(
                        "Received no request message for server streaming method {path}"
                    )))
                }
            };
            match next_message(&mut input, first_message_within).await? {
                None if reset.load(Ordering::Acquire) => {
                    return Err(Status::cancelled("client cancelled"))
                }
                None => Some(message),
                Some(_) => {
                    return Err(Status::unimplemented(format!(
                        "Received a second request message for server streaming method {path}"
                    )))
                }
            }
        } else {
            None
        };
        let head = RequestHead {
            id: 0,
            method: "POST".into(),
            url: path,
            headers: {
                // `:authority` first, as node's http2 shows it (grpc-js's `call.getHost()`).
                let mut flat = crate::bridge::FlatHeaders::with_capacity(
                    crate::bridge::map_text_len(request) + authority.len() + 12,
                );
                flat.push(":authority", &authority);
                flat.extend_from_h2_map(request);
                flat
            },
            http_version: 20,
            remote: conn.remote,
            remote_ip: conn.remote_ip.clone(),
            local_port: conn.local_port,
            encrypted: conn.peer.is_some(),
            peer: conn.peer.clone(),
            body: match whole {
                Some(message) => RequestBody::GrpcCallWhole(message),
                None => RequestBody::GrpcCall,
            },
        };
        let Some(OpenedCall {
            id,
            head: head_rx,
            output: out_rx,
            out_state,
            mut guard,
        }) = bridge.open_grpc_call(head).await
        else {
            return Err(Status::unavailable("server is shutting down"));
        };
        if !single_request {
            tokio::spawn(pump_requests(bridge.clone(), id, input, reset));
        }
        // The deadline's timer ends with the call (it moves into the response stream), so a
        // long requestTimeout leaves no sleeping task per finished call behind.
        let deadline_timer = deadline_at.map(|at| {
            let bridge = bridge.clone();
            AbortOnDrop(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                bridge.grpc_cancel(
                    id,
                    CallCancel::Deadline,
                    CallStatus::new(Code::DeadlineExceeded as i32, "deadline exceeded"),
                );
            }))
        });
        // The guard moves with the response: dropped early (client reset) it reports the cancel.
        let head = head_rx
            .await
            .map_err(|_| Status::cancelled("call ended"))?
            .map_err(status_of)?;
        guard.head_sent();
        let stream = OutStream {
            rx: out_rx,
            state: out_state,
            bridge,
            id,
            _guard: guard,
            _deadline: deadline_timer,
        };
        Ok((metadata_map(&head), stream))
    }
}

/// What one call counts (`callsStarted`, `callsByStatus`, `callsByMethod`, active calls by kind),
/// ended once: when its status goes out (a trailers-only answer, or the trailers after the
/// messages), or, when none does (the client reset the stream, or the body failed), as CANCELLED.
struct CallTally {
    protocol: Arc<GrpcProtocol>,
    kind: Option<CallKind>,
    stats: Option<Arc<MethodStats>>,
    started: std::time::Instant,
    ended: bool,
}

impl CallTally {
    fn begin(protocol: Arc<GrpcProtocol>, method: &MethodLookup) -> Self {
        let kind = method.kind();
        protocol.bridge.metrics().grpc_call_began(kind);
        CallTally {
            protocol,
            kind,
            stats: method.stats.clone(),
            started: std::time::Instant::now(),
            ended: false,
        }
    }

    fn end(&mut self, code: i32) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let metrics = self.protocol.bridge.metrics();
        metrics.grpc_call_ended(self.kind, code);
        if let (Some(stats), true) = (&self.stats, metrics.counts_requests()) {
            stats.record(self.started.elapsed());
        }
    }

    /// Ends the call now if the response is trailers-only, else when its trailers go out.
    fn watch<B>(mut self, response: Response<B>) -> Response<StatusTap<B>> {
        if let Some(code) = status_in(response.headers()) {
            self.end(code);
        }
        response.map(|body| StatusTap { body, tally: self })
    }
}

impl Drop for CallTally {
    fn drop(&mut self) {
        self.end(Code::Cancelled as i32);
    }
}

/// The `grpc-status` of a header block, if it carries one (UNKNOWN when it does not parse).
fn status_in(headers: &http::HeaderMap) -> Option<i32> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Code::Unknown as i32),
    )
}

pin_project_lite::pin_project! {
    /// A call's response body, watched for the trailers that carry its status.
    struct StatusTap<B> {
        #[pin]
        body: B,
        tally: CallTally,
    }
}

impl<B: http_body::Body> http_body::Body for StatusTap<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(status_in) {
                this.tally.end(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The call's path and authority, put into the request extensions by the connection's service.
#[derive(Clone)]
struct CallTarget {
    path: String,
    authority: String,
}

/// The request body, noting a reset that tonic would otherwise report as a clean end.
struct ResetWatch {
    inner: Incoming,
    reset: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for ResetWatch {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.reset.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Response messages from JavaScript; signals `drain` and owns the call's cancel guard.
struct OutStream {
    rx: mpsc::UnboundedReceiver<CallOutput>,
    state: Arc<OutState>,
    bridge: Bridge,
    id: u32,
    _guard: CallGuard,
    _deadline: Option<AbortOnDrop>,
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Stream for OutStream {
    type Item = Result<OutMessage, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(ref message))) = item {
            let len = message.data.len();
            let before = self.state.queued.fetch_sub(len, Ordering::SeqCst);
            if before - len < GRPC_HIGH_WATER_MARK
                && self.state.want_drain.swap(false, Ordering::SeqCst)
            {
                self.bridge.emit(self.id, BridgeEvent::GrpcDrain);
            }
        }
        item.map(|next| next.map(|output| output.map_err(status_of)))
    }
}

/// The next request message, within `within` (DEADLINE_EXCEEDED past it).
async fn next_message(
    input: &mut Streaming<Bytes>,
    within: Option<Duration>,
) -> Result<Option<Bytes>, Status> {
    let read = input.message();
    match within {
        Some(within) => tokio::time::timeout(within, read)
            .await
            .map_err(|_| Status::deadline_exceeded("request message not received in time"))?,
        None => read.await,
    }
}

/// Hands request messages to JavaScript, at most `MESSAGES_IN_FLIGHT` at a time per call.
async fn pump_requests(
    bridge: Bridge,
    id: u32,
    mut input: Streaming<Bytes>,
    reset: Arc<std::sync::atomic::AtomicBool>,
) {
    let in_flight = Arc::new(Semaphore::new(MESSAGES_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        match input.message().await {
            Ok(Some(data)) => bridge.emit(
                id,
                BridgeEvent::GrpcMessage {
                    data,
                    permit: Some(permit),
                },
            ),
            Ok(None) if reset.load(Ordering::Acquire) => {
                return bridge.grpc_cancel(
                    id,
                    CallCancel::Client,
                    CallStatus::new(Code::Cancelled as i32, "client cancelled"),
                )
            }
            // The clean end goes to the handler at once, as grpc-js delivers it. A client that
            // cancels (grpc-js: END_STREAM, then RST_STREAM(CANCEL) in a later write) is reported
            // as 'cancelled' after it, while the handler has not answered: the order a grpc-js
            // server shows ('end', then 'cancelled').
            Ok(None) => {
                return bridge.emit(id, BridgeEvent::GrpcInputEnd);
            }
            Err(status) => {
                let message = format!("{}: {}", status.code() as i32, status.message());
                bridge.emit(id, BridgeEvent::GrpcInputError(message));
                let status = CallStatus::new(status.code() as i32, status.message());
                return bridge.grpc_cancel(id, CallCancel::Client, status);
            }
        }
    }
}

impl ConnectionHandler for GrpcProtocol {
    fn update_settings(&self, config: &ServerConfig) {
        if let Some(settings) = &config.grpc {
            self.settings.store(Arc::new(settings.clone()));
        }
    }

    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        phase: PhaseSignal,
    ) -> BoxFuture {
        Box::pin(async move {
            let limits = self.limits.load_full();
            let ready = establish(stream, remote, phase, self.tls.as_deref(), &limits).await;
            let Some((io, info)) = ready else { return };
            // Boxed: the HTTP/2 state is allocated only once bytes came.
            Box::pin(self.serve_h2(io, info)).await
        })
    }
}

impl GrpcProtocol {
    async fn serve_h2(self: Arc<Self>, io: ConnStream, conn: ConnectionInfo) {
        let phase = conn.phase.clone();
        let this = self.clone();
        // connectionTimeout: the socket stamps when bytes last moved; a quiet connection gets GOAWAY.
        let (watch, requests) = watch_connection(
            &self.limits.load(),
            io.socket_fd(),
            &phase,
            WireProtocol::Grpc,
        );
        let tracker = requests.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            // In flight until its response body is dropped (a drained connection waits for it).
            let in_flight = tracker.started();
            let this = this.clone();
            let conn = conn.clone();
            // Boxed, as HTTP/2 requests are (protocol/http): hyper moves each call's future into
            // a task of its own, and a pointer is cheaper to move than the future.
            Box::pin(async move {
                let method = this.methods.load().lookup(req.uri().path());
                // A call to the app that arrives once the server stopped taking new work (a
                // stream opened before the client saw the GOAWAY) never reaches the handler: its
                // stream is refused, which grpc-js retries (UNAVAILABLE would count as processed).
                // Health checks and reflection are still answered.
                if method.shape.is_some() && conn.refuses_new_work(this.bridge.metrics()) {
                    return Err(Unanswered::refused());
                }
                // Counted from here; if this future is dropped (the client reset the stream before
                // the head), the tally still ends the call, as CANCELLED.
                let tally = CallTally::begin(this, &method);
                let target = CallTarget {
                    path: req.uri().path().to_owned(),
                    authority: (req.uri().authority().map(|a| a.to_string()))
                        .or_else(|| {
                            let host = req.headers().get(http::header::HOST)?;
                            host.to_str().ok().map(str::to_owned)
                        })
                        .unwrap_or_default(),
                };
                req.extensions_mut().insert(target);
                let response = tally.protocol.call(req, &conn, &method).await;
                let response = tally.watch(response);
                Ok::<_, Unanswered>(response.map(|body| Tracked::new(body, in_flight)))
            })
        });
        // The same HTTP/2 settings as the HTTP/2 server (initialWindowSize included).
        let b = http2_builder(&self.settings.load().http2);
        drive(
            b.serve_connection(TokioIo::new(Watched::new(io, watch, Some(true))), service),
            phase,
            requests,
            |c| c.graceful_shutdown(),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_headers_follow_grpc_js() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("Error, decoded message length too large%3F"),
        );
        fix_status_headers(&mut h);
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(
            h["grpc-message"],
            "Error, decoded message length too large?"
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("100%25 %C3%A9"),
        );
        fix_status_headers(&mut h);
        assert_eq!(h["grpc-message"], "100%25 %C3%A9");
    }

    #[test]
    fn grpc_message_percent_coding_round_trips_non_ascii_and_percent() {
        let message = "100% done, é ✓\n\t\u{7f} ~ ?";
        let encoded = percent_encode_spec(message);
        assert_eq!(encoded, "100%25 done, %C3%A9 %E2%9C%93%0A%09%7F ~ ?");
        assert_eq!(percent_decode(encoded.as_bytes()), message);
        // Not a valid escape: kept as it is; lower-case hex decodes too.
        assert_eq!(percent_decode(b"%zz %4 %c3%a9"), "%zz %4 \u{e9}");
        // Bytes that are not UTF-8 become U+FFFD.
        assert_eq!(percent_decode(b"a%FFb"), "a\u{fffd}b");
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("7x"), None);
        assert_eq!(parse_timeout(""), None);
    }

    #[test]
    fn response_compression_needs_the_client_to_accept_it() {
        let mut h = http::HeaderMap::new();
        assert_eq!(Compression::Gzip.if_accepted(&h), Compression::Identity);
        h.insert(
            "grpc-accept-encoding",
            http::HeaderValue::from_static("identity, deflate,gzip"),
        );
        assert_eq!(Compression::Gzip.if_accepted(&h), Compression::Gzip);
        assert_eq!(Compression::Deflate.if_accepted(&h), Compression::Deflate);
        h.insert(
            "grpc-accept-encoding",
            http::HeaderValue::from_static("identity,gzipped"),
        );
        assert_eq!(Compression::Gzip.if_accepted(&h), Compression::Identity);
        assert_eq!(Compression::Identity.if_accepted(&h), Compression::Identity);
    }

    #[test]
    fn default_compression_algorithm_option() {
        use serde_json::json;
        let of = |v: serde_json::Value| {
            ServerConfig::from_options(&json!({"protocol": "grpc", "connectionPool": {"protocolSpecific": {"defaultCompressionAlgorithm": v}}}))
                .map(|c| c.grpc.unwrap().default_compression_algorithm)
        };
        assert_eq!(of(json!(null)), Ok(Compression::Identity));
        assert_eq!(of(json!("gzip")), Ok(Compression::Gzip));
        assert_eq!(of(json!("deflate")), Ok(Compression::Deflate));
        assert_eq!(of(json!(2)), Ok(Compression::Gzip));
        assert_eq!(of(json!(0)), Ok(Compression::Identity));
        for bad in [
            json!("br"),
            json!("GZIP"),
            json!(3),
            json!(-1),
            json!(1.5),
            json!(true),
        ] {
            let e = of(bad.clone()).unwrap_err();
            assert_eq!(
                e.key, "connectionPool.protocolSpecific.defaultCompressionAlgorithm",
                "{bad}"
            );
        }
        let none = ServerConfig::from_options(&json!({"protocol": "grpc"})).unwrap();
        assert_eq!(
            none.grpc.unwrap().default_compression_algorithm,
            Compression::Identity
        );
    }

    #[test]
    fn unknown_request_encodings_are_unimplemented() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(request_encoding(&h), Ok(None)));
        h.insert("grpc-encoding", http::HeaderValue::from_static("deflate"));
        assert!(matches!(
            request_encoding(&h),
            Ok(Some(CompressionEncoding::Deflate))
        ));
        h.insert("grpc-encoding", http::HeaderValue::from_static("br"));
        let status = request_encoding(&h).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            ACCEPT_ENCODING
        );
    }

    #[test]
    fn reserved_metadata_is_not_sent() {
        let m = metadata_map(&[
            "content-type".into(),
            "x".into(),
            "x-id".into(),
            "7".into(),
            "grpc-status".into(),
            "0".into(),
        ]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("x-id").unwrap(), "7");
    }
}
