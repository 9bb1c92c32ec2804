"""Peer comparison: the same first-answer fan-out through LiteLLM's proxy.

LiteLLM's proxy fans one request out when ``"model"`` lists several comma-separated
models and ``"fastest_response": true`` is set, and returns the first answer (cancelling
the others), which is what our first_success does. This bench installs LiteLLM into its
own virtualenv (bench/.peer-venv, never a project dependency; pinned to a release outside
the known compromised ones, 1.82.7, 1.82.8 and 1.107.0), starts its proxy on a free
loopback port with telemetry off, no database and a throwaway master key, points it at the
same demo models as bench/fanout.py, and loads, interleaved round by round:

- a direct call to the 10 ms model (the baseline);
- our upstream, first_success over 10/50/100 ms (the processor's headers, no Envoy);
- LiteLLM, one model (10 ms): its proxy cost without fan-out;
- LiteLLM, fastest_response over the 10/50/100 ms models.

If LiteLLM cannot be installed or started, its rows say why and the rest still runs.
Not a timed test: it prints a table.

    python -m bench.peer [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fanout import Rig
from bench.speedkit import (
    MACHINE,
    REPO,
    Processes,
    Wrk,
    WrkResult,
    bench_main,
    bench_parser,
    chat_body,
    fmt,
    free_port,
    group_cpu_seconds,
    int_list,
    median,
    post,
    require_wrk,
    table,
    wait_listening,
    workdir,
    write_yaml,
)

LITELLM = "litellm[proxy]==1.82.6"
LITELLM_VERSION = "1.82.6"
VENV = REPO / "bench" / ".peer-venv"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 120.0
FAN = ("m10", "m50", "m100")
# .pth files run code at every interpreter start; a clean install has only this one.
EXPECTED_PTH = frozenset({"distutils-precedence.pth"})


def venv_python() -> Path:
    return VENV / "bin" / "python"


def installed_version() -> str | None:
    if not venv_python().exists():
        return None
    probe = subprocess.run(
        [str(venv_python()), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_litellm() -> str | None:
    """Install the pinned LiteLLM into bench/.peer-venv if needed; None, or why not."""
    if installed_version() != LITELLM_VERSION:
        print(f"installing {LITELLM} into {VENV} (once)", file=sys.stderr)
        try:
            if not venv_python().exists():
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            # The virtualenv ignores itself in git, whatever the repository's .gitignore says.
            (VENV / ".gitignore").write_text("*\n")
            subprocess.run(
                [str(venv_python()), "-m", "pip", "install", "--quiet", LITELLM],
                check=True,
                timeout=INSTALL_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"n/a: cannot install {LITELLM}: {exc}"
        if installed_version() != LITELLM_VERSION:
            return f"n/a: {LITELLM} did not install"
    unexpected = [
        p.name for p in VENV.glob("lib/python*/site-packages/*.pth") if p.name not in EXPECTED_PTH
    ]
    if unexpected:
        return f"n/a: refusing to run, unexpected start-up hooks in the venv: {unexpected}"
    return None


def litellm_config(rig: Rig, master_key: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": f"http://127.0.0.1:{port}/v1",
                    "api_key": "not-used-by-demo-models",
                },
            }
            for name, port in rig.demo_ports.items()
            if name in FAN
        ],
        "general_settings": {"master_key": master_key},
        # As LiteLLM's own overhead benchmarks: no callbacks, no retries.
        "litellm_settings": {
            "telemetry": False,
            "set_verbose": False,
            "callbacks": [],
            "num_retries": 0,
            "request_timeout": 30,
        },
    }


def litellm_env(home: Path) -> dict[str, str]:
    """A minimal environment: no credentials of the caller, nothing fetched from the net."""
    return {
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
    }


def start_litellm(
    processes: Processes, work: Path, rig: Rig, master_key: str
) -> tuple[int, int] | str:
    """(port, process group id), or why it could not start."""
    port = free_port()
    config = write_yaml(work / "litellm.yaml", litellm_config(rig, master_key))
    home = work / "litellm-home"
    home.mkdir()
    log = work / "litellm.log"
    argv = [
        str(VENV / "bin" / "litellm"),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    process = processes.start("litellm proxy", argv, litellm_env(home), log)
    try:
        wait_listening(port, process, "litellm proxy", log, timeout=START_TIMEOUT)
    except RuntimeError as exc:
        return "n/a: LiteLLM proxy did not start: " + " ".join(str(exc).split())[:300]
    return port, process.pid


@dataclass(frozen=True)
class Route:
    key: str
    label: str
    members: int
    url: str
    body: bytes
    headers: Mapping[str, str]
    pid: int | None  # whose CPU is charged (the proxy), if any


@dataclass(frozen=True)
class Sample:
    result: WrkResult
    cpu_us: float  # proxy CPU per request per member


def run(args: argparse.Namespace) -> str:
    require_wrk()
    processes = Processes()
    try:
        with workdir("bench-peer-") as work:
            rig = Rig()
            rig.start(processes, work)
            body = chat_body(1024, "any")
            fan_body = json.dumps(
                {**json.loads(body), "model": ", ".join(FAN), "fastest_response": True}
            ).encode()
            one_body = json.dumps({**json.loads(body), "model": "m10"}).encode()
            paths = [
                Route(
                    "direct", "direct call, 10 ms model", 1, rig.model_url("m10"), body, {}, None
                ),
                Route(
                    "ours",
                    "ensemble-extproc upstream, first_success 10/50/100 ms",
                    3,
                    rig.upstream_url,
                    body,
                    {},
                    rig.upstream_pid,
                ),
            ]
            why_not = ensure_litellm()
            if why_not is None:
                master_key = "sk-bench-" + secrets.token_hex(16)
                started = start_litellm(processes, work, rig, master_key)
                if isinstance(started, str):
                    why_not = started
                else:
                    port, pid = started
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    auth = {"authorization": f"Bearer {master_key}"}
                    paths += [
                        Route(
                            "lite1", "LiteLLM proxy, one model (10 ms)", 1, url, one_body, auth, pid
                        ),
                        Route(
                            "litefan",
                            "LiteLLM proxy, fastest_response 10/50/100 ms",
                            3,
                            url,
                            fan_body,
                            auth,
                            pid,
                        ),
                    ]
                    why_not = check_litellm(url, fan_body, auth)
                    if why_not is not None:
                        paths = paths[:2]
            wrk = Wrk(work, processes)
            samples = load(args, rig, wrk, paths)
            return report(args, paths, samples, why_not)
    finally:
        processes.stop()


def check_litellm(url: str, body: bytes, headers: Mapping[str, str]) -> str | None:
    reply = post(url, body, headers, timeout=30)
    if reply.status != 200:
        return f"n/a: LiteLLM answered {reply.status}: {reply.body[:200]!r}"
    content = reply.json()["choices"][0]["message"]["content"]
    if content != "Paris.":
        return f"n/a: unexpected LiteLLM answer {content!r}"
    return None


def load(
    args: argparse.Namespace, rig: Rig, wrk: Wrk, paths: Sequence[Route]
) -> dict[tuple[str, int], list[Sample]]:
    def headers(path: Route) -> Mapping[str, str]:
        return rig.ensemble_headers(FAN, "first_success") if path.key == "ours" else path.headers

    def once(path: Route, connections: int, seconds: float) -> Sample:
        before = group_cpu_seconds(path.pid) if path.pid else 0.0
        result = wrk.run(path.url, path.body, headers(path), connections, seconds)
        after = group_cpu_seconds(path.pid) if path.pid else 0.0
        cpu = (after - before) / max(result.requests, 1) / path.members * 1e6
        return Sample(result, cpu)

    for path in paths:
        once(path, 4, args.warmup)
    samples: dict[tuple[str, int], list[Sample]] = {}
    for round_index in range(args.rounds):
        shift = round_index % len(paths)
        order = [*paths[shift:], *paths[:shift]]
        for connections in args.concurrency:
            for path in order:
                sample = once(path, connections, args.duration)
                samples.setdefault((path.key, connections), []).append(sample)
                r = sample.result
                print(
                    f"round {round_index + 1}/{args.rounds} c={connections} {path.key}: "
                    f"{r.rps:.0f} req/s p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms "
                    f"errors {r.errors}",
                    file=sys.stderr,
                )
    return samples


def report(
    args: argparse.Namespace,
    paths: Sequence[Route],
    samples: Mapping[tuple[str, int], Sequence[Sample]],
    why_not: str | None,
) -> str:
    header = [
        "conc",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p50 x direct",
        "added p50 ms",
        "added p99 ms",
        "proxy CPU us/req/member",
        "errors",
    ]
    rows = []
    for connections in args.concurrency:
        base = samples[("direct", connections)]
        for path in paths:
            got = samples[(path.key, connections)]
            pairs = list(zip(got, base, strict=True))
            rows.append(
                [
                    str(connections),
                    path.label,
                    fmt(median([s.result.rps for s in got]), 0),
                    fmt(median([s.result.p50_ms for s in got])),
                    fmt(median([s.result.p99_ms for s in got])),
                    fmt(median([g.result.p50_ms / b.result.p50_ms for g, b in pairs])),
                    fmt(median([g.result.p50_ms - b.result.p50_ms for g, b in pairs])),
                    fmt(median([g.result.p99_ms - b.result.p99_ms for g, b in pairs])),
                    fmt(median([s.cpu_us for s in got]), 0) if path.pid else "-",
                    str(sum(s.result.errors for s in got)),
                ]
            )
        if why_not is not None:
            rows.append([str(connections), "LiteLLM proxy", why_not] + ["-"] * 7)
    lines = [
        f"Machine: {MACHINE}. Date: {time.strftime('%Y-%m-%d')}. Peer: {LITELLM} in "
        f"bench/.peer-venv, 1 worker, telemetry off, no database.",
        f"Load: wrk closed loop, 1 thread, keep-alive, {args.duration:g} s per run, paths "
        f"interleaved over {args.rounds} rounds (order rotated each round), median of the "
        f"rounds; chat body 1 KB; demo models of 10/50/100 ms (one process, shared with "
        f"bench/fanout.py's set). 'x direct' and 'added': median over rounds of the paired "
        f"ratio/difference to the direct call in the same round.",
        "",
        table(header, "rlrrrrrrrr", rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("python -m bench.peer", __doc__, warmup=2.0)
    parser.add_argument(
        "--concurrency",
        type=int_list,
        default=[1, 16],
        help="comma-separated concurrency levels (default 1,16)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    if os.name != "posix":
        print("needs Linux (/proc)", file=sys.stderr)
        return 2
    return bench_main(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
