"""Keeps the gateway's processes running: starts them in order, restarts any that exits
(with exponential backoff), stops them all in reverse order.

What to run is the caller's business (``stack``); this module only knows processes, the
addresses that say a process is ready, and when to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from .config import Address

log = logging.getLogger(__name__)

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 8.0


class StartupError(Exception):
    """A part of the stack could not start; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Part:
    """One process: its name in logs, its command, and where it listens once ready."""

    name: str
    argv: tuple[str, ...]
    ready: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts of a part that keeps exiting: ``first``, then ``factor``
    times the previous one up to ``most``; a part that stayed up ``reset_after`` seconds
    counts as healthy again, and its next restart waits ``first``."""

    first: float = 0.5
    factor: float = 2.0
    most: float = 30.0
    reset_after: float = 30.0

    def delay(self, previous: float | None, uptime: float) -> float:
        """The wait before the next start of a part that exited after ``uptime`` seconds;
        ``previous`` is the wait before its last start (None: it never restarted)."""
        if previous is None or uptime >= self.reset_after:
            return self.first
        return min(previous * self.factor, self.most)


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


async def wait_listening(
    address: Address, process: asyncio.subprocess.Process, what: str, seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if process.returncode is not None:
            raise StartupError(f"{what} exited with status {process.returncode} during start-up")
        try:
            _, writer = await asyncio.open_connection(address.host, address.port)
        except OSError as exc:
            if loop.time() > deadline:
                message = f"{what} is not listening on {address} after {seconds:g} s"
                raise StartupError(message) from exc
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Supervisor:
    def __init__(
        self,
        env: Mapping[str, str],
        output: IO[bytes] | None = None,
        backoff: Backoff = Backoff(),
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._env = dict(env)
        # Where the parts' output goes (None: this process's stdout and stderr).
        self._output = output
        self._backoff = backoff
        self._ready_timeout = ready_timeout
        # In start order; each part's current process, and when it was (last) started.
        self._parts: list[Part] = []
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._started: dict[str, float] = {}

    def pid(self, name: str) -> int | None:
        process = self._running.get(name)
        return process.pid if process is not None else None

    async def start(self, part: Part) -> None:
        """Start ``part`` and wait until it listens; StartupError if it does not."""
        if part not in self._parts:
            self._parts.append(part)
        self._started[part.name] = asyncio.get_running_loop().time()
        try:
            process = await asyncio.create_subprocess_exec(
                *part.argv,
                env=self._env,
                stdout=self._output,
                stderr=asyncio.subprocess.STDOUT if self._output is not None else None,
            )
        except OSError as exc:
            raise StartupError(f"cannot start {part.name} ({part.argv[0]}): {exc}") from exc
        # Recorded before it is ready: a stop during start-up stops it too.
        self._running[part.name] = process
        for address in part.ready:
            await wait_listening(address, process, part.name, self._ready_timeout)

    async def keep_running(self, stopping: asyncio.Event) -> None:
        """Restart any part that exits, until cancelled (parts started with ``start``)."""
        async with asyncio.TaskGroup() as group:
            for part in self._parts:
                group.create_task(self._watch(part, stopping))

    async def _watch(self, part: Part, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        delay: float | None = None
        restarts = 0
        while True:
            returncode = await self._running[part.name].wait()
            if stopping.is_set():
                return  # Ctrl-C reaches the parts too: their exit is no crash
            uptime = loop.time() - self._started[part.name]
            delay = self._backoff.delay(delay, uptime)
            restarts += 1
            log.warning(
                "%s exited (%s) after %.1f s up: restart %d in %.3g s",
                part.name,
                exit_reason(returncode),
                uptime,
                restarts,
                delay,
            )
            await asyncio.sleep(delay)
            try:
                await self.start(part)
            except StartupError as exc:
                # Not ready in time, or not even spawned: the wait above returns at once
                # and the next delay is longer.
                log.error("%s: restart %d failed: %s", part.name, restarts, exc)
                await self._kill(part.name)
                continue
            log.warning("%s is back (restart %d)", part.name, restarts)

    async def _kill(self, name: str) -> None:
        process = self._running[name]
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        """SIGTERM every part, last started first (Envoy before the services behind it),
        each given ``STOP_TIMEOUT`` seconds before it is killed."""
        for part in reversed(self._parts):
            process = self._running.get(part.name)
            if process is None or process.returncode is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s did not stop in %s s: killing it", part.name, STOP_TIMEOUT)
                process.kill()
                await process.wait()
