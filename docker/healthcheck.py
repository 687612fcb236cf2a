"""Container health check: exit 0 when the server's gRPC health service answers SERVING, 1 otherwise.

Docker's HEALTHCHECK (and anything else that can run a command) calls it inside the container. It asks the standard
grpc.health.v1 service for the whole server (service ""), which cnnserve reports SERVING while at least one model
version is ready and the server is not draining; a port that accepts connections is not enough.

    python healthcheck.py [ADDRESS]     default 127.0.0.1:$CNNSERVE_HEALTH_PORT when set (the plaintext health-only
                                        listener, which works whatever TLS or tokens 8001 requires), else
                                        127.0.0.1:$CNNSERVE_PORT (8001)
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def main(argv: list[str]) -> int:
    health_port = os.environ.get("CNNSERVE_HEALTH_PORT", "")
    port = health_port if health_port.isdigit() and int(health_port) > 0 else os.environ.get("CNNSERVE_PORT", "8001")
    address = argv[0] if argv else f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
            )
    except grpc.RpcError as error:
        print(f"unhealthy: {address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
