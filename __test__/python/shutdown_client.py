"""A python grpcio client for the shutdown case of koatty_serve's gRPC tests (grpc-interop.test.js).

Opens one channel to HOST:PORT, calls grpc.testing.TestService/EmptyCall (must succeed), prints
"ready", waits for a line on stdin (the test has begun the server's shutdown meanwhile), calls
EmptyCall again on the same channel and prints one JSON line {"first": code, "late": code,
"details": ...}. During a shutdown the late call must fail UNAVAILABLE (which clients retry), never
INTERNAL.

Usage: python shutdown_client.py HOST:PORT
"""
import json
import sys

import grpc


def main():
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/grpc.testing.TestService/EmptyCall",
                                   request_serializer=lambda x: x, response_deserializer=lambda x: x)
        call(b"", timeout=5)
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            call(b"", timeout=5)
            late, details = "OK", ""
        except grpc.RpcError as err:
            late, details = err.code().name, err.details()
        print(json.dumps({"first": "OK", "late": late, "details": details}), flush=True)


if __name__ == "__main__":
    main()
