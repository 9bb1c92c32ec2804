"""Soak: the memory (RSS) of Envoy, the processor, the upstream and the demo models over
many requests, 10 % of them aborted by the client mid-flight.

Starts its own gateway on free loopback ports (demo models, upstream, processor, Envoy with
the bootstrap ``run`` renders) and, with ``--baseline``, a second one whose bootstrap leaves
Envoy's graceful ext_proc close off (Envoy's default: every ext_proc stream ends with a
reset, which the processor sees as a cancelled call). The two gateways then take turns,
``--every`` requests each, so both see the same machine load.

Load: closed loop, ``--concurrency`` aiohttp clients back to back (one process), a fixed
mix (plain, plain streamed, ensembles by header, streamed ensembles, ensembles by a
keyword rule, which makes the processor read every body). ``--cancel-rate`` of the
requests are aborted: the client closes its connection after a random delay shorter than
the demo models take to answer, so the request is inside the gateway when it goes.

Every ``--every`` requests of a gateway it prints a row (requests so far, req/s, RSS of
each part, aborts, failures). At the end, per part: the growth per 100k requests after
``--warmup`` requests (least-squares slope over the rows), against the target of 2 MB per
100k requests; Envoy's and the processor's CPU per request (median over rounds) and, with
``--baseline``, the ratio between the two bootstraps; how many ext_proc streams Envoy reset.

    python -m bench.soak [--requests 200000] [--every 10000] [--warmup 20000] [--baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml

from bench.speedkit import (
    MACHINE,
    Processes,
    fmt,
    free_ports,
    group_cpu_seconds,
    install_sigterm,
    listen_block,
    median,
    post,
    python_service,
    rss_bytes,
    secret_env,
    table,
    wait_listening,
    workdir,
    write_yaml,
)
from ensemble_extproc.config import load_config
from ensemble_extproc.envoy_bootstrap import bootstrap
from ensemble_extproc.envoy_names import EXTPROC_CLUSTER, GRACEFUL_GRPC_CLOSE
from ensemble_extproc.stack import envoy_binary

PATH = "/v1/chat/completions"
PARTS = ("envoy", "processor", "upstream", "demo")
TARGET_MB_PER_100K = 2.0
# Demo model latencies: aborts land before the slowest answer on the way.
LATENCY_MS = {"soak-default": 10, "soak-a": 10, "soak-b": 20}
ABORT_AFTER_MS = (1.0, 10.0)
RULE_KEYWORD = "diagnosis"
FLAGGED = "graceful close (shipped)"
BASELINE = "reset (baseline)"


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix, and what the gateway must say it did with it."""

    name: str
    share: float
    headers: Mapping[str, str]
    stream: bool
    decision: str  # expected x-ensemble-decision
    served_by: str  # expected x-ensemble-served-by
    keyword: bool = False

    def body(self) -> bytes:
        question = f"What is the {RULE_KEYWORD} here?" if self.keyword else "Capital of France?"
        payload = {
            "model": "soak-default",
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": question},
            ],
            "stream": self.stream,
        }
        return json.dumps(payload).encode()


ENSEMBLE = {"x-ensemble-models": "soak-a,soak-b"}
MIX = (
    Kind("plain", 0.55, {}, False, "none", "default_model"),
    Kind("plain, streamed", 0.05, {}, True, "none", "default_model"),
    Kind("ensemble (header)", 0.25, ENSEMBLE, False, "header", "ensemble_upstream"),
    Kind(
        "ensemble (header), streamed",
        0.05,
        {**ENSEMBLE, "x-ensemble-strategy": "first_success"},
        True,
        "header",
        "ensemble_upstream",
    ),
    Kind("ensemble (rule)", 0.10, {}, False, "rule:soak-rule", "ensemble_upstream", True),
)


def raw_config(ports: Iterator[int]) -> dict[str, Any]:
    models = [
        {"name": name, "port": next(ports), "latency_ms": ms, "answers": ["Paris."]}
        for name, ms in LATENCY_MS.items()
    ]
    return {
        "listen": listen_block(next(ports), next(ports), next(ports), next(ports)),
        "default_model": "soak-default",
        "demo": {"models": models},
        "profiles": {"careful": {"models": ["soak-a", "soak-b"], "strategy": "voting"}},
        "rules": [
            {
                "name": "soak-rule",
                "profile": "careful",
                "match": {"last_user_message": {"keywords": [RULE_KEYWORD]}},
            }
        ],
        "ensemble": {"default_min_responses": 1, "timeout_seconds": 10},
    }


@dataclass
class Gateway:
    label: str
    url: str
    metrics_url: str  # the processor's
    upstream_metrics_url: str
    admin_url: str
    pids: dict[str, int]


