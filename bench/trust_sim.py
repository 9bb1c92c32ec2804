"""Offline simulation of learned trust: what it learns, how fast, and what it is worth.

Simulated members answer simulated questions: member i is right with probability p_i,
else names one of ``--distractors`` wrong answers at random; a clone copies another
member's answer (the same model behind another name). Every question is fed to the trust
book exactly as the upstream feeds it (one observation per ensemble, from a pool of 100
clients), and answered by four aggregations on the same answers:

- learned: ``weighted`` with ``weights: learned``, its own code (``strategies.weighted``
  on the plan of ``trust.weights.plan_weights``): weights ln(k p / (1 - p)) from the
  learned accuracies and k learned from c (the largest k c's interval allows), times each
  member's correlation multiplier (members flagged as moving together share a vote);
  votes first, learned log-odds breaking ties, until c is learned;
- true weighted: the same rule with the true accuracies and k configured, no correlation
  discount (``weighted`` with ``accuracy`` and ``alternatives`` set in config);
- voting: one vote each;
- the best single member alone.

Ties go to the answer whose first voter comes first in request order (the strategies'
rule). Accuracy is measured after the warm-up, pooled over seeds, with a 95 % interval;
"learned - true" is the paired difference on the same questions.

    python -m bench.trust_sim [--seeds 20] [--warmup 500] [--questions 2000]

Pure Python, no servers: everything runs in this process.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from bench.theory import plurality_accuracy
from ensemble_extproc.demo import quiz
from ensemble_extproc.strategies import weighted
from ensemble_extproc.strategies.base import Candidate, Context, Status
from ensemble_extproc.strategies.settings import StrategySettings, Weighted
from ensemble_extproc.strategies.tally import names as names_of
from ensemble_extproc.strategies.tally import tally
from ensemble_extproc.trust.book import TrustBook, priors_from, set_key
from ensemble_extproc.trust.feed import observation
from ensemble_extproc.trust.model import Observation, TrustSettings, TrustView
from ensemble_extproc.trust.service import TrustService
from ensemble_extproc.trust.weights import log_odds, plan_weights

__all__ = ["SCENARIOS", "Member", "Scenario", "learned_ballot", "main", "run_scenario"]

KEY: Final = "profile:sim"
CLIENTS: Final = 100
CHECK_EVERY: Final = 25  # questions between two looks at the estimates
WITHIN: Final = 0.05  # "converged": every accuracy learned, and within this of the truth


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    accuracy: float
    # Accuracy after ``change_at`` questions (a model update), if it changes.
    later: float | None = None
    clone_of: str | None = None  # answers exactly as that member does


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    members: tuple[Member, ...]
    # Pairs that move together (clones): should be flagged; no other pair should be.
    correlated: frozenset[frozenset[str]] = frozenset()
    change_at: int | None = None  # question of the model update (from the start)
    # The target: match (learned within 1 point of true weighted), best (at least
    # the best single member), theory (no worse than distinct-member theory - 2 points),
    # voting (no worse than plain voting), follow (the changed member is followed).
    goal: str = "match"

    def accuracy(self, member: Member, question: int) -> float:
        if member.clone_of is not None:
            source = next(m for m in self.members if m.name == member.clone_of)
            return self.accuracy(source, question)
        if member.later is not None and self.change_at is not None and question >= self.change_at:
            return member.later
        return member.accuracy


def _clones(name: str, source: str, count: int) -> tuple[Member, ...]:
    return tuple(Member(f"{name}-{i}", 0.0, clone_of=source) for i in range(1, count + 1))


def _pairs(names: Sequence[str]) -> frozenset[frozenset[str]]:
    return frozenset(frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :])


SCENARIOS: Final = (
    Scenario(
        "0.9, 0.6 x4 (strong first)",
        (Member("p90", 0.9), *(Member(f"p60-{i}", 0.6) for i in range(1, 5))),
    ),
    Scenario(
        "0.6 x4, 0.9 (strong last)",
        (*(Member(f"p60-{i}", 0.6) for i in range(1, 5)), Member("p90", 0.9)),
    ),
    Scenario(
        "0.8, 0.7, 3 clones of 0.6",
        (Member("p80", 0.8), Member("p70", 0.7), Member("p60", 0.6), *_clones("p60", "p60", 2)),
        correlated=_pairs(["p60", "p60-1", "p60-2"]),
        goal="best",
    ),
    Scenario(
        "0.75, 0.7, 0.65, 0.6 + a clone",
        (
            Member("p75", 0.75),
            Member("p70", 0.7),
            Member("p65", 0.65),
            Member("p60", 0.6),
            *_clones("p60", "p60", 1),
        ),
        correlated=_pairs(["p60", "p60-1"]),
        goal="theory",
    ),
    Scenario(
        "0.65 x5, independent",
        tuple(Member(f"p65-{i}", 0.65) for i in range(1, 6)),
        goal="voting",
    ),
)


def drop_scenario(questions: int) -> Scenario:
    """The strong member's accuracy falls from 0.9 to 0.5 halfway (a bad model update)."""
    return Scenario(
        "0.9 -> 0.5 halfway, 0.6 x4",
        (Member("p90", 0.9, later=0.5), *(Member(f"p60-{i}", 0.6) for i in range(1, 5))),
        change_at=questions // 2,
        goal="follow",
    )


