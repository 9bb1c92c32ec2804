"""Learned trust, live: the issue's scenarios through the real upstream, learning on.

Demo quiz models of known accuracy answer seeded quiz questions through the ensemble
upstream over loopback HTTP. Models with the same seed and accuracy are one model behind
several names (clones): they answer every question identically. Cheaper models are
faster (10 ms for 0.6 up to 40 ms for 0.9), as with real model tiers. Per scenario:

- upstream T learns (``ensemble.trust.enabled``, ``weighted.weights: learned``, no
  accuracy configured, every other trust setting at its default). Each learning row has
  its own trust key (a profile, named in ``x-ensemble-profile`` as the processor does),
  is warmed up until its key has ``--warmup`` learning samples of its own traffic from 100
  API keys (the per-client cap needs many clients), then measured on ``--questions``
  other questions while it goes on learning;
- upstream B does not learn: ``weighted`` with the true accuracies and
  ``alternatives: 3`` configured (the best one can configure), plain voting, and the best
  distinct model alone (``first_success``), on the same questions.

Rows where every member answers (``min_responses`` = all members) are all samples. The
early-stop rows (voting with ``min_responses: 2``, cascade) learn only from the share
``trust.sample_share`` (default 0.1) of their ensembles that ask every member.

The drop scenario replaces its strong model halfway through the measured questions by a
0.5 one on the same port (a model update behind one URL); B is reconfigured with the new
accuracy (an oracle), T is not told.

    python -m bench.trust_live [--warmup 500] [--questions 2000] [--seed 1]
                               [--concurrency 16] [--scenarios all|NAME;...] [--cpu N]
    python -m bench.quality --trust ...   (the same, without --scenarios and --cpu)

``--cpu N`` adds the upstream's CPU per ensemble with trust on against trust off: the
upstream as its own process, N questions of voting over five members each way, in
alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from bench.speedkit import (
    Processes,
    free_port,
    group_cpu_seconds,
    listen_block,
    python_service,
    secret_env,
    wait_listening,
    write_yaml,
)
from ensemble_extproc import headers
from ensemble_extproc.config import compile_config
from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.demo import quiz
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.internal import Binding, sign
from ensemble_extproc.upstream import create_app

__all__ = [
    "SCENARIOS",
    "Asked",
    "LearningRow",
    "LiveMember",
    "LiveScenario",
    "ScenarioResult",
    "Watch",
    "main",
    "run_live",
]

CLIENTS: Final = 100
POLL_EVERY: Final = 50  # questions between two looks at GET /admin/trust
DROP_POLL_EVERY: Final = 25  # after the model update
DISTRACTORS: Final = 3  # every quiz question has three wrong answers (demo.quiz)
_TIMEOUT_S: Final = 60.0

TRUE_WEIGHTED: Final = "true weighted"
VOTING: Final = "voting"
BEST: Final = "best single"
CASCADE: Final = "cascade"


@dataclass(frozen=True, slots=True)
class LiveMember:
    name: str
    accuracy: float
    # Members of one group are one model behind several names (same seed, same answers).
    group: int
    later: float | None = None  # the accuracy after the model update (drop scenario)

    @property
    def latency_ms(self) -> float:
        """Cheaper is faster: 10 ms at 0.6, 40 ms at 0.9."""
        return max(1.0, round(10 + 100 * (self.accuracy - 0.6)))


@dataclass(frozen=True, slots=True)
class LearningRow:
    """A row that learns: a strategy on its own trust key (profile)."""

    label: str
    strategy: str
    profile: str
    order: tuple[str, ...]
    min_responses: int | None = None  # None: every member (no early stop)


@dataclass(frozen=True, slots=True)
class LiveScenario:
    name: str
    members: tuple[LiveMember, ...]
    # match: learned within 1 point of true weighted; best: at least the best single,
    # clones flagged; theory: no worse than distinct-member theory - 2 points, the clone
    # flagged; voting: no worse than plain voting, nothing flagged; follow: the changed
    # member's learned accuracy follows.
    goal: str
    # Cheapest first: the order of the cascade rows (empty: no cascade rows), and rows
    # with early stop (voting with min_responses 2).
    cascade_order: tuple[str, ...] = ()
    early_stop: bool = False

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def distinct(self) -> list[LiveMember]:
        seen: set[int] = set()
        out = []
        for member in self.members:
            if member.group not in seen:
                seen.add(member.group)
                out.append(member)
        return out

    @property
    def correlated(self) -> frozenset[frozenset[str]]:
        return frozenset(
            frozenset((a.name, b.name))
            for i, a in enumerate(self.members)
            for b in self.members[i + 1 :]
            if a.group == b.group
        )

    @property
    def best(self) -> LiveMember:
        return max(self.distinct, key=lambda m: m.accuracy)

    @property
    def changing(self) -> LiveMember | None:
        return next((m for m in self.members if m.later is not None), None)

    def learning_rows(self) -> list[LearningRow]:
        rows = [
            LearningRow("learned weighted", "weighted", "learned-weighted", self.models),
            LearningRow("voting, trust on", "voting", "trust-voting", self.models),
        ]
        if self.early_stop:
            rows.append(
                LearningRow(
                    "voting, trust on, early stop", "voting", "trust-voting-es", self.models, 2
                )
            )
        if self.cascade_order:
            rows.append(
                LearningRow("cascade, trust on", "cascade", "trust-cascade", self.cascade_order, 1)
            )
        return rows


def _weak(count: int, accuracy: float, first_group: int, prefix: str) -> tuple[LiveMember, ...]:
    return tuple(
        LiveMember(f"{prefix}-{chr(ord('a') + i)}", accuracy, first_group + i) for i in range(count)
    )


_STRONG: Final = (LiveMember("q90", 0.9, 0), *_weak(4, 0.6, 1, "q60"))
SCENARIOS: Final = (
    LiveScenario("0.9, 0.6 x4 (strong first)", _STRONG, "match"),
    LiveScenario("0.6 x4, 0.9 (strong last)", (*_STRONG[1:], _STRONG[0]), "match"),
    LiveScenario(
        "0.8, 0.7, 3 clones of 0.6",
        (
            LiveMember("q80", 0.8, 0),
            LiveMember("q70", 0.7, 1),
            LiveMember("q60", 0.6, 2),
            LiveMember("q60-copy1", 0.6, 2),
            LiveMember("q60-copy2", 0.6, 2),
        ),
        "best",
        cascade_order=("q60", "q60-copy1", "q60-copy2", "q70", "q80"),
        early_stop=True,
    ),
    LiveScenario(
        "0.75, 0.7, 0.65, 0.6 + a clone",
        (
            LiveMember("q75", 0.75, 0),
            LiveMember("q70", 0.7, 1),
            LiveMember("q65", 0.65, 2),
            LiveMember("q60", 0.6, 3),
            LiveMember("q60-copy", 0.6, 3),
        ),
        "theory",
    ),
    LiveScenario("0.65 x5, independent", _weak(5, 0.65, 0, "q65"), "voting"),
    LiveScenario(
        "0.9 -> 0.5 halfway, 0.6 x4",
        (LiveMember("q90", 0.9, 0, later=0.5), *_weak(4, 0.6, 1, "q60")),
        "follow",
    ),
)


# ------------------------------------------------------------------------ set-up


def demo_models(scenario: LiveScenario, index: int, seed: int, later: bool) -> list[DemoModel]:
    """Distinct groups get distinct seeds; a changed model gets a new one (a new version)."""
    return [
        DemoModel(
            m.name,
            0,
            latency_ms=m.latency_ms,
            quiz_accuracy=m.later if later and m.later is not None else m.accuracy,
            seed=seed * 10_000 + index * 100 + m.group + (50 if later and m.later else 0),
        )
        for m in scenario.members
    ]


def learning_config(urls: dict[str, str], n: int, concurrency: int) -> dict[str, Any]:
    return {
        "models": [{"name": name, "url": url} for name, url in urls.items()],
        "ensemble": {
            "default_min_responses": n,
            "max_concurrent_requests": max(64, 8 * concurrency),
            "weighted": {"weights": "learned"},
            "trust": {"enabled": True},
        },
    }


def baseline_config(
    urls: dict[str, str], accuracies: dict[str, float], n: int, concurrency: int
) -> dict[str, Any]:
    return {
        "models": [
            {"name": name, "url": url, "accuracy": accuracies[name]} for name, url in urls.items()
        ],
        "ensemble": {
            "default_min_responses": n,
            "max_concurrent_requests": max(64, 8 * concurrency),
            "weighted": {"alternatives": DISTRACTORS},
        },
    }


@contextlib.asynccontextmanager
async def upstream(raw: dict[str, Any]) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(compile_config(raw)), handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------ asking


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how a row asks: an upstream, a strategy over some models."""

    base: str
    strategy: str
    models: tuple[str, ...]
    profile: str | None = None
    min_responses: int | None = None
    secret: str | None = None


