"""Long-running services: each runs until SIGINT/SIGTERM, then shuts down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from .config import Config
from .demo import serve_demo_forever
from .extproc import create_server
from .observability.metrics import ProcessorMetrics
from .upstream import create_app
from .upstream.app import DRAINING

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
# Envoy opens one connection per concurrent HTTP/1.1 request: a burst of ensembles opens
# hundreds at once. aiohttp's default backlog (128) dropped the excess SYNs, and Envoy's
# 1 s connect timeout turned them into 503s (bench/burst.py, 300 at once). The kernel caps
# it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
# After SIGTERM, report unhealthy this long before closing the listener, so Envoy's health
# checks (every 0.5 s) move new requests to other replicas first.
DRAIN_SECONDS = 1.5


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve_extproc(config: Config) -> None:
    metrics = ProcessorMetrics(CollectorRegistry())
    server, port = create_server(config, config.listen.extproc, metrics)
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


async def serve_upstream(config: Config) -> None:
    # Cancel the fan-out when Envoy gives up on a request, instead of finishing it unseen.
    app = create_app(config)
    runner = web.AppRunner(
        app,
        shutdown_timeout=GRACE_SECONDS,
        access_log=None,
        handler_cancellation=True,
    )
    await runner.setup()
    address = config.listen.upstream
    site = web.TCPSite(runner, address.host, address.port, reuse_port=False, backlog=LISTEN_BACKLOG)
    await site.start()
    log.info("ensemble upstream listening on http://%s", address)
    try:
        await wait_for_signal()
        app[DRAINING].set()  # /healthz answers 503: Envoy stops sending new requests
        await asyncio.sleep(DRAIN_SECONDS)
    finally:
        await runner.cleanup()


async def serve_demo(config: Config) -> None:
    task = asyncio.create_task(serve_demo_forever(config.demo_models, "127.0.0.1"))
    try:
        await wait_for_signal()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


SERVICES: dict[str, Callable[[Config], Coroutine[Any, Any, None]]] = {
    "extproc": serve_extproc,
    "upstream": serve_upstream,
    "demo": serve_demo,
}
