"""Long-running services: each runs until SIGINT/SIGTERM, then shuts down gracefully."""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from .config import Config

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


# Each service's module is imported only when that service starts: the processor never
# loads aiohttp, the upstream or the demo models (tests/test_imports.py checks it).
SERVICES: dict[str, str] = {
    "extproc": "ensemble_extproc.extproc.serve:serve_extproc",
    "upstream": "ensemble_extproc.upstream.app:serve_upstream",
    "demo": "ensemble_extproc.demo.server:serve_demo",
}


def service(name: str) -> Callable[[Config], Coroutine[Any, Any, None]]:
    """The coroutine function that serves ``name`` (a key of ``SERVICES``)."""
    module, _, function = SERVICES[name].partition(":")
    serve: Callable[[Config], Coroutine[Any, Any, None]] = getattr(
        importlib.import_module(module), function
    )
    return serve
