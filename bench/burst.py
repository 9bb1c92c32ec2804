"""Plain requests during an ensemble burst: their latency against the same plain requests
without the burst, in one run, through the whole gateway (prints tables).

    python -m bench.burst [--seconds 15] [--rate 50] [--ensembles 300] [--rounds 2]

Load pattern:

- plain: an open loop of ``--rate`` requests per second, evenly paced, each on its own task
  (a slow answer never delays the next send), to the default model through Envoy. The
  same in every phase. Latency is counted from the scheduled send time, so a send that
  the client itself delayed counts against the gateway, not in its favour.
- burst: ``--ensembles`` voting ensembles over three demo models kept in flight at once
  (closed loop: each answered one is replaced at once; after a 429 a client waits its
  Retry-After, as the OpenAI SDK does), from a separate process so that its event loop
  does not delay the plain client's.

Phases alternate, ``--rounds`` times: baseline (plain alone), then burst (plain while the
ensembles run). Everything (Envoy, processor, upstream, demo models, both load clients)
shares this machine's cores: the figures are for that, and compared only within the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.speedkit import MACHINE, free_ports
from ensemble_extproc.config import load_config
from ensemble_extproc.stack import Stack, ports_in_use

QUESTION = {"model": "any", "messages": [{"role": "user", "content": "6 x 7?"}]}
# The ensemble members' latencies (ms): a voting ensemble of three waits for two.
MEMBERS = {"e-fast": 20, "e-medium": 40, "e-slow": 60}
TIMEOUT = aiohttp.ClientTimeout(total=30)


def raw_config() -> dict[str, Any]:
    ports = iter(free_ports(len(MEMBERS) + 6))
    models = [{"name": "default", "port": next(ports), "latency_ms": 5, "answers": ["42"]}]
    models += [
        {"name": name, "port": next(ports), "latency_ms": ms, "answers": ["42"]}
        for name, ms in MEMBERS.items()
    ]
    names = ("envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics")
    return {
        "listen": {name: f"127.0.0.1:{next(ports)}" for name in names},
        "default_model": "default",
        "demo": {"models": models},
        # As config/default.yaml ships (max_in_flight at its default, 256).
        "ensemble": {
            "default_strategy": "voting",
            "default_models": list(MEMBERS),
            "timeout_seconds": 10,
            "model_timeout_seconds": 8,
            "max_concurrent_requests": 256,
        },
        "logging": {"format": "json"},
    }


@dataclass
class Sample:
    """How a set of requests went: statuses and latencies (ms)."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, status: str, ms: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(ms)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --------------------------------------------------------------------------- the burst