@dataclass(slots=True)
class Asked:
    correct: list[bool] = field(default_factory=list)
    errors: int = 0
    weights: dict[str, Any] | None = None  # the last response's details.weights
    # Per member: questions answered, and answered right (its realized accuracy).
    answered: Counter[str] = field(default_factory=Counter)
    right: Counter[str] = field(default_factory=Counter)


def _request_headers(target: Target, client: int) -> dict[str, str]:
    out = {
        headers.MODELS: ",".join(target.models),
        headers.STRATEGY: target.strategy,
        "authorization": f"Bearer sk-bench-client-{client % CLIENTS}",
    }
    if target.profile is not None:
        out[headers.PROFILE] = target.profile
    if target.min_responses is not None:
        out[headers.MIN_RESPONSES] = str(target.min_responses)
    if target.secret is not None:  # as the processor signs them: once per request
        request_id = secrets.token_hex(16)
        binding = Binding(request_id, "POST", "/v1/chat/completions")
        out[headers.REQUEST_ID] = request_id
        out[headers.SIGNATURE] = sign(target.secret.encode(), out, binding, time.time())
    return out


async def ask_all(
    session: aiohttp.ClientSession,
    target: Target,
    problems: Sequence[quiz.Problem],
    concurrency: int,
    into: Asked,
    offset: int = 0,
) -> None:
    """Every problem, ``concurrency`` at a time; results in question order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int, problem: quiz.Problem) -> dict[str, Any] | None:
        body = {"model": "ensemble", "messages": [{"role": "user", "content": problem.prompt}]}
        async with semaphore:
            try:
                async with session.post(
                    f"{target.base}/v1/chat/completions",
                    json=body,
                    headers=_request_headers(target, offset + i),
                ) as response:
                    data = await response.json(content_type=None)
                    return data if response.status == 200 and isinstance(data, dict) else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

    answers = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    for problem, data in zip(problems, answers, strict=True):
        _count(problem, data, into)


def _count(problem: quiz.Problem, data: dict[str, Any] | None, into: Asked) -> None:
    try:
        content = data["choices"][0]["message"]["content"] if data else None
    except (KeyError, IndexError, TypeError):
        content = None
    if data is None or not isinstance(content, str):
        into.correct.append(False)
        into.errors += 1
        return
    into.correct.append(quiz.final_answer(problem, content) == problem.correct)
    ensemble = data.get("ensemble", {})
    weights = ensemble.get("details", {}).get("weights")
    if weights is not None:
        into.weights = weights
    for candidate in ensemble.get("candidates", []):
        key = candidate.get("answer")
        if candidate.get("role") == "member" and isinstance(key, str):
            into.answered[candidate["model"]] += 1
            into.right[candidate["model"]] += quiz.is_correct(problem, key)


# ------------------------------------------------------------------ one scenario


@dataclass(slots=True)
class Look:
    """One look at a key's estimates."""

    samples: int  # learning samples of this key (its accepted observations)
    members: dict[str, tuple[float, float, float, bool]]  # accuracy, low, high, learned
    flagged: frozenset[frozenset[str]]
    c: float  # wrong answers' agreement


