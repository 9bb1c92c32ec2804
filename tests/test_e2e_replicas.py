"""Scale-out on one machine: 2 processor + 2 upstream replicas behind Envoy; one of each is
killed under load and no request fails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ensemble_extproc.cpus import usable_cpus
from parts import POLICY, Gateway, gateway_config, running_gateway

from helpers import http_post

pytestmark = pytest.mark.e2e


def free_pair() -> int:
    """A port p with p + 1 free too (replicas listen on consecutive ports)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


def replica_pid(config: Path, part: str, replica: int, wait: float = 15) -> int:
    """The replica's PID (the supervisor restarts killed replicas: wait for it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return _find(config, part, replica)
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _find(config: Path, part: str, replica: int) -> int:
    """The newest live process of that replica (an old one may still be draining)."""
    wanted = [part, "--config", str(config), "--replica", str(replica)]
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if "ensemble_extproc" in argv and all(a in argv for a in wanted) and stat[0] != "Z":
            found.append((int(stat[19]), int(entry.name)))  # (start time, pid)
    if not found:
        raise LookupError(f"{part} replica {replica} is not running")
    return max(found)[1]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    raw: dict[str, Any] = gateway_config(POLICY)
    for key in ("extproc", "upstream", "extproc_metrics"):
        raw["listen"][key] = f"127.0.0.1:{free_pair()}"
    tmp = tmp_path_factory.mktemp("replicas")
    args = ("--extproc-replicas", "2", "--upstream-replicas", "2")
    with running_gateway(tmp, {}, args, raw) as gateway:
        yield gateway, tmp / "gateway.yaml"


@pytest.mark.parametrize(
    ("sig", "parts", "tolerated"),
    [
        # What Kubernetes does (SIGTERM, then a grace period): no request may fail.
        (signal.SIGTERM, ("extproc", "upstream"), 0),
        # An upstream replica that dies outright: its requests are retried elsewhere.
        (signal.SIGKILL, ("upstream",), 0),
        # A processor replica that dies outright: Envoy does not retry opening an ext_proc
        # stream (its gRPC retry policy covers back-off only), so streams already headed
        # for it fail (fail closed) until it is ejected: at most a few, never more than
        # the requests in flight.
        (signal.SIGKILL, ("extproc",), 8),
    ],
    ids=["sigterm-both", "sigkill-upstream", "sigkill-extproc"],
)
def test_killing_replicas_under_load(
    replicated: tuple[Gateway, Path],
    sig: signal.Signals,
    parts: tuple[str, ...],
    tolerated: int,
) -> None:
    gateway, config = replicated
    body = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
    plans = [{"x-ensemble-models": "demo-fast,demo-medium"}, {}]  # ensembled and default

    def one(i: int) -> int:
        status, _, _ = http_post(f"{gateway.url}/v1/chat/completions", body, plans[i % 2], 10)
        return status

    for part in ("extproc", "upstream"):
        replica_pid(config, part, 1)
    time.sleep(3)  # restarted replicas (after an earlier case) are healthy in Envoy's eyes
    pids = [replica_pid(config, part, 1) for part in parts]
    with ThreadPoolExecutor(8) as pool:
        warmup = list(pool.map(one, range(40)))
        futures = [pool.submit(one, i) for i in range(400)]
        time.sleep(0.3)
        for pid in pids:
            os.kill(pid, sig)
        statuses = [f.result() for f in futures]
        after = list(pool.map(one, range(80)))
    assert set(warmup) == {200}
    failed = [s for s in statuses if s != 200]
    assert len(failed) <= tolerated, f"{len(failed)} of {len(statuses)} failed: {set(failed)}"
    assert set(failed) <= {500}  # only the fail-closed answer of a lost processor stream
    assert set(after) == {200}


def free_block(size: int) -> int:
    """A port p with p + 1 ... p + size - 1 free too."""
    for _ in range(100):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                for i in range(1, size):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + i))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {size} consecutive free ports")


def test_run_starts_one_processor_and_one_upstream_per_usable_cpu(tmp_path: Path) -> None:
    """``run`` without replica flags (``make run``): as many of each as usable CPUs."""
    cpus = usable_cpus()
    raw: dict[str, Any] = gateway_config({})
    blocks = [free_block(cpus) for _ in range(3)]
    for key, port in zip(("extproc", "upstream", "extproc_metrics"), blocks, strict=True):
        raw["listen"][key] = f"127.0.0.1:{port}"
    with running_gateway(tmp_path, {}, (), raw) as gateway:
        config = tmp_path / "gateway.yaml"
        for part in ("extproc", "upstream"):
            pids = {replica_pid(config, part, i) for i in range(cpus)}
            assert len(pids) == cpus
            with pytest.raises(LookupError):
                _find(config, part, cpus)
        assert f"processes: {cpus} processor, {cpus} upstream" in gateway.log.read_text()
        body = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
        for headers in ({}, {"x-ensemble-models": "demo-fast,demo-medium"}):
            status, _, _ = http_post(f"{gateway.url}/v1/chat/completions", body, headers, 10)
            assert status == 200
