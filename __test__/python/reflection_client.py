"""Server reflection through grpcio-reflection's client (koatty_serve's __test__/grpc-interop.test.js).

Resolves grpc.testing.TestService, one of its messages and the health service through a protobuf
DescriptorPool backed by ProtoReflectionDescriptorDatabase (grpc.reflection.v1alpha), as reflection
clients such as grpcurl do. Prints one JSON line with what it found.

Usage: python reflection_client.py HOST:PORT
"""
import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(target):
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        test_service = pool.FindServiceByName("grpc.testing.TestService")
        request = pool.FindMessageTypeByName("grpc.testing.SimpleRequest")
        health = pool.FindServiceByName("grpc.health.v1.Health")
        try:
            pool.FindServiceByName("grpc.testing.Nope")
            unknown = "found"
        except KeyError:
            unknown = "KeyError"
        print(json.dumps({
            "services": sorted(database.get_services()),
            "test_service_methods": sorted(m.name for m in test_service.methods),
            "simple_request_fields": sorted(f.name for f in request.fields),
            "health_methods": [m.name for m in health.methods],
            "unknown": unknown,
        }))


if __name__ == "__main__":
    main(sys.argv[1])
