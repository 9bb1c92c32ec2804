"""Throughput of the processor path against the number of processor processes.

    python -m bench.scaleout [--replicas 1,2,3,4] [--seconds 5] [--rounds 8]
                             [--connections 64] [--quiet 60] [--others 0.2]

Each configuration is a whole gateway as ``run`` starts it (``--extproc-replicas N``, one
upstream), on free ports, all of them up for the whole bench; the runs are interleaved
round by round (order rotated). Load: wrk, closed loop, 1 thread, keep-alive, chat
requests of 1 KB with ``x-ensemble-enable: false`` (the processor sees every request and
decides on its headers; the default model answers, 0 ms demo model).

On a shared machine, each run first waits (``--quiet``, up to 60 s) until other programs
leave the cores idle; a run counts as quiet when they kept fewer than ``--others`` cores
busy meanwhile (the machine's busy cores from /proc/stat, less the gateway's and wrk's),
and the medians are over the quiet runs.

Besides requests per second it prints where the machine's CPU went (utime+stime per
request of each part, wrk included; the cores they used), how evenly Envoy spread the streams
over the processor replicas (each replica's ``extproc_streams_total``), and how many
worker threads Envoy ran (Envoy's default: one per core).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.speedkit import (
    CLOCK_TICKS,
    MACHINE,
    RESERVED_PORTS,
    Processes,
    Wrk,
    chat_body,
    children_cpu_seconds,
    fmt,
    free_ports,
    install_sigterm,
    int_list,
    machine_ticks,
    median,
    require_wrk,
    table,
    wait_listening,
    wait_quiet,
    workdir,
    write_yaml,
)

ROLES = ("processors", "Envoy", "demo model", "upstream", "run", "wrk")
HEADERS = {"x-ensemble-enable": "false"}


def port_blocks(count: int, size: int) -> list[int]:
    """The first ports of ``count`` disjoint blocks of ``size`` free consecutive ports
    (replicas listen on port + i), and not one of the ports a default stack uses."""
    held: list[socket.socket] = []
    firsts: list[int] = []
    try:
        while len(firsts) < count:
            first = free_ports(1)[0]
            block = []
            for port in range(first, first + size):
                sock = socket.socket()
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    sock.close()
                    break
                block.append(sock)
            if len(block) == size and first + size - 1 not in RESERVED_PORTS:
                firsts.append(first)
                held += block
            else:
                for sock in block:
                    sock.close()
        return firsts
    finally:
        for sock in held:
            sock.close()


def config(tmp: Path, replicas: int) -> tuple[Path, dict[str, str]]:
    extproc, metrics = port_blocks(2, replicas)
    # Bound while these are chosen: none of them can come out again.
    envoy, admin, upstream, demo = free_ports(4)
    listen = {
        "envoy": f"127.0.0.1:{envoy}",
        "envoy_admin": f"127.0.0.1:{admin}",
        "extproc": f"127.0.0.1:{extproc}",
        "extproc_metrics": f"127.0.0.1:{metrics}",
        "upstream": f"127.0.0.1:{upstream}",
    }
    if {envoy, admin, upstream, demo} & {
        p for first in (extproc, metrics) for p in range(first, first + replicas)
    }:
        return config(tmp, replicas)  # a port handed out twice: choose again
    raw = {
        "listen": listen,
        "default_model": "m0",
        "demo": {"models": [{"name": "m0", "port": demo, "latency_ms": 0, "answers": ["Paris."]}]},
    }
    return write_yaml(tmp / f"config-{replicas}.yaml", raw), listen


def role_of(argv: Sequence[str]) -> str:
    if "--use-dynamic-base-id" in argv:
        return "Envoy"
    for word, role in (("extproc", "processors"), ("upstream", "upstream"), ("demo", "demo model")):
        if word in argv and "ensemble_extproc" in argv:
            return role
    return "run"


def cpu_by_role(pgid: int) -> dict[str, float]:
    """utime + stime (seconds) of every live process in the group, by role."""
    found = dict.fromkeys(ROLES, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            argv = Path(entry.path, "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) != pgid:
            continue
        found[role_of(argv)] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def streams_of(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("extproc_streams_total "):
                return int(float(line.split()[1]))
    raise RuntimeError(f"{metrics_url}: no extproc_streams_total")


def envoy_workers(admin: str) -> int:
    with urllib.request.urlopen(f"http://{admin}/server_info", timeout=5) as reply:
        text = reply.read().decode()
    import json

    return int(json.loads(text)["command_line_options"]["concurrency"])


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: Mapping[str, float]  # per request, by role
    cores_used: float  # CPU seconds of the gateway and wrk / wall seconds
    machine_busy: float  # cores busy on the whole machine (other tenants included)
    spread: tuple[int, ...]  # streams per processor replica
    workers: int


class StartFailed(RuntimeError):
    """The gateway did not start."""


@dataclass
class Gateway:
    """One ``run`` with ``replicas`` processor processes, kept up for the whole bench."""

    replicas: int
    pgid: int
    url: str
    admin: str
    metrics: list[str]


def start_gateway(tmp: Path, replicas: int, processes: Processes) -> Gateway:
    """On a shared machine another program may take a chosen port before the gateway
    binds it: then again, on other ports."""
    for attempt in range(3):
        try:
            return _start_gateway(tmp, replicas, processes)
        except StartFailed as failed:
            print(f"x{replicas}: {failed}; trying other ports", file=sys.stderr)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_gateway(tmp: Path, replicas: int, processes: Processes) -> Gateway:
    path, listen = config(tmp, replicas)
    log = tmp / f"gateway-{replicas}.log"
    argv = [sys.executable, "-m", "ensemble_extproc", "run", "--config", str(path)]
    argv += ["--extproc-replicas", str(replicas), "--upstream-replicas", "1"]
    process = processes.start(f"gateway x{replicas}", argv, log=log)
    envoy_port = int(listen["envoy"].rpartition(":")[2])
    try:
        wait_listening(envoy_port, process, "gateway", log, timeout=60)
    except RuntimeError as exc:
        raise StartFailed(str(exc).splitlines()[-1]) from exc
    host, _, first = listen["extproc_metrics"].rpartition(":")
    return Gateway(
        replicas,
        process.pid,
        f"http://127.0.0.1:{envoy_port}/v1/chat/completions",
        listen["envoy_admin"],
        [f"http://{host}:{int(first) + i}/metrics" for i in range(replicas)],
    )


def measure(gateway: Gateway, args: argparse.Namespace, wrk: Wrk) -> Run:
    if args.quiet:
        wait_quiet(args.quiet)
    body = chat_body(1024, "any")
    streams_before = [streams_of(m) for m in gateway.metrics]
    before, wrk_before = cpu_by_role(gateway.pgid), children_cpu_seconds()
    machine_before = machine_ticks()
    started = time.monotonic()
    result = wrk.run(gateway.url, body, HEADERS, args.connections, args.seconds)
    wall = time.monotonic() - started
    after, wrk_after = cpu_by_role(gateway.pgid), children_cpu_seconds()
    busy, total = (a - b for a, b in zip(machine_ticks(), machine_before, strict=True))
    spread = tuple(streams_of(m) - b for m, b in zip(gateway.metrics, streams_before, strict=True))
    used = {role: after[role] - before[role] for role in ROLES if role != "wrk"}
    used["wrk"] = wrk_after - wrk_before
    requests = max(result.requests, 1)
    return Run(
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        cpu_us={role: seconds / requests * 1e6 for role, seconds in used.items()},
        cores_used=sum(used.values()) / wall,
        machine_busy=busy / total * (os.cpu_count() or 1),
        spread=spread,
        workers=envoy_workers(gateway.admin),
    )


def report(args: argparse.Namespace, results: Mapping[int, Sequence[Run]]) -> str:
    """Medians over the runs during which other programs kept fewer than
    ``args.others`` cores busy (all runs when none was that quiet, marked)."""
    quiet = {
        n: [r for r in runs if r.machine_busy - r.cores_used < args.others] or list(runs)
        for n, runs in results.items()
    }
    base = median([r.rps for r in quiet[min(quiet)]])
    rows = []
    for replicas, runs in quiet.items():
        rps = median([r.rps for r in runs])
        clean = sum(r.machine_busy - r.cores_used < args.others for r in results[replicas])
        spread = [max(r.spread) / max(min(r.spread), 1) for r in runs]
        rows.append(
            [
                str(replicas),
                f"{clean} of {len(results[replicas])}",
                fmt(rps, 0),
                fmt(rps / base),
                fmt(median([r.p50_ms for r in runs])),
                fmt(median([r.p99_ms for r in runs])),
                *(fmt(median([r.cpu_us[role] for r in runs]), 0) for role in ROLES),
                fmt(median([sum(r.cpu_us.values()) for r in runs]), 0),
                fmt(median([r.cores_used for r in runs])),
                fmt(median([r.machine_busy - r.cores_used for r in runs])),
                fmt(median(spread)),
                str(runs[0].workers),
            ]
        )
    header = [
        "processor processes",
        "quiet runs",
        "req/s",
        "x 1 process",
        "p50 ms",
        "p99 ms",
        *(f"{role} CPU us/req" for role in ROLES),
        "all CPU us/req",
        "cores used",
        "other programs' cores",
        "streams max/min replica",
        "Envoy workers",
    ]
    lines = [
        f"Machine: {MACHINE}, {os.cpu_count()} cores. Date: {time.strftime('%Y-%m-%d')}.",
        f"Load: wrk, closed loop, {args.connections} connections, 1 thread, keep-alive, "
        f"{args.seconds:g} s per run, 1 KB chat requests with x-ensemble-enable: false (the "
        f"processor decides every request on its headers), 0 ms demo model. All gateways "
        f"up at once, runs interleaved over {args.rounds} rounds (order rotated); medians "
        f"over the quiet runs (other programs under {args.others:g} cores; all runs if "
        f"none was).",
        "",
        table(header, "r" * len(header), rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int_list, default=[1, 2, 3, 4])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--quiet",
        type=float,
        default=60,
        help="before each run, wait up to this many seconds for other programs to leave "
        "the machine idle (0: do not wait)",
    )
    parser.add_argument(
        "--others",
        type=float,
        default=0.2,
        help="a run is quiet when other programs kept fewer cores than this busy",
    )
    args = parser.parse_args()
    require_wrk()
    install_sigterm()
    results: dict[int, list[Run]] = {n: [] for n in args.replicas}
    processes = Processes()
    try:
        with workdir("bench-scaleout-") as tmp:
            gateways = [start_gateway(tmp, n, processes) for n in args.replicas]
            time.sleep(2)  # health checks mark every replica healthy
            wrk = Wrk(tmp, processes)
            for gateway in gateways:  # warm-up
                wrk.run(gateway.url, chat_body(1024, "any"), HEADERS, args.connections, 2)
            for round_ in range(args.rounds):
                shift = round_ % len(gateways)
                for gateway in gateways[shift:] + gateways[:shift]:
                    run = measure(gateway, args, wrk)
                    results[gateway.replicas].append(run)
                    print(
                        f"round {round_ + 1} x{gateway.replicas}: {run.rps:.0f} req/s, "
                        f"cores used {run.cores_used:.2f} (machine busy "
                        f"{run.machine_busy:.2f}), spread {run.spread}",
                        file=sys.stderr,
                    )
    except KeyboardInterrupt:
        print("interrupted: all processes stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        processes.stop()
    print(report(args, results))


if __name__ == "__main__":
    main()
