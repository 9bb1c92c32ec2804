"""Quality benchmark: how often does each ensemble strategy get a checkable answer right?

Demo quiz models with known accuracies (independent voters: each has its own seed) answer
seeded quiz questions through the real ensemble upstream over loopback HTTP. The final
answer of every response is extracted and checked; the table compares each strategy's
measured accuracy with the single models' and, for voting and weighted, with the exact
accuracy theory predicts for independent voters (bench.theory).

    python -m bench.quality [--questions 2000] [--seed 1] [--strategies voting,weighted]
                            [--concurrency 16] [--singles all|best|none]
                            [--confidence 0.9,0.6] [--answers short|long|both]
                            [--scenarios] [--upstream inprocess|process]

``--answers long`` asks every question with "Think step by step.", so the models answer
with 1-4 KB chains of thought in varied real-model styles (demo.quiz.render_long);
``both`` runs every row with short and with long answers. ``--scenarios`` adds the rows
where weighting must matter: one 0.9 model and four 0.6 models, the strong one first and
last in request order. ``--upstream process`` runs the ensemble upstream as its own
process (``ensemble-extproc upstream``) and reports its CPU time per question.

``--trust [--warmup 500]`` runs the scenarios of learned trust instead (bench.trust_live):
members that must be learned, clones, a model update, learning on, after a warm-up.

Everything runs on 127.0.0.1 (free ports); nothing else is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import math
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
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
from bench.theory import log_odds_weight, plurality_accuracy
from ensemble_extproc import headers
from ensemble_extproc.config import compile_config
from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.config.model import Config
from ensemble_extproc.demo import quiz
from ensemble_extproc.demo.server import start_demo_servers
from ensemble_extproc.errors import ConfigError
from ensemble_extproc.internal import Binding, sign
from ensemble_extproc.upstream import create_app

__all__ = ["Member", "Run", "RunResult", "main", "run_benchmark"]


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    accuracy: float
    latency_ms: float


# Cheaper = faster = less accurate, as with real model tiers.
MEMBERS: Final = (
    Member("quiz-55", 0.55, 20),
    Member("quiz-60", 0.60, 25),
    Member("quiz-65", 0.65, 30),
    Member("quiz-70", 0.70, 35),
    Member("quiz-75", 0.75, 40),
)
# Where weighting must matter: one strong model among four weak ones.
SCENARIO_MEMBERS: Final = (
    Member("quiz-90", 0.90, 30),
    Member("quiz-60a", 0.60, 20),
    Member("quiz-60b", 0.60, 22),
    Member("quiz-60c", 0.60, 24),
    Member("quiz-60d", 0.60, 26),
)
STRONG_FIRST: Final = tuple(m.name for m in SCENARIO_MEMBERS)
STRONG_LAST: Final = (*STRONG_FIRST[1:], STRONG_FIRST[0])
JUDGE: Final = Member("quiz-judge", 0.80, 30)
AGGREGATOR: Final = Member("quiz-aggregator", 0.80, 30)
# The order of x-ensemble-models: strongest first, so vote ties go to the better model.
# The cascade escalates the other way (config ensemble.cascade.order): cheapest first.
REQUEST_ORDER: Final = tuple(m.name for m in sorted(MEMBERS, key=lambda m: -m.accuracy))
CASCADE_ORDER: Final = tuple(m.name for m in MEMBERS)
N_DISTRACTORS: Final = 3  # every quiz problem has three wrong answers (demo.quiz)
DEFAULT_STRATEGIES: Final = (
    "voting",
    "weighted",
    "score_averaging",
    "reranking",
    "fusion",
    "cascade",
    "first_success",
)
THEORY_STRATEGIES: Final = ("voting", "weighted")
_REQUEST_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Run:
    """One row of the table: a strategy over some models."""

    label: str
    strategy: str
    models: tuple[str, ...]
    min_responses: int | None = None  # None: the upstream's default
    theory: float | None = None
    long: bool = False  # ask for a chain of thought ("Think step by step.")


@dataclass(slots=True)
class RunResult:
    run: Run
    questions: int = 0  # sent
    correct: int = 0
    calls: int = 0
    cancelled: int = 0  # calls stopped before they answered (early stop, first_success)
    errors: Counter[str] = field(default_factory=Counter)
    unknown_strategy: bool = False
    seconds: float = 0.0
    cpu_seconds: float | None = None  # the upstream process's CPU time (process mode)

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions if self.questions else 0.0

    @property
    def only_errors(self) -> bool:
        return self.questions > 0 and sum(self.errors.values()) == self.questions


@dataclass(frozen=True, slots=True)
class _Answer:
    correct: bool
    calls: int
    cancelled: int = 0
    error: str | None = None
    unknown_strategy: bool = False


# ------------------------------------------------------------------- set-up


def demo_models(seed: int, confidence: tuple[float, float] = (0.9, 0.6)) -> list[DemoModel]:
    """The quiz models; distinct seeds make them independent voters.

    ``confidence``: the mean token probability of a right and of a wrong answer (each
    jittered by up to 0.05); far apart, logprob-based strategies see who is right.
    """
    return [
        DemoModel(
            member.name,
            0,
            latency_ms=member.latency_ms,
            quiz_accuracy=member.accuracy,
            seed=seed * 1000 + index,
            confidence_correct=confidence[0],
            confidence_wrong=confidence[1],
        )
        for index, member in enumerate(ALL_MODELS)
    ]


ALL_MODELS: Final = (*MEMBERS, JUDGE, AGGREGATOR, *SCENARIO_MEMBERS)


def raw_config(urls: dict[str, str], concurrency: int) -> dict[str, Any]:
    return {
        "models": [
            {"name": m.name, "url": urls[m.name], "accuracy": m.accuracy} for m in ALL_MODELS
        ],
        "ensemble": {
            "default_strategy": "voting",
            # A majority of the five members must answer before a vote may stop early.
            "default_min_responses": 3,
            "timeout_seconds": 30,
            "max_models_per_request": 7,
            # Every model call of `concurrency` requests in flight at once, with room.
            "max_concurrent_requests": max(64, 8 * concurrency),
            # weighted runs with its defaults (alternatives: auto).
            "reranking": {"judge_model": JUDGE.name},
            "fusion": {"aggregator_model": AGGREGATOR.name},
            "cascade": {"confidence_threshold": 0.8, "order": list(CASCADE_ORDER)},
        },
    }


def compile_leniently(raw: dict[str, Any]) -> tuple[Config, list[str]]:
    """compile_config, dropping keys this upstream does not know yet (and saying which)."""
    config, _, dropped = _lenient(raw)
    return config, dropped


def _lenient(raw: dict[str, Any]) -> tuple[Config, dict[str, Any], list[str]]:
    raw = copy.deepcopy(raw)
    dropped: list[str] = []
    while True:
        try:
            return compile_config(raw), raw, dropped
        except ConfigError as error:
            if error.problem != "unknown key" or not _drop_key(raw, error.key):
                raise
            dropped.append(error.key)


def _drop_key(raw: dict[str, Any], key: str) -> bool:
    """Remove ``key`` (e.g. ``models[0].accuracy``) from ``raw``; False if it is not there."""
    parts: list[str | int] = [
        int(index) if index else name for name, index in re.findall(r"(\w+)|\[(\d+)\]", key)
    ]
    node: Any = raw
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = parts[-1] if parts else None
    if not isinstance(node, dict) or last not in node:
        return False
    del node[last]
    return True


def theory_for(strategy: str, models: Sequence[str]) -> float | None:
    """Exact accuracy of voting, or of weighted with its defaults (votes first, log-odds
    break ties), for independent voters in this request order."""
    accuracy = {m.name: m.accuracy for m in ALL_MODELS}
    accuracies = [accuracy[name] for name in models]
    if strategy == "voting":
        return plurality_accuracy(accuracies, N_DISTRACTORS)
    if strategy == "weighted":
        tiebreaks = [log_odds_weight(p) for p in accuracies]
        return plurality_accuracy(accuracies, N_DISTRACTORS, [1.0] * len(models), tiebreaks)
    return None


def plan_runs(
    strategies: Sequence[str],
    singles: str,
    answers: Sequence[str] = ("short",),
    scenarios: bool = False,
) -> list[Run]:
    runs: list[Run] = []
    for length in answers:
        long = length == "long"
        suffix = ", long answers" if long and len(answers) > 1 else ""
        runs += [
            Run(s + suffix, s, REQUEST_ORDER, theory=theory_for(s, REQUEST_ORDER), long=long)
            for s in strategies
        ]
        if scenarios:
            for where, order in (("first", STRONG_FIRST), ("last", STRONG_LAST)):
                runs += [
                    Run(
                        f"{s} (0.9 {where}){suffix}",
                        s,
                        order,
                        theory=theory_for(s, order),
                        long=long,
                    )
                    for s in ("voting", "weighted")
                ]
        best = max(MEMBERS, key=lambda m: m.accuracy)
        alone = {"all": list(MEMBERS), "best": [best], "none": []}[singles]
        runs += [
            Run(
                f"{m.name} alone{suffix}",
                "first_success",
                (m.name,),
                min_responses=1,
                theory=m.accuracy,
                long=long,
            )
            for m in sorted(alone, key=lambda m: -m.accuracy)
        ]
    return runs


# ------------------------------------------------------------------- running


async def ask(
    session: aiohttp.ClientSession,
    url: str,
    run: Run,
    problem: quiz.Problem,
    secret: str | None = None,
) -> _Answer:
    request_headers = {
        headers.MODELS: ",".join(run.models),
        headers.STRATEGY: run.strategy,
    }
    if run.min_responses is not None:
        request_headers[headers.MIN_RESPONSES] = str(run.min_responses)
    if secret is not None:  # as the processor signs them: once, for this request only
        request_id = secrets.token_hex(16)
        binding = Binding(request_id, "POST", "/v1/chat/completions")
        request_headers[headers.REQUEST_ID] = request_id
        request_headers[headers.SIGNATURE] = sign(
            secret.encode(), request_headers, binding, time.time()
        )
    content = f"{problem.prompt}\n\n{quiz.STEP_BY_STEP}" if run.long else problem.prompt
    body = {"model": "ensemble", "messages": [{"role": "user", "content": content}]}
    try:
        async with session.post(url, json=body, headers=request_headers) as response:
            data = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return _Answer(False, 0, error=f"client: {type(exc).__name__}")
    if not isinstance(data, dict):
        return _Answer(False, 0, error=f"HTTP {status}: not a JSON object")
    if status != 200:
        error = data.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        return _Answer(
            False,
            *_calls(data),
            error=f"HTTP {status} {code}",
            unknown_strategy=status == 400 and code == "unknown_strategy",
        )
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return _Answer(False, *_calls(data), error="no message content")
    answer = quiz.final_answer(problem, content) if isinstance(content, str) else None
    return _Answer(answer == problem.correct, *_calls(data))


def _calls(data: dict[str, Any]) -> tuple[int, int]:
    """Model calls a request started and cancelled (``ensemble.calls``)."""
    details = data.get("ensemble")
    calls = details.get("calls") if isinstance(details, dict) else None
    if not isinstance(calls, dict):
        return 0, 0
    started, cancelled = calls.get("started"), calls.get("cancelled")
    return (
        started if isinstance(started, int) else 0,
        cancelled if isinstance(cancelled, int) else 0,
    )


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the ensemble upstream listens; with ``pid`` it is a process of its own."""

    base: str
    pid: int | None = None
    secret: str | None = None


