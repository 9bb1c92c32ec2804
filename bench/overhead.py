"""What the gateway adds per request: direct to a model, Envoy alone, Envoy + processor.

Starts its own demo model (0 ms latency), ensemble upstream, two processors and three
Envoys on free loopback ports, then loads each configuration with wrk at several
connection counts and body sizes, interleaved round by round (the configuration order is
rotated every round), and prints the median of the rounds:

- direct: wrk -> demo model (no Envoy);
- Envoy only: a bootstrap rendered from the same config with the ext_proc filter removed;
- headers decide, plain: Envoy + processor, no x-ensemble-* header, no rule needing the body;
- headers decide, ensembled: x-ensemble-models: <the demo model>, first_success, through the
  ensemble upstream (shows the upstream's cost);
- body decides, plain: a config with a profile and a keyword rule, so Envoy sends the body
  to the processor; the body matches no rule.

Added latency is the median over rounds of the paired difference to the Envoy-only run of
the same round. CPU per request is the utime+stime delta of each process (from /proc)
divided by the requests wrk completed. Not a timed test: it prints tables.

    python -m bench.overhead [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    fmt,
    free_port,
    group_cpu_seconds,
    int_list,
    listen_block,
    median,
    post,
    python_service,
    require_wrk,
    secret_env,
    table,
    wait_listening,
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


@dataclass
class Ports:
    demo: int = field(default_factory=free_port)
    upstream: int = field(default_factory=free_port)
    extproc_headers: int = field(default_factory=free_port)
    extproc_body: int = field(default_factory=free_port)
    envoy_headers: int = field(default_factory=free_port)
    envoy_body: int = field(default_factory=free_port)
    envoy_only: int = field(default_factory=free_port)
    admin: tuple[int, int, int] = field(
        default_factory=lambda: (free_port(), free_port(), free_port())
    )


def base_config(ports: Ports, envoy: int, admin: int, extproc: int) -> dict[str, Any]:
    return {
        "listen": listen_block(envoy, admin, extproc, ports.upstream),
        "default_model": MODEL,
        "demo": {
            "models": [{"name": MODEL, "port": ports.demo, "latency_ms": 0, "answers": ["Paris."]}]
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


def start(processes: Processes, work: Path, ports: Ports) -> list[Case]:
    secret = secrets.token_hex(32)
    env = secret_env(secret)
    headers_cfg = write_yaml(
        work / "headers.yaml",
        base_config(ports, ports.envoy_headers, ports.admin[0], ports.extproc_headers),
    )
    body_cfg = write_yaml(
        work / "body.yaml",
        {
            **base_config(ports, ports.envoy_body, ports.admin[1], ports.extproc_body),
            **RULES,
        },
    )
    only_cfg = write_yaml(
        work / "envoy-only.yaml",
        base_config(ports, ports.envoy_only, ports.admin[2], ports.extproc_headers),
    )
    if not needs_body(load_config(body_cfg)):
        raise RuntimeError("the body-decides config does not make the processor read bodies")

    def service(name: str, command: str, config: Path, port: int) -> int:
        log = work / f"{name}.log"
        process = processes.start(name, python_service(command, config), env, log)
        wait_listening(port, process, name, log)
        return process.pid

    demo = service("demo", "demo", headers_cfg, ports.demo)
    upstream = service("upstream", "upstream", headers_cfg, ports.upstream)
    proc_headers = service("processor (headers)", "extproc", headers_cfg, ports.extproc_headers)
    proc_body = service("processor (body)", "extproc", body_cfg, ports.extproc_body)

    envoy = envoy_binary()

    def start_envoy(name: str, yaml_text: str, port: int) -> int:
        path = work / f"{name}.envoy.yaml"
        path.write_text(yaml_text)
        log = work / f"{name}.envoy.log"
        argv = [envoy, "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"]
        process = processes.start(f"envoy ({name})", argv, None, log)
        wait_listening(port, process, f"envoy ({name})", log)
        return process.pid

    envoy_headers = start_envoy(
        "headers", render_yaml(load_config(headers_cfg), str(headers_cfg)), ports.envoy_headers
    )
    envoy_body = start_envoy(
        "body", render_yaml(load_config(body_cfg), str(body_cfg)), ports.envoy_body
    )
    envoy_only = start_envoy("only", envoy_only_yaml(only_cfg), ports.envoy_only)

    demo_only = {"demo": demo}
    return [
        Case(
            "direct", "direct to the model", ports.demo, {}, demo_only, _expect(x_demo_model=MODEL)
        ),
        Case(
            "envoy",
            "Envoy only (no ext_proc)",
            ports.envoy_only,
            {},
            {"envoy": envoy_only, **demo_only},
            _expect(x_demo_model=MODEL),
        ),
        Case(
            "headers",
            "Envoy + processor, headers decide, plain",
            ports.envoy_headers,
            {},
            {"processor": proc_headers, "envoy": envoy_headers, **demo_only},
            _expect(x_demo_model=MODEL, x_ensemble_decision="none"),
        ),
        Case(
            "ensembled",
            "Envoy + processor + upstream, headers decide, ensembled (1 model, first_success)",
            ports.envoy_headers,
            {"x-ensemble-models": MODEL, "x-ensemble-strategy": "first_success"},
            {
                "processor": proc_headers,
                "envoy": envoy_headers,
                "upstream": upstream,
                **demo_only,
            },
            _expect(x_ensemble_decision="header", x_ensemble_strategy="first_success"),
        ),
        Case(
            "body",
            "Envoy + processor, body decides (keyword rule), plain",
            ports.envoy_body,
            {},
            {"processor": proc_body, "envoy": envoy_body, **demo_only},
            _expect(x_demo_model=MODEL, x_ensemble_decision="none"),
        ),
    ]


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
    result = wrk.run(
        f"http://127.0.0.1:{case.port}{PATH}", body, case.headers, connections, seconds
    )
    after = {role: group_cpu_seconds(pid) for role, pid in case.pids.items()}
    per_request = max(result.requests, 1)
    cpu = {role: (after[role] - before[role]) / per_request * 1e6 for role in case.pids}
    return Sample(result, cpu)


Key = tuple[str, int, int]  # case, body size, connections


def run(args: argparse.Namespace) -> str:
    require_wrk()
    bodies = {size: chat_body(size, MODEL) for size in args.bodies}
    runs = len(bodies) * len(args.connections) * 5 * args.rounds
    total = runs * (args.duration + 1) + 5 * args.warmup
    print(f"about {total / 60:.0f} min: {runs} wrk runs of {args.duration} s", file=sys.stderr)
    processes = Processes()
    try:
        with workdir("bench-overhead-") as work:
            cases = start(processes, work, Ports())
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
            return report(args, cases, bodies, samples)
    finally:
        processes.stop()


def report(
    args: argparse.Namespace,
    cases: Sequence[Case],
    bodies: Mapping[int, bytes],
    samples: Mapping[Key, Sequence[Sample]],
) -> str:
    out = [
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Load: wrk, closed loop (each connection sends its next request when the answer is "
        f"in), 1 thread, keep-alive, {args.duration:g} s per run; configurations interleaved "
        f"over {args.rounds} rounds (order rotated each round), median of the rounds. Demo "
        f"model with 0 ms latency, answer 'Paris.'. vs Envoy-only: median over rounds of the "
        f"paired ratio/difference to the Envoy-only run of the same round.",
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
                pairs = list(zip(got, base, strict=True))
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
                        fmt(median([g.result.p50_ms / b.result.p50_ms for g, b in pairs])),
                        fmt(median([g.result.p50_ms - b.result.p50_ms for g, b in pairs])),
                        fmt(median([g.result.p99_ms - b.result.p99_ms for g, b in pairs])),
                        fmt(median([g.result.rps / b.result.rps for g, b in pairs])),
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
    return "\n".join(out)


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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
