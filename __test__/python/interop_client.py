"""A python grpcio client for koatty_serve's gRPC tests (__test__/grpc-interop.test.js).

Calls grpc.testing.TestService (protos in __test__/protos/grpc/testing) on HOST:PORT: empty_unary,
large_unary, server_streaming, custom_metadata, status_code_and_message, special_status_message,
unimplemented_method, a deadline, client_compressed_unary (gzip and deflate requests) and
server_compressed_unary / server_compressed_streaming (grpcio reads compressed and uncompressed
replies; whether each was compressed on the wire is checked by the node tests, grpcio does not
show it). No generated stubs: the few protobuf messages are encoded and
decoded by hand, so only grpcio is needed. Prints one JSON line with the results; exit 0 when every
call did what the interop descriptions expect.

Usage: python interop_client.py HOST:PORT
"""
import json
import sys

import grpc

SERVICE = "/grpc.testing.TestService/"


# --- minimal protobuf wire format -------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


def parse(data):
    """{field number: [values]} (varints as int, length-delimited as bytes)."""
    fields = {}
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            value, i = data[i:i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % wire)
        fields.setdefault(num, []).append(value)
    return fields


def read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def payload(size):
    # Payload { type = 1 (COMPRESSABLE = 0, omitted); body = 2 }
    return field_bytes(2, b"\0" * size)


def bool_value(value):
    # BoolValue { value = 1 }
    return field_varint(1, 1) if value else b""


def simple_request(response_size=0, payload_size=0, status=None, response_compressed=None):
    msg = b""
    if response_size:
        msg += field_varint(2, response_size)
    if payload_size:
        msg += field_bytes(3, payload(payload_size))
    if response_compressed is not None:
        msg += field_bytes(6, bool_value(response_compressed))
    if status:
        code, message = status
        msg += field_bytes(7, field_varint(1, code) + field_bytes(2, message.encode("utf-8")))
    return msg


def payload_size_of(response):
    """SimpleResponse / StreamingOutputCallResponse: payload = 1 → body = 2."""
    p = parse(response).get(1, [b""])[0]
    return len(parse(p).get(2, [b""])[0])


def streaming_output_request(sizes, interval_us=0, compressed=None):
    msg = b""
    for i, size in enumerate(sizes):
        params = field_varint(1, size)
        if interval_us:
            params += field_varint(2, interval_us)
        if compressed is not None:
            params += field_bytes(3, bool_value(compressed[i]))
        msg += field_bytes(2, params)
    return msg


def identity(x):
    return x


def main():
    target = sys.argv[1]
    out = {"grpcio": grpc.__version__}
    ok = True
    with grpc.insecure_channel(target) as channel:
        unary = lambda m: channel.unary_unary(SERVICE + m, request_serializer=identity, response_deserializer=identity)
        server_stream = lambda m: channel.unary_stream(SERVICE + m, request_serializer=identity, response_deserializer=identity)

        reply = unary("EmptyCall")(b"", timeout=5)
        out["empty_unary"] = {"ok": reply == b""}

        reply = unary("UnaryCall")(simple_request(314159, 271828), timeout=5)
        out["large_unary"] = {"ok": True, "size": payload_size_of(reply)}

        sizes = [31415, 9, 2653, 58979]
        replies = list(server_stream("StreamingOutputCall")(streaming_output_request(sizes), timeout=5))
        out["server_streaming"] = {"ok": True, "sizes": [payload_size_of(r) for r in replies]}

        metadata = (("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                    ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
        _, call = unary("UnaryCall").with_call(simple_request(1, 1), metadata=metadata, timeout=5)
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        out["custom_metadata"] = {
            "initial": initial.get("x-grpc-test-echo-initial"),
            "trailing": (trailing.get("x-grpc-test-echo-trailing-bin") or b"").hex(),
        }

        for name, message in (("status_code_and_message", "test status message"),
                              ("special_status_message",
                               "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001F608\t\n")):
            try:
                unary("UnaryCall")(simple_request(status=(2, message)), timeout=5)
                out[name] = {"code": "OK"}
            except grpc.RpcError as err:
                out[name] = {"code": err.code().name, "details": err.details()}

        try:
            unary("UnimplementedCall")(b"", timeout=5)
            out["unimplemented_method"] = {"code": "OK"}
        except grpc.RpcError as err:
            out["unimplemented_method"] = {"code": err.code().name}

        try:
            list(server_stream("StreamingOutputCall")(streaming_output_request([1, 1], interval_us=500000), timeout=0.2))
            out["timeout"] = {"code": "OK"}
        except grpc.RpcError as err:
            out["timeout"] = {"code": err.code().name}

        out["client_compressed_unary"] = {}
        for name, algorithm in (("gzip", grpc.Compression.Gzip), ("deflate", grpc.Compression.Deflate)):
            reply = unary("UnaryCall")(simple_request(314159, 271828), timeout=5, compression=algorithm)
            out["client_compressed_unary"][name] = payload_size_of(reply)

        out["server_compressed_unary"] = [
            payload_size_of(unary("UnaryCall")(simple_request(314159, 271828, response_compressed=c), timeout=5))
            for c in (True, False)
        ]
        replies = list(server_stream("StreamingOutputCall")(
            streaming_output_request([31415, 92653], compressed=[True, False]), timeout=5))
        out["server_compressed_streaming"] = [payload_size_of(r) for r in replies]

    expected_sizes = [31415, 9, 2653, 58979]
    ok = (out["empty_unary"]["ok"] and out["large_unary"]["size"] == 314159
          and out["server_streaming"]["sizes"] == expected_sizes
          and out["status_code_and_message"].get("code") == "UNKNOWN"
          and out["unimplemented_method"]["code"] == "UNIMPLEMENTED"
          and out["timeout"]["code"] == "DEADLINE_EXCEEDED"
          and out["client_compressed_unary"] == {"gzip": 314159, "deflate": 314159}
          and out["server_compressed_unary"] == [314159, 314159]
          and out["server_compressed_streaming"] == [31415, 92653])
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
