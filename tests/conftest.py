"""Fixtures: demo model servers, the ensemble upstream, and the whole gateway on real Envoy.

Every server binds 127.0.0.1 on a free port and is stopped even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from ensemble_extproc.demo.models import DemoModel, DemoToolCall
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.upstream import create_app

from helpers import free_port, make_config

# Demo models used across the suite: (name, latency ms, answers, failure rate).
DEMO_MODELS = (
    DemoModel("demo-fast", 0, latency_ms=10, answers=("Paris.",)),
    DemoModel("demo-medium", 0, latency_ms=50, answers=("paris",)),
    DemoModel("demo-slow", 0, latency_ms=100, answers=("Lyon",)),
    DemoModel("demo-broken", 0, latency_ms=5, failure_rate=1.0),
    DemoModel("demo-hang", 0, latency_ms=30_000, answers=("too late",)),
    # Tool callers: two agree on the arguments, one does not.
    DemoModel(
        "demo-tool-a",
        0,
        latency_ms=10,
        tool_call=DemoToolCall("get_weather", {"city": "Paris", "unit": "c"}),
    ),
    DemoModel(
        "demo-tool-b",
        0,
        latency_ms=20,
        tool_call=DemoToolCall("get_weather", {"unit": "c", "city": "Paris"}),
    ),
    DemoModel(
        "demo-tool-c",
        0,
        latency_ms=30,
        tool_call=DemoToolCall("get_weather", {"city": "Lyon", "unit": "c"}),
    ),
    # Canned helpers: a judge that always picks candidate 3, an aggregator.
    DemoModel("demo-judge", 0, latency_ms=5, answers=("Candidate 3",)),
    DemoModel("demo-aggregator", 0, latency_ms=5, answers=("Paris, fused.",)),
)


@pytest.fixture
async def demo() -> AsyncIterator[DemoServers]:
    async with await start_demo_servers(DEMO_MODELS) as servers:
        yield servers


@pytest.fixture
async def upstream(demo: DemoServers) -> AsyncIterator[Callable[..., Any]]:
    """Start an ensemble upstream over the demo models: ``await upstream(**ensemble)``."""
    runners: list[web.AppRunner] = []

    async def start(**ensemble: Any) -> str:
        config = make_config(demo.urls, ensemble=ensemble)
        runner = web.AppRunner(create_app(config), handler_cancellation=True)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def demo_stats(base_url: str) -> dict[str, int]:
    root = base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as session, session.get(f"{root}/demo/stats") as resp:
        stats: dict[str, int] = await resp.json()
        return stats


@dataclass(frozen=True)
class Gateway:
    url: str  # Envoy's listener, e.g. http://127.0.0.1:PORT
    admin_url: str
    upstream_url: str  # the ensemble upstream, directly (not through Envoy)
    extproc_metrics_url: str
    demo_urls: dict[str, str]
    log: Path


# Decision policy of the main end-to-end gateway (issue: rules and adaptive confidence).
POLICY: dict[str, Any] = {
    "profiles": {
        "critical": {"models": ["demo-fast", "demo-medium", "demo-slow"], "strategy": "voting"},
        "quick": {"models": ["demo-fast", "demo-medium"], "strategy": "first_success"},
    },
    "rules": [
        {
            "name": "medical",
            "profile": "critical",
            "match": {"last_user_message": {"keywords": ["diagnosis", "dosage"]}},
        }
    ],
    "adaptive": {
        "enabled": True,
        "profile": "quick",
        "threshold": 0.5,
        "signals": [{"type": "header"}],  # the semantic router's x-vsr-selected-confidence
    },
}


def gateway_config(extra: dict[str, Any]) -> dict[str, Any]:
    demo_models = [
        {
            "name": "demo-default",
            "port": free_port(),
            "latency_ms": 1,
            "answers": ["default model says: {prompt}"],
        },
    ] + [
        {
            "name": m.name,
            "port": free_port(),
            "latency_ms": m.latency_ms,
            "answers": list(m.answers),
            "failure_rate": m.failure_rate,
            **(
                {"tool_call": {"name": m.tool_call.name, "arguments": dict(m.tool_call.arguments)}}
                if m.tool_call
                else {}
            ),
        }
        for m in DEMO_MODELS
    ]
    return {
        "listen": {
            name: f"127.0.0.1:{free_port()}"
            for name in ("envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics")
        },
        "default_model": "demo-default",
        "demo": {"models": demo_models},
        "ensemble": {
            "default_strategy": "voting",
            "default_min_responses": 2,
            "timeout_seconds": 1.5,
            "max_models_per_request": 4,
            "max_body_bytes": 65536,
            "reranking": {"judge_model": "demo-judge"},
            "fusion": {"aggregator_model": "demo-aggregator"},
        },
        **extra,
    }


@contextlib.contextmanager
def running_gateway(
    tmp: Path,
    extra: dict[str, Any],
    args: tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """The whole stack via ``ensemble-extproc run``, as ``make run`` starts it; ``env``
    adds environment variables (the secrets a config names)."""
    raw = raw or gateway_config(extra)
    config_path = tmp / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    log_path = tmp / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ensemble_extproc", "run", "--config", str(config_path), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops every child
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + 60
        while b"gateway ready" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gateway did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        ports = {m["name"]: m["port"] for m in raw["demo"]["models"]}
        yield Gateway(
            url=f"http://{raw['listen']['envoy']}",
            admin_url=f"http://{raw['listen']['envoy_admin']}",
            upstream_url=f"http://{raw['listen']['upstream']}",
            extproc_metrics_url=f"http://{raw['listen']['extproc_metrics']}/metrics",
            demo_urls={name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()},
            log=log_path,
        )
    finally:
        _stop_group(process)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway"), POLICY) as running:
        yield running


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the supervisor's process group, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    finally:
        # Children that outlived the supervisor (or a supervisor that hung) are killed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
