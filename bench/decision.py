"""Micro-benchmark: the processor's decision cost per request, with and without the body.

Times what the processor does per HTTP request apart from gRPC transport: parse Envoy's
messages, decide, build and serialise the answers. Load pattern: one thread, back-to-back
calls, median of several runs. Not a timed test: it prints a table.

    python -m bench.decision
    python -m bench.decision --against ../other-checkout   # before/after, as ratios

``--against`` times the same cases on another checkout's ``src`` (e.g. a worktree of
main) in two worker processes, alternating them round by round (80 rounds of ~0.05 s per
case, median per case), so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as core
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc.config import Config, compile_config
from ensemble_extproc.extproc.policy import DecisionPolicy
from ensemble_extproc.extproc.server import StreamHandler

MODELS = [{"name": n, "url": f"http://127.0.0.1:9/{n}"} for n in ("a", "b", "c")]
POLICY: dict[str, Any] = {
    "profiles": {"critical": {"models": ["a", "b", "c"]}},
    "rules": [
        {
            "name": "medical",
            "profile": "critical",
            "match": {"last_user_message": {"keywords": ["diagnosis", "dosage", "symptom"]}},
        },
        {"name": "big", "profile": "critical", "match": {"body.max_tokens": {"gt": 4000}}},
    ],
    "adaptive": {
        "enabled": True,
        "profile": "critical",
        "threshold": 0.3,
        "signals": [{"type": "header"}, {"type": "difficulty"}],
    },
}
HEADERS = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    ":authority": "gateway",
    ":scheme": "http",
    "content-type": "application/json",
    "user-agent": "OpenAI/Python 1.0",
    "authorization": "Bearer sk-test",
    "x-request-id": "7f1c2a9e-4b1d-4c5e-9d3a-1b2c3d4e5f60",
}


def chat_body(size: int) -> bytes:
    filler = "Please summarise the following notes about the quarterly plan. " * (size // 64)
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": filler[: max(size - 200, 10)]},
        ],
    }
    return json.dumps(body).encode()


def headers_bytes(extra: dict[str, str], end_of_stream: bool = False) -> bytes:
    header_map = core.HeaderMap(
        headers=[
            core.HeaderValue(key=k, raw_value=v.encode()) for k, v in {**HEADERS, **extra}.items()
        ]
    )
    message = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)
    )
    return message.SerializeToString()


def body_bytes(payload: bytes) -> bytes:
    return pb.ProcessingRequest(
        request_body=pb.HttpBody(body=payload, end_of_stream=True)
    ).SerializeToString()


def one_request(policy: DecisionPolicy, messages: Sequence[bytes]) -> None:
    handler = StreamHandler(policy)
    for raw in messages:
        response = handler.handle(pb.ProcessingRequest.FromString(raw))
        assert response is not None
        response.SerializeToString()


def measure(run: Callable[[], None], runs: int = 7, min_seconds: float = 0.2) -> float:
    """Median microseconds per call over ``runs`` runs of at least ``min_seconds``."""
    per_call = []
    for _ in range(runs):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < min_seconds:
            for _ in range(50):
                run()
            calls += 50
        per_call.append(elapsed / calls * 1e6)
    return statistics.median(per_call)


def cases() -> list[tuple[str, Config, list[bytes]]]:
    plain = compile_config({"models": MODELS})
    policy = compile_config({"models": MODELS, **POLICY})
    return [
        ("headers only, no ensemble (no rules)", plain, [headers_bytes({})]),
        (
            "headers decide: x-ensemble-models",
            plain,
            [headers_bytes({"x-ensemble-models": "a,b,c"})],
        ),
        (
            "headers decide, with rules configured",
            policy,
            [headers_bytes({"x-ensemble-models": "a,b,c"})],
        ),
        (
            "body 1 KB: rules + difficulty, no ensemble",
            policy,
            [headers_bytes({}), body_bytes(chat_body(1024))],
        ),
        (
            "body 1 KB: keyword rule matches",
            policy,
            [headers_bytes({}), body_bytes(chat_body(1024).replace(b"quarterly", b"dosage"))],
        ),
        (
            "body 32 KB: rules + difficulty, no ensemble",
            policy,
            [headers_bytes({}), body_bytes(chat_body(32 * 1024))],
        ),
    ]


ROUND_SECONDS = 0.05


def worker() -> None:
    """Time the case whose index is read from stdin for one round; print us/request."""
    runs = [(DecisionPolicy(config), messages) for _, config, messages in cases()]
    for line in sys.stdin:
        policy, messages = runs[int(line)]
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < ROUND_SECONDS:
            for _ in range(20):
                one_request(policy, messages)
            calls += 20
        print(elapsed / calls * 1e6, flush=True)


def against(baseline: Path, rounds: int) -> None:
    """This checkout against ``baseline``'s src: alternating rounds, median per case."""
    here = Path(__file__).resolve().parent.parent
    workers = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": f"{src / 'src'}:{here}"},
        )
        for src in (baseline.resolve(), here)
    ]
    labels = [label for label, _, _ in cases()]
    timings: list[list[list[float]]] = [[[] for _ in labels] for _ in workers]
    try:
        for number in range(rounds):
            order = [0, 1] if number % 2 == 0 else [1, 0]
            for case in range(len(labels)):
                for side in order:
                    timings[side][case].append(_round(workers[side], case))
    finally:
        for process in workers:
            process.kill()
            process.wait()
    print(f"Decision cost per request: this checkout (after) against {baseline} (before).")
    print(
        f"Load: two worker processes alternating {rounds} rounds of ~{ROUND_SECONDS} s per "
        "case, median per case; no gRPC transport.\n"
    )
    print("| case | before us | after us | after/before |")
    print("|---|---:|---:|---:|")
    for case, label in enumerate(labels):
        before, after = (statistics.median(timings[side][case]) for side in (0, 1))
        print(f"| {label} | {before:.1f} | {after:.1f} | {after / before:.2f} |")


def _round(process: subprocess.Popen[str], case: int) -> float:
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(f"{case}\n")
    process.stdin.flush()
    return float(process.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="a checkout to compare with (its src/)")
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
    elif args.against:
        against(args.against, args.rounds)
    else:
        table()


def table() -> None:
    rows = []
    baseline = None
    for label, config, messages in cases():
        policy = DecisionPolicy(config)
        micros = measure(lambda p=policy, m=messages: one_request(p, m))  # type: ignore[misc]
        baseline = baseline or micros
        rows.append(f"| {label} | {len(messages)} | {micros:.1f} | {micros / baseline:.2f} |")
    print("Decision cost per request (parse Envoy's messages, decide, build answers).")
    print("Load: one thread, back-to-back, median of 7 runs of >= 0.2 s; no gRPC transport.\n")
    print("| case | messages | us/request | ratio to first row |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
