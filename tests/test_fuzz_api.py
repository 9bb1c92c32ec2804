"""Property-based API fuzzing with schemathesis against the live services and the document.

Three runs, each of the schemathesis CLI against a server on 127.0.0.1 and the OpenAPI
document that server itself serves:

- the ensemble upstream over fast demo models (every operation);
- the whole gateway through Envoy (chat completions: requests are signed by the processor,
  or answered by the default model);
- the gateway's upstream called directly (signed deployment: chat completions are a 403).

Each response must have a documented status, content type, headers and body schema, and
no generated request may get a 5xx. Bounded for ``make test`` (derandomized, a few dozen
examples per operation, seconds each); ``make fuzz`` runs the same with
``ENSEMBLE_FUZZ_EXAMPLES=1000`` and prints each run's summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ensemble_extproc import headers as h
from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.demo.server import start_demo_servers
from ensemble_extproc.upstream import create_app
from ensemble_extproc.upstream.openapi import (
    CHAT_PATH,
    MODELS_PATH,
    OPENAPI_PATH,
    models_pattern,
)
from parts import DEMO_MODELS, Gateway

from helpers import make_config, serve_app

EXAMPLES = int(os.environ.get("ENSEMBLE_FUZZ_EXAMPLES", "30"))  # per operation and phase
# Wall-clock bound of one schemathesis run (it is killed past it and the test fails).
RUN_TIMEOUT = float(os.environ.get("ENSEMBLE_FUZZ_TIMEOUT", "45"))
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# Fast demo models that always answer: any 5xx is then the service's fault.
FUZZ_MODELS = (
    DemoModel("fuzz-a", 0, latency_ms=1, answers=("Paris.",)),
    DemoModel("fuzz-b", 0, latency_ms=2, answers=("paris",)),
    DemoModel("fuzz-c", 0, latency_ms=3, answers=("Lyon",)),
    DemoModel("fuzz-judge", 0, latency_ms=1, answers=("Candidate 1",)),
    DemoModel("fuzz-aggregator", 0, latency_ms=1, answers=("Paris, fused.",)),
)
FUZZ_ENSEMBLE: dict[str, Any] = {
    # Requests without x-ensemble-models are ensembled too, so most bodies reach the models.
    "default_models": ["fuzz-a", "fuzz-b"],
    "reranking": {"judge_model": "fuzz-judge"},
    "fusion": {"aggregator_model": "fuzz-aggregator"},
    "timeout_seconds": 10,
}


@dataclass(frozen=True)
class FuzzRun:
    name: str
    returncode: int
    output: str
    report: dict[str, Any]

    def summary(self) -> str:
        cases = self.report.get("test_cases", {})
        operations = self.report.get("operations", {})
        rates = {
            operation: {
                phase: f"{counts['accepted']} accepted/{counts['rejected']} rejected"
                for phase, counts in phases.items()
            }
            for operation, phases in self.report.get("valid_rates", {}).items()
        }
        return (
            f"schemathesis [{self.name}] {EXAMPLES} examples/operation: "
            f"{operations.get('tested')} operations, {cases.get('generated')} test cases, "
            f"{cases.get('with_failures')} with failures "
            f"({cases.get('unique_failures')} unique), {len(self.report.get('errors', []))} "
            f"errors, {self.report.get('running_time', 0):.1f} s; checks: {', '.join(CHECKS)}; "
            f"valid rates: {json.dumps(rates)}"
        )

    def assert_clean(self) -> None:
        print(self.summary())
        detail = f"{self.summary()}\n\n{self.output[-20000:]}"
        assert self.returncode == 0, detail
        assert self.report["complete"] is True, detail
        assert self.report["test_cases"]["with_failures"] == 0, detail
        assert self.report["errors"] == [], detail
        assert self.report["test_cases"]["generated"] > 0, detail

    def accepted(self, operation: str) -> int:
        phases = self.report["valid_rates"].get(operation, {})
        return sum(int(counts["accepted"]) for counts in phases.values())


def _command(location: str, base_url: str, report: Path, *extra: str) -> list[str]:
    return [
        str(SCHEMATHESIS),
        "run",
        location,
        "--url",
        base_url,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--generation-deterministic",  # derandomized: the same cases every run
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *extra,
    ]


def _environment() -> dict[str, str]:
    """Loopback only: no proxy may take the requests elsewhere."""
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in proxies}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _loopback(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url
    return url


def _result(name: str, returncode: int, output: bytes, report: Path) -> FuzzRun:
    text = output.decode(errors="replace")
    if not report.exists():
        pytest.fail(f"schemathesis [{name}] wrote no report (exit {returncode}):\n{text}")
    return FuzzRun(name, returncode, text, json.loads(report.read_text()))


async def fuzz_async(name: str, location: str, base_url: str, workdir: Path) -> FuzzRun:
    """Run schemathesis without blocking the event loop that serves the API under test."""
    report = workdir / f"{name}.json"
    process = await asyncio.create_subprocess_exec(
        *_command(location, _loopback(base_url), report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
        env=_environment(),
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis [{name}] took longer than {RUN_TIMEOUT} s")
    assert process.returncode is not None
    return _result(name, process.returncode, output, report)


def fuzz_sync(name: str, location: str, base_url: str, workdir: Path, *extra: str) -> FuzzRun:
    report = workdir / f"{name}.json"
    try:
        done = subprocess.run(
            _command(location, _loopback(base_url), report, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=_environment(),
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"schemathesis [{name}] took longer than {RUN_TIMEOUT} s")
    return _result(name, done.returncode, done.stdout, report)


@pytest.fixture
async def fuzz_upstream() -> AsyncIterator[str]:
    """An ensemble upstream over FUZZ_MODELS, as the ``upstream`` fixture starts one."""
    async with await start_demo_servers(FUZZ_MODELS) as servers:
        app = create_app(make_config(servers.urls, ensemble=FUZZ_ENSEMBLE))
        async with serve_app(app, handler_cancellation=True) as url:
            yield url


async def test_fuzz_the_upstream(fuzz_upstream: str, tmp_path: Path) -> None:
    run = await fuzz_async("upstream", fuzz_upstream + OPENAPI_PATH, fuzz_upstream, tmp_path)
    run.assert_clean()
    # Every documented operation but the document itself (schemathesis leaves it out).

    assert run.accepted(f"POST {CHAT_PATH}") > 0, "no generated request reached the models"


def gateway_document(gateway: Gateway, workdir: Path) -> Path:
    """The document the gateway's upstream serves, with ``x-ensemble-models`` narrowed to the
    models that always answer in time: the gateway's config also has ``demo-broken`` (always
    a 502) and ``demo-hang`` (always a 504), whose 5xx are right but would fail the
    no-server-error check."""
    document: dict[str, Any] = json.loads(http_get(gateway.upstream_url + OPENAPI_PATH))
    listed = json.loads(http_get(gateway.upstream_url + MODELS_PATH))["data"]
    failing = {m.name for m in DEMO_MODELS if m.failure_rate > 0 or m.latency_ms >= 1000}
    healthy = [m["id"] for m in listed if m["id"] not in failing]
    assert len(healthy) >= 3, listed
    for parameter in document["paths"][CHAT_PATH]["post"]["parameters"]:
        if parameter["name"] == h.MODELS:
            schema = parameter["schema"]
            limit = re.search(r"\{0,(\d+)\}\$$", schema["pattern"])
            assert limit is not None, schema
            schema["pattern"] = models_pattern(healthy, int(limit.group(1)) + 1)
            schema["examples"] = [",".join(healthy[:3])]
    path = workdir / "gateway-openapi.json"
    path.write_text(json.dumps(document))
    return path


def http_get(url: str) -> bytes:
    """GET with the standard library and no proxy (the gateway fixture is synchronous)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(_loopback(url), timeout=10) as response:
        body: bytes = response.read()
        return body


