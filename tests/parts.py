"""The gateway as processes: the whole stack as ``ensemble-extproc run`` starts it
(``running_gateway``), or its parts one by one so that a test can kill them
(``running_parts``: the same commands without the supervisor, which would start a killed
part again; tests/test_e2e_restart.py covers that). And the demo models of the suite, and
curl against a gateway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from ensemble_extproc.config import Address, Config, compile_config
from ensemble_extproc.config.demo import DemoModel, DemoToolCall
from ensemble_extproc.envoy_bootstrap import render_yaml
from ensemble_extproc.stack import envoy_binary

from helpers import free_port, listen_block

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


def wait_port(host: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


class Parts:
    def __init__(
        self, tmp: Path, raw: dict[str, Any], env: Mapping[str, str] | None = None
    ) -> None:
        self.tmp = tmp
        self.raw = raw
        self.config_path = tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(raw))
        # Every part gets the same environment (e.g. a model's api_key_env, which Envoy
        # reads too), and the internal secret.
        self.env = {
            **os.environ,
            "ENSEMBLE_INTERNAL_SECRET": secrets.token_hex(16),
            **(env or {}),
        }
        self.config = compile_config(yaml.safe_load(self.config_path.read_text()), self.env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log = tmp / "parts.log"

    def url(self) -> str:
        return f"http://{self.config.listen.envoy}"

    def start(self, name: str) -> None:
        listen = self.config.listen
        if name == "envoy":
            argv = self._envoy_argv(self.tmp / "envoy.yaml", self.config)
            ready = [listen.envoy]
        else:
            argv = [
                sys.executable,
                "-m",
                "ensemble_extproc",
                name,
                "--config",
                str(self.config_path),
                "--log-level",
                "WARNING",
            ]
            ready = {
                "extproc": [listen.extproc],
                "upstream": [listen.upstream],
                "demo": [
                    self.config.listen.upstream.__class__("127.0.0.1", m.port)
                    for m in self.config.demo_models
                ],
            }[name]
        with self.log.open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        for address in ready:
            wait_port(address.host, address.port)

    def _envoy_argv(
        self, path: Path, config: Config, processor_on_every_request: bool = False
    ) -> list[str]:
        rendered = render_yaml(
            config, str(self.config_path), processor_on_every_request=processor_on_every_request
        )
        path.write_text(rendered)
        # The access log (on stdout, into the parts' log) is written within 0.2 s.
        return [
            envoy_binary(),
            "-c",
            str(path),
            "--use-dynamic-base-id",
            "--log-level",
            "error",
            "--file-flush-interval-msec",
            "200",
        ]

    def start_envoy(self, name: str, *, processor_on_every_request: bool) -> Config:
        """One more Envoy in front of the same parts, on free ports; its config (listen)."""
        listen = msgspec.structs.replace(
            self.config.listen,
            envoy=Address("127.0.0.1", free_port()),
            envoy_admin=Address("127.0.0.1", free_port()),
        )
        config = dataclasses.replace(self.config, listen=listen)
        argv = self._envoy_argv(self.tmp / f"{name}.yaml", config, processor_on_every_request)
        with self.log.open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port(listen.envoy.host, listen.envoy.port)
        return config

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)


@contextlib.contextmanager
def running_parts(
    tmp: Path, raw: dict[str, Any], env: Mapping[str, str] | None = None
) -> Iterator[Parts]:
    parts = Parts(tmp, raw, env)
    try:
        for name in ("demo", "upstream", "extproc", "envoy"):
            parts.start(name)
        yield parts
    finally:
        parts.stop_all()


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
        "listen": listen_block(),
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


# One processor and one upstream: ``run`` starts one of each per usable CPU by default;
# the tests that are about replicas say how many they want.
ONE_EACH = ("--extproc-replicas", "1", "--upstream-replicas", "1")


@contextlib.contextmanager
def running_gateway(
    tmp: Path,
    extra: dict[str, Any],
    args: tuple[str, ...] = ONE_EACH,
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
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
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


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def chat_json(text: str = "What is the capital of France?", **extra: Any) -> str:
    return json.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": text}], **extra})


def curl(gateway: Gateway, *args: str, stdin: str | None = None) -> tuple[int, dict[str, str], Any]:
    """POST with curl; returns status, response headers and the parsed JSON body."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "--max-time",
            "10",
            f"{gateway.url}/v1/chat/completions",
            "-H",
            "content-type: application/json",
            *args,
        ],
        input=stdin,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    # text mode turns curl's CRLF into LF
    head, _, body = out.partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)
