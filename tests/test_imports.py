"""What each process loads: starting the processor imports neither aiohttp nor the
upstream's or the demo models' code (a smaller, faster-starting process, and no HTTP
server framework in the gRPC processor); with tracing off (the default), no part imports
OpenTelemetry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "ensemble_extproc.upstream", "ensemble_extproc.demo.server")

# What `ensemble-extproc <command> --config config/default.yaml` imports before it serves:
# the command line, the config, and the service's own module.
LOADED = """
import json, sys
from pathlib import Path
from ensemble_extproc import cli, serve
from ensemble_extproc.config import load_config
load_config(Path("config/default.yaml"))
serve.service(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded(command: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", LOADED, command],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return set(json.loads(out))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


def test_starting_the_processor_imports_no_aiohttp_upstream_or_demo_server() -> None:
    modules = loaded("extproc")
    assert "ensemble_extproc.extproc.server" in modules
    assert heavy(modules) == set()


@pytest.mark.parametrize("command", ["upstream", "demo"])
def test_the_http_services_do_load_aiohttp(command: str) -> None:
    """The check above can fail: the same probe finds aiohttp where it is used."""
    assert "aiohttp" in heavy(loaded(command))


# The servers as they start: config, tracing (off unless the environment turns it on),
# then the processor's gRPC server or the upstream's app.
STARTED = """
import json, sys
from pathlib import Path
from ensemble_extproc.config import Address, load_config
from ensemble_extproc.observability.tracing import start_tracing
config = load_config(Path("config/default.yaml"))
tracing = start_tracing(config.tracing, sys.argv[1])
if sys.argv[1] == "processor":
    from ensemble_extproc.extproc.server import create_server
    create_server(config, Address("127.0.0.1", 0), None, tracing)
else:
    from ensemble_extproc.upstream.app import create_app
    create_app(config, tracing=tracing)
if tracing is not None:
    tracing.shutdown()
print(json.dumps(sorted(sys.modules)))
"""


def started(part: str, env: dict[str, str]) -> set[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", STARTED, part],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    ).stdout
    return set(json.loads(out))


def otel(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "opentelemetry" or m.startswith("opentelemetry.")}


@pytest.mark.parametrize("part", ["processor", "upstream"])
def test_tracing_off_imports_no_opentelemetry(part: str) -> None:
    assert otel(started(part, {})) == set()


@pytest.mark.parametrize("part", ["processor", "upstream"])
def test_tracing_on_does_import_opentelemetry(part: str) -> None:
    """The check above can fail: the same probe finds the SDK when tracing is on."""
    modules = started(part, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert {
        "opentelemetry.sdk.trace",
        f"ensemble_extproc.{'extproc' if part == 'processor' else 'upstream'}.tracing",
    } <= modules
