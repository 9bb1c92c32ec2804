"""``healthcheck``: exit 0 when the servers answer their health checks, else 1.

The upstream must answer ``GET /healthz`` with 200, the processor its gRPC
``grpc.health.v1`` check with SERVING; both say no while they drain. With no part named,
it checks the ensemble-extproc servers running on this machine, found from their command
lines (each with its own config and replica): so one image-wide Docker HEALTHCHECK fits
whichever server a container runs.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import Address, Config, ConfigError, load_config

PARTS = ("upstream", "extproc")
DEFAULT_CONFIG = Path("config/default.yaml")
# What a server binds to listen everywhere, and where to reach it from this machine.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True, slots=True)
class Server:
    part: str  # "upstream" or "extproc"
    config: Path
    replica: int = 0


def parse_command_line(argv: Sequence[str], cwd: Path) -> Server | None:
    """The server a process runs, from its command line (``ensemble-extproc upstream ...``
    or ``python -m ensemble_extproc extproc ...``); None for anything else."""
    for i, word in enumerate(argv):
        if Path(word).name == "ensemble-extproc" or (
            word == "-m" and argv[i + 1 : i + 2] == ["ensemble_extproc"]
        ):
            start = i + 1 if word != "-m" else i + 2
            break
    else:
        return None
    if start >= len(argv) or argv[start] not in PARTS:
        return None
    options = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    options.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    options.add_argument("--replica", type=int, default=0)
    try:
        known, _ = options.parse_known_args(argv[start + 1 :])
    except argparse.ArgumentError:
        return None
    return Server(argv[start], cwd / known.config, known.replica)


def servers_in(proc: Path = Path("/proc")) -> list[Server]:
    """The ensemble-extproc servers of this machine's processes (Linux ``/proc``)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            cwd = (entry / "cwd").resolve()
        except (OSError, UnicodeDecodeError):
            continue  # gone meanwhile, or another user's process
        server = parse_command_line(argv, cwd)
        if server is not None:
            found.append(server)
    return sorted(set(found), key=lambda s: (s.part, s.replica, str(s.config)))


def address_of(config: Config, server: Server) -> Address:
    listen = config.listen.upstream if server.part == "upstream" else config.listen.extproc
    return Address(_LOOPBACK.get(listen.host, listen.host), listen.port + server.replica)


def probe_upstream(address: Address, timeout: float) -> str | None:
    """None when ``/healthz`` says ok, else what is wrong."""
    url = f"http://{address.authority}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = json.loads(response.read()).get("status")
    except urllib.error.HTTPError as exc:
        return f"/healthz answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"/healthz: {exc}"
    return None if status == "ok" else f"/healthz says {status!r}"


def probe_extproc(address: Address, timeout: float) -> str | None:
    """None when the gRPC health service says SERVING, else what is wrong."""
    with grpc.insecure_channel(address.authority) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            return f"gRPC health: {exc.code().name}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return f"gRPC health: {status}"
    return None


PROBES = {"upstream": probe_upstream, "extproc": probe_extproc}


def results(servers: Sequence[Server], timeout: float) -> list[tuple[bool, str]]:
    """Per server: (healthy, a line saying which one and, if not healthy, why)."""
    found = []
    configs: dict[Path, Config] = {}
    for server in servers:
        name = f"{server.part} {server.replica}"
        try:
            if server.config not in configs:
                configs[server.config] = load_config(server.config)
        except ConfigError as exc:
            found.append((False, f"{name}: invalid config {server.config}: {exc}"))
            continue
        address = address_of(configs[server.config], server)
        problem = PROBES[server.part](address, timeout)
        found.append((problem is None, f"{name} ({address}): {problem or 'ok'}"))
    return found


def run(
    config: Path | None,
    parts: Sequence[str],
    replica: int,
    timeout: float,
    proc: Path = Path("/proc"),
) -> tuple[int, list[str]]:
    """(exit status, lines to print): the named parts, else the servers running here."""
    if parts:
        servers = [Server(part, config or DEFAULT_CONFIG, replica) for part in parts]
    else:
        servers = servers_in(proc)
        if not servers:
            return 1, ["no ensemble-extproc server runs here (name one with --part)"]
    checked = results(servers, timeout)
    wrong = [line for healthy, line in checked if not healthy]
    return (1, wrong) if wrong else (0, [line for _, line in checked])
