"""The ensemble upstream's CPU per ensemble: this checkout against a git ref, in one run.

Starts demo models that answer at once (0 ms, the short answer "Paris.") and two ensemble
upstreams on free loopback ports with the same config: the code of a git ref (default
``main``, exported with ``git archive`` into a temporary directory and run by the same
Python) and the code of this checkout. Each scenario is loaded with wrk at one connection
(closed loop), on each upstream in turn, interleaved round by round (the order rotated
every round); CPU per request is the upstream's utime+stime delta (from /proc) divided by
the requests wrk completed. Prints the medians of the rounds and the paired ratios:

- this checkout against the ref, per scenario;
- a 5-member vote against a 1-member ensemble, per upstream.

Scenarios: first_success over one model, voting over one model, voting over five models
that answer alike. Requests carry the ``x-ensemble-*`` headers the processor sets,
unsigned (a signature is good for one request and wrk repeats one; the upstreams run
without a secret, as in bench/fanout.py). Both upstreams log at the default level (one
JSON line per ensemble) to files; the calls each run's ensembles cancelled are counted in
those lines (a cancelled HTTP/1.1 call closes its connection: the next ensemble opens a new
one). Not a timed test: it prints tables.

    python -m bench.ensemble_cpu [--ref main] [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.speedkit import (
    MACHINE,
    REPO,
    Processes,
    Wrk,
    bench_main,
    bench_parser,
    chat_body,
    fmt,
    free_port,
    group_cpu_seconds,
    listen_block,
    median,
    post,
    python_service,
    table,
    wait_listening,
    workdir,
    write_yaml,
)
from ensemble_extproc import headers as h
from ensemble_extproc.config.model import DEFAULT_SECRET_ENV as SECRET_ENV

PATH = "/v1/chat/completions"
ANSWER = "Paris."
MODELS = ("m0", "v1", "v2", "v3", "v4", "v5")
BODY_SIZE = 1024


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    models: tuple[str, ...]
    strategy: str

    @property
    def headers(self) -> dict[str, str]:
        return {h.MODELS: ",".join(self.models), h.STRATEGY: self.strategy}


SCENARIOS = (
    Scenario("first1", "first_success, 1 model", ("m0",), "first_success"),
    Scenario("vote1", "voting, 1 model", ("m0",), "voting"),
    Scenario("vote5", "voting, 5 models, short answers alike", MODELS[1:], "voting"),
)
ONE, FIVE = "vote1", "vote5"


@dataclass
class Upstream:
    name: str  # "ref <name>" or "this checkout"
    src: Path | None  # the ref's src directory; None: this checkout (as installed)
    port: int = field(default_factory=free_port)
    pid: int = 0
    log: Path | None = None  # its log: one JSON line per ensemble

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"


def export_ref(ref: str, into: Path) -> Path:
    """The ref's ``src`` tree, exported with ``git archive`` (no checkout is touched)."""
    archive = into / "ref.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", ref, "src"], stdout=out, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def config(demo_ports: Mapping[str, int], upstream_port: int) -> dict[str, Any]:
    return {
        "listen": listen_block(upstream=upstream_port),
        "default_model": "m0",
        "demo": {
            "models": [
                {"name": name, "port": port, "latency_ms": 0, "answers": [ANSWER]}
                for name, port in demo_ports.items()
            ]
        },
        "ensemble": {
            "default_strategy": "voting",
            "timeout_seconds": 10,
            "model_timeout_seconds": 8,
            "max_models_per_request": 5,
        },
    }


def start(processes: Processes, work: Path, upstreams: Sequence[Upstream]) -> None:
    demo_ports = {name: free_port() for name in MODELS}
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    demo_config = write_yaml(work / "demo.yaml", config(demo_ports, free_port()))
    demo = processes.start("demo models", python_service("demo", demo_config), env, work / "d.log")
    for port in demo_ports.values():
        wait_listening(port, demo, "demo models", work / "d.log")
    for index, upstream in enumerate(upstreams):
        path = write_yaml(work / f"upstream-{index}.yaml", config(demo_ports, upstream.port))
        own = dict(env)
        if upstream.src is not None:
            # Ahead of the editable install's path: the ref's package is the one imported.
            own["PYTHONPATH"] = str(upstream.src)
        log = work / f"upstream-{index}.log"
        process = processes.start(upstream.name, python_service("upstream", path), own, log)
        wait_listening(upstream.port, process, upstream.name, log)
        upstream.pid = process.pid
        upstream.log = log


def check(upstream: Upstream, scenario: Scenario, body: bytes) -> None:
    """One request: the answer is the demo's."""
    reply = post(upstream.url, body, scenario.headers)
    if reply.status != 200:
        raise RuntimeError(f"{upstream.name} {scenario.key}: {reply.status} {reply.body[:300]!r}")
    answer = reply.json()
    if answer["choices"][0]["message"]["content"] != ANSWER:
        raise RuntimeError(f"{upstream.name} {scenario.key}: unexpected answer {answer}")