@pytest.mark.e2e
def test_fuzz_chat_completions_through_envoy(gateway: Gateway, tmp_path: Path) -> None:
    """Through Envoy every request is signed by the processor or goes to the default model;
    only chat completions are re-routed (the GET routes would reach the default model)."""
    document = gateway_document(gateway, tmp_path)
    run = fuzz_sync("envoy", str(document), gateway.url, tmp_path, "--include-path", CHAT_PATH)
    run.assert_clean()
    assert run.report["operations"]["tested"] == 1, run.summary()
    assert run.accepted(f"POST {CHAT_PATH}") > 0, run.summary()


@pytest.mark.e2e
def test_fuzz_the_gateways_upstream_directly(gateway: Gateway, tmp_path: Path) -> None:
    """A signed deployment: the GET routes answer, chat completions are a documented 403
    (or a 400 for a body that is invalid anyway), never a 5xx."""
    document = gateway_document(gateway, tmp_path)
    run = fuzz_sync("gateway-upstream", str(document), gateway.upstream_url, tmp_path)
    run.assert_clean()

    # Loaded from a file, the document's own route is fuzzed too: every operation.
    operations = sum(len(ops) for ops in json.loads(document.read_text())["paths"].values())
    assert run.report["operations"]["tested"] == operations, run.summary()