async def run_one(
    session: aiohttp.ClientSession,
    upstream: Upstream,
    run: Run,
    problems: Sequence[quiz.Problem],
    concurrency: int,
) -> RunResult:
    result = RunResult(run)
    pending: Iterator[quiz.Problem] = iter(problems)
    url = f"{upstream.base}/v1/chat/completions"
    cpu_before = group_cpu_seconds(upstream.pid) if upstream.pid else None
    started = time.monotonic()

    async def worker() -> None:
        for problem in pending:  # shared: each problem is taken by one worker
            if result.unknown_strategy:
                return
            answer = await ask(session, url, run, problem, upstream.secret)
            if answer.unknown_strategy:
                result.unknown_strategy = True
                return
            result.questions += 1
            result.correct += answer.correct
            result.calls += answer.calls
            result.cancelled += answer.cancelled
            if answer.error is not None:
                result.errors[answer.error] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    if upstream.pid and cpu_before is not None:
        result.cpu_seconds = group_cpu_seconds(upstream.pid) - cpu_before
    return result


async def run_benchmark(
    questions: int,
    seed: int,
    strategies: Sequence[str],
    concurrency: int,
    singles: str = "all",
    confidence: tuple[float, float] = (0.9, 0.6),
    progress: bool = True,
    answers: Sequence[str] = ("short",),
    scenarios: bool = False,
    upstream_mode: str = "inprocess",
) -> tuple[list[RunResult], list[str]]:
    """Start the demo models and the upstream, run every row; (results, notes)."""
    problems = quiz.generate(questions, seed)
    async with await start_demo_servers(demo_models(seed, confidence)) as servers:
        config, raw, dropped = _lenient(raw_config(servers.urls, concurrency))
        notes = [
            f"config key '{key}' is not known to this upstream yet: ran without it"
            for key in dropped
        ]
        start = _upstream_process(raw) if upstream_mode == "process" else _upstream(config)
        async with start as upstream:
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
            timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                results = []
                for run in plan_runs(strategies, singles, answers, scenarios):
                    result = await run_one(session, upstream, run, problems, concurrency)
                    results.append(result)
                    if progress:
                        print(_progress_line(result), file=sys.stderr, flush=True)
    return results, notes


