"""Shared pieces of the speed benchmarks (bench/overhead.py, bench/fanout.py, bench/peer.py).

Processes started here get their own process group and are stopped, group by group, by
``Processes.stop`` (call it in ``finally``); ``install_sigterm`` turns SIGTERM into
KeyboardInterrupt so that ``finally`` runs on it too. Load comes from wrk (closed loop: each
connection sends its next request when the previous answer is in), its latency percentiles
from a small Lua ``done`` callback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 8.0
READY_TIMEOUT = 30.0
# Ports another engineer's `make run` uses (config/default.yaml): never bind them.
RESERVED_PORTS = frozenset({10000, 9901, 9002, 9003, 8090, 8091, 9464, 9465, *range(8100, 8110)})
WRK_MISSING = "wrk is not installed (it generates the load): apt-get install -y wrk"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESULT_RE = re.compile(r"^BENCH (.*)$", re.MULTILINE)
MACHINE = "2 vCPU x86_64 VM (shared, noisy)"


# ----------------------------------------------------------------------------- processes


def install_sigterm() -> None:
    """SIGTERM (e.g. from a CI runner) stops the bench like Ctrl-C: ``finally`` blocks run."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (bound all at once, so none comes twice),
    none of them a port a default stack uses."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] in RESERVED_PORTS:
                sockets.pop().close()
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A free loopback port that is none of the ports a default stack uses."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def secret_env(secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ENSEMBLE_INTERNAL_SECRET"] = secret
    return env


@dataclass
class Processes:
    """Every process a bench starts, each in its own process group."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        # stdout (Envoy's access log) is dropped; stderr (logs, errors) goes to ``log``.
        err: Any = subprocess.DEVNULL
        if log is not None:
            err = log.open("ab")
        try:
            process = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
                cwd=REPO,
            )
        finally:
            if log is not None:
                err.close()
        self.started.append((name, process))
        return process

    def stop(self) -> None:
        """Front to back (last started first): SIGTERM the group, then SIGKILL it."""
        for _, process in reversed(self.started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, process in reversed(self.started):
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in {STOP_TIMEOUT} s: killing it", file=sys.stderr)
            # Whatever the group leader started goes with it. While a group has members its
            # id is not handed out again, so this reaches only processes started here.
            if group_members(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(2)
        self.started.clear()


def wait_listening(
    port: int,
    process: subprocess.Popen[bytes],
    what: str,
    log: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = _tail(log)
            raise RuntimeError(f"{what} exited with status {process.returncode}{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} is not listening on 127.0.0.1:{port} after {timeout:g} s" + _tail(log)
                ) from None
            time.sleep(0.05)


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-15:]
    return "; last log lines:\n  " + "\n  ".join(lines)


def _group_stats(pgid: int) -> list[list[str]]:
    """The /proc/<pid>/stat fields (from ``state`` on) of every process in the group."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after "(comm)": state(3) ppid pgrp session ... utime(14) stime(15).
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.append(fields)
    return found


def group_members(pgid: int) -> int:
    return sum(fields[0] != "Z" for fields in _group_stats(pgid))


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group (all threads), from /proc."""
    ticks = sum(int(f[11]) + int(f[12]) for f in _group_stats(pgid))
    return ticks / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """Busy and all CPU ticks of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk, once the bench waited for it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busy_cores(seconds: float) -> float:
    """Cores the whole machine keeps busy over ``seconds``."""
    busy_before, all_before = machine_ticks()
    time.sleep(seconds)
    busy_after, all_after = machine_ticks()
    share = (busy_after - busy_before) / max(all_after - all_before, 1)
    return share * (os.cpu_count() or 1)


def wait_quiet(most: float, below: float = 0.25, window: float = 2.0) -> float:
    """On a shared machine: wait (at most ``most`` seconds) until other programs keep
    fewer than ``below`` cores busy; returns the busy cores last seen."""
    deadline = time.monotonic() + most
    while True:
        busy = busy_cores(window)
        if busy < below or time.monotonic() > deadline:
            return busy
        print(f"machine busy ({busy:.2f} cores): waiting for a quiet moment", file=sys.stderr)


