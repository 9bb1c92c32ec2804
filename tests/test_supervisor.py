"""The supervisor behind ``run``: backoff between restarts, restarts of parts that exit,
and a clean stop. Real (tiny) child processes, short delays."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Callable

import pytest

from ensemble_extproc.config import Address
from ensemble_extproc.supervisor import Backoff, Part, StartupError, Supervisor, exit_reason

from helpers import free_port

BACKOFF = Backoff(first=0.5, factor=2.0, most=30.0, reset_after=30.0)


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        (None, 0.0, 0.5),  # first crash: the first delay
        (None, 100.0, 0.5),
        (0.5, 0.1, 1.0),  # crashed again soon: doubled
        (1.0, 29.9, 2.0),
        (16.0, 1.0, 30.0),  # capped
        (30.0, 1.0, 30.0),
        (30.0, 30.0, 0.5),  # stayed up long enough: healthy again
        (8.0, 45.0, 0.5),
    ],
)
def test_backoff_doubles_up_to_the_cap_and_resets_after_a_good_run(
    previous: float | None, uptime: float, expected: float
) -> None:
    assert BACKOFF.delay(previous, uptime) == expected


def test_exit_reasons_name_the_signal() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(3) == "exit status 3"


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def _listener(port: int, then: str = "import time; time.sleep(60)") -> tuple[str, ...]:
    """A process that listens on ``port``, then runs ``then``."""
    return _python(
        "import socket; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); {then}"
    )


def _delays(caplog: pytest.LogCaptureFixture, name: str) -> list[float]:
    pattern = re.compile(rf"^{re.escape(name)} exited \(.*\) after .*: restart \d+ in ([\d.]+) s$")
    found = (pattern.match(r.getMessage()) for r in caplog.records)
    return [float(m[1]) for m in found if m]


async def _keep_running_until(
    supervisor: Supervisor, done: Callable[[], bool], limit: float = 20.0
) -> None:
    """Supervise until ``done()`` holds (or ``limit`` seconds pass), then stop watching."""
    stopping = asyncio.Event()
    task = asyncio.create_task(supervisor.keep_running(stopping))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    # The condition is read from captured logs: there is no event to wait for.
    while not done() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    stopping.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_part_that_keeps_exiting_is_restarted_with_growing_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ensemble_extproc.supervisor")
    backoff = Backoff(first=0.05, factor=2.0, most=0.2, reset_after=10.0)
    supervisor = Supervisor(os.environ, backoff=backoff)
    await supervisor.start(Part("crasher", _python("import sys; sys.exit(3)")))
    try:
        await _keep_running_until(supervisor, lambda: len(_delays(caplog, "crasher")) >= 5)
    finally:
        await supervisor.stop()
    delays = _delays(caplog, "crasher")
    # Doubled, then capped.
    assert delays[:5] == [0.05, 0.1, 0.2, 0.2, 0.2], delays
    assert all(d == 0.2 for d in delays[3:])
    assert any("exit status 3" in r.getMessage() for r in caplog.records)


async def test_a_part_that_stays_up_long_enough_restarts_after_the_first_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ensemble_extproc.supervisor")
    backoff = Backoff(first=0.05, factor=4.0, most=10.0, reset_after=0.2)
    supervisor = Supervisor(os.environ, backoff=backoff)
    await supervisor.start(Part("steady", _python("import time; time.sleep(0.3)")))
    try:
        await _keep_running_until(supervisor, lambda: len(_delays(caplog, "steady")) >= 3)
    finally:
        await supervisor.stop()
    delays = _delays(caplog, "steady")
    assert len(delays) >= 3
    assert set(delays) == {0.05}  # never 0.2 or 0.8: each run lasted over reset_after


async def test_a_killed_part_comes_back_listening_and_the_restart_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ensemble_extproc.supervisor")
    port = free_port()
    supervisor = Supervisor(os.environ, backoff=Backoff(first=0.05))
    part = Part("server", _listener(port), (Address("127.0.0.1", port),))
    await supervisor.start(part)
    stopping = asyncio.Event()
    task = asyncio.create_task(supervisor.keep_running(stopping))
    try:
        first = supervisor.pid("server")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if any(r.getMessage() == "server is back (restart 1)" for r in caplog.records):
                break
        second = supervisor.pid("server")
        assert second not in (None, first)
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # listening again
        writer.close()
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("server exited (killed by SIGKILL)") for m in messages)
    finally:
        stopping.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await supervisor.stop()


async def test_stop_terminates_every_part_and_nothing_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ensemble_extproc.supervisor")
    supervisor = Supervisor(os.environ, backoff=Backoff(first=0.01))
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        await supervisor.start(Part(f"p{i}", _listener(port), (Address("127.0.0.1", port),)))
    pids = [supervisor.pid("p0"), supervisor.pid("p1")]
    stopping = asyncio.Event()
    task = asyncio.create_task(supervisor.keep_running(stopping))
    await asyncio.sleep(0.1)
    # As run_stack does on Ctrl-C: the event first, then the watchers go, then stop().
    stopping.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await supervisor.stop()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: gone
    assert supervisor.pid("p0") == pids[0]  # no new process was started
    assert not [r for r in caplog.records if "restart" in r.getMessage()]


async def test_a_part_that_never_listens_fails_its_start() -> None:
    supervisor = Supervisor(os.environ, ready_timeout=0.3)
    port = free_port()
    part = Part("mute", _python("import time; time.sleep(60)"), (Address("127.0.0.1", port),))
    try:
        with pytest.raises(StartupError, match="mute is not listening"):
            await supervisor.start(part)
    finally:
        await supervisor.stop()


async def test_a_missing_program_is_a_startup_error_naming_the_part() -> None:
    supervisor = Supervisor(os.environ)
    with pytest.raises(StartupError, match="cannot start ghost"):
        await supervisor.start(Part("ghost", ("/nonexistent/binary",)))
