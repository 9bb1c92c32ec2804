"""``ensemble-extproc healthcheck`` (the image's HEALTHCHECK) against real servers: the
upstream and the processor as processes, up, down and draining."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ensemble_extproc.config import Address
from ensemble_extproc.healthcheck import (
    Server,
    parse_command_line,
    probe_extproc,
    run,
    servers_in,
)
from parts import wait_port

from helpers import listen_block

CWD = Path("/srv")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [
                "/opt/venv/bin/python",
                "/opt/venv/bin/ensemble-extproc",
                "upstream",
                "--config",
                "/etc/c.yaml",
            ],
            Server("upstream", Path("/etc/c.yaml")),
        ),
        (
            ["python", "-m", "ensemble_extproc", "extproc", "--config", "c.yaml", "--replica", "2"],
            Server("extproc", CWD / "c.yaml", 2),
        ),
        (
            ["ensemble-extproc", "extproc", "--config=c.yaml", "--log-level", "DEBUG"],
            Server("extproc", CWD / "c.yaml"),
        ),
        (["ensemble-extproc", "upstream"], Server("upstream", CWD / "config/default.yaml")),
        # Not a server: the supervisor, the demo models, other programs, a bad replica.
        (["python", "-m", "ensemble_extproc", "run", "--config", "c.yaml"], None),
        (["ensemble-extproc", "demo"], None),
        (["ensemble-extproc"], None),
        (["python", "-m"], None),
        (["vim", "upstream"], None),
        (["ensemble-extproc", "upstream", "--replica", "x"], None),
    ],
)
def test_servers_are_told_from_their_command_lines(
    argv: list[str], expected: Server | None
) -> None:
    assert parse_command_line(argv, CWD) == expected


def test_servers_are_found_in_a_proc_tree(tmp_path: Path) -> None:
    def process(pid: str, *argv: str, cwd: Path = tmp_path) -> None:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (tmp_path / pid / "cwd").symlink_to(cwd)

    process("1", "tini", "--", "ensemble-extproc", "extproc", "--config", "/etc/c.yaml")
    process("7", "ensemble-extproc", "upstream", "--config", "c.yaml")
    process("9", "sleep", "10")
    (tmp_path / "self").mkdir()  # not a process
    assert servers_in(tmp_path) == [
        Server("extproc", Path("/etc/c.yaml")),
        Server("upstream", tmp_path / "c.yaml"),
    ]


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ensemble_extproc", "healthcheck", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, dict[str, subprocess.Popen[bytes]]]]:
    """The upstream and the processor, each its own process, on free loopback ports."""
    listen = listen_block()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"models": [{"name": "m1", "url": "http://127.0.0.1:9/v1"}], "listen": listen}
        )
    )
    started = {
        part: subprocess.Popen(
            [sys.executable, "-m", "ensemble_extproc", part, "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for part in ("upstream", "extproc")
    }
    try:
        for part in ("upstream", "extproc"):
            where = Address.from_text(listen[part])
            wait_port(where.host, where.port)
        yield config, started
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)


def test_healthy_servers_pass_and_a_stopped_one_fails(
    servers: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    config, started = servers
    both = ("--config", str(config), "--part", "upstream", "--part", "extproc")
    result = healthcheck(*both)
    assert result.returncode == 0, result.stderr
    listen = yaml.safe_load(config.read_text())["listen"]
    assert result.stdout.splitlines() == [
        f"upstream 0 ({listen['upstream']}): ok",
        f"extproc 0 ({listen['extproc']}): ok",
    ]
    # As a container's check, naming nothing: it finds both servers from /proc (this
    # machine may run others too; those may be healthy or not).
    found = servers_in(Path("/proc"))
    assert Server("upstream", config) in found
    assert Server("extproc", config) in found

    started["upstream"].kill()
    started["upstream"].wait(10)
    result = healthcheck(*both)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("upstream 0 (127.0.0.1:")
    assert "/healthz" in line
    result = healthcheck("--config", str(config), "--part", "extproc")
    assert result.returncode == 0, result.stderr


def test_a_draining_processor_fails(
    servers: tuple[Path, dict[str, subprocess.Popen[bytes]]],
) -> None:
    config, started = servers
    where = Address.from_text(yaml.safe_load(config.read_text())["listen"]["extproc"])
    assert probe_extproc(where, 3) is None
    started["extproc"].send_signal(signal.SIGTERM)
    # It says NOT_SERVING while it drains (serve.DRAIN_SECONDS), before it stops.
    deadline = time.monotonic() + 10
    problem = None
    while problem is None and time.monotonic() < deadline:
        problem = probe_extproc(where, 3)
        time.sleep(0.02)
    assert problem == "gRPC health: NOT_SERVING"
    result = healthcheck("--config", str(config), "--part", "extproc")
    assert result.returncode == 1
    assert "extproc 0" in result.stderr


def test_a_config_without_a_part_is_a_usage_error() -> None:
    result = healthcheck("--config", "config/default.yaml")
    assert result.returncode == 2
    assert "--config needs --part" in result.stderr


def test_no_server_here_fails(tmp_path: Path) -> None:
    """A container whose server has exited (or never started) is unhealthy."""
    assert run(None, [], 0, 1.0, proc=tmp_path) == (
        1,
        ["no ensemble-extproc server runs here (name one with --part)"],
    )