@dataclass(slots=True)
class Watch:
    """What one learning key showed over time."""

    looks: list[Look] = field(default_factory=list)
    warmed_at: int = 0  # samples at the end of the warm-up
    ensembles_to_warm: int = 0
    change_at: int | None = None  # samples at the model update

    def record(self, key: dict[str, Any] | None) -> None:
        if key is None:
            return
        members = {
            m["model"]: (m["accuracy"], m["interval"][0], m["interval"][1], m["learned"])
            for m in key["members"]
        }
        flagged = frozenset(frozenset(p["models"]) for p in key["flagged_pairs"])
        c = key["wrong_answer_agreement"]["value"]
        self.looks.append(Look(key["observations"], members, flagged, c))

    @property
    def samples(self) -> int:
        return self.looks[-1].samples if self.looks else 0

    def at(self, samples: int) -> Look | None:
        before = [look for look in self.looks if look.samples <= samples]
        return before[-1] if before else None


@dataclass(slots=True)
class ScenarioResult:
    scenario: LiveScenario
    rows: dict[str, Asked]
    watches: dict[str, Watch]  # row label -> looks at its key
    warmup: int
    questions: int
    change_at: int | None = None  # measured questions before the model update
    seconds: float = 0.0


async def run_scenario(
    scenario: LiveScenario,
    index: int,
    seed: int,
    warmup: int,
    questions: int,
    concurrency: int,
    progress: Callable[[str], None],
) -> ScenarioResult:
    started = time.monotonic()
    learning = scenario.learning_rows()
    # Early-stop rows learn from a tenth of their ensembles: room for 20 x the warm-up.
    pool = 20 * warmup if any(r.min_responses for r in learning) else 2 * warmup
    problems = quiz.generate(pool + questions, seed * 100 + index)
    warm, measured = problems[:pool], problems[pool:]
    changing = scenario.changing
    change_at = questions // 2 if changing is not None else None
    phases = [measured] if change_at is None else [measured[:change_at], measured[change_at:]]
    n = len(scenario.members)
    rows = {row.label: Asked() for row in learning}
    rows.update({TRUE_WEIGHTED: Asked(), VOTING: Asked(), BEST: Asked()})
    if scenario.cascade_order:
        rows[CASCADE] = Asked()
    watches = {row.label: Watch() for row in learning}
    result = ScenarioResult(scenario, rows, watches, warmup, questions, change_at)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    everyone = demo_models(scenario, index, seed, False)
    stable = [m for m in everyone if changing is None or m.name != changing.name]
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        await start_demo_servers(stable) as fixed,
    ):
        moving = await start_demo_servers([m for m in everyone if m not in stable])
        try:
            urls = {m: fixed.urls.get(m) or moving.urls[m] for m in scenario.models}
            truth = {m.name: m.accuracy for m in scenario.members}
            async with upstream(learning_config(urls, n, concurrency)) as learner:
                for row in learning:
                    await _warm_up(session, learner, row, warm, warmup, concurrency, watches)
                    progress(
                        f"{scenario.name}: {row.label} warmed up ({warmup} learning samples in "
                        f"{watches[row.label].ensembles_to_warm} ensembles)"
                    )
                for phase, batch in enumerate(phases):
                    if phase == 1 and changing is not None and changing.later is not None:
                        moving = await _update(moving, scenario, index, seed)
                        truth[changing.name] = changing.later
                        for watch in watches.values():
                            watch.change_at = watch.samples
                        progress(f"{scenario.name}: {changing.name} is now {changing.later}")
                    every = DROP_POLL_EVERY if phase == 1 else POLL_EVERY
                    for row in learning:
                        target = Target(
                            learner, row.strategy, row.order, row.profile, row.min_responses
                        )
                        await _measure(session, target, batch, every, concurrency, result, row)
                    async with upstream(baseline_config(urls, truth, n, concurrency)) as fixed_up:
                        await _baseline_rows(session, scenario, fixed_up, batch, concurrency, rows)
                    progress(f"{scenario.name}: {len(batch)} measured questions done")
        finally:
            await moving.close()
    result.seconds = time.monotonic() - started
    return result


