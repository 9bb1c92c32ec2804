"""The gateway's parts as separate processes that a test can kill (fault tests).

Same commands as ``ensemble-extproc run`` starts, without its supervisor (which would
start a killed part again: tests/test_e2e_restart.py covers that).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ensemble_extproc.config import compile_config
from ensemble_extproc.envoy_bootstrap import render_yaml
from ensemble_extproc.stack import envoy_binary


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
            bootstrap = self.tmp / "envoy.yaml"
            bootstrap.write_text(render_yaml(self.config, str(self.config_path)))
            argv = [
                envoy_binary(),
                "-c",
                str(bootstrap),
                "--use-dynamic-base-id",
                "--log-level",
                "error",
            ]
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