def rss_bytes(pid: int) -> int:
    """The resident set size of one process (VmRSS, from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"process {pid} has no VmRSS (a zombie?)")


def python_service(command: str, config: Path) -> list[str]:
    """A part of the gateway as ``run`` starts it (default log level, logs to stderr)."""
    return [sys.executable, "-m", "ensemble_extproc", command, "--config", str(config)]


def listen_block(
    envoy: int | None = None,
    admin: int | None = None,
    extproc: int | None = None,
    upstream: int | None = None,
    *,
    port: Callable[[], int] = free_port,
) -> dict[str, str]:
    """The config's ``listen`` section on loopback: a ``port()`` for whatever is not given,
    including listeners a part may open on its own (the processor's metrics). The keys are
    the declaration's (config.model.Listeners); the tests build theirs here too."""
    import msgspec

    from ensemble_extproc.config.model import Listeners

    given = {"envoy": envoy, "envoy_admin": admin, "extproc": extproc, "upstream": upstream}
    keys = sorted(f.encode_name for f in msgspec.structs.fields(Listeners))
    return {key: f"127.0.0.1:{given.get(key) or port()}" for key in keys}


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


# ----------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0) -> Reply:
    """One request (checks before the load; not used for timing)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


# ----------------------------------------------------------------------------- wrk


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        print(WRK_MISSING, file=sys.stderr)
        raise SystemExit(2)
    return found


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect/read/write/timeouts and non-2xx/3xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


class Wrk:
    """Runs wrk against a URL with a POST body and headers; one Lua script per request shape."""

    def __init__(self, workdir: Path, processes: Processes) -> None:
        self._binary = require_wrk()
        self._workdir = workdir
        self._processes = processes
        self._scripts: dict[tuple[bytes, tuple[tuple[str, str], ...]], Path] = {}

    def _script(self, body: bytes, headers: Mapping[str, str]) -> Path:
        key = (body, tuple(sorted(headers.items())))
        if key not in self._scripts:
            index = len(self._scripts)
            body_path = self._workdir / f"body-{index}.json"
            body_path.write_bytes(body)
            lines = [
                f"local f = assert(io.open({_lua_string(str(body_path))}, 'rb'))",
                'wrk.method = "POST"',
                "wrk.body = f:read('*a')",
                "f:close()",
                'wrk.headers["Content-Type"] = "application/json"',
            ]
            lines += [
                f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
            ]
            script = self._workdir / f"wrk-{index}.lua"
            script.write_text("\n".join(lines) + "\n" + LUA_DONE)
            self._scripts[key] = script
        return self._scripts[key]

    def run(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        connections: int,
        seconds: float,
    ) -> WrkResult:
        argv = [
            self._binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(round(seconds), 1)}s",
            "--timeout",
            "10s",
            "-s",
            str(self._script(body, headers)),
            url,
        ]
        out_path = self._workdir / "wrk.out"
        with out_path.open("wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                process.wait(seconds + 30)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        text = out_path.read_text(errors="replace")
        match = RESULT_RE.search(text)
        if process.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({process.returncode}): {text[-2000:]}")
        values = dict(part.split("=") for part in match.group(1).split())
        return WrkResult(
            requests=int(values["requests"]),
            seconds=int(values["duration_us"]) / 1e6,
            p50_ms=float(values["p50_us"]) / 1000,
            p99_ms=float(values["p99_us"]) / 1000,
            errors=int(values["errors"]),
        )


# ----------------------------------------------------------------------------- numbers


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; ``align`` has one letter per column, l or r."""
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


def chat_body(size: int, model: str) -> bytes:
    """A chat request of about ``size`` bytes: a system prompt, earlier turns and a long last
    question, in plain prose (no keyword of the bench's rules)."""
    if size <= 128:
        return json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}]},
            separators=(",", ":"),
        ).encode()
    sentences = [
        "The team met on Monday to review the migration of the billing service.",
        "Most of the traffic now goes through the new gateway, with a few clients left.",
        "Latency stayed flat during the switch, and the error rate went down slightly.",
        "We still need to move the nightly export jobs and the reporting dashboards.",
        "The storage costs grew because old snapshots were never cleaned up.",
        "A retention policy of thirty days would cut them by about half.",
        "Two engineers will pair on the export jobs next sprint.",
        "The dashboards depend on a schema change that is planned for the week after.",
    ]
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a concise assistant for an engineering team."},
        {"role": "user", "content": "Here are my notes from this week's planning meeting."},
        {"role": "assistant", "content": "Thanks, please share them and I will summarise."},
    ]
    base = len(json.dumps({"model": model, "messages": messages})) + 120
    words: list[str] = []
    length, i = 0, 0
    while base + length < size:
        sentence = sentences[i % len(sentences)]
        words.append(sentence)
        length += len(sentence) + 1
        i += 1
    text = " ".join(words)[: max(size - base, 16)]
    messages.append({"role": "user", "content": text + " What should we do first, and why?"})
    return json.dumps({"model": model, "messages": messages}).encode()


# ------------------------------------------------------------------------ commands


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def bench_parser(prog: str, description: str | None, warmup: float) -> argparse.ArgumentParser:
    """The options every wrk bench takes: run length, rounds, warm-up."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds of warm-up per case")
    return parser


def bench_main(run: Callable[[argparse.Namespace], str], args: argparse.Namespace) -> int:
    """Run a bench and print its tables; Ctrl-C or SIGTERM stops every process it started."""
    require_wrk()
    install_sigterm()
    try:
        print(run(args))
    except KeyboardInterrupt:
        print("interrupted: all processes stopped", file=sys.stderr)
        return 130
    return 0