@contextlib.asynccontextmanager
async def _upstream(config: Config) -> AsyncIterator[Upstream]:
    """The ensemble upstream in this process, on a free loopback port."""
    runner = web.AppRunner(create_app(config), handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Upstream(f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _upstream_process(raw: dict[str, Any]) -> AsyncIterator[Upstream]:
    """``ensemble-extproc upstream`` as its own process (its CPU time is measurable)."""
    port, secret = free_port(), secrets.token_hex(32)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        path = write_yaml(
            Path(work) / "quality.yaml", {**raw, "listen": listen_block(upstream=port)}
        )
        log = Path(work) / "upstream.log"
        try:
            process = processes.start(
                "upstream", python_service("upstream", path), secret_env(secret), log
            )
            await asyncio.to_thread(wait_listening, port, process, "upstream", log)
            yield Upstream(f"http://127.0.0.1:{port}", process.pid, secret)
        finally:
            await asyncio.to_thread(processes.stop)


def _progress_line(result: RunResult) -> str:
    if result.unknown_strategy:
        return f"{result.run.label}: unknown strategy"
    return (
        f"{result.run.label}: {100 * result.accuracy:.1f} % of {result.questions} "
        f"in {result.seconds:.1f} s"
    )


# -------------------------------------------------------------------- report


def render_table(results: Sequence[RunResult], notes: Sequence[str] = ()) -> str:
    lines = [
        "| strategy | models | questions | accuracy % | ±95 % | calls/question "
        "| cancelled/question | theory % | upstream CPU ms/question | errors | time s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for result in results:
        run = result.run
        models = ", ".join(run.models) if len(run.models) == 1 else f"{len(run.models)} members"
        if result.unknown_strategy:
            lines.append(
                f"| {run.label} | {models} | - | n/a (unknown strategy) | - | - | - | - | - "
                "| - | - |"
            )
            continue
        if result.only_errors:
            cell = f"n/a ({result.errors.most_common(1)[0][0]})"
            lines.append(
                f"| {run.label} | {models} | {result.questions} | {cell} | - | - | - | - | - | "
                f"{result.questions} | {result.seconds:.1f} |"
            )
            continue
        n = result.questions
        p = result.accuracy
        half_width = 1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0
        theory = f"{100 * run.theory:.1f}" if run.theory is not None else "-"
        errors = ", ".join(f"{k}: {v}" for k, v in result.errors.most_common()) or "0"
        cpu = (
            f"{1000 * result.cpu_seconds / n:.2f}" if result.cpu_seconds is not None and n else "-"
        )
        lines.append(
            f"| {run.label} | {models} | {n} | {100 * p:.1f} | {100 * half_width:.1f} "
            f"| {result.calls / n if n else 0:.2f} | {result.cancelled / n if n else 0:.2f} "
            f"| {theory} | {cpu} | {errors} | {result.seconds:.1f} |"
        )
    singles = [r for r in results if len(r.run.models) == 1 and r.questions and not r.only_errors]
    footer = []
    if singles:
        # The baseline: the model configured as best, alone (the best *measured* one may
        # differ by sampling noise).
        strongest = max(MEMBERS, key=lambda m: m.accuracy).name
        best = next((r for r in singles if r.run.models[0] == strongest), None)
        best = best or max(singles, key=lambda r: r.accuracy)
        footer.append(
            f"Baseline, best single model {best.run.models[0]} alone: "
            f"{100 * best.accuracy:.1f} % measured."
        )
    footer.append(
        f"Members ({len(MEMBERS)}, request order): "
        + ", ".join(
            f"{m.name} p={m.accuracy:g} {m.latency_ms:g} ms"
            for m in sorted(MEMBERS, key=lambda m: -m.accuracy)
        )
        + f"; judge {JUDGE.name} p={JUDGE.accuracy:g}, aggregator {AGGREGATOR.name} "
        f"p={AGGREGATOR.accuracy:g}."
    )
    if any(r.run.models in (STRONG_FIRST, STRONG_LAST) for r in results):
        footer.append(
            "Scenarios: "
            + ", ".join(f"{m.name} p={m.accuracy:g} {m.latency_ms:g} ms" for m in SCENARIO_MEMBERS)
            + "; 0.9 first: in this request order, 0.9 last: the strong model last."
        )
    footer.append(
        f"Theory: exact plurality accuracy of independent voters with {N_DISTRACTORS} "
        "equally likely wrong answers, ties to the earliest model in request order; "
        "weighted with its defaults counts votes first and breaks ties by summed "
        "ln(p/(1-p)). Single models: their configured accuracy."
    )
    accuracies = [m.accuracy for m in sorted(MEMBERS, key=lambda m: -m.accuracy)]
    classic = plurality_accuracy(
        accuracies, N_DISTRACTORS, [log_odds_weight(p) for p in accuracies]
    )
    tuned = plurality_accuracy(
        accuracies,
        N_DISTRACTORS,
        [log_odds_weight(p) + math.log(N_DISTRACTORS) for p in accuracies],
    )
    footer.append(
        f"For reference, on the 5 members: weights ln(p/(1-p)) (alternatives: 1) reach "
        f"{100 * classic:.1f} % in theory, ln({N_DISTRACTORS}p/(1-p)) (alternatives: "
        f"{N_DISTRACTORS}, the true number of wrong answers here) {100 * tuned:.1f} %."
    )
    footer += [f"Note: {note}." for note in notes]
    return "\n".join([*lines, "", *footer])


# ----------------------------------------------------------------------- CLI


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _strategy_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty strategy name in {text!r}")
    return tuple(dict.fromkeys(names))


def _confidence_pair(text: str) -> tuple[float, float]:
    try:
        right, wrong = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected RIGHT,WRONG such as 0.9,0.6, got {text!r}"
        ) from None
    if not (0 < right < 1 and 0 < wrong < 1):
        raise argparse.ArgumentTypeError(f"both must be strictly between 0 and 1, got {text!r}")
    return right, wrong


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description="Measure each ensemble strategy's accuracy on seeded quiz questions.",
    )
    parser.add_argument("--questions", type=_positive, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--strategies",
        type=_strategy_list,
        default=DEFAULT_STRATEGIES,
        help="comma-separated (default: %(default)s)",
    )
    parser.add_argument("--concurrency", type=_positive, default=16)
    parser.add_argument(
        "--singles",
        choices=("all", "best", "none"),
        default="all",
        help="also run single models alone with first_success (default: all)",
    )
    parser.add_argument(
        "--answers",
        choices=("short", "long", "both"),
        default="short",
        help="short answers, 1-4 KB chains of thought, or both (default: short)",
    )
    parser.add_argument(
        "--scenarios",
        action="store_true",
        help="add 0.9/0.6/0.6/0.6/0.6 rows, the strong model first and last",
    )
    parser.add_argument(
        "--upstream",
        choices=("inprocess", "process"),
        default="inprocess",
        help="run the upstream in this process or as its own (with CPU per question)",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        help="run the learned-trust scenarios instead (bench.trust_live)",
    )
    parser.add_argument(
        "--warmup",
        type=_positive,
        default=500,
        help="with --trust: questions each learning key sees before it is measured",
    )
    parser.add_argument(
        "--confidence",
        type=_confidence_pair,
        default=(0.9, 0.6),
        metavar="RIGHT,WRONG",
        help="mean token probability of right and wrong answers (default: 0.9,0.6)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trust:
        from bench.trust_live import run_live

        print(asyncio.run(run_live(args.seed, args.warmup, args.questions, args.concurrency)))
        return 0
    results, notes = asyncio.run(
        run_benchmark(
            args.questions,
            args.seed,
            args.strategies,
            args.concurrency,
            args.singles,
            args.confidence,
            answers=("short", "long") if args.answers == "both" else (args.answers,),
            scenarios=args.scenarios,
            upstream_mode=args.upstream,
        )
    )
    print(render_table(results, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