def start_gateway(
    processes: Processes, work: Path, label: str, graceful: bool, ports: Iterator[int]
) -> Gateway:
    name = "flagged" if graceful else "baseline"
    raw = raw_config(ports)
    path = write_yaml(work / f"{name}.yaml", raw)
    config = load_config(path)
    env = secret_env(f"soak-{name}-" + "k" * 40)
    pids: dict[str, int] = {}

    def service(part: str, command: str, ports: Sequence[int]) -> None:
        log = work / f"{name}-{part}.log"
        process = processes.start(f"{name} {part}", python_service(command, path), env, log)
        for port in ports:
            wait_listening(port, process, f"{name} {part}", log)
        pids[part] = process.pid

    service("demo", "demo", [model["port"] for model in raw["demo"]["models"]])
    service("upstream", "upstream", [config.listen.upstream.port])
    service("processor", "extproc", [config.listen.extproc.port])
    rendered = bootstrap(config)
    # The baseline says "false" outright (Envoy's default) rather than leaving it out.
    static = rendered["layered_runtime"]["layers"][0]["static_layer"]
    static[GRACEFUL_GRPC_CLOSE] = graceful
    bootstrap_path = work / f"{name}.envoy.yaml"
    bootstrap_path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    log = work / f"{name}-envoy.log"
    argv = [envoy_binary(), "-c", str(bootstrap_path), "--use-dynamic-base-id"]
    process = processes.start(f"{name} envoy", [*argv, "--log-level", "warn"], None, log)
    wait_listening(config.listen.envoy.port, process, f"{name} envoy", log)
    pids["envoy"] = process.pid
    return Gateway(
        label=label,
        url=f"http://{config.listen.envoy}{PATH}",
        metrics_url=f"http://{config.listen.extproc_metrics}/metrics",
        upstream_metrics_url=f"http://{config.listen.upstream}/metrics",
        admin_url=f"http://{config.listen.envoy_admin}",
        pids=pids,
    )


def preflight(gateway: Gateway) -> None:
    """Each kind once: the gateway does with it what the mix says."""
    for kind in MIX:
        reply = post(gateway.url, kind.body(), kind.headers)
        got = (
            reply.status,
            reply.headers.get("x-ensemble-decision"),
            reply.headers.get("x-ensemble-served-by"),
        )
        if got != (200, kind.decision, kind.served_by):
            raise RuntimeError(f"{gateway.label}, {kind.name}: got {got}: {reply.body[:300]!r}")


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Shot:
    kind: Kind
    abort_after: float | None  # seconds, or None: read the whole answer


def plan(count: int, cancel_rate: float, rng: random.Random) -> list[Shot]:
    kinds = rng.choices(MIX, weights=[k.share for k in MIX], k=count)
    low, high = ABORT_AFTER_MS
    return [
        Shot(kind, rng.uniform(low, high) / 1000 if rng.random() < cancel_rate else None)
        for kind in kinds
    ]


@dataclass
class Tally:
    answered: int = 0
    aborted: int = 0  # the client gave up before the answer was in
    answered_before_abort: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.answered += other.answered
        self.aborted += other.aborted
        self.answered_before_abort += other.answered_before_abort
        self.failed.update(other.failed)


def _problem(shot: Shot, status: int, body: bytes) -> str | None:
    if status != 200:
        return f"{shot.kind.name}: HTTP {status} {body[:120]!r}"
    if shot.kind.stream and not body.rstrip().endswith(b"data: [DONE]"):
        return f"{shot.kind.name}: stream without [DONE]"
    return None


async def _one(session: aiohttp.ClientSession, url: str, shot: Shot, tally: Tally) -> None:
    kind = shot.kind
    headers = {"content-type": "application/json", **kind.headers}
    try:
        async with asyncio.timeout(shot.abort_after):
            async with session.post(url, data=kind.body(), headers=headers) as response:
                body = await response.read()
    except TimeoutError:
        # The response was not read to its end: aiohttp closes the connection.
        tally.aborted += 1
        return
    except aiohttp.ClientError as error:
        tally.failed[f"{kind.name}: {type(error).__name__}"] += 1
        return
    problem = _problem(shot, response.status, body)
    if problem:
        tally.failed[problem] += 1
    elif shot.abort_after is not None:
        tally.answered_before_abort += 1
    else:
        tally.answered += 1


