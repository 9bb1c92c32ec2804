"""The ensemble upstream's fan-out cost: ensemble latency against the model latency needed.

Starts demo models with fixed latencies and the ensemble upstream on free loopback ports
(no Envoy; requests carry the x-ensemble-* headers the processor sets, unsigned: a
signature is good for one request, and the upstream runs without a secret), then
loads each scenario with a closed-loop client at each concurrency, interleaved round by
round (order rotated every round), and prints the median of the rounds:

- direct calls to a 10 ms and a 20 ms demo model (the baselines, same client);
- first_success over models of 10/50/100 ms: needs the fastest (10 ms);
- voting over 3 and 5 models of 20 ms answering alike: needs the k-th fastest answer, k the
  votes after which the leader cannot be overtaken (2 of 3, 3 of 5);
- voting with early stop: 3 models of 20 ms that agree and 2 of 200 ms that disagree;
  needs the 3rd fastest (20 ms), while waiting for every member would take 200 ms;
- time to first chunk of a streamed first_success (``"stream": true``) against a streamed
  direct call ("n/a" while the upstream answers 400 stream_not_supported).

wrk runs the non-streamed scenarios; an aiohttp client measures time to first chunk.
CPU per request per member is the upstream's utime+stime delta (from /proc) divided by
requests times members. Not a timed test: it prints tables.

    python -m bench.fanout [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.speedkit import (
    MACHINE,
    Processes,
    Wrk,
    bench_main,
    bench_parser,
    chat_body,
    fmt,
    free_port,
    group_cpu_seconds,
    int_list,
    listen_block,
    median,
    post,
    python_service,
    require_wrk,
    table,
    wait_listening,
    workdir,
    write_yaml,
)
from ensemble_extproc import headers as h
from ensemble_extproc.config.model import DEFAULT_SECRET_ENV as SECRET_ENV

PATH = "/v1/chat/completions"
# name -> (latency ms, answer)
DEMO_MODELS: dict[str, tuple[float, str]] = {
    "m10": (10, "Paris."),
    "m50": (50, "Paris."),
    "m100": (100, "Paris."),
    **{f"v{i}": (20, "Paris.") for i in range(1, 6)},
    "slow1": (200, "Lyon"),
    "slow2": (200, "Lyon"),
}
BODY_SIZE = 1024
NOT_SUPPORTED = "n/a (streaming not supported yet)"


@dataclass
class Rig:
    """Demo models and the ensemble upstream, started on free ports."""

    demo_ports: dict[str, int] = field(
        default_factory=lambda: {name: free_port() for name in DEMO_MODELS}
    )
    upstream_port: int = field(default_factory=free_port)
    demo_pid: int = 0
    upstream_pid: int = 0

    def config(self) -> dict[str, Any]:
        return {
            # Only the upstream is started; the other listeners get free ports all the same.
            "listen": listen_block(upstream=self.upstream_port),
            "default_model": "m10",
            "demo": {
                "models": [
                    {"name": name, "port": self.demo_ports[name], "latency_ms": ms, "answers": [a]}
                    for name, (ms, a) in DEMO_MODELS.items()
                ]
            },
            "ensemble": {
                "default_strategy": "voting",
                "default_min_responses": 2,
                "timeout_seconds": 10,
                "model_timeout_seconds": 8,
                "max_concurrent_requests": 512,
                "max_models_per_request": 5,
            },
        }

    def start(self, processes: Processes, work: Path) -> None:
        path = write_yaml(work / "fanout.yaml", self.config())
        # No internal secret: wrk repeats one set of headers, and a signature is good for
        # one request only, so the upstream runs unsigned (it then trusts the headers).
        env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        demo_log, upstream_log = work / "demo.log", work / "upstream.log"
        demo = processes.start("demo models", python_service("demo", path), env, demo_log)
        for port in self.demo_ports.values():
            wait_listening(port, demo, "demo models", demo_log)
        upstream = processes.start("upstream", python_service("upstream", path), env, upstream_log)
        wait_listening(self.upstream_port, upstream, "upstream", upstream_log)
        self.demo_pid, self.upstream_pid = demo.pid, upstream.pid

    def model_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.demo_ports[name]}{PATH}"

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}{PATH}"

    def ensemble_headers(self, models: Sequence[str], strategy: str) -> dict[str, str]:
        """The spec headers the processor would send (unsigned: see ``start``)."""
        return {h.MODELS: ",".join(models), h.STRATEGY: strategy}


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    models: tuple[str, ...]  # ensemble members; empty for a direct call
    strategy: str = ""
    direct: str = ""  # the model called directly
    needed: str = ""  # key of the direct scenario measuring the latency physically needed
    needed_note: str = ""
    stream: bool = False
    check: Callable[[dict[str, Any]], str | None] | None = None

    @property
    def members(self) -> int:
        return len(self.models) or 1


def _cancelled(expected: int) -> Callable[[dict[str, Any]], str | None]:
    def check(body: dict[str, Any]) -> str | None:
        calls = body.get("ensemble", {}).get("calls", {})
        if calls.get("cancelled") != expected:
            return f"expected {expected} cancelled calls, got {calls}"
        return None

    return check


SCENARIOS = (
    Scenario("direct10", "direct call, 10 ms model", (), direct="m10"),
    Scenario("direct20", "direct call, 20 ms model", (), direct="v1"),
    Scenario(
        "first",
        "first_success over 10/50/100 ms",
        ("m10", "m50", "m100"),
        "first_success",
        needed="direct10",
        needed_note="fastest: 10 ms",
        check=_cancelled(2),
    ),
    Scenario(
        "vote3",
        "voting, 3 x 20 ms, all agree",
        ("v1", "v2", "v3"),
        "voting",
        needed="direct20",
        needed_note="2nd of 3: 20 ms",
    ),
    Scenario(
        "vote5",
        "voting, 5 x 20 ms, all agree",
        ("v1", "v2", "v3", "v4", "v5"),
        "voting",
        needed="direct20",
        needed_note="3rd of 5: 20 ms",
    ),
    Scenario(
        "early",
        "voting early stop: 3 x 20 ms agree, 2 x 200 ms disagree",
        ("v1", "v2", "v3", "slow1", "slow2"),
        "voting",
        needed="direct20",
        needed_note="3rd of 5: 20 ms (all 5: 200 ms)",
        check=_cancelled(2),
    ),
    Scenario("sdirect10", "streamed direct call, 10 ms model", (), direct="m10", stream=True),
    Scenario(
        "sfirst",
        "streamed first_success over 10/50/100 ms",
        ("m10", "m50", "m100"),
        "first_success",
        needed="sdirect10",
        needed_note="fastest: 10 ms",
        stream=True,
    ),
)


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float  # time to first chunk for streamed scenarios, else the whole answer
    p99_ms: float
    total_p50_ms: float  # the whole answer
    errors: int
    unsupported: bool = False

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Run:
    load: Load
    upstream_cpu_us: float  # per request per member
    demo_cpu_us: float  # per request

    @property
    def rps(self) -> float:
        return self.load.rps

    @property
    def p50_ms(self) -> float:
        return self.load.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.load.p99_ms

    @property
    def errors(self) -> int:
        return self.load.errors


class Bench:
    def __init__(self, rig: Rig, wrk: Wrk, body: bytes) -> None:
        self.rig = rig
        self.wrk = wrk
        self.body = body
        self.stream_body = json.dumps({**json.loads(body), "stream": True}).encode()

    def target(self, scenario: Scenario) -> tuple[str, dict[str, str]]:
        if scenario.direct:
            return self.rig.model_url(scenario.direct), {}
        return self.rig.upstream_url, self.rig.ensemble_headers(scenario.models, scenario.strategy)

    def check(self, scenario: Scenario) -> str | None:
        """One request first: the scenario behaves as described (or streaming is n/a)."""
        url, headers = self.target(scenario)
        reply = post(url, self.stream_body if scenario.stream else self.body, headers)
        if scenario.stream:
            if unsupported(reply.status, reply.body):
                return NOT_SUPPORTED
            if reply.status != 200 or b"data:" not in reply.body:
                return f"{scenario.label}: status {reply.status}, {reply.body[:300]!r}"
            return None
        if reply.status != 200:
            raise RuntimeError(f"{scenario.label}: status {reply.status}, {reply.body[:300]!r}")
        if scenario.check is not None:
            problem = scenario.check(reply.json())
            if problem:
                raise RuntimeError(f"{scenario.label}: {problem}")
        return None

    def measure(self, scenario: Scenario, concurrency: int, seconds: float) -> Run:
        pids = (self.rig.upstream_pid, self.rig.demo_pid)
        before = [group_cpu_seconds(pid) for pid in pids]
        url, headers = self.target(scenario)
        if scenario.stream:
            load = asyncio.run(stream_load(url, self.stream_body, headers, concurrency, seconds))
        else:
            r = self.wrk.run(url, self.body, headers, concurrency, seconds)
            load = Load(r.requests, r.seconds, r.p50_ms, r.p99_ms, r.p50_ms, r.errors)
        after = [group_cpu_seconds(pid) for pid in pids]
        per = max(load.requests, 1)
        return Run(
            load=load,
            upstream_cpu_us=(after[0] - before[0]) / per / scenario.members * 1e6,
            demo_cpu_us=(after[1] - before[1]) / per * 1e6,
        )


def unsupported(status: int, body: bytes) -> bool:
    if status != 400:
        return False
    try:
        return bool(json.loads(body)["error"]["code"] == "stream_not_supported")
    except (ValueError, KeyError, TypeError):
        return False


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def stream_load(
    url: str, body: bytes, headers: Mapping[str, str], concurrency: int, seconds: float
) -> Load:
    """Closed loop, ``concurrency`` workers: time to the first SSE ``data:`` line, and to
    the end of the stream."""
    first: list[float] = []
    total: list[float] = []
    errors = 0
    not_supported = False
    loop = asyncio.get_running_loop()
    all_headers = {"content-type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = loop.time()
    end = started + seconds
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors, not_supported
            while loop.time() < end and not not_supported:
                t0 = loop.time()
                try:
                    async with session.post(url, data=body, headers=all_headers) as response:
                        if response.status != 200:
                            raw = await response.read()
                            errors += 1
                            not_supported = unsupported(response.status, raw)
                            continue
                        seen_first = False
                        async for line in response.content:
                            if not seen_first and line.startswith(b"data:"):
                                first.append((loop.time() - t0) * 1000)
                                seen_first = True
                        if not seen_first:
                            errors += 1
                            continue
                        total.append((loop.time() - t0) * 1000)
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - started
    return Load(
        requests=len(total),
        seconds=elapsed,
        p50_ms=percentile(first, 50),
        p99_ms=percentile(first, 99),
        total_p50_ms=percentile(total, 50),
        errors=errors,
        unsupported=not_supported,
    )


Key = tuple[str, int]  # scenario, concurrency


def run(args: argparse.Namespace) -> str:
    require_wrk()
    processes = Processes()
    try:
        with workdir("bench-fanout-") as work:
            rig = Rig()
            rig.start(processes, work)
            bench = Bench(rig, Wrk(work, processes), chat_body(BODY_SIZE, "any"))
            na: dict[str, str] = {}
            for scenario in SCENARIOS:
                problem = bench.check(scenario)
                if problem:
                    na[scenario.key] = problem
                    print(f"{scenario.label}: {problem}", file=sys.stderr)
            active = [s for s in SCENARIOS if s.key not in na]
            for scenario in active:  # warm-up: connections, pools, caches
                bench.measure(scenario, 4, args.warmup)
            runs: dict[Key, list[Run]] = {}
            total = len(active) * len(args.concurrency) * args.rounds * args.duration
            print(f"about {total / 60:.0f} min", file=sys.stderr)
            for round_index in range(args.rounds):
                shift = round_index % len(active)
                order = active[shift:] + active[:shift]
                for concurrency in args.concurrency:
                    for scenario in order:
                        got = bench.measure(scenario, concurrency, args.duration)
                        runs.setdefault((scenario.key, concurrency), []).append(got)
                        print(
                            f"round {round_index + 1}/{args.rounds} c={concurrency} "
                            f"{scenario.key}: {got.rps:.0f} req/s p50 {got.p50_ms:.2f} ms "
                            f"p99 {got.p99_ms:.2f} ms errors {got.errors}",
                            file=sys.stderr,
                        )
            return report(args, runs, na)
    finally:
        processes.stop()


def report(
    args: argparse.Namespace, runs: Mapping[Key, Sequence[Run]], na: Mapping[str, str]
) -> str:
    header = [
        "conc",
        "scenario",
        "members",
        "req/s",
        "p50 ms",
        "p99 ms",
        "needed (k-th fastest)",
        "needed, direct p50 ms",
        "p50 x needed direct",
        "p50 x nominal",
        "added p50 ms",
        "upstream CPU us/req/member",
        "demo CPU us/req",
        "errors",
    ]
    rows = []
    for concurrency in args.concurrency:
        for scenario in SCENARIOS:
            got = runs.get((scenario.key, concurrency), [])
            if scenario.key in na:
                rows.append(
                    [str(concurrency), scenario.label, str(scenario.members), na[scenario.key]]
                    + ["-"] * (len(header) - 4)
                )
                continue
            base = runs.get((scenario.needed, concurrency), []) if scenario.needed else []
            pairs = list(zip(got, base, strict=False)) if base else []
            nominal = nominal_ms(scenario)
            rows.append(
                [
                    str(concurrency),
                    scenario.label,
                    str(scenario.members),
                    fmt(median([r.rps for r in got]), 0),
                    fmt(median([r.p50_ms for r in got])),
                    fmt(median([r.p99_ms for r in got])),
                    scenario.needed_note or "-",
                    fmt(median([b.p50_ms for b in base])) if base else "-",
                    fmt(median([g.p50_ms / b.p50_ms for g, b in pairs])) if pairs else "-",
                    fmt(median([r.p50_ms for r in got]) / nominal),
                    fmt(median([g.p50_ms - b.p50_ms for g, b in pairs])) if pairs else "-",
                    fmt(median([r.upstream_cpu_us for r in got]), 0) if scenario.models else "-",
                    fmt(median([r.demo_cpu_us for r in got]), 0),
                    str(sum(r.errors for r in got)),
                ]
            )
    lines = [
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Load: closed loop at each concurrency (wrk, 1 thread, keep-alive; streamed rows: an "
        f"aiohttp client, latency = time to the first SSE data line), {args.duration:g} s per "
        f"run, scenarios interleaved over {args.rounds} rounds (order rotated each round), "
        f"median of the rounds. Chat body {BODY_SIZE} B. Ensembles go straight to the "
        f"upstream (no Envoy) with unsigned headers. 'x needed direct': median over rounds of "
        f"the paired ratio to the direct call of the model whose latency the strategy must "
        f"wait for, in the same round; 'x nominal': to its configured latency.",
        "",
        table(header, "rlrrrrlrrrrrrr", rows),
    ]
    return "\n".join(lines)


def nominal_ms(scenario: Scenario) -> float:
    if scenario.direct:
        return DEMO_MODELS[scenario.direct][0]
    latencies = sorted(DEMO_MODELS[m][0] for m in scenario.models)
    if scenario.strategy == "first_success":
        return latencies[0]
    return latencies[len(latencies) // 2]  # k = n//2 + 1 agreeing votes (all fast ones agree)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("python -m bench.fanout", __doc__, warmup=1.0)
    parser.add_argument(
        "--concurrency",
        type=int_list,
        default=[1, 16],
        help="comma-separated concurrency levels (default 1,16)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
