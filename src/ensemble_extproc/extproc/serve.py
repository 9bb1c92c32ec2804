"""Serving the processor: gRPC ext_proc and health, Prometheus metrics, a graceful stop."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from ..config import Config
from ..observability.metrics import ProcessorMetrics, process_registry
from ..observability.tracing import start_tracing
from ..serve import DRAIN_SECONDS, GRACE_SECONDS, wait_for_signal
from .server import create_server

log = logging.getLogger(__name__)


async def serve_extproc(config: Config) -> None:
    metrics = ProcessorMetrics(process_registry())
    tracing = start_tracing(config.tracing, "processor")
    server, port = create_server(config, config.listen.extproc, metrics, tracing)
    # The standard grpc.health.v1 service: Envoy's health checks of the processor ask it.
    health = grpc_health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    where = config.listen.extproc_metrics
    metrics_server, _ = start_http_server(where.port, where.host, metrics.registry)
    log.info(
        "ext_proc listening on %s:%d, metrics on http://%s/metrics",
        config.listen.extproc.host,
        port,
        where,
    )
    try:
        await wait_for_signal()
        await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(DRAIN_SECONDS)
    finally:
        # Let streams of requests in flight finish; Envoy opens new ones elsewhere.
        await server.stop(GRACE_SECONDS)
        metrics_server.shutdown()
        if tracing is not None:
            tracing.shutdown()  # the spans still buffered are exported
