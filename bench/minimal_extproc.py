"""The floor: a minimal grpc.aio ext_proc servicer, the baseline of bench/overhead.py.

It answers the request headers with an empty CommonResponse and the mode override ours
sends when the headers decide (no body, no response direction), and any other message
with an empty answer of its phase: the same protocol work as our processor's plain
pass-through, without a decision, metrics or metadata (it serves gRPC health, as ours does, for
Envoy's health checks). It runs on the event loop the
processor runs on (``--loop``), so that the two differ only in our code.

    python -m bench.minimal_extproc --port PORT [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from ensemble_extproc.extproc.responses import HEADERS_ONLY

HEADERS = pb.ProcessingResponse(
    request_headers=pb.HeadersResponse(response=pb.CommonResponse()), mode_override=HEADERS_ONLY
)
OTHERS = {
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


class Minimal(pb_grpc.ExternalProcessorServicer):
    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        async for request in request_iterator:
            phase = request.WhichOneof("request")
            yield HEADERS if phase == "request_headers" else OTHERS[str(phase)]


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalProcessorServicer_to_server(Minimal(), server)
    # Envoy's health checks of the processor cluster (two a second) ask it, as they ask ours.
    health = grpc_health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    (uvloop.run if args.loop == "uvloop" else asyncio.run)(serve(args.port))


if __name__ == "__main__":
    main()
