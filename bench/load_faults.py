"""Load with faults: minutes of mixed traffic through the whole gateway while model
endpoints misbehave; prints what was sent, what succeeded, what failed and why, latency
percentiles, and that no request went unanswered.

    python -m bench.load_faults [--seconds 120] [--concurrency 16]

Load pattern: closed loop, ``--concurrency`` clients back to back. The mix: plain requests
(default model), voting and first_success ensembles over healthy and faulty demo models,
streaming first_success, and bad requests. Every response is checked: an OpenAI-style
body (or a complete SSE stream ending in [DONE] or an error event).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.speedkit import free_ports
from ensemble_extproc.config import load_config
from ensemble_extproc.stack import Stack
from ensemble_extproc.stack import ports_in_use as _ports_in_use

FAULTY: dict[str, dict[str, Any]] = {
    "f-500": {"fault": "status_500"},
    "f-429": {"fault": "rate_limit", "fault_retry_after_s": 0.05},
    "f-bad-json": {"fault": "malformed_json"},
    "f-reset": {"fault": "reset"},
    "f-slow": {"latency_ms": 4000},
    "f-flaky": {"failure_rate": 0.3, "seed": 3},
    "f-stop": {"fault": "stream_stop", "token_delay_ms": 2},
}
HEALTHY = {"h-a": 20, "h-b": 30, "h-c": 40}


def raw_config() -> dict[str, Any]:
    ports = iter(free_ports(1 + len(HEALTHY) + len(FAULTY) + 5))

    def free_port() -> int:
        return next(ports)

    models = [{"name": "default", "port": free_port(), "latency_ms": 10}]
    models += [
        {"name": n, "port": free_port(), "latency_ms": ms, "answers": ["42"]}
        for n, ms in HEALTHY.items()
    ]
    models += [{"name": n, "port": free_port(), "answers": ["42"], **f} for n, f in FAULTY.items()]
    return {
        "listen": {
            k: f"127.0.0.1:{free_port()}"
            for k in ("envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics")
        },
        "default_model": "default",
        "demo": {"models": models},
        "ensemble": {
            "timeout_seconds": 2,
            "max_models_per_request": 5,
            "retries": {"attempts": 2, "backoff_ms": 20},
            "circuit_breaker": {"failures": 20, "window_seconds": 10, "cooldown_seconds": 2},
        },
        "logging": {"format": "json"},
    }


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    latencies: list[float] = field(default_factory=list)


def request_mix(rng: random.Random) -> tuple[str, dict[str, str], dict[str, Any]]:
    question = {"model": "any", "messages": [{"role": "user", "content": "6 x 7?"}]}
    roll = rng.random()
    faulty = rng.choice(list(FAULTY))
    if roll < 0.2:
        return "plain", {}, question
    if roll < 0.5:
        models = ",".join([*rng.sample(list(HEALTHY), 2), faulty])
        return "voting", {"x-ensemble-models": models}, question
    if roll < 0.75:
        models = ",".join([faulty, *HEALTHY])
        return (
            "first_success",
            {"x-ensemble-models": models, "x-ensemble-strategy": "first_success"},
            question,
        )
    if roll < 0.92:
        models = ",".join([faulty, "h-a"])
        return (
            "stream",
            {"x-ensemble-models": models, "x-ensemble-strategy": "first_success"},
            {**question, "stream": True},
        )
    return "bad", {"x-ensemble-models": "no-such-model"}, question


def judge(kind: str, status: int, content_type: str, raw: bytes) -> str | None:
    """None when the answer is well-formed for its status, else what is wrong."""
    if content_type.startswith("text/event-stream"):
        text = raw.decode(errors="replace")
        if text.rstrip().endswith("data: [DONE]") or '"error"' in text:
            return None
        return "truncated stream"
    try:
        body = json.loads(raw)
    except ValueError:
        return "not JSON"
    if status == 200:
        return None if body.get("choices") else "200 without choices"
    return None if isinstance(body.get("error"), dict) else "error without an error object"


async def client(
    session: aiohttp.ClientSession, url: str, stop: float, rng: random.Random, tally: Tally
) -> None:
    while time.monotonic() < stop:
        kind, headers, body = request_mix(rng)
        tally.sent += 1
        started = time.monotonic()
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                raw = await resp.read()
                problem = judge(kind, resp.status, resp.headers.get("content-type", ""), raw)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.unanswered += 1
            tally.failed[f"{kind}: no answer ({type(exc).__name__})"] += 1
            continue
        tally.latencies.append((time.monotonic() - started) * 1000)
        if problem is not None:
            tally.failed[f"{kind}: malformed ({problem})"] += 1
        elif status == 200:
            tally.ok += 1
        else:
            tally.failed[f"{kind}: HTTP {status}"] += 1


async def run(seconds: float, concurrency: int) -> Tally:
    raw = raw_config()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config(path)
        if _ports_in_use(config):
            raise SystemExit("ports in use; try again")
        log = (Path(tmp) / "gateway.log").open("wb")
        stack = Stack(config, path, Path(tmp), output=log)
        await stack.start()
        try:
            tally = Tally()
            url = f"http://{config.listen.envoy}/v1/chat/completions"
            timeout = aiohttp.ClientTimeout(total=15)
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                stop = time.monotonic() + seconds
                await asyncio.gather(
                    *(
                        client(session, url, stop, random.Random(i), tally)
                        for i in range(concurrency)
                    )
                )
            return tally
        finally:
            await stack.supervisor.stop()
            log.close()


def report(tally: Tally, seconds: float, concurrency: int) -> str:
    latencies = sorted(tally.latencies)
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    lines = [
        f"Load with faults: {seconds:g} s, {concurrency} closed-loop clients, through Envoy.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests sent | {tally.sent} |",
        f"| succeeded (200) | {tally.ok} |",
        f"| failed, answered | {sum(tally.failed.values()) - tally.unanswered} |",
        f"| unanswered | {tally.unanswered} |",
        f"| p50 latency | {p50:.1f} ms |",
        f"| p99 latency | {p99:.1f} ms |",
        "",
        "| failure | count |",
        "|---|---:|",
    ]
    lines += [f"| {reason} | {count} |" for reason, count in tally.failed.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    tally = asyncio.run(run(args.seconds, args.concurrency))
    print(report(tally, args.seconds, args.concurrency))
    raise SystemExit(1 if tally.unanswered else 0)


if __name__ == "__main__":
    main()
