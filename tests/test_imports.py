"""What each process loads: starting the processor imports neither aiohttp nor the
upstream's or the demo models' code (a smaller, faster-starting process, and no HTTP
server framework in the gRPC processor)."""

from __future__ import annotations

import json
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
