"""Envoy ends the processor's gRPC streams gracefully (half-close, the processor answers
OK) instead of resetting them: grpc.aio leaks native memory on every reset call, which made
the processor's RSS grow ~120 B per request. The memory itself is measured by
``bench/soak.py``; this checks the cause through the real Envoy, against a baseline Envoy
without the runtime flag, both in front of the same processor."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from ensemble_extproc.config import Address, Config
from ensemble_extproc.envoy_bootstrap import bootstrap
from ensemble_extproc.envoy_names import EXTPROC_CLUSTER, GRACEFUL_GRPC_CLOSE
from ensemble_extproc.stack import envoy_binary
from parts import running_parts, wait_port

from helpers import free_port, http_post, listen_block

pytestmark = pytest.mark.e2e

STREAMS = "http.gateway.ext_proc.streams_started"
RESETS = f"cluster.{EXTPROC_CLUSTER}.upstream_rq_tx_reset"
ENSEMBLE = {"x-ensemble-models": "demo-a,demo-b"}


def raw_config() -> dict[str, Any]:
    models = [
        {"name": "demo-default", "port": free_port(), "latency_ms": 1, "answers": ["hello"]},
        {"name": "demo-a", "port": free_port(), "latency_ms": 5, "answers": ["Paris."]},
        {"name": "demo-b", "port": free_port(), "latency_ms": 200, "answers": ["paris"]},
    ]
    return {
        "listen": listen_block(),
        "default_model": "demo-default",
        "demo": {"models": models},
        "ensemble": {"default_min_responses": 2},
    }


@dataclasses.dataclass(frozen=True)
class Front:
    url: str
    admin: str

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.admin}/stats?filter=ext_?proc", timeout=5) as reply:
            lines = reply.read().decode().splitlines()
        found = {}
        for line in lines:
            name, _, value = line.partition(": ")
            if value.isdigit():
                found[name] = int(value)
        return found


@contextlib.contextmanager
def baseline_envoy(tmp: Path, config: Config) -> Iterator[Front]:
    """A second Envoy in front of the same processor, with the flag off (Envoy's default)."""
    listen = msgspec.structs.replace(
        config.listen,
        envoy=Address("127.0.0.1", free_port()),
        envoy_admin=Address("127.0.0.1", free_port()),
    )
    rendered = bootstrap(dataclasses.replace(config, listen=listen))
    rendered["layered_runtime"]["layers"][0]["static_layer"][GRACEFUL_GRPC_CLOSE] = False
    path = tmp / "baseline-envoy.yaml"
    path.write_text(yaml.safe_dump(rendered))
    argv = [envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--log-level", "error"]
    process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        wait_port(listen.envoy.host, listen.envoy.port)
        yield Front(f"http://{listen.envoy}", f"http://{listen.envoy_admin}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def abort_mid_request(front: Front, headers: dict[str, str]) -> None:
    """Headers and half a body, then the client hangs up."""
    host, port = front.url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: 200\r\n"
            + head.encode()
            + b'\r\n{"model": "any", "messages": ['
        )
        time.sleep(0.05)  # the processor has the headers: the stream is open


def abort_while_ensembling(front: Front) -> None:
    """A whole request, then the client hangs up while the slow member is still working."""
    host, port = front.url.removeprefix("http://").split(":")
    body = b'{"model": "any", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "x-ensemble-models: demo-a,demo-b\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(0.05)  # demo-b answers after 200 ms


# Plain requests that still reach the processor (which lets them pass): without any
# x-ensemble-* header, Envoy would route them alone, with no stream to close.
PLAIN = {"x-ensemble-enable": "false"}


def drive(front: Front) -> None:
    body = {"model": "any", "messages": [{"role": "user", "content": "hi"}]}
    for i in range(20):
        status, _, raw = http_post(f"{front.url}/v1/chat/completions", body, PLAIN, 10)
        assert status == 200, raw
        if i % 4 == 0:
            status, _, raw = http_post(f"{front.url}/v1/chat/completions", body, ENSEMBLE, 10)
            assert status == 200, raw
    for _ in range(3):
        abort_mid_request(front, PLAIN)
        abort_mid_request(front, ENSEMBLE)
        abort_while_ensembling(front)


def settled(front: Front, expected_streams: int) -> dict[str, int]:
    """The stats once every stream Envoy opened has ended (aborted requests end late)."""
    deadline = time.monotonic() + 15
    while True:
        stats = front.stats()
        done = stats.get(STREAMS, 0) >= expected_streams and stats.get(
            "http.gateway.ext_proc.streams_closed", 0
        ) >= stats.get(STREAMS, 0)
        if done or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_envoy_half_closes_processor_streams_where_the_default_resets_them(
    tmp_path: Path,
) -> None:
    with running_parts(tmp_path, raw_config()) as parts:
        shipped = Front(parts.url(), f"http://{parts.config.listen.envoy_admin}")
        with baseline_envoy(tmp_path, parts.config) as baseline:
            drive(shipped)
            drive(baseline)
            # 25 answered requests and 9 aborted ones; an abort before Envoy had the
            # headers would open no stream, hence "at least" the answered ones.
            with_flag, without = settled(shipped, 25), settled(baseline, 25)
    assert with_flag[STREAMS] >= 25
    assert without[STREAMS] >= 25
    assert with_flag[RESETS] == 0, with_flag
    # Baseline: Envoy resets every stream, also those of completed requests.
    assert without[RESETS] == without[STREAMS], without
