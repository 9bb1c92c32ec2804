"""Fixtures: demo model servers, the ensemble upstream, the whole gateway on real Envoy, an
HTTP client session. Importable helpers live in helpers.py and parts.py.

Every server binds 127.0.0.1 on a free port and is stopped even when a test fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.upstream import create_app
from parts import DEMO_MODELS, POLICY, Gateway, running_gateway

from helpers import make_config, serve_app


@pytest.fixture
async def demo() -> AsyncIterator[DemoServers]:
    async with await start_demo_servers(DEMO_MODELS) as servers:
        yield servers


@pytest.fixture
async def upstream(demo: DemoServers) -> AsyncIterator[Callable[..., Any]]:
    """Start an ensemble upstream over the demo models: ``await upstream(**ensemble)``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**ensemble: Any) -> str:
            app = create_app(make_config(demo.urls, ensemble=ensemble))
            return await stack.enter_async_context(serve_app(app))

        yield start


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway"), POLICY) as running:
        yield running
