'use strict';
// Hand-made HTTP/2 frames for tests that speak to the server below node's http2 client (RFC 9113
// §4.1): the client preface and one frame of any type.

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

module.exports = { PREFACE, frame };