# ------------------------------------------------------------------- one run


@dataclass(slots=True)
class SeedResult:
    correct: dict[str, list[bool]] = field(default_factory=dict)  # aggregation -> per question
    learned_at_warmup: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    learned_at_end: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    true_at_end: dict[str, float] = field(default_factory=dict)
    converged_at: int | None = None  # first question at which all are within WITHIN
    within_checks: int = 0  # checks after the warm-up with all within WITHIN
    changes: int = 0  # change alarms (a member's old evidence forgotten)
    followed_after: int | None = None  # drop: questions after the change until within
    flagged_at_warmup: frozenset[frozenset[str]] = frozenset()
    flagged_at_end: frozenset[frozenset[str]] = frozenset()
    clones_flagged_at: int | None = None  # first question all correlated pairs are flagged
    false_flag_checks: int = 0  # checks after the warm-up with an independent pair flagged
    checks: int = 0
    # Per question: microseconds to observe, and to read the view (refitting when due).
    observe_us: list[float] = field(default_factory=list)
    view_us: list[float] = field(default_factory=list)


def _answers(scenario: Scenario, question: int, rng: random.Random, k: int) -> dict[str, int]:
    answers: dict[str, int] = {}
    for member in scenario.members:
        if member.clone_of is None:
            right = rng.random() < scenario.accuracy(member, question)
            answers[member.name] = 0 if right else rng.randint(1, k)
    for member in scenario.members:
        if member.clone_of is not None:
            answers[member.name] = answers[member.clone_of]
    return answers


def _winner(
    answers: dict[str, int],
    order: Sequence[str],
    weights: dict[str, float],
    tiebreaks: dict[str, float] | None = None,
) -> int:
    """The strategies' rule: the largest weight, then the largest tie-break, then the
    answer whose first voter comes first."""
    totals: dict[int, list[float]] = {}  # insertion order: the earliest voter first
    for name in order:
        total = totals.setdefault(answers[name], [0.0, 0.0])
        total[0] += weights[name]
        total[1] += tiebreaks[name] if tiebreaks else 0.0
    best = max(round(w / 1e-9) for w, _ in totals.values())
    tied = {a: t for a, (w, t) in totals.items() if round(w / 1e-9) == best}
    top = max(tied.values())
    return next(a for a, t in tied.items() if t == top)


