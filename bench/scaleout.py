"""Throughput with 1 and 2 processor processes behind one Envoy (same machine).

    python -m bench.scaleout [--seconds 10] [--rounds 2]

Load: wrk, closed loop, 64 connections, 1 thread, keep-alive, plain chat requests that
the processor decides on headers (the processor is on every request's path); a 0 ms demo
model; configurations interleaved round by round, median of the rounds. The replicas are
extra endpoints of Envoy's processor cluster (``run --extproc-replicas``).
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from bench.speedkit import (
    Processes,
    Wrk,
    chat_body,
    fmt,
    install_sigterm,
    median,
    require_wrk,
    table,
    wait_listening,
    workdir,
    write_yaml,
)
from bench.speedkit import free_port as _free_port


def free_pair() -> int:
    """A free port whose successor is free too (replicas use consecutive ports)."""
    while True:
        port = _free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


def config(tmp: Path) -> tuple[Path, int]:
    envoy = _free_port()
    raw = {
        "listen": {
            "envoy": f"127.0.0.1:{envoy}",
            "envoy_admin": f"127.0.0.1:{_free_port()}",
            "extproc": f"127.0.0.1:{free_pair()}",
            "extproc_metrics": f"127.0.0.1:{free_pair()}",
            "upstream": f"127.0.0.1:{_free_port()}",
        },
        "default_model": "m0",
        "demo": {"models": [{"name": "m0", "port": _free_port(), "answers": ["Paris."]}]},
        "logging": {"format": "json"},
    }
    return write_yaml(tmp / "config.yaml", raw), envoy


def run_case(tmp: Path, replicas: int, seconds: float, wrk: Wrk) -> tuple[float, float, float]:
    path, envoy = config(tmp)
    processes = Processes()
    try:
        argv = [
            "python",
            "-m",
            "ensemble_extproc",
            "run",
            "--config",
            str(path),
            "--extproc-replicas",
            str(replicas),
        ]
        import sys

        argv[0] = sys.executable
        process = processes.start(f"gateway x{replicas}", argv, log=tmp / "gateway.log")
        wait_listening(envoy, process, "gateway", tmp / "gateway.log", timeout=30)
        time.sleep(2)  # health checks mark every replica healthy
        url = f"http://127.0.0.1:{envoy}/v1/chat/completions"
        result = wrk.run(url, chat_body(1024, "any"), {}, 64, seconds)
        return result.rps, result.p50_ms, result.p99_ms
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    require_wrk()
    install_sigterm()
    results: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    with workdir("bench-scaleout-") as tmp:
        wrk = Wrk(tmp, Processes())
        for round_ in range(args.rounds):
            order = [1, 2] if round_ % 2 == 0 else [2, 1]
            for replicas in order:
                results[replicas].append(run_case(tmp, replicas, args.seconds, wrk))
    rows = []
    for replicas, runs in results.items():
        rps = median([r[0] for r in runs])
        rows.append(
            [
                str(replicas),
                fmt(rps, 0),
                fmt(median([r[1] for r in runs])),
                fmt(median([r[2] for r in runs])),
                fmt(rps / median([r[0] for r in results[1]])),
            ]
        )
    print(__doc__.split("\n\n")[2].strip() + "\n")
    print(
        table(
            ["processor processes", "req/s", "p50 ms", "p99 ms", "req/s x 1 process"], "rrrrr", rows
        )
    )


if __name__ == "__main__":
    main()