def _chunks(
    problems: Sequence[quiz.Problem], size: int
) -> Iterator[tuple[int, Sequence[quiz.Problem]]]:
    for start in range(0, len(problems), size):
        yield start, problems[start : start + size]


async def trust_key(
    session: aiohttp.ClientSession, base: str, profile: str
) -> dict[str, Any] | None:
    """What GET /admin/trust says about one profile's key (None: nothing yet)."""
    async with session.get(f"{base}/admin/trust") as response:
        report = await response.json()
    return next((k for k in report["keys"] if k["key"] == f"profile:{profile}"), None)


async def _warm_up(
    session: aiohttp.ClientSession,
    base: str,
    row: LearningRow,
    pool: Sequence[quiz.Problem],
    samples: int,
    concurrency: int,
    watches: dict[str, Watch],
) -> None:
    """Ask until the row's key has ``samples`` learning samples (or the pool runs out)."""
    target = Target(base, row.strategy, row.order, row.profile, row.min_responses)
    watch = watches[row.label]
    for start, chunk in _chunks(pool, POLL_EVERY):
        await ask_all(session, target, chunk, concurrency, Asked(), start)
        watch.record(await trust_key(session, base, row.profile))
        watch.ensembles_to_warm = start + len(chunk)
        if watch.samples >= samples:
            break
    watch.warmed_at = watch.samples


