//! WebSocket frames read and written without per-connection buffers.
//!
//! tungstenite's stream keeps a read buffer for the connection's life and grows it, for good, to
//! the largest frame received; its writer keeps a buffer as large as the largest batch sent. An
//! idle connection paid 4 KiB for the first, and one that once received and echoed a 1 MiB message
//! kept 2 MiB until it closed. Here a connection holds bytes only while a frame is partly received
//! or a batch is being written. tungstenite still parses frame headers and names the errors, so
//! the close codes and reasons are the ones it gave (RFC 6455 §5).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, Cursor, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, FrameHeader, Utf8Bytes};

/// What a client sent: a whole message (its fragments joined) or a control frame.
#[derive(Debug, PartialEq)]
pub(super) enum Incoming {
    Message { data: Bytes, binary: bool },
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

/// The most one read takes while no frame is in progress. It lands on the stack; only what
/// arrived is copied to the heap.
const SCRATCH: usize = 16 * 1024;
/// A partly received frame's buffer grows by at least this.
const MIN_GROW: usize = 4 * 1024;
/// Frames one message may come in, at most: ws's `maxFragments` default (8.23). Empty
/// continuation frames never reach `maxPayload`, and a peer sending them without end kept a CPU
/// busy (outside probe); ws fails such a message with 1008.
pub(super) const MAX_FRAGMENTS: u32 = 16 * 1024;

/// Reads a client's frames and assembles its messages (server side: every frame must be masked).
pub(super) struct FrameReader<R> {
    io: R,
    /// Received and not yet taken; unallocated whenever it is empty.
    buf: BytesMut,
    /// The frame being received: its header and payload length.
    header: Option<(FrameHeader, usize)>,
    /// A fragmented message so far.
    fragments: Option<Fragments>,
    /// Largest frame, and largest message (`maxPayload` for both).
    max_size: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, max_size: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
            header: None,
            fragments: None,
            max_size,
        }
    }

    /// The next message or control frame. Cancel-safe: what was read stays here for the next call.
    /// A peer that closes the connection without a close frame gives
    /// `ResetWithoutClosingHandshake`.
    pub async fn next(&mut self) -> Result<Incoming, WsError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, WsError>> {
        loop {
            if let Some(incoming) = self.take_frames()? {
                return Poll::Ready(Ok(incoming));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Takes the complete frames in `buf` until one completes something to hand on.
    fn take_frames(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let len = match self.header {
                Some((_, len)) => len,
                None => {
                    let mut cursor = Cursor::new(&self.buf[..]);
                    let Some((header, len)) = FrameHeader::parse(&mut cursor)? else {
                        return Ok(None);
                    };
                    // Refused before a byte of its payload is buffered.
                    self.check_header(&header, len)?;
                    let parsed = cursor.position() as usize;
                    self.buf.advance(parsed);
                    self.header = Some((header, len as usize));
                    len as usize
                }
            };
            if self.buf.len() < len {
                return Ok(None);
            }
            let (header, _) = self.header.take().expect("a header was parsed");
            let payload = self.buf.split_to(len);
            if self.buf.is_empty() {
                // Let go of the allocation (the payload may still share it, until it is dropped).
                self.buf = BytesMut::new();
            }
            if let Some(incoming) = self.on_frame(header, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Whether bytes the peer sent wait here, not yet taken as frames.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads and drops what the peer sends until it closes the connection (or it fails).
    pub async fn discard_until_closed(&mut self) {
        self.buf = BytesMut::new();
        self.fragments = None;
        std::future::poll_fn(|cx| loop {
            match ready!(poll_read_scratch(&mut self.io, cx, |_| {})) {
                Ok(n) if n > 0 => continue,
                _ => return Poll::Ready(()),
            }
        })
        .await
    }

    /// Checks a frame's header as tungstenite checks the whole frame (`read_frame` and
    /// `read_message_frame`, in the same order), but before its payload arrives, as ws does: a
    /// frame that can only fail the connection is not buffered first.
    fn check_header(&self, header: &FrameHeader, len: u64) -> Result<(), WsError> {
        let protocol = |e| Err(WsError::Protocol(e));
        if len > self.max_size as u64 {
            return Err(too_long(len as usize, self.max_size));
        }
        if header.mask.is_none() {
            return protocol(ProtocolError::UnmaskedFrameFromClient);
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return protocol(ProtocolError::NonZeroReservedBits);
        }
        match (header.opcode, self.fragments.as_ref()) {
            (OpCode::Control(_), _) if !header.is_final => {
                protocol(ProtocolError::FragmentedControlFrame)
            }
            (OpCode::Control(_), _) if len > 125 => protocol(ProtocolError::ControlFrameTooBig),
            (OpCode::Control(Control::Reserved(i)), _) => {
                protocol(ProtocolError::UnknownControlFrameType(i))
            }
            (OpCode::Control(_), _) => Ok(()),
            (OpCode::Data(Data::Continue), None) => {
                protocol(ProtocolError::UnexpectedContinueFrame)
            }
            (OpCode::Data(Data::Continue), Some(so_far)) => {
                let size = so_far.data.len() as u64 + len;
                if size > self.max_size as u64 {
                    return Err(too_long(size as usize, self.max_size));
                }
                if so_far.frames >= MAX_FRAGMENTS {
                    return Err(WsError::AttackAttempt);
                }
                Ok(())
            }
            (OpCode::Data(data), Some(_)) => protocol(ProtocolError::ExpectedFragment(data)),
            (OpCode::Data(Data::Reserved(i)), None) => {
                protocol(ProtocolError::UnknownDataFrameType(i))
            }
            (OpCode::Data(_), None) => Ok(()),
        }
    }

    /// One whole frame, its header checked (`check_header`).
    fn on_frame(
        &mut self,
        header: FrameHeader,
        mut payload: BytesMut,
    ) -> Result<Option<Incoming>, WsError> {
        if let Some(mask) = header.mask {
            apply_mask(&mut payload, mask);
        }
        let binary = match header.opcode {
            OpCode::Control(control) => {
                let payload = payload.freeze();
                return Ok(Some(match control {
                    Control::Close => Incoming::Close(close_frame(payload)?),
                    Control::Ping => Incoming::Ping(payload),
                    Control::Pong => Incoming::Pong(payload),
                    Control::Reserved(_) => unreachable!("refused by check_header"),
                }));
            }
            OpCode::Data(Data::Continue) => {
                let so_far = self.fragments.as_mut().expect("checked by check_header");
                so_far.frames += 1;
                so_far.extend(&payload)?;
                if !header.is_final {
                    return Ok(None);
                }
                let whole = self.fragments.take().expect("checked by check_header");
                return whole.complete().map(Some);
            }
            OpCode::Data(Data::Text) => false,
            OpCode::Data(_) => true,
        };
        let first = Fragments {
            binary,
            data: payload,
            checked: 0,
            frames: 1,
        };
        if header.is_final {
            return first.complete().map(Some);
        }
        self.fragments = Some(first.checked_so_far()?);
        Ok(None)
    }

    /// Makes room to read into: at least `MIN_GROW`, doubling what is buffered (a header
    /// announcing a large frame gets memory as its bytes arrive), but never past the end of the
    /// frame in progress (doubling alone could hold twice its size).
    fn grow(&mut self) {
        let len = self.buf.len();
        let spare = self.buf.capacity() - len;
        if spare >= MIN_GROW {
            return;
        }
        let mut capacity = (len * 2).max(len + MIN_GROW);
        if let Some(&(_, frame_end)) = self.header.as_ref().filter(|(_, end)| *end > len) {
            capacity = capacity.min(frame_end);
        }
        if capacity <= self.buf.capacity() {
            return;
        }
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    /// Reads more. With nothing in progress the read lands on the stack and only what arrived is
    /// kept; a partly received frame reads straight into its buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let read = if self.buf.is_empty() {
            let buf = &mut self.buf;
            ready!(poll_read_scratch(&mut self.io, cx, |bytes| buf.extend_from_slice(bytes)))?
        } else {
            self.grow();
            let mut into = ReadBuf::uninit(self.buf.spare_capacity_mut());
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
            unsafe { self.buf.set_len(self.buf.len() + n) };
            n
        };
        if read == 0 {
            return Poll::Ready(Err(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake,
            )));
        }
        Poll::Ready(Ok(()))
    }
}

/// One read onto the stack (nothing is kept between reads); `take` gets what arrived.
fn poll_read_scratch<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
    let mut into = ReadBuf::uninit(&mut scratch);
    ready!(Pin::new(io).poll_read(cx, &mut into))?;
    take(into.filled());
    Poll::Ready(Ok(into.filled().len()))
}

/// A fragmented message being received. Its text is checked as fragments arrive, so invalid
/// UTF-8 fails the connection at the fragment that holds it (as tungstenite did), not at the end.
struct Fragments {
    binary: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 (text only).
    checked: usize,
    /// Frames received so far (at most `MAX_FRAGMENTS`).
    frames: u32,
}

impl Fragments {
    /// Adds a fragment (its size was checked with its header).
    fn extend(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.data.extend_from_slice(payload);
        self.check_text()
    }

    /// Checks the text received since the last check; a character cut at the end waits for the
    /// next fragment.
    fn check_text(&mut self) -> Result<(), WsError> {
        if self.binary {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn checked_so_far(mut self) -> Result<Self, WsError> {
        self.check_text()?;
        Ok(self)
    }

    /// The whole message; its text must be UTF-8 to the end.
    fn complete(self) -> Result<Incoming, WsError> {
        if !self.binary {
            std::str::from_utf8(&self.data[self.checked..])?;
        }
        Ok(Incoming::Message {
            data: self.data.freeze(),
            binary: self.binary,
        })
    }
}

fn too_long(size: usize, max_size: usize) -> WsError {
    WsError::Capacity(CapacityError::MessageTooLong { size, max_size })
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::Protocol(ProtocolError::InvalidCloseSequence)),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            let reason = Utf8Bytes::try_from(payload.slice(2..))?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Unmasks (or masks) `buf` four bytes at a time.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let mut chunks = buf.chunks_exact_mut(4);
    let word = u32::from_ne_bytes(mask);
    for chunk in &mut chunks {
        let masked = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

/// Payloads up to this size are copied beside their header; larger ones are written from where
/// they are (a vectored write), not copied.
const COPY_AT_MOST: usize = 4 * 1024;
/// Slices per vectored write (Linux allows 1024).
const MAX_SLICES: usize = 64;

/// Frames to write together (server side: unmasked), in order.
#[derive(Default)]
pub(super) struct FrameBatch {
    chunks: VecDeque<Bytes>,
    /// Headers and small payloads since the last large payload.
    run: BytesMut,
}

impl FrameBatch {
    pub fn push(&mut self, opcode: OpCode, payload: Bytes) {
        put_header(&mut self.run, opcode, payload.len());
        if payload.len() <= COPY_AT_MOST {
            self.run.extend_from_slice(&payload);
        } else {
            self.chunks.push_back(self.run.split().freeze());
            self.chunks.push_back(payload);
        }
    }

    /// A close frame; a reason is cut to the 123 bytes a control frame leaves it (at a character
    /// boundary).
    pub fn push_close(&mut self, frame: Option<CloseFrame>) {
        let mut payload = BytesMut::new();
        if let Some(frame) = frame {
            let mut reason = frame.reason.as_str();
            while reason.len() > 123 {
                let mut end = 123;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason = &reason[..end];
            }
            payload.put_u16(u16::from(frame.code));
            payload.extend_from_slice(reason.as_bytes());
        }
        self.push(OpCode::Control(Control::Close), payload.freeze());
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.run.is_empty()
    }

    /// Writes every frame and flushes; when it is done the batch holds nothing (no memory either).
    pub fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.run.is_empty() {
            self.chunks.push_back(self.run.split().freeze());
        }
        while !self.chunks.is_empty() {
            let written = ready!(self.poll_write_some(cx, io))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(written);
        }
        self.run = BytesMut::new();
        self.chunks = VecDeque::new();
        Pin::new(io).poll_flush(cx)
    }

    fn poll_write_some<W: AsyncWrite + Unpin>(
        &self,
        cx: &mut Context<'_>,
        io: &mut W,
    ) -> Poll<io::Result<usize>> {
        if self.chunks.len() == 1 || !io.is_write_vectored() {
            return Pin::new(io).poll_write(cx, &self.chunks[0]);
        }
        let slices: Vec<IoSlice<'_>> = self
            .chunks
            .iter()
            .take(MAX_SLICES)
            .map(|c| IoSlice::new(c))
            .collect();
        Pin::new(io).poll_write_vectored(cx, &slices)
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.chunks.pop_front();
        }
    }
}

/// A final, unmasked frame's header (RFC 6455 §5.2).
fn put_header(buf: &mut BytesMut, opcode: OpCode, len: usize) {
    buf.put_u8(0x80 | u8::from(opcode));
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A client frame: masked, with the given first byte.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // In small pieces: frames arrive split at every point.
            for piece in bytes.chunks(7) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let mut reader = FrameReader::new(server, max);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(incoming) => out.push(Ok(incoming)),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    fn text(s: &str) -> Result<Incoming, String> {
        Ok(Incoming::Message {
            data: Bytes::copy_from_slice(s.as_bytes()),
            binary: false,
        })
    }

    const EOF: &str = "WebSocket protocol error: Connection reset without closing handshake";

    #[tokio::test]
    async fn a_message_may_come_in_max_fragments_frames_and_not_one_more() {
        let message = |frames: u32| {
            let mut bytes = frame(0x01, b"a");
            for _ in 1..frames - 1 {
                bytes.extend(frame(0x00, b""));
            }
            bytes.extend(frame(0x80, b""));
            bytes
        };
        let mut bytes = message(MAX_FRAGMENTS);
        bytes.extend(message(MAX_FRAGMENTS + 1));
        let got = read_all(bytes, 1 << 20).await;
        assert_eq!(got[0], text("a"), "{MAX_FRAGMENTS} frames: one message");
        assert_eq!(
            got[1],
            Err(WsError::AttackAttempt.to_string()),
            "one more: refused"
        );
    }

    #[tokio::test]
    async fn messages_fragments_and_control_frames_arrive_whole_and_unmasked() {
        let big = vec![7u8; 70_000];
        let mut bytes = frame(0x81, b"hello");
        bytes.extend(frame(0x02, b"ab")); // binary, not final
        bytes.extend(frame(0x89, b"ping")); // a ping between fragments
        bytes.extend(frame(0x80, b"cd")); // continuation, final
        bytes.extend(frame(0x82, &big));
        bytes.extend(frame(0x8a, b""));
        bytes.extend(frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let got = read_all(bytes, 1 << 20).await;
        assert_eq!(got[0], text("hello"));
        assert_eq!(got[1], Ok(Incoming::Ping(Bytes::from_static(b"ping"))));
        assert_eq!(
            got[2],
            Ok(Incoming::Message {
                data: Bytes::from_static(b"abcd"),
                binary: true
            })
        );
        assert_eq!(
            got[3],
            Ok(Incoming::Message {
                data: Bytes::from(big),
                binary: true
            })
        );
        assert_eq!(got[4], Ok(Incoming::Pong(Bytes::new())));
        assert_eq!(
            got[5],
            Ok(Incoming::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into()
            })))
        );
        assert_eq!(got[6], Err(EOF.into()));
        assert_eq!(got.len(), 7);
    }

    #[tokio::test]
    async fn protocol_errors_are_the_ones_tungstenite_names() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                frame(0xc1, b"x"),
                "WebSocket protocol error: Reserved bits are non-zero",
            ),
            (
                {
                    let mut f = frame(0x81, b"");
                    f[1] &= 0x7f; // no mask
                    f
                },
                "WebSocket protocol error: Received an unmasked frame from client",
            ),
            (
                frame(0x83, b"x"),
                "WebSocket protocol error: Encountered invalid opcode: 3",
            ),
            (
                frame(0x8b, b"x"),
                "WebSocket protocol error: Encountered invalid opcode: 11",
            ),
            (
                frame(0x09, b"x"),
                "WebSocket protocol error: Fragmented control frame",
            ),
            (
                frame(0x80, b"x"),
                "WebSocket protocol error: Continue frame but nothing to continue",
            ),
            (
                [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
                "WebSocket protocol error: While waiting for more fragments received: TEXT",
            ),
            (
                frame(0x81, &[0xc3, 0x28]),
                "UTF-8 encoding error: invalid utf-8 sequence of 1 bytes from index 0",
            ),
            (
                [frame(0x01, &[0xe2, 0x82]), frame(0x80, &[0x28])].concat(),
                "UTF-8 encoding error: invalid utf-8 sequence of 2 bytes from index 0",
            ),
            (
                frame(0x88, &[0x03]),
                "WebSocket protocol error: Invalid close sequence",
            ),
            (
                frame(0x82, &[0; 101]),
                "Space limit exceeded: Message too long: 101 > 100",
            ),
            (
                [frame(0x02, &[0; 60]), frame(0x80, &[0; 60])].concat(),
                "Space limit exceeded: Message too long: 120 > 100",
            ),
            // A header announcing 2^40 bytes is refused before any payload arrives.
            (
                vec![0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                "Space limit exceeded: Message too long: 1099511627776 > 100",
            ),
        ];
        for (bytes, error) in cases {
            let got = read_all(bytes.clone(), 100).await;
            assert_eq!(got.last(), Some(&Err(error.to_string())), "{bytes:x?}");
        }
        let got = read_all(frame(0x89, &[0; 126]), 1000).await;
        assert_eq!(
            got[0],
            Err("WebSocket protocol error: Control frame too big (payload must be 125 bytes or less)".into())
        );
        // Invalid text fails at the fragment that holds it: the final one never comes.
        let got = read_all([frame(0x01, b"ok"), frame(0x00, &[0xff])].concat(), 100).await;
        assert_eq!(
            got[0],
            Err("UTF-8 encoding error: invalid utf-8 sequence of 1 bytes from index 0".into())
        );
        // A valid character split between fragments is fine.
        let bytes = [frame(0x01, &[0xe2, 0x82]), frame(0x80, &[0xac])].concat();
        assert_eq!(read_all(bytes, 100).await[0], text("€"));
        // An invalid close code is reported as sent (the connection decides the reply).
        let got = read_all(frame(0x88, &[0x03, 0xe7]), 100).await;
        assert!(matches!(&got[0], Ok(Incoming::Close(Some(f))) if !f.code.is_allowed()));
    }

    #[tokio::test]
    async fn nothing_stays_allocated_between_frames() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, 1 << 20);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(&frame(0x82, &vec![1u8; 300_000]))
            .await
            .unwrap();
        assert!(
            matches!(reader.next().await, Ok(Incoming::Message { data, .. }) if data.len() == 300_000)
        );
        assert_eq!(reader.buf.capacity(), 0);
        client.write_all(&frame(0x81, b"hi")).await.unwrap();
        assert_eq!(reader.next().await.unwrap(), text("hi").unwrap());
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_frame_that_can_only_fail_is_refused_at_its_header() {
        // Headers only: no payload ever comes (read_all ends with the peer gone otherwise).
        let unmasked = vec![0x82, 126, 0xc3, 0x50];
        let big_ping = vec![0x89, 0x80 | 126, 0xc3, 0x50, 1, 2, 3, 4];
        let orphan = vec![0x80, 0x80 | 126, 0xc3, 0x50, 1, 2, 3, 4];
        for (head, error) in [
            (unmasked, "WebSocket protocol error: Received an unmasked frame from client"),
            (big_ping, "WebSocket protocol error: Control frame too big (payload must be 125 bytes or less)"),
            (orphan, "WebSocket protocol error: Continue frame but nothing to continue"),
        ] {
            assert_eq!(read_all(head, 1 << 20).await, [Err(error.to_string())]);
        }
        // A fragment that would take the message over the limit, before its bytes arrive.
        let mut bytes = frame(0x02, &[0; 60]);
        bytes.extend_from_slice(&[0x80, 0x80 | 60, 1, 2, 3, 4]);
        let got = read_all(bytes, 100).await;
        assert_eq!(
            got,
            [Err(
                "Space limit exceeded: Message too long: 120 > 100".into()
            )]
        );
    }

    #[tokio::test]
    async fn a_partly_received_frame_holds_at_most_its_own_size() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(server, 1 << 20);
        use tokio::io::AsyncWriteExt;
        let whole = frame(0x82, &vec![1u8; 300_000]);
        client.write_all(&whole[..250_000]).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(pending.is_err(), "the frame is not complete");
        assert!(reader.buf.len() > 200_000);
        assert!(
            reader.buf.capacity() <= 300_000,
            "{}",
            reader.buf.capacity()
        );
        client.write_all(&whole[250_000..]).await.unwrap();
        assert!(
            matches!(reader.next().await, Ok(Incoming::Message { data, .. }) if data.len() == 300_000)
        );
    }

    #[tokio::test]
    async fn batches_write_headers_small_payloads_and_large_ones_in_order() {
        let mut batch = FrameBatch::default();
        batch.push(OpCode::Data(Data::Text), Bytes::from_static(b"hi"));
        let large = Bytes::from(vec![9u8; 70_000]);
        batch.push(OpCode::Data(Data::Binary), large.clone());
        batch.push(OpCode::Control(Control::Pong), Bytes::new());
        batch.push_close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "é".repeat(70).into(),
        }));
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        std::future::poll_fn(|cx| batch.poll_write_to(&mut ours, cx))
            .await
            .unwrap();
        assert!(batch.is_empty());
        drop(ours);
        let mut got = Vec::new();
        use tokio::io::AsyncReadExt;
        theirs.read_to_end(&mut got).await.unwrap();
        let mut want = vec![0x81, 2, b'h', b'i', 0x82, 127];
        want.extend_from_slice(&70_000u64.to_be_bytes());
        want.extend_from_slice(&large);
        want.extend_from_slice(&[0x8a, 0]);
        // 2 + 122 bytes: the reason cut at a character boundary below 123.
        want.extend_from_slice(&[0x88, 124, 0x03, 0xe9]);
        want.extend_from_slice("é".repeat(61).as_bytes());
        assert_eq!(got, want);
    }
}