def cancelled_per_ensemble(log: Path, offset: int) -> float:
    """Cancelled calls per ensemble in the log lines written after ``offset`` (the
    ensembles of one run): each line's ``ensemble.calls`` lists every call and its status."""
    ensembles = cancelled = 0
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # not a JSON line (a traceback would be one per line)
            summary = entry.get("ensemble") if isinstance(entry, dict) else None
            if isinstance(summary, dict):
                ensembles += 1
                cancelled += sum(c.get("status") == "cancelled" for c in summary["calls"])
    return cancelled / max(ensembles, 1)


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    cpu_us: float  # upstream CPU per request
    errors: int
    cancelled: float  # cancelled calls per ensemble, from the upstream's log


Key = tuple[str, str]  # upstream name, scenario key


def measure(wrk: Wrk, upstream: Upstream, scenario: Scenario, body: bytes, secs: float) -> Sample:
    assert upstream.log is not None
    offset = upstream.log.stat().st_size
    before = group_cpu_seconds(upstream.pid)
    result = wrk.run(upstream.url, body, scenario.headers, 1, secs)
    after = group_cpu_seconds(upstream.pid)
    cpu = (after - before) / max(result.requests, 1) * 1e6
    cancelled = cancelled_per_ensemble(upstream.log, offset)
    return Sample(result.rps, result.p50_ms, cpu, result.errors, cancelled)


def run(args: argparse.Namespace) -> str:
    processes = Processes()
    try:
        with workdir("bench-ensemble-cpu-") as work:
            upstreams = [
                Upstream(f"ref {args.ref}", export_ref(args.ref, work)),
                Upstream("this checkout", None),
            ]
            start(processes, work, upstreams)
            wrk = Wrk(work, processes)
            body = chat_body(BODY_SIZE, "any")
            for upstream in upstreams:
                for scenario in SCENARIOS:
                    check(upstream, scenario, body)
            for upstream in upstreams:  # warm-up: connections, pools, caches
                for scenario in SCENARIOS:
                    measure(wrk, upstream, scenario, body, args.warmup)
            samples: dict[Key, list[Sample]] = {}
            cases = [(u, s) for s in SCENARIOS for u in upstreams]
            for round_index in range(args.rounds):
                shift = round_index % len(cases)
                for upstream, scenario in cases[shift:] + cases[:shift]:
                    got = measure(wrk, upstream, scenario, body, args.duration)
                    samples.setdefault((upstream.name, scenario.key), []).append(got)
                    print(
                        f"round {round_index + 1}/{args.rounds} {upstream.name} {scenario.key}: "
                        f"{got.rps:.0f} req/s p50 {got.p50_ms:.2f} ms CPU {got.cpu_us:.0f} us",
                        file=sys.stderr,
                    )
            return report(args, upstreams, samples)
    finally:
        processes.stop()


def paired(a: Sequence[Sample], b: Sequence[Sample]) -> float:
    """The median over rounds of a's CPU over b's, round by round."""
    return median([x.cpu_us / y.cpu_us for x, y in zip(a, b, strict=True)])


def report(
    args: argparse.Namespace,
    upstreams: Sequence[Upstream],
    samples: Mapping[Key, Sequence[Sample]],
) -> str:
    base, subject = upstreams[0].name, upstreams[1].name
    rows = []
    for scenario in SCENARIOS:
        for upstream in upstreams:
            got = samples[(upstream.name, scenario.key)]
            vs_ref = (
                fmt(paired(got, samples[(base, scenario.key)]))
                if upstream.name == subject
                else "1.00"
            )
            rows.append(
                [
                    scenario.label,
                    upstream.name,
                    fmt(median([s.rps for s in got]), 0),
                    fmt(median([s.p50_ms for s in got])),
                    fmt(median([s.cpu_us for s in got]), 0),
                    vs_ref,
                    fmt(median([s.cancelled for s in got])),
                    str(sum(s.errors for s in got)),
                ]
            )
    header = [
        "scenario",
        "upstream",
        "req/s",
        "p50 ms",
        "upstream CPU us/req",
        "CPU x ref",
        "cancelled calls / ensemble",
        "errors",
    ]
    ratio_rows = [
        [u.name, fmt(paired(samples[(u.name, FIVE)], samples[(u.name, ONE)]))] for u in upstreams
    ]
    lines = [
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}. Ref: {args.ref}.",
        f"Load: wrk, 1 connection, closed loop, keep-alive, {args.duration:g} s per run; "
        f"upstreams and scenarios interleaved over {args.rounds} rounds (order rotated each "
        f"round), median of the rounds; 'x ref' and the 5/1 ratio: median of the paired "
        f"per-round ratios. Chat body {BODY_SIZE} B; demo models of 0 ms answering {ANSWER!r}; "
        f"unsigned spec headers; default logging to a file. Cancelled calls per ensemble: "
        f"counted in the upstream's log lines of each run, median of the rounds.",
        "",
        table(header, "llrrrrrr", rows),
        "",
        table(["upstream", "CPU of a 5-model vote x a 1-model vote"], "lr", ratio_rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("python -m bench.ensemble_cpu", __doc__, warmup=1.0)
    parser.set_defaults(duration=5.0)
    parser.add_argument("--ref", default="main", help="the git ref to compare with (main)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if os.name != "posix":
        print("needs Linux (/proc)", file=sys.stderr)
        return 2
    return bench_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
