'use strict';
// Hand-made HTTP/2 frames for tests that speak to the server below node's http2 client (RFC 9113
// §4.1): the client preface, one frame of any type, and the frames a socket receives.

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** A frame: 9-byte head (length, type, flags, stream id) and `payload`. */
function frame(type, flags, stream, payload = Buffer.alloc(0)) {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** Calls `onFrame(type, flags, stream, payload)` for each frame `socket` receives, whole. */
function onFrames(socket, onFrame) {
  let buf = Buffer.alloc(0);
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const [type, flags, stream, payload] = [buf[3], buf[4], buf.readUInt32BE(5) & 0x7fffffff, buf.subarray(9, 9 + len)];
      buf = buf.subarray(9 + len);
      onFrame(type, flags, stream, payload);
    }
  });
}

module.exports = { PREFACE, frame, onFrames };