async def _ensemble_client(
    session: aiohttp.ClientSession, url: str, stop: Event, out: list[tuple[str, float]]
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        retry_after = 0.0
        try:
            async with session.post(url, json=QUESTION, headers={"x-ensemble-enable": "true"}) as r:
                body = await r.read()
                status = str(r.status)
                if r.status == 429:
                    retry_after = float(r.headers.get("retry-after", "1"))
                elif r.status != 200:
                    status += f" {_reason(body)}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = f"no answer ({type(exc).__name__})"
        out.append((status, (time.monotonic() - started) * 1000))
        if retry_after:
            await asyncio.sleep(retry_after)


async def _burst(url: str, count: int, go: Event, stop: Event) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
        await asyncio.to_thread(go.wait)  # a process-shared Event: waited on in a thread
        await asyncio.gather(*(_ensemble_client(session, url, stop, out) for _ in range(count)))
    return out


def _reason(body: bytes) -> str:
    """The error's code, and Envoy's details when it answered itself."""
    try:
        error = json.loads(body)["error"]
        return f"{error.get('code')}: {str(error.get('message'))[:160]}"
    except (ValueError, KeyError, TypeError):
        return body[:60].decode(errors="replace")


def burst_process(url: str, count: int, go: Event, stop: Event, results: Any) -> None:
    """The ensemble load, in its own process: waits for ``go``, runs until ``stop``."""
    results.put(asyncio.run(_burst(url, count, go, stop)))


# --------------------------------------------------------------------------- plain load


async def plain_load(url: str, rate: float, seconds: float) -> Sample:
    sample = Sample()
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:

        async def one(scheduled: float) -> None:
            try:
                async with session.post(url, json=QUESTION) as response:
                    await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = f"no answer ({type(exc).__name__})"
            sample.add(status, (time.monotonic() - scheduled) * 1000)

        tasks = []
        start = time.monotonic()
        for index in range(int(rate * seconds)):
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return sample


# --------------------------------------------------------------------------- phases


@dataclass
class Phase:
    name: str
    plain: Sample
    ensembles: Sample | None = None


async def run_phase(url: str, args: argparse.Namespace, round_: int, burst: bool) -> Phase:
    if not burst:
        return Phase(f"baseline {round_}", await plain_load(url, args.rate, args.seconds))
    spawn = multiprocessing.get_context("spawn")
    go, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    process = spawn.Process(
        target=burst_process, args=(url, args.ensembles, go, stop, results), daemon=True
    )
    process.start()
    try:
        await asyncio.sleep(2.0)  # the child imports aiohttp and opens its session
        go.set()
        await asyncio.sleep(1.0)  # the burst builds up before plain requests are measured
        plain = await plain_load(url, args.rate, args.seconds)
        stop.set()
        ensembles = Sample()
        for status, ms in await asyncio.to_thread(results.get, timeout=60):
            ensembles.add(status, ms)
        await asyncio.to_thread(process.join, 30)
    finally:
        if process.is_alive():
            process.terminate()
    return Phase(f"burst {round_}", plain, ensembles)


def _row(name: str, sample: Sample, baseline_p99: float | None) -> str:
    ok = sample.statuses.get("200", 0)
    other = sum(sample.statuses.values()) - ok
    p99 = sample.percentile(99)
    ratio = f"{p99 / baseline_p99:.2f}x" if baseline_p99 else "1.00x"
    return (
        f"| {name} | {sum(sample.statuses.values())} | {ok} | {other} | "
        f"{statistics.median(sample.latencies):.1f} | {sample.percentile(90):.1f} | "
        f"{p99:.1f} | {max(sample.latencies):.1f} | {ratio} |"
    )


def report(phases: list[Phase], args: argparse.Namespace) -> str:
    baselines = [p for p in phases if p.ensembles is None]
    base = Sample(latencies=[ms for p in baselines for ms in p.plain.latencies])
    base_p99 = base.percentile(99)
    lines = [
        f"Machine: {MACHINE}. Whole gateway on loopback (`ensemble-extproc run` parts: Envoy, "
        "one processor, one upstream, demo models).",
        f"Plain load: open loop, {args.rate:g} req/s evenly paced, {args.seconds:g} s per "
        "phase, to the default model (5 ms). Burst: "
        f"{args.ensembles} voting ensembles over 3 demo models (20/40/60 ms) kept in flight "
        "(closed loop, Retry-After honoured), from another process.",
        "",
        "Plain requests (latency from the scheduled send, ms):",
        "",
        "| phase | sent | 200 | other | p50 | p90 | p99 | max | p99 vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(p.name, p.plain, base_p99 if p.ensembles else None) for p in phases]
    lines += [
        "",
        "Ensembles of the burst phases:",
        "",
        "| phase | answered | 200 | 429 | other | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        if phase.ensembles is None:
            continue
        s = phase.ensembles
        total = sum(s.statuses.values())
        ok = s.statuses.get("200", 0)
        limited = sum(n for status, n in s.statuses.items() if status.startswith("429"))
        lines.append(
            f"| {phase.name} | {total} | {ok} | {limited} | {total - ok - limited} | "
            f"{statistics.median(s.latencies):.1f} | {s.percentile(99):.1f} |"
        )
    failures = Counter[str]()
    for phase in phases:
        for samples in (phase.plain, phase.ensembles):
            if samples is not None:
                failures.update({k: v for k, v in samples.statuses.items() if k not in ("200",)})
    if failures:
        counts = ", ".join(f"{status}: {count}" for status, count in failures.items())
        lines += ["", f"Statuses other than 200: {counts}"]
    return "\n".join(lines)


async def measure(args: argparse.Namespace) -> list[Phase]:
    raw = raw_config()
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = load_config(path)
        if ports_in_use(config):
            raise SystemExit("ports in use; try again")
        with (Path(tmp) / "gateway.log").open("wb") as log:
            stack = Stack(config, path, Path(tmp), output=log)
            try:
                await stack.start()
                url = f"http://{config.listen.envoy}/v1/chat/completions"
                await plain_load(url, args.rate, 2)  # warm-up, not reported
                return [
                    await run_phase(url, args, round_ + 1, burst)
                    for round_ in range(args.rounds)
                    for burst in (False, True)
                ]
            finally:
                await stack.supervisor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase")
    parser.add_argument("--rate", type=float, default=50, help="plain requests per second")
    parser.add_argument("--ensembles", type=int, default=300, help="ensembles in flight")
    parser.add_argument("--rounds", type=int, default=2, help="baseline + burst pairs")
    args = parser.parse_args()
    print(report(asyncio.run(measure(args)), args))


if __name__ == "__main__":
    main()