async def load(url: str, shots: Sequence[Shot], concurrency: int) -> Tally:
    tally = Tally()
    queue = iter(shots)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for shot in queue:  # one shared iterator: each shot is taken once
                await _one(session, url, shot, tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Row:
    requests: int
    seconds: float  # of load, this gateway, so far
    rate: float  # req/s of the last round
    rss: Mapping[str, int]
    cpu_us: Mapping[str, float]  # per request, last round
    tally: Tally


def growth_per_100k(rows: Sequence[Row], part: str, warmup: int) -> float:
    """Least-squares slope of RSS over requests after the warm-up, in MB per 100k."""
    points = [(r.requests, r.rss[part]) for r in rows if r.requests >= warmup]
    if len(points) < 2:
        return float("nan")
    slope = statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope
    return slope * 100_000 / 1e6


def envoy_stat(admin_url: str, name: str) -> int:
    with urllib.request.urlopen(f"{admin_url}/stats?filter=^{name}$", timeout=5) as response:
        line = response.read().decode().strip()
    return int(line.rpartition(": ")[2]) if line else 0


def gauge(metrics_url: str, name: str) -> float:
    """A label-less Prometheus gauge (requests still held: should be 0 when idle)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise RuntimeError(f"{metrics_url} has no {name}")


def still_held(gateway: Gateway, settle: float = 5.0) -> float:
    """Streams the processor and ensembles the upstream still hold once the load is over
    (given ``settle`` seconds for the last aborted ones to be torn down): 0 means no
    per-request state outlives its request, aborted ones included."""
    deadline = time.monotonic() + settle
    while True:
        held = gauge(gateway.metrics_url, "extproc_open_streams") + gauge(
            gateway.upstream_metrics_url, "ensemble_in_flight_requests"
        )
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def mb(value: int) -> str:
    return f"{value / 1e6:.1f}"


ROW_HEADER = [
    "bootstrap",
    "requests",
    "minutes",
    "req/s",
    *(f"{part} MB" for part in PARTS),
    "aborted",
    "failed",
]


def row_line(label: str, row: Row) -> str:
    cells = [
        label,
        f"{row.requests:,}",
        f"{row.seconds / 60:.1f}",
        f"{row.rate:.0f}",
        *(mb(row.rss[part]) for part in PARTS),
        f"{row.tally.aborted:,}",
        f"{sum(row.tally.failed.values()):,}",
    ]
    return "| " + " | ".join(cells) + " |"


# ----------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> str:
    processes = Processes()
    rounds = -(-args.requests // args.every)
    try:
        with workdir("bench-soak-") as work:
            ports = iter(free_ports(16))
            gateways = [start_gateway(processes, work, FLAGGED, True, ports)]
            if args.baseline:
                gateways.append(start_gateway(processes, work, BASELINE, False, ports))
            for gateway in gateways:
                preflight(gateway)
            rng = random.Random(args.seed)
            rows: dict[str, list[Row]] = {g.label: [] for g in gateways}
            totals = {g.label: Tally() for g in gateways}
            seconds = dict.fromkeys(rows, 0.0)
            print(table(ROW_HEADER, "lrrr" + "r" * len(PARTS) + "rr", []), flush=True)
            for index in range(rounds):
                count = min(args.every, args.requests - index * args.every)
                shots = plan(count, args.cancel_rate, rng)
                # Alternate which gateway goes first, so neither always follows the other.
                order = gateways if index % 2 == 0 else gateways[::-1]
                for gateway in order:
                    cpu_before = {p: group_cpu_seconds(pid) for p, pid in gateway.pids.items()}
                    started = time.perf_counter()
                    tally = uvloop.run(load(gateway.url, shots, args.concurrency))
                    elapsed = time.perf_counter() - started
                    total = totals[gateway.label]
                    total.add(tally)
                    seconds[gateway.label] += elapsed
                    row = Row(
                        requests=(index * args.every) + count,
                        seconds=seconds[gateway.label],
                        rate=count / elapsed,
                        rss={p: rss_bytes(pid) for p, pid in gateway.pids.items()},
                        cpu_us={
                            p: (group_cpu_seconds(pid) - cpu_before[p]) * 1e6 / count
                            for p, pid in gateway.pids.items()
                        },
                        tally=_copy(total),  # this row's snapshot of the running total
                    )
                    rows[gateway.label].append(row)
                    print(row_line(gateway.label, row), flush=True)
            return report(args, gateways, rows)
    finally:
        processes.stop()


def _copy(tally: Tally) -> Tally:
    copy = Tally()
    copy.add(tally)
    return copy


def report(
    args: argparse.Namespace, gateways: Sequence[Gateway], rows: Mapping[str, list[Row]]
) -> str:
    out = [
        "",
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Load: closed loop, {args.concurrency} aiohttp clients in one process, "
        f"{args.requests:,} requests per gateway"
        + (
            f", the two gateways taking turns every {args.every:,} requests"
            if len(gateways) > 1
            else ""
        )
        + f". Mix: {', '.join(f'{k.name} {k.share:.0%}' for k in MIX)}; "
        f"{args.cancel_rate:.0%} aborted by the client after "
        f"{ABORT_AFTER_MS[0]:g}-{ABORT_AFTER_MS[1]:g} ms (demo models answer in "
        f"{min(LATENCY_MS.values())}-{max(LATENCY_MS.values())} ms). "
        f"Growth: least-squares slope of RSS over the rows after {args.warmup:,} requests.",
        "",
    ]
    header = [
        "bootstrap",
        "part",
        "RSS after warm-up MB",
        "RSS at end MB",
        "growth MB/100k",
        "B/request",
        "target",
        "verdict",
    ]
    body = []
    for gateway in gateways:
        got = rows[gateway.label]
        after = [r for r in got if r.requests >= args.warmup]
        for part in PARTS:
            growth = growth_per_100k(got, part, args.warmup)
            verdict = (
                "-" if growth != growth else ("met" if growth < TARGET_MB_PER_100K else "MISSED")
            )
            body.append(
                [
                    gateway.label,
                    part,
                    mb(after[0].rss[part]) if after else "-",
                    mb(got[-1].rss[part]),
                    fmt(growth, 2),
                    fmt(growth * 10, 1),
                    f"< {TARGET_MB_PER_100K:g}",
                    verdict,
                ]
            )
    out.append(table(header, "llrrrrrl", body))
    out.append("")
    cpu_header = [
        "bootstrap",
        "Envoy CPU us/request",
        "processor CPU us/request",
        "upstream CPU us/request",
        "ext_proc streams",
        "reset by Envoy",
        "client aborts seen by Envoy",
        "held at the end",
        "answered",
        "aborted",
        "failed",
    ]
    cpu_rows = []
    cpu: dict[str, dict[str, float]] = {}
    for gateway in gateways:
        got = rows[gateway.label]
        # Rounds after the warm-up: start-up costs are not per-request costs.
        steady = [r for r in got if r.requests > args.warmup] or got
        cpu[gateway.label] = {p: median([r.cpu_us[p] for r in steady]) for p in PARTS}
        streams = envoy_stat(gateway.admin_url, "http.gateway.ext_proc.streams_started")
        # The processor cannot tell: grpc.aio reports neither kind of end as cancelled.
        resets = envoy_stat(gateway.admin_url, f"cluster.{EXTPROC_CLUSTER}.upstream_rq_tx_reset")
        aborts = envoy_stat(
            gateway.admin_url, "http.gateway.downstream_cx_destroy_remote_active_rq"
        )
        held = still_held(gateway)
        tally = got[-1].tally
        cpu_rows.append(
            [
                gateway.label,
                fmt(cpu[gateway.label]["envoy"], 0),
                fmt(cpu[gateway.label]["processor"], 0),
                fmt(cpu[gateway.label]["upstream"], 0),
                f"{streams:,}",
                f"{resets:,}",
                f"{aborts:,}",
                f"{held:g}",
                f"{tally.answered + tally.answered_before_abort:,}",
                f"{tally.aborted:,}",
                f"{sum(tally.failed.values()):,}",
            ]
        )
    out.append(table(cpu_header, "l" + "r" * (len(cpu_header) - 1), cpu_rows))
    if len(gateways) == 2:
        flagged, base = (cpu[g.label] for g in gateways)
        out.append("")
        out.append(
            "Graceful close vs reset, CPU per request (median over rounds): Envoy "
            f"{flagged['envoy'] / base['envoy']:.2f}x "
            f"({flagged['envoy'] - base['envoy']:+.0f} us), "
            f"processor {flagged['processor'] / base['processor']:.2f}x "
            f"({flagged['processor'] - base['processor']:+.0f} us)."
        )
    failures = Counter[str]()
    for gateway in gateways:
        failures.update(rows[gateway.label][-1].tally.failed)
    if failures:
        out.append("")
        out.append("Failed requests (aborted ones excluded):")
        out += [f"  {count} x {what}" for what, count in failures.most_common(10)]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=200_000, help="per gateway")
    parser.add_argument("--every", type=int, default=10_000, help="requests per row")
    parser.add_argument("--warmup", type=int, default=20_000, help="requests before the fit")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cancel-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also a gateway without graceful close, taking turns",
    )
    args = parser.parse_args(argv)
    if args.requests < args.warmup + 2 * args.every:
        parser.error("--requests must leave at least two rows after --warmup")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    install_sigterm()
    try:
        print(run(parse_args(argv)))
    except KeyboardInterrupt:
        print("interrupted: all processes stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
