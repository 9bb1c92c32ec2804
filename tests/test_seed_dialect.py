"""The semantic router's ensemble-service dialect on the upstream, over real HTTP: the
x-vsr-ensemble-* response headers and GET /health, on for a config in the seed's shape,
off for ours, and switched by semantic_router.dialect either way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.config import compile_config
from ensemble_extproc.demo.server import DemoServers
from ensemble_extproc.upstream import create_app

from helpers import chat, serve_app

VSR = ("x-vsr-ensemble-used", "x-vsr-ensemble-models-queried", "x-vsr-ensemble-responses-received")


def seed_shape(urls: Mapping[str, str], **router: Any) -> dict[str, Any]:
    """The seed's file: models in endpoint_mappings, the router's own sections beside."""
    raw: dict[str, Any] = {
        "bert_model": {"model_id": "sentence-transformers/all-MiniLM-L12-v2"},
        "ensemble": {"enabled": True, "default_min_responses": 2, "endpoint_mappings": urls},
    }
    if router:
        raw["semantic_router"] = router
    return raw


def our_shape(urls: Mapping[str, str], **router: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"models": [{"name": n, "url": u} for n, u in urls.items()]}
    if router:
        raw["semantic_router"] = router
    return raw


@contextlib.asynccontextmanager
async def upstream(raw: dict[str, Any]) -> AsyncIterator[str]:
    async with serve_app(create_app(compile_config(raw))) as url:
        yield url


async def ask(url: str, models: str, **body: Any) -> tuple[int, Mapping[str, str], bytes]:
    headers = {"x-ensemble-enable": "true", "x-ensemble-models": models}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(**body), headers=headers) as resp,
    ):
        return resp.status, resp.headers, await resp.read()


async def health(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as resp:
        return resp.status, await resp.json()


async def test_seed_shaped_config_answers_in_the_seed_dialect(demo: DemoServers) -> None:
    async with upstream(seed_shape(demo.urls)) as url:
        status, headers, _ = await ask(url, "demo-fast,demo-medium,demo-broken")
        assert status == 200
        # used: an ensemble served it; queried: the models it was asked to query (as
        # x-ensemble-models-queried lists them); received: the valid answers.
        assert headers["x-vsr-ensemble-used"] == "true"
        assert headers["x-vsr-ensemble-models-queried"] == "3"
        assert headers["x-vsr-ensemble-responses-received"] == "2"
        assert headers["x-ensemble-responses-received"] == "2"
        assert await health(url) == (200, {"status": "healthy", "service": "ensemble"})


async def test_a_failed_ensemble_says_so_in_the_seed_dialect_too(demo: DemoServers) -> None:
    async with upstream(seed_shape(demo.urls)) as url:
        status, headers, _ = await ask(url, "demo-broken,demo-fast")
        assert status == 502
        assert (headers["x-vsr-ensemble-used"], headers["x-vsr-ensemble-responses-received"]) == (
            "true",
            "1",
        )


async def test_streams_carry_what_is_known_when_they_start(demo: DemoServers) -> None:
    async with upstream(seed_shape(demo.urls)) as url:
        status, headers, body = await ask(url, "demo-fast,demo-medium", stream=True)
        assert status == 200
        assert body.endswith(b"data: [DONE]\n\n")
        assert headers["x-vsr-ensemble-used"] == "true"
        assert headers["x-vsr-ensemble-models-queried"] == "2"


@pytest.mark.parametrize(
    ("shape", "dialect", "on"),
    [
        (our_shape, None, False),
        (our_shape, True, True),
        (seed_shape, False, False),
        (seed_shape, "auto", True),
    ],
)
async def test_the_switch(demo: DemoServers, shape: Any, dialect: Any, on: bool) -> None:
    raw = shape(demo.urls) if dialect is None else shape(demo.urls, dialect=dialect)
    async with upstream(raw) as url:
        status, headers, _ = await ask(url, "demo-fast,demo-medium")
        assert status == 200
        assert headers["x-ensemble-strategy"] == "voting"  # our own headers either way
        assert all((name in headers) is on for name in VSR)
        health_status, body = await health(url)
        if on:
            assert (health_status, body["status"]) == (200, "healthy")
        else:
            assert (health_status, body["error"]["code"]) == (404, "not_found")