def learned_ballot(
    view: TrustView | None, order: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """The weights and tie-breaks of ``weighted`` with ``weights: learned`` (its own code:
    ``strategies.weighted.ballot`` on the plan ``trust.weights.plan_weights`` makes)."""
    ctx = Context(
        models=tuple(order),
        min_responses=1,
        request={},
        settings=StrategySettings(weighted=Weighted(weights="learned")),
        weight_plan=plan_weights(view, order, {}),
    )
    ballot = weighted.ballot(ctx)
    return {n: ballot.weight(n) for n in order}, {n: ballot.tiebreak(n) for n in order}


def run_scenario(
    scenario: Scenario,
    seed: int,
    settings: TrustSettings,
    warmup: int,
    questions: int,
    distractors: int,
) -> SeedResult:
    rng = random.Random(seed)
    order = [m.name for m in scenario.members]
    book = TrustBook(settings, priors_from(dict.fromkeys(order), settings))
    best = max((m for m in scenario.members if m.clone_of is None), key=lambda m: m.accuracy).name
    result = SeedResult()
    result.correct = {"learned": [], "true weighted": [], "voting": [], "best single": []}
    total = warmup + questions
    within_since: int | None = None
    for q in range(total):
        answers = _answers(scenario, q, rng, distractors)
        started = time.perf_counter()
        book.observe(KEY, order, Observation(answers, client=f"c{rng.randrange(CLIENTS)}"))
        observed = time.perf_counter()
        view = book.view(KEY)
        viewed = time.perf_counter()
        result.observe_us.append((observed - started) * 1e6)
        result.view_us.append((viewed - observed) * 1e6)
        if q >= warmup:
            true_weights = {
                m.name: log_odds(scenario.accuracy(m, q), distractors) for m in scenario.members
            }
            picks = {
                "learned": _winner(answers, order, *learned_ballot(view, order)),
                "true weighted": _winner(answers, order, true_weights),
                "voting": _winner(answers, order, dict.fromkeys(order, 1.0)),
                "best single": answers[best],
            }
            for name, pick in picks.items():
                result.correct[name].append(pick == 0)
        if view is None or (q + 1) % CHECK_EVERY:
            continue
        flagged = frozenset(frozenset((p.a, p.b)) for p in view.flagged)
        # Learned (enough evidence to be used) and within: a prior that happens to be near
        # the truth does not count.
        close = all(
            view.members[m.name].learned
            and abs(view.members[m.name].accuracy - scenario.accuracy(m, q)) <= WITHIN
            for m in scenario.members
        )
        if close and within_since is None:
            within_since = q + 1
        if scenario.change_at is not None and q + 1 > scenario.change_at:
            changed = next(m for m in scenario.members if m.later is not None)
            near = abs(view.members[changed.name].accuracy - scenario.accuracy(changed, q))
            if near > WITHIN:
                result.followed_after = None
            elif result.followed_after is None:
                result.followed_after = q + 1 - scenario.change_at
        if (
            scenario.correlated
            and result.clones_flagged_at is None
            and scenario.correlated <= flagged
        ):
            result.clones_flagged_at = q + 1
        if q + 1 > warmup:
            result.checks += 1
            result.within_checks += close
            result.false_flag_checks += bool(flagged - scenario.correlated)
        if q + 1 == warmup:
            result.flagged_at_warmup = flagged
            result.learned_at_warmup = _snapshot(view)
    final = book.view(KEY)
    assert final is not None
    result.learned_at_end = _snapshot(final)
    result.true_at_end = {m.name: scenario.accuracy(m, total - 1) for m in scenario.members}
    result.flagged_at_end = frozenset(frozenset((p.a, p.b)) for p in final.flagged)
    result.converged_at = within_since
    result.changes = sum(e.changes for e in final.members.values())
    return result


def _snapshot(view: TrustView) -> dict[str, tuple[float, float, float]]:
    return {name: (e.accuracy, e.low, e.high) for name, e in view.members.items()}


# ------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Options:
    seeds: int
    warmup: int
    questions: int
    distractors: int
    settings: TrustSettings


def _rate(values: Sequence[bool]) -> tuple[float, float]:
    """Share of True, and the half-width of its 95 % interval."""
    n = len(values)
    p = sum(values) / n
    return p, 1.96 * math.sqrt(p * (1 - p) / n)


def _paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[float, float]:
    """Mean of a - b on the same questions, and the half-width of its 95 % interval."""
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    sd = statistics.pstdev(diffs)
    return mean, 1.96 * sd / math.sqrt(len(diffs))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _distinct(scenario: Scenario) -> list[float]:
    return [m.accuracy for m in scenario.members if m.clone_of is None]


def _pooled(results: Sequence[SeedResult], name: str) -> list[bool]:
    return [x for r in results for x in r.correct[name]]


def _theory(scenario: Scenario, k: int) -> float:
    distinct = _distinct(scenario)
    return plurality_accuracy(distinct, k, [log_odds(p, k) for p in distinct])


def targets_table(runs: Sequence[tuple[Scenario, list[SeedResult]]], options: Options) -> str:
    """The issue's targets, each with what was measured and whether it is met."""
    lines = ["| scenario | target | measured | met |", "|---|---|---|---|"]
    for scenario, results in runs:
        learned = _pooled(results, "learned")
        p, half = _rate(learned)
        wrong_flags = sum(r.false_flag_checks for r in results)
        checks = sum(r.checks for r in results)
        flagged = sum(r.flagged_at_warmup == scenario.correlated for r in results)
        if scenario.goal == "match":
            diff, dhalf = _paired(learned, _pooled(results, "true weighted"))
            target = "learned weighted within 1 point of weighted with the true accuracies"
            measured = f"{100 * diff:+.1f} ± {_pct(dhalf)} points (paired)"
            met = abs(diff) <= 0.01
        elif scenario.goal == "best":
            best, bhalf = _rate(_pooled(results, "best single"))
            target = "at least the best single model; the clones flagged"
            measured = (
                f"{_pct(p)} ± {_pct(half)} % vs {_pct(best)} ± {_pct(bhalf)} %; clones "
                f"flagged at the warm-up in {flagged} of {len(results)} seeds"
            )
            met = p >= best and flagged == len(results)
        elif scenario.goal == "theory":
            theory = _theory(scenario, options.distractors)
            target = "no worse than independent-member theory - 2 points; the clone flagged"
            measured = (
                f"{_pct(p)} ± {_pct(half)} % vs theory {_pct(theory)} % (the four distinct "
                f"members); flagged at the warm-up in {flagged} of {len(results)} seeds"
            )
            met = p >= theory - 0.02 and flagged == len(results)
        elif scenario.goal == "voting":
            diff, dhalf = _paired(learned, _pooled(results, "voting"))
            target = "no worse than plain voting; no pair flagged"
            measured = (
                f"{100 * diff:+.1f} ± {_pct(dhalf)} points vs voting (paired); "
                f"{wrong_flags} of {checks} checks with a flag"
            )
            met = diff + dhalf >= 0 and wrong_flags == 0
        else:
            followed = [r.followed_after for r in results if r.followed_after is not None]
            target = "its learned accuracy follows within a stated number of questions"
            if followed:
                measured = (
                    f"within ±0.05 of 0.5 after {statistics.median(followed):.0f} questions "
                    f"(median; p90 {_quantile(followed, 0.9):.0f}), in {len(followed)} of "
                    f"{len(results)} seeds"
                )
            else:
                measured = "never within ±0.05"
            met = len(followed) >= 0.9 * len(results)
        lines.append(f"| {scenario.name} | {target} | {measured} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def accuracy_table(runs: Sequence[tuple[Scenario, list[SeedResult]]], options: Options) -> str:
    k = options.distractors
    lines = [
        "| scenario | learned % | true weighted % | voting % | best single % "
        "| learned - true weighted (paired) | theory, distinct members % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, results in runs:
        pooled = {
            name: [x for r in results for x in r.correct[name]] for name in results[0].correct
        }
        cells = []
        for name in ("learned", "true weighted", "voting", "best single"):
            p, half = _rate(pooled[name])
            cells.append(f"{_pct(p)} ± {_pct(half)}")
        diff, half = _paired(pooled["learned"], pooled["true weighted"])
        theory = _pct(_theory(scenario, k)) if scenario.change_at is None else "-"
        lines.append(
            f"| {scenario.name} | {' | '.join(cells)} | {100 * diff:+.1f} ± {_pct(half)} "
            f"| {theory} |"
        )
    return "\n".join(lines)


def learned_table(runs: Sequence[tuple[Scenario, list[SeedResult]]]) -> str:
    lines = [
        "| scenario | member | true | learned after warm-up | learned at the end "
        "| end interval (mean) | true inside it |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    inside_all = total_all = 0
    for scenario, results in runs:
        for member in scenario.members:
            name = member.name
            truth = results[0].true_at_end[name]
            warm = [r.learned_at_warmup[name][0] for r in results if r.learned_at_warmup]
            end = [r.learned_at_end[name] for r in results]
            low = statistics.fmean(e[1] for e in end)
            high = statistics.fmean(e[2] for e in end)
            hits = sum(e[1] <= truth <= e[2] for e in end)
            inside_all += hits
            total_all += len(end)
            inside = hits / len(end)
            warm_cell = (
                f"{statistics.fmean(warm):.3f} ± {statistics.pstdev(warm):.3f}" if warm else "-"
            )
            end_mean = statistics.fmean(e[0] for e in end)
            end_sd = statistics.pstdev(e[0] for e in end)
            lines.append(
                f"| {scenario.name} | {name} | {truth:.2f} | {warm_cell} "
                f"| {end_mean:.3f} ± {end_sd:.3f} | [{low:.3f}, {high:.3f}] "
                f"| {100 * inside:.0f} % |"
            )
    lines.append(
        f"| all | | | | | | {100 * inside_all / total_all:.0f} % ({inside_all} of {total_all}) |"
    )
    return "\n".join(lines)


def convergence_table(runs: Sequence[tuple[Scenario, list[SeedResult]]], options: Options) -> str:
    lines = [
        "| scenario | questions until all learned and within ±0.05: median | p90 | never "
        "| later checks all within | clones flagged by question: median | max "
        "| flags right at warm-up | checks with a wrong flag | change alarms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, results in runs:
        if scenario.change_at is not None:
            continue
        reached = [r.converged_at for r in results if r.converged_at is not None]
        never = len(results) - len(reached)
        median = f"{statistics.median(reached):.0f}" if reached else "-"
        p90 = f"{_quantile(reached, 0.9):.0f}" if reached else "-"
        if scenario.correlated:
            flagged = [r.clones_flagged_at for r in results if r.clones_flagged_at is not None]
            clone_median = f"{statistics.median(flagged):.0f}" if flagged else "never"
            clone_max = f"{max(flagged)}" if len(flagged) == len(results) else "never (some)"
        else:
            clone_median = clone_max = "-"
        right = sum(r.flagged_at_warmup == scenario.correlated for r in results)
        wrong = sum(r.false_flag_checks for r in results)
        checks = sum(r.checks for r in results)
        within = sum(r.within_checks for r in results) / checks
        changes = sum(r.changes for r in results)
        lines.append(
            f"| {scenario.name} | {median} | {p90} | {never} of {len(results)} "
            f"| {100 * within:.0f} % | {clone_median} | {clone_max} | {right} of {len(results)} "
            f"| {wrong} of {checks} | {changes} |"
        )
    return "\n".join(lines)


def drop_table(scenario: Scenario, results: Sequence[SeedResult], options: Options) -> str:
    followed = [r.followed_after for r in results if r.followed_after is not None]
    half_life = options.settings.half_life
    lines = [
        "| measure | value |",
        "|---|---:|",
        f"| questions after the drop until the learned accuracy stays within ±0.05 of 0.5: "
        f"median | {statistics.median(followed):.0f} |"
        if followed
        else "| followed | never |",
        f"| the same, p90 | {_quantile(followed, 0.9):.0f} |" if followed else "",
        f"| seeds where it never did | {len(results) - len(followed)} of {len(results)} |",
        f"| change alarms, all members, per seed | "
        f"{sum(r.changes for r in results) / len(results):.1f} |",
        f"| half_life | {half_life:g} questions |",
    ]
    return "\n".join(line for line in lines if line)


def cpu_table(runs: Sequence[tuple[Scenario, list[SeedResult]]]) -> str:
    lines = [
        "| scenario | observe µs median | p99 | view µs median | p99 | both, mean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for scenario, results in runs:
        observe = [x for r in results for x in r.observe_us]
        view = [x for r in results for x in r.view_us]
        mean = statistics.fmean(o + v for o, v in zip(observe, view, strict=True))
        lines.append(
            f"| {scenario.name} | {statistics.median(observe):.1f} "
            f"| {_quantile(observe, 0.99):.1f} | {statistics.median(view):.1f} "
            f"| {_quantile(view, 0.99):.1f} | {mean:.1f} |"
        )
    return "\n".join(lines)


def upstream_cpu_table(options: Options, samples: int = 2000) -> str:
    """What trust adds to one ensemble in the upstream, against what voting already does.

    Five quiz answers in varied real-model formats (``demo.quiz.render``), 0.7 accurate,
    one key. Baseline: voting's tally of them (extraction and grouping). Trust, in the
    order the upstream runs it: the weight plan read before the ensemble (the key's view,
    refitted every ``refit_every`` ensembles, amortised in the mean), the observation
    from the strategy's own groups (what the upstream does), and counting it. For
    comparison: the observation grouping the answers again (before the groups were
    handed over).
    """
    rng = random.Random(1)
    names = [f"m{i}" for i in range(5)]
    service = TrustService(options.settings, dict.fromkeys(names), 0.9, "bench")
    timings: dict[str, list[float]] = {
        "tally": [],
        "plan": [],
        "observation": [],
        "observe": [],
        "regrouped": [],
    }
    for i, problem in enumerate(quiz.generate(samples, seed=1)):
        wrong = list(problem.distractors)
        candidates = [
            Candidate(
                name,
                Status.OK,
                {
                    "role": "assistant",
                    "content": quiz.render(
                        problem,
                        problem.correct if rng.random() < 0.7 else rng.choice(wrong),
                        rng.randrange(quiz.STYLE_COUNT),
                    ),
                },
                "stop",
            )
            for name in names
        ]
        t0 = time.perf_counter()
        service.weights(None, names, {})
        t1 = time.perf_counter()
        grouped = names_of(tally(candidates, names, 0.9))
        t2 = time.perf_counter()
        seen = observation(candidates, 0.9, f"c{i % CLIENTS}", grouped)
        t3 = time.perf_counter()
        service.book.observe(set_key(names), names, seen)
        t4 = time.perf_counter()
        observation(candidates, 0.9, f"c{i % CLIENTS}")
        t5 = time.perf_counter()
        took = {
            "plan": t1 - t0,
            "tally": t2 - t1,
            "observation": t3 - t2,
            "observe": t4 - t3,
            "regrouped": t5 - t4,
        }
        for name, seconds in took.items():
            timings[name].append(seconds * 1e6)
    base = statistics.fmean(timings["tally"])
    lines = [
        "| step | µs median | p99 | mean | mean / voting's tally |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "tally": "baseline: voting's tally of the 5 answers",
        "plan": "trust: the weight plan (view, refit amortised)",
        "observation": "trust: the observation, from the tally's groups",
        "observe": "trust: observe",
        "regrouped": "(for comparison: the observation grouping again)",
    }
    for name, values in timings.items():
        mean = statistics.fmean(values)
        lines.append(
            f"| {labels[name]} | {statistics.median(values):.1f} | {_quantile(values, 0.99):.1f} "
            f"| {mean:.1f} | {mean / base:.2f} |"
        )
    total = sum(statistics.fmean(timings[n]) for n in ("plan", "observation", "observe"))
    lines.append(f"| trust, all three | | | {total:.1f} | {total / base:.2f} |")
    return "\n".join(lines)


def report(options: Options, progress: bool = True) -> str:
    total = options.warmup + options.questions
    scenarios = [*SCENARIOS, drop_scenario(total)]
    runs: list[tuple[Scenario, list[SeedResult]]] = []
    for scenario in scenarios:
        started = time.monotonic()
        results = [
            run_scenario(
                scenario,
                seed,
                options.settings,
                options.warmup,
                options.questions,
                options.distractors,
            )
            for seed in range(1, options.seeds + 1)
        ]
        runs.append((scenario, results))
        if progress:
            print(f"{scenario.name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    s = options.settings
    header = (
        f"Learned trust, simulated: {options.seeds} seeds x ({options.warmup} warm-up + "
        f"{options.questions} measured questions); wrong answers spread over "
        f"{options.distractors} distractors; {CLIENTS} clients. Settings: half_life "
        f"{s.half_life:g}, min_evidence {s.min_evidence:g}, prior {s.default_accuracy:g} "
        f"(strength {s.prior_strength:g}), c learned (prior {s.wrong_agreement_prior:g}), "
        f"flag_z {s.flag_z:g}, min_excess {s.min_excess:g}, refit_every {s.refit_every}."
    )
    drop, drop_results = runs[-1]
    return "\n\n".join(
        [
            header,
            "Targets of the issue:",
            targets_table(runs, options),
            "Accuracy after the warm-up (pooled over seeds, 95 % intervals):",
            accuracy_table(runs, options),
            "Learned accuracies (mean ± sd over seeds):",
            learned_table(runs[:-1]),
            "Convergence and flags (checked every 25 questions):",
            convergence_table(runs, options),
            f"A member dropping from 0.9 to 0.5 at question {drop.change_at}:",
            drop_table(drop, drop_results, options),
            "CPU per ensemble (this process, pure Python; 'view' refits every "
            f"{s.refit_every} observations):",
            cpu_table(runs),
            "CPU per ensemble in the upstream's terms: five quiz answers in real-model formats, "
            f"{2000} ensembles, one thread, back to back:",
            upstream_cpu_table(options),
        ]
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust_sim", description=__doc__)
    parser.add_argument("--seeds", type=_positive, default=20)
    parser.add_argument("--warmup", type=_positive, default=500)
    parser.add_argument("--questions", type=_positive, default=2000)
    parser.add_argument("--distractors", type=_positive, default=3)
    parser.add_argument("--half-life", type=float, default=TrustSettings().half_life)
    parser.add_argument("--change-threshold", type=float, default=TrustSettings().change_threshold)
    args = parser.parse_args(argv)
    settings = TrustSettings(
        enabled=True, half_life=args.half_life, change_threshold=args.change_threshold
    )
    options = Options(args.seeds, args.warmup, args.questions, args.distractors, settings)
    print(report(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
