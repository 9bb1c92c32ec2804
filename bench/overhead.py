"""What the gateway adds per request: direct to a model, Envoy alone, Envoy + processor.

Starts its own demo model (0 ms latency), ensemble upstream, processors and Envoys on free
loopback ports, then loads each configuration with wrk at several connection counts and
body sizes, interleaved round by round (the configuration order is rotated every round),
and prints the median of the rounds:

- direct: wrk -> demo model (no Envoy);
- Envoy only: a bootstrap rendered from the same config with the ext_proc filter removed;
- processor not asked: the shipped bootstrap of a headers-only config, a plain request
  (no x-ensemble-* header): Envoy routes it alone, the processor runs but is not asked;
- minimal servicer: a bootstrap with ext_proc on every route, in front of a 40-line
  grpc.aio servicer that answers every request with an empty CommonResponse
  (bench/minimal_extproc.py, on the processor's event loop): the floor of a Python
  processor;
- processor, headers decide: the same bootstrap in front of our processor, a plain
  request: what the processor path costs when the headers decide;
- headers decide, ensembled: x-ensemble-models: <the demo model>, first_success, through
  the ensemble upstream (shows the upstream's cost);
- body decides, plain: a config with a profile and a keyword rule, so Envoy sends the body
  of every chat completion to the processor; the body matches no rule.

Added latency is the median over rounds of the paired difference to the Envoy-only run of
the same round; "x floor" the paired ratio of the processor path to the minimal servicer.
CPU per request is the utime+stime delta of each process (from /proc) divided by the
requests wrk completed. Not a timed test: it prints tables.

On a shared machine each run first waits (``--quiet``, up to 60 s) until other programs
leave the cores idle.

``--loops`` instead compares event loops under grpc.aio: our processor and the minimal
servicer, each on asyncio's loop and on uvloop, behind an Envoy that asks for every
request; ratios are paired per round (uvloop / asyncio).

    python -m bench.overhead [--duration 10] [--rounds 3] [--loops]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.speedkit import (
    MACHINE,
    Processes,
    Reply,
    Wrk,
    WrkResult,
    bench_main,
    bench_parser,
    chat_body,
    children_cpu_seconds,
    fmt,
    free_port,
    group_cpu_seconds,
    int_list,
    listen_block,
    machine_ticks,
    median,
    post,
    python_service,
    require_wrk,
    secret_env,
    table,
    wait_listening,
    wait_quiet,
    workdir,
    write_yaml,
)
from ensemble_extproc.config import load_config
from ensemble_extproc.envoy_bootstrap import bootstrap, render_yaml
from ensemble_extproc.envoy_names import EXTPROC_CLUSTER
from ensemble_extproc.extproc.decision import needs_body
from ensemble_extproc.stack import envoy_binary

MODEL = "bench-zero"
PATH = "/v1/chat/completions"
ROLES = ("processor", "envoy", "upstream", "demo")


def base_config(ports: Mapping[str, int], envoy: int, extproc: int) -> dict[str, Any]:
    return {
        "listen": listen_block(envoy, free_port(), extproc, ports["upstream"]),
        "default_model": MODEL,
        "demo": {
            "models": [
                {"name": MODEL, "port": ports["demo"], "latency_ms": 0, "answers": ["Paris."]}
            ]
        },
        "ensemble": {
            "default_strategy": "voting",
            "default_min_responses": 1,
            "timeout_seconds": 10,
            "model_timeout_seconds": 8,
            "max_concurrent_requests": 256,
        },
    }


# A profile and a keyword rule: the processor needs the body of every request without
# x-ensemble-* headers. The bench's bodies contain none of the keywords.
RULES: dict[str, Any] = {
    "profiles": {"critical": {"models": [MODEL], "strategy": "first_success"}},
    "rules": [
        {
            "name": "high-stakes",
            "profile": "critical",
            "match": {"last_user_message": {"keywords": ["diagnosis", "dosage", "lawsuit"]}},
        }
    ],
}


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    port: int
    headers: Mapping[str, str]
    # Process (group) ids whose CPU is charged to this case, by role.
    pids: Mapping[str, int]
    check: Callable[[Reply], str | None]


@dataclass(frozen=True)
class Sample:
    result: WrkResult
    cpu_us: Mapping[str, float]  # CPU microseconds per request, by role
    # Cores other programs kept busy meanwhile: the machine's busy cores (/proc/stat)
    # less those of this case's processes and of wrk.
    others: float = 0.0


def _expect(status: int = 200, **headers: str) -> Callable[[Reply], str | None]:
    def check(reply: Reply) -> str | None:
        if reply.status != status:
            return f"status {reply.status}: {reply.body[:300]!r}"
        for name, value in headers.items():
            got = reply.headers.get(name.replace("_", "-"), "")
            if got != value:
                return f"header {name.replace('_', '-')} is {got!r}, expected {value!r}"
        return None

    return check


class Stack:
    """The bench's processes: one demo model and upstream, processors and Envoys."""

    def __init__(self, processes: Processes, work: Path) -> None:
        self.processes = processes
        self.work = work
        self.env = secret_env(secrets.token_hex(32))
        self.ports = {"demo": free_port(), "upstream": free_port()}
        self._configs = 0

    def config(self, extra: Mapping[str, Any] | None = None) -> tuple[Path, int, int]:
        """A config file for one Envoy + processor pair: its path, Envoy's and the
        processor's ports."""
        self._configs += 1
        envoy, extproc = free_port(), free_port()
        raw = {**base_config(self.ports, envoy, extproc), **(extra or {})}
        return write_yaml(self.work / f"config-{self._configs}.yaml", raw), envoy, extproc

    def service(self, name: str, argv: Sequence[str], port: int) -> int:
        log = self.work / f"{name.replace(' ', '-')}.log"
        process = self.processes.start(name, argv, self.env, log)
        wait_listening(port, process, name, log)
        return process.pid

    def envoy(self, name: str, yaml_text: str, port: int) -> int:
        path = self.work / f"{name.replace(' ', '-')}.envoy.yaml"
        path.write_text(yaml_text)
        log = self.work / f"{name.replace(' ', '-')}.envoy.log"
        argv = [envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"]
        process = self.processes.start(f"envoy ({name})", argv, None, log)
        wait_listening(port, process, f"envoy ({name})", log)
        return process.pid

    def demo_and_upstream(self, config: Path) -> tuple[int, int]:
        demo = self.service("demo", python_service("demo", config), self.ports["demo"])
        upstream = self.service(
            "upstream", python_service("upstream", config), self.ports["upstream"]
        )
        return demo, upstream

    def minimal(self, port: int, loop: str) -> int:
        argv = [sys.executable, "-m", "bench.minimal_extproc", "--port", str(port), "--loop", loop]
        return self.service(f"minimal servicer ({loop})", argv, port)


def rendered(config: Path, every_request: bool = False) -> str:
    return render_yaml(load_config(config), str(config), processor_on_every_request=every_request)


def start(stack: Stack) -> list[Case]:
    headers_cfg, headers_port, extproc_headers = stack.config()
    every_cfg, every_port, _ = stack.config()
    minimal_cfg, minimal_port, minimal_extproc = stack.config()
    body_cfg, body_port, extproc_body = stack.config(RULES)
    only_cfg, only_port, _ = stack.config()
    if not needs_body(load_config(body_cfg)):
        raise RuntimeError("the body-decides config does not make the processor read bodies")
    # The every-request Envoy shares the headers config's processor.
    every = yaml.safe_load(every_cfg.read_text())
    every["listen"]["extproc"] = f"127.0.0.1:{extproc_headers}"
    write_yaml(every_cfg, every)

    demo, upstream = stack.demo_and_upstream(headers_cfg)
    processor = stack.service(
        "processor (headers)", python_service("extproc", headers_cfg), extproc_headers
    )
    processor_body = stack.service(
        "processor (body)", python_service("extproc", body_cfg), extproc_body
    )
    minimal = stack.minimal(minimal_extproc, PROCESSOR_LOOP)

    envoy_skip = stack.envoy("shipped", rendered(headers_cfg), headers_port)
    envoy_every = stack.envoy("every request", rendered(every_cfg, True), every_port)
    envoy_minimal = stack.envoy("minimal", rendered(minimal_cfg, True), minimal_port)
    envoy_body = stack.envoy("body", rendered(body_cfg), body_port)
    envoy_only = stack.envoy("only", envoy_only_yaml(only_cfg), only_port)

    demo_only = {"demo": demo}
    plain = _expect(x_demo_model=MODEL, x_ensemble_decision="none")
    return [
        Case(
            "direct",
            "direct to the model",
            stack.ports["demo"],
            {},
            demo_only,
            _expect(x_demo_model=MODEL),
        ),
        Case(
            "envoy",
            "Envoy only (no ext_proc)",
            only_port,
            {},
            {"envoy": envoy_only, **demo_only},
            _expect(x_demo_model=MODEL),
        ),
        Case(
            "skip",
            "Envoy + processor, plain, config allowing the skip (processor not asked)",
            headers_port,
            {},
            {"processor": processor, "envoy": envoy_skip, **demo_only},
            plain,
        ),
        Case(
            "minimal",
            "Envoy + minimal grpc.aio servicer, every request (the floor)",
            minimal_port,
            {},
            {"processor": minimal, "envoy": envoy_minimal, **demo_only},
            _expect(x_demo_model=MODEL),
        ),
        Case(
            "headers",
            "Envoy + processor, every request, headers decide, plain",
            every_port,
            {},
            {"processor": processor, "envoy": envoy_every, **demo_only},
            plain,
        ),
        Case(
            "ensembled",
            "Envoy + processor + upstream, headers decide, ensembled (1 model, first_success)",
            headers_port,
            {"x-ensemble-models": MODEL, "x-ensemble-strategy": "first_success"},
            {"processor": processor, "envoy": envoy_skip, "upstream": upstream, **demo_only},
            _expect(x_ensemble_decision="header", x_ensemble_strategy="first_success"),
        ),
        Case(
            "body",
            "Envoy + processor, body decides (keyword rule), plain",
            body_port,
            {},
            {"processor": processor_body, "envoy": envoy_body, **demo_only},
            plain,
        ),
    ]


# The loop the processor runs on (cli.py): the minimal servicer runs on the same.
PROCESSOR_LOOP = "uvloop"
LOOPS = ("asyncio", "uvloop")


def start_loops(stack: Stack) -> list[Case]:
    """Our processor and the minimal servicer on each loop, each behind its own Envoy
    that asks for every request, and Envoy alone."""
    only_cfg, only_port, _ = stack.config()
    demo, _ = stack.demo_and_upstream(only_cfg)
    cases = [
        Case(
            "envoy",
            "Envoy only (no ext_proc)",
            only_port,
            {},
            {"envoy": stack.envoy("only", envoy_only_yaml(only_cfg), only_port), "demo": demo},
            _expect(x_demo_model=MODEL),
        ),
    ]
    for loop in LOOPS:
        for impl in ("processor", "minimal"):
            cfg, port, extproc = stack.config()
            if impl == "processor":
                argv = [sys.executable, "-m", "bench.loops", "--config", str(cfg), "--loop", loop]
                pid = stack.service(f"processor ({loop})", argv, extproc)
            else:
                pid = stack.minimal(extproc, loop)
            envoy = stack.envoy(f"{impl} {loop}", rendered(cfg, True), port)
            label = f"Envoy + {'processor' if impl == 'processor' else 'minimal servicer'}, {loop}"
            cases.append(
                Case(
                    f"{impl}-{loop}",
                    label,
                    port,
                    {},
                    {"processor": pid, "envoy": envoy, "demo": demo},
                    _expect(x_demo_model=MODEL),
                )
            )
    return cases


def envoy_only_yaml(config_path: Path) -> str:
    """The same bootstrap with the ext_proc filter (and its cluster) removed."""
    data = bootstrap(load_config(config_path))
    resources = data["static_resources"]
    for listener in resources["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                hcm["http_filters"] = [
                    f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"
                ]
    resources["clusters"] = [c for c in resources["clusters"] if c["name"] != EXTPROC_CLUSTER]
    header = f"# Envoy-only bootstrap for bench/overhead.py, from {config_path}\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def measure(wrk: Wrk, case: Case, body: bytes, connections: int, seconds: float) -> Sample:
    before = {role: group_cpu_seconds(pid) for role, pid in case.pids.items()}
    wrk_before, machine_before = children_cpu_seconds(), machine_ticks()
    started = time.monotonic()
    result = wrk.run(
        f"http://127.0.0.1:{case.port}{PATH}", body, case.headers, connections, seconds
    )
    wall = time.monotonic() - started
    after = {role: group_cpu_seconds(pid) for role, pid in case.pids.items()}
    busy, total = (a - b for a, b in zip(machine_ticks(), machine_before, strict=True))
    ours = sum(after[role] - before[role] for role in case.pids)
    ours += children_cpu_seconds() - wrk_before
    others = busy / max(total, 1) * (os.cpu_count() or 1) - ours / wall
    per_request = max(result.requests, 1)
    cpu = {role: (after[role] - before[role]) / per_request * 1e6 for role in case.pids}
    return Sample(result, cpu, others)


Key = tuple[str, int, int]  # case, body size, connections


def run(args: argparse.Namespace) -> str:
    require_wrk()
    bodies = {size: chat_body(size, MODEL) for size in args.bodies}
    count = 5 if args.loops else 7
    runs = len(bodies) * len(args.connections) * count * args.rounds
    total = runs * (args.duration + 1) + count * args.warmup
    print(f"about {total / 60:.0f} min: {runs} wrk runs of {args.duration} s", file=sys.stderr)
    processes = Processes()
    try:
        with workdir("bench-overhead-") as work:
            stack = Stack(processes, work)
            cases = start_loops(stack) if args.loops else start(stack)
            for case in cases:
                for size, body in bodies.items():
                    reply = post(f"http://127.0.0.1:{case.port}{PATH}", body, case.headers)
                    problem = case.check(reply)
                    if problem:
                        raise RuntimeError(f"{case.label}, {size} B body: {problem}")
            wrk = Wrk(work, processes)
            warm = bodies[min(bodies, key=lambda s: abs(s - 1024))]
            for case in cases:
                measure(wrk, case, warm, 16, args.warmup)
            samples: dict[Key, list[Sample]] = {}
            for round_index in range(args.rounds):
                shift = round_index % len(cases)
                order = cases[shift:] + cases[:shift]
                for size, body in bodies.items():
                    for connections in args.connections:
                        for case in order:
                            if args.quiet:
                                wait_quiet(args.quiet)
                            sample = measure(wrk, case, body, connections, args.duration)
                            samples.setdefault((case.key, size, connections), []).append(sample)
                            r = sample.result
                            print(
                                f"round {round_index + 1}/{args.rounds} {size} B "
                                f"c={connections} {case.key}: {r.rps:.0f} req/s "
                                f"p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms "
                                f"errors {r.errors}",
                                file=sys.stderr,
                            )
            if args.loops:
                pairs = [
                    (f"{impl}: uvloop / asyncio", f"{impl}-uvloop", f"{impl}-asyncio")
                    for impl in ("processor", "minimal")
                ]
                return report(args, cases, bodies, samples, pairs, "uvloop vs asyncio")
            pairs = [("processor / minimal servicer", "headers", "minimal")]
            return report(args, cases, bodies, samples, pairs, "against the floor")
    finally:
        processes.stop()


def report(
    args: argparse.Namespace,
    cases: Sequence[Case],
    bodies: Mapping[int, bytes],
    samples: Mapping[Key, Sequence[Sample]],
    pairs: Sequence[tuple[str, str, str]],
    title: str,
) -> str:
    out = [
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Load: wrk, closed loop (each connection sends its next request when the answer is "
        f"in), 1 thread, keep-alive, {args.duration:g} s per run; configurations interleaved "
        f"over {args.rounds} rounds (order rotated each round), median of the rounds. Demo "
        f"model with 0 ms latency, answer 'Paris.'. vs Envoy-only: median over rounds of the "
        f"paired ratio/difference to the Envoy-only run of the same round. Other programs "
        f"on the machine kept {others_cores(samples)} cores busy during the runs (median; "
        f"each run first waited up to {args.quiet:g} s for them to leave it idle).",
        "",
    ]
    header = [
        "conns",
        "configuration",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p50 x Envoy-only",
        "added p50 ms",
        "added p99 ms",
        "req/s x Envoy-only",
        "processor CPU us/req",
        "Envoy CPU us/req",
        "upstream CPU us/req",
        "errors",
    ]
    for size, body in bodies.items():
        rows = []
        for connections in args.connections:
            base = samples[("envoy", size, connections)]
            for case in cases:
                got = samples[(case.key, size, connections)]
                paired = list(zip(got, base, strict=True))
                res = [s.result for s in got]

                def cpu(role: str, got: Sequence[Sample] = got) -> str:
                    values = [s.cpu_us[role] for s in got if role in s.cpu_us]
                    return fmt(median(values), 0) if values else "-"

                rows.append(
                    [
                        str(connections),
                        case.label,
                        fmt(median([r.rps for r in res]), 0),
                        fmt(median([r.p50_ms for r in res])),
                        fmt(median([r.p99_ms for r in res])),
                        fmt(median([g.result.p50_ms / b.result.p50_ms for g, b in paired])),
                        fmt(median([g.result.p50_ms - b.result.p50_ms for g, b in paired])),
                        fmt(median([g.result.p99_ms - b.result.p99_ms for g, b in paired])),
                        fmt(median([g.result.rps / b.result.rps for g, b in paired])),
                        cpu("processor"),
                        cpu("envoy"),
                        cpu("upstream"),
                        str(sum(r.errors for r in res)),
                    ]
                )
        out.append(f"Body: {len(body)} bytes (chat request: {describe(size)}).")
        out.append("")
        out.append(table(header, "rlrrrrrrrrrrr", rows))
        out.append("")
        out.append(f"Paired, {title} (median over rounds of the ratio in each round):")
        out.append("")
        out.append(compare(args.connections, size, samples, pairs))
        out.append("")
    return "\n".join(out)


def compare(
    connections: Sequence[int],
    size: int,
    samples: Mapping[Key, Sequence[Sample]],
    pairs: Sequence[tuple[str, str, str]],
) -> str:
    """Ratios of case a to case b, paired round by round; added p50 is over Envoy-only."""
    header = [
        "conns",
        "pair",
        "p50",
        "added p50",
        "req/s",
        "processor CPU/req",
        "Envoy CPU/req",
    ]
    rows = []
    for conns in connections:
        base = samples[("envoy", size, conns)]
        for label, a_key, b_key in pairs:
            a, b = samples[(a_key, size, conns)], samples[(b_key, size, conns)]
            triples = list(zip(a, b, base, strict=True))

            def ratio(
                value: Callable[[Sample, Sample], float],
                triples: Sequence[tuple[Sample, Sample, Sample]] = triples,
            ) -> str:
                return fmt(median([value(x, e) / value(y, e) for x, y, e in triples]))

            rows.append(
                [
                    str(conns),
                    label,
                    ratio(lambda s, e: s.result.p50_ms),
                    ratio(lambda s, e: s.result.p50_ms - e.result.p50_ms),
                    ratio(lambda s, e: s.result.rps),
                    ratio(lambda s, e: s.cpu_us["processor"]),
                    ratio(lambda s, e: s.cpu_us["envoy"]),
                ]
            )
    return table(header, "rlrrrrr", rows)


def others_cores(samples: Mapping[Key, Sequence[Sample]]) -> str:
    values = sorted(s.others for runs in samples.values() for s in runs)
    return f"{fmt(median(values))} (90th percentile {fmt(values[int(0.9 * (len(values) - 1))])})"


def describe(size: int) -> str:
    if size <= 128:
        return "one short user message"
    return "system prompt, two earlier turns, a long last user message of plain prose"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("python -m bench.overhead", __doc__, warmup=2.0)
    parser.add_argument(
        "--connections",
        type=int_list,
        default=[1, 16, 64],
        help="comma-separated connection counts (default 1,16,64)",
    )
    parser.add_argument(
        "--bodies",
        type=int_list,
        default=[90, 1024, 32768],
        help="comma-separated body sizes in bytes (default 90,1024,32768)",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=60,
        help="before each run, wait up to this many seconds for other programs to leave "
        "the machine idle (0: do not wait)",
    )
    parser.add_argument(
        "--loops",
        action="store_true",
        help="compare asyncio's loop and uvloop under grpc.aio instead",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