async def _measure(
    session: aiohttp.ClientSession,
    target: Target,
    problems: Sequence[quiz.Problem],
    every: int,
    concurrency: int,
    result: ScenarioResult,
    row: LearningRow,
) -> None:
    """A learning row on measured questions, looking at its key every ``every``."""
    for start, chunk in _chunks(problems, every):
        await ask_all(session, target, chunk, concurrency, result.rows[row.label], start)
        result.watches[row.label].record(await trust_key(session, target.base, row.profile))


async def _update(
    moving: DemoServers, scenario: LiveScenario, index: int, seed: int
) -> DemoServers:
    """The model update: the changed model's new version on the same port."""
    ports = dict(moving.ports)
    await moving.close()
    updated = [
        DemoModel(
            m.name,
            ports[m.name],
            latency_ms=m.latency_ms,
            quiz_accuracy=m.quiz_accuracy,
            seed=m.seed,
        )
        for m in demo_models(scenario, index, seed, True)
        if m.name in ports
    ]
    return await start_demo_servers(updated)


async def _baseline_rows(
    session: aiohttp.ClientSession,
    scenario: LiveScenario,
    base: str,
    problems: Sequence[quiz.Problem],
    concurrency: int,
    rows: dict[str, Asked],
) -> None:
    models = scenario.models
    weighted = Target(base, "weighted", models)
    await ask_all(session, weighted, problems, concurrency, rows[TRUE_WEIGHTED])
    await ask_all(session, Target(base, "voting", models), problems, concurrency, rows[VOTING])
    best = Target(base, "first_success", (scenario.best.name,), min_responses=1)
    await ask_all(session, best, problems, concurrency, rows[BEST])
    if scenario.cascade_order:
        cascade = Target(base, "cascade", scenario.cascade_order, min_responses=1)
        await ask_all(session, cascade, problems, concurrency, rows[CASCADE])


# ---------------------------------------------------------------------- CPU


async def cpu_per_ensemble(seed: int, questions: int, concurrency: int, rounds: int = 4) -> str:
    """The upstream's CPU per ensemble (its own process), voting over 0.9 and 0.6 x4,
    every member answering: trust off against trust on (learning, correlation, weights
    read before each ensemble), in alternating rounds, after a 500-question warm-up."""
    scenario = SCENARIOS[0]
    problems = quiz.generate(questions + 500, seed * 100 + 99)
    warm, measured = problems[:500], problems[500:]
    cpu: dict[str, float] = {"trust off": 0.0, "trust on": 0.0}
    count: dict[str, int] = dict.fromkeys(cpu, 0)
    async with await start_demo_servers(demo_models(scenario, 99, seed, False)) as servers:
        n = len(scenario.members)
        truth = {m.name: m.accuracy for m in scenario.members}
        off = baseline_config(servers.urls, truth, n, concurrency)
        on = learning_config(servers.urls, n, concurrency)
        async with _process(off) as plain, _process(on) as learning:
            timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                targets = {
                    "trust off": Target(plain[0], "voting", scenario.models, secret=plain[2]),
                    "trust on": Target(learning[0], "voting", scenario.models, secret=learning[2]),
                }
                pids = {"trust off": plain[1], "trust on": learning[1]}
                await ask_all(session, targets["trust on"], warm, concurrency, Asked())
                size = max(1, len(measured) // rounds)
                for start, batch in _chunks(measured, size):
                    for name, target in targets.items():
                        before = group_cpu_seconds(pids[name])
                        await ask_all(session, target, batch, concurrency, Asked(), start)
                        cpu[name] += group_cpu_seconds(pids[name]) - before
                        count[name] += len(batch)
    per = {name: 1000 * cpu[name] / count[name] for name in cpu}
    return "\n".join(
        [
            "| upstream | ensembles | CPU ms per ensemble | ratio |",
            "|---|---:|---:|---:|",
            f"| trust off | {count['trust off']} | {per['trust off']:.2f} | 1.00 |",
            f"| trust on | {count['trust on']} | {per['trust on']:.2f} | "
            f"{per['trust on'] / per['trust off']:.2f} |",
        ]
    )


@contextlib.asynccontextmanager
async def _process(raw: dict[str, Any]) -> AsyncIterator[tuple[str, int, str]]:
    """``ensemble-extproc upstream`` as its own process: (base URL, pid, secret)."""
    port, secret = free_port(), secrets.token_hex(32)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as work:
        path = write_yaml(Path(work) / "trust.yaml", {**raw, "listen": listen_block(upstream=port)})
        log = Path(work) / "upstream.log"
        try:
            process = processes.start(
                "upstream", python_service("upstream", path), secret_env(secret), log
            )
            await asyncio.to_thread(wait_listening, port, process, "upstream", log)
            yield f"http://127.0.0.1:{port}", process.pid, secret
        finally:
            await asyncio.to_thread(processes.stop)


# ---------------------------------------------------------------------- main


async def run_live(
    seed: int,
    warmup: int,
    questions: int,
    concurrency: int,
    names: Sequence[str] | None = None,
    cpu_questions: int = 0,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> str:
    from bench.trust_live_report import report

    results = []
    for index, scenario in enumerate(SCENARIOS):
        if names is not None and scenario.name not in names:
            continue
        results.append(
            await run_scenario(scenario, index, seed, warmup, questions, concurrency, progress)
        )
    cpu = None
    if cpu_questions:
        progress("CPU: trust off against trust on")
        cpu = await cpu_per_ensemble(seed, cpu_questions, concurrency)
    return report(results, seed, warmup, questions, concurrency, cpu, cpu_questions)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.trust_live", description=__doc__)
    parser.add_argument("--warmup", type=_positive, default=500)
    parser.add_argument("--questions", type=_positive, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=_positive, default=16)
    parser.add_argument(
        "--scenarios",
        default="all",
        help="all, or scenario names separated by ';' (default: all)",
    )
    parser.add_argument("--cpu", type=int, default=0, metavar="N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = None if args.scenarios == "all" else [n.strip() for n in args.scenarios.split(";")]
    print(
        asyncio.run(
            run_live(args.seed, args.warmup, args.questions, args.concurrency, names, args.cpu)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
