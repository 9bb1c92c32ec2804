"""The tables of bench.trust_live: targets, accuracy, learned against true, convergence."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Final

from bench.theory import plurality_accuracy
from bench.trust_live import (
    BEST,
    CASCADE,
    CLIENTS,
    DISTRACTORS,
    DROP_POLL_EVERY,
    POLL_EVERY,
    TRUE_WEIGHTED,
    VOTING,
    LiveScenario,
    ScenarioResult,
    Watch,
)
from ensemble_extproc.trust.weights import log_odds

__all__ = ["report", "theory"]

WITHIN: Final = 0.05  # "converged": learned, and within this of the truth
LEARNED: Final = "learned weighted"
TRUST_VOTING: Final = "voting, trust on"


def _rate(values: Sequence[bool]) -> tuple[float, float]:
    n = len(values)
    p = sum(values) / n if n else 0.0
    return p, 1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0


def _paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[float, float]:
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    return statistics.fmean(diffs), 1.96 * statistics.pstdev(diffs) / math.sqrt(len(diffs))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _cell(values: Sequence[bool]) -> str:
    p, half = _rate(values)
    return f"{_pct(p)} ± {_pct(half)}"


def theory(scenario: LiveScenario) -> float:
    """The best any aggregation of these answers can do in theory: the distinct members
    (clones add no information), optimally weighted ln(3 p / (1 - p)), independent."""
    distinct = [m.accuracy for m in scenario.distinct]
    return plurality_accuracy(distinct, DISTRACTORS, [log_odds(p, DISTRACTORS) for p in distinct])


def _flags_right(watch: Watch, scenario: LiveScenario, samples: int) -> bool:
    look = watch.at(samples)
    return look is not None and look.flagged == scenario.correlated


def _wrong_flags(watch: Watch, scenario: LiveScenario) -> tuple[int, int]:
    return sum(bool(look.flagged - scenario.correlated) for look in watch.looks), len(watch.looks)


def _converged_at(watch: Watch, scenario: LiveScenario) -> int | None:
    """Samples from which on every member is learned and within WITHIN (at every look)."""
    since: int | None = None
    for look in watch.looks:
        close = all(
            m.name in look.members
            and look.members[m.name][3]
            and abs(look.members[m.name][0] - m.accuracy) <= WITHIN
            for m in scenario.members
        )
        if close and since is None:
            since = look.samples
        elif not close:
            since = None
    return since


def _flagged_at(watch: Watch, scenario: LiveScenario) -> int | None:
    for look in watch.looks:
        if scenario.correlated and scenario.correlated <= look.flagged:
            return look.samples
    return None


def _followed_after(scenario: LiveScenario, watch: Watch) -> int | None:
    """Samples after the update from which on the changed member's learned accuracy
    stays within WITHIN of its new accuracy."""
    changing = scenario.changing
    if changing is None or changing.later is None or watch.change_at is None:
        return None
    since: int | None = None
    for look in watch.looks:
        if look.samples <= watch.change_at:
            continue
        near = abs(look.members[changing.name][0] - changing.later) <= WITHIN
        if near and since is None:
            since = look.samples - watch.change_at
        elif not near:
            since = None
    return since


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def targets_table(results: Sequence[ScenarioResult]) -> str:
    lines = ["| scenario | target | measured | met |", "|---|---|---|---|"]
    for result in results:
        s, rows = result.scenario, result.rows
        learned = rows[LEARNED].correct
        p, half = _rate(learned)
        watch = result.watches[LEARNED]
        warm = watch.warmed_at
        if s.goal == "match":
            diff, dhalf = _paired(learned, rows[TRUE_WEIGHTED].correct)
            target = "learned weighted within 1 point of weighted with the true accuracies"
            measured = f"{100 * diff:+.1f} ± {_pct(dhalf)} points (paired, same questions)"
            met = diff >= -0.01
        elif s.goal == "best":
            best, bhalf = _rate(rows[BEST].correct)
            voting_on, _ = _rate(rows[TRUST_VOTING].correct)
            flagged = all(_flags_right(w, s, w.warmed_at) for w in result.watches.values())
            target = "at least the best single model; the clones flagged"
            measured = (
                f"learned weighted {_pct(p)} ± {_pct(half)} %, voting with trust "
                f"{_pct(voting_on)} %; {s.best.name} alone {_pct(best)} ± {_pct(bhalf)} %; "
                f"clones flagged at the end of every key's warm-up: {_yes(flagged)}"
            )
            met = p >= best and voting_on >= best and flagged
        elif s.goal == "theory":
            bound = theory(s)
            target = "no worse than independent-member theory - 2 points; the clone flagged"
            measured = (
                f"{_pct(p)} ± {_pct(half)} % vs theory {_pct(bound)} % (the four distinct "
                f"members); flagged at the end of the warm-up: "
                f"{_yes(_flags_right(watch, s, warm))}"
            )
            met = p >= bound - 0.02 and _flags_right(watch, s, warm)
        elif s.goal == "voting":
            diff, dhalf = _paired(learned, rows[VOTING].correct)
            wrong = [_wrong_flags(w, s) for w in result.watches.values()]
            wrong_looks, looks = sum(x for x, _ in wrong), sum(y for _, y in wrong)
            target = "no worse than plain voting; no pair flagged"
            measured = (
                f"{100 * diff:+.1f} ± {_pct(dhalf)} points vs voting (paired); a pair "
                f"flagged in {wrong_looks} of {looks} looks"
            )
            met = diff + dhalf >= 0 and wrong_looks == 0
        else:
            followed = _followed_after(s, watch)
            later = s.changing.later if s.changing is not None else None
            target = "its learned accuracy follows within a stated number of questions"
            measured = (
                f"within ±{WITHIN:g} of {later} from {followed} questions after the update "
                f"on (looked at every {DROP_POLL_EVERY})"
                if followed is not None
                else f"not within ±{WITHIN:g} by the end"
            )
            met = followed is not None
        lines.append(f"| {s.name} | {target} | {measured} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)


def accuracy_table(results: Sequence[ScenarioResult]) -> str:
    labels = [LEARNED, TRUST_VOTING, TRUE_WEIGHTED, VOTING, BEST]
    lines = [
        "| scenario | " + " % | ".join(labels) + " % | theory % | learned - true (paired) "
        "| errors |",
        "|---|" + "---:|" * (len(labels) + 3),
    ]
    for result in results:
        cells = [_cell(result.rows[label].correct) for label in labels]
        diff, half = _paired(result.rows[LEARNED].correct, result.rows[TRUE_WEIGHTED].correct)
        errors = sum(a.errors for a in result.rows.values())
        bound = _pct(theory(result.scenario)) if result.change_at is None else "-"
        lines.append(
            f"| {result.scenario.name} | {' | '.join(cells)} | {bound} "
            f"| {100 * diff:+.1f} ± {_pct(half)} | {errors} |"
        )
    return "\n".join(lines)


def early_stop_table(results: Sequence[ScenarioResult]) -> str:
    """Rows that may stop early: they learn from their sampled ensembles only."""
    lines = [
        "| scenario | row | accuracy % | trust off, same row % | ensembles to reach the "
        "warm-up's samples | clones flagged at the end of the warm-up |",
        "|---|---|---:|---:|---:|---|",
    ]
    for result in results:
        s = result.scenario
        for row in s.learning_rows():
            if row.min_responses is None:
                continue
            baseline = CASCADE if row.strategy == "cascade" else VOTING
            watch = result.watches[row.label]
            lines.append(
                f"| {s.name} | {row.label} ({', '.join(row.order)}; min_responses "
                f"{row.min_responses}) | {_cell(result.rows[row.label].correct)} "
                f"| {_cell(result.rows[baseline].correct)} | {watch.ensembles_to_warm} "
                f"| {_yes(_flags_right(watch, s, watch.warmed_at))} |"
            )
    return "\n".join(lines)


def learned_table(results: Sequence[ScenarioResult]) -> str:
    lines = [
        "| scenario | member | configured true | realized on the measured questions "
        "| learned after the warm-up [95 %] | learned at the end [95 %] |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        watch = result.watches[LEARNED]
        warm = watch.at(watch.warmed_at)
        end = watch.looks[-1] if watch.looks else None
        seen = result.rows[VOTING]
        for member in result.scenario.members:
            cells = []
            for look in (warm, end):
                if look is None or member.name not in look.members:
                    cells.append("-")
                    continue
                accuracy, low, high, learned = look.members[member.name]
                mark = "" if learned else " (not used yet)"
                cells.append(f"{accuracy:.3f} [{low:.3f}, {high:.3f}]{mark}")
            truth = f"{member.accuracy:g}" + (
                f" -> {member.later:g}" if member.later is not None else ""
            )
            answered = seen.answered[member.name]
            realized = f"{seen.right[member.name] / answered:.3f}" if answered else "-"
            lines.append(
                f"| {result.scenario.name} | {member.name} | {truth} | {realized} | "
                f"{cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines)


def convergence_table(results: Sequence[ScenarioResult]) -> str:
    lines = [
        "| scenario | key (row) | every member learned and within ±0.05 from sample "
        "| clones flagged from sample | looks with a wrong flag | c at the end |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        s = result.scenario
        for label, watch in result.watches.items():
            if result.change_at is not None:
                converged_cell = "-"
            else:
                converged = _converged_at(watch, s)
                converged_cell = str(converged) if converged is not None else "not by the end"
            flagged = _flagged_at(watch, s)
            wrong, looks = _wrong_flags(watch, s)
            last = watch.looks[-1] if watch.looks else None
            c = f"{last.c:.3f}" if last is not None else "-"
            lines.append(
                f"| {s.name} | {label} | {converged_cell} "
                f"| {flagged if flagged is not None else '-'} | {wrong} of {looks} | {c} |"
            )
    return "\n".join(lines)


def weights_table(results: Sequence[ScenarioResult]) -> str:
    """What the last learned-weighted response said about its weights."""
    lines = [
        "| scenario | rule | k (source) | weights (multiplier) |",
        "|---|---|---|---|",
    ]
    for result in results:
        weights = result.rows[LEARNED].weights
        if weights is None:
            continue
        k = weights.get("alternatives")
        members = ", ".join(
            f"{model} {m.get('weight', 0):.2f}"
            + (f" (x{m['multiplier']:g})" if m.get("multiplier", 1) != 1 else "")
            for model, m in weights["members"].items()
        )
        k_cell = f"{k['value']:.2f} ({k['source']})" if k else "-"
        lines.append(f"| {result.scenario.name} | {weights.get('rule')} | {k_cell} | {members} |")
    return "\n".join(lines)


def report(
    results: Sequence[ScenarioResult],
    seed: int,
    warmup: int,
    questions: int,
    concurrency: int,
    cpu: str | None,
    cpu_questions: int,
) -> str:
    header = (
        f"Learned trust, live: per scenario, each learning row's key warmed up to {warmup} "
        f"learning samples, then {questions} measured questions (seed {seed}, concurrency "
        f"{concurrency}, {CLIENTS} API keys), through the real upstream over loopback HTTP "
        "to demo quiz models (3 wrong options per question). Trust settings: the defaults "
        "with ensemble.trust.enabled: true and weighted.weights: learned; no accuracy "
        "configured. Rows without early stop ask every member (every ensemble is a sample)."
    )
    parts = [
        header,
        "Targets of the issue:",
        targets_table(results),
        "Accuracy on the measured questions (95 % intervals):",
        accuracy_table(results),
        "Rows that may stop early (they learn from the 10 % of their ensembles that ask "
        "every member):",
        early_stop_table(results),
        "Learned accuracies (the learned-weighted key) against the true ones:",
        learned_table(results),
        f"Convergence (looked at every {POLL_EVERY} questions; counted in learning samples, "
        "the warm-up included):",
        convergence_table(results),
        "The weights of the last learned-weighted response (ensemble.details.weights):",
        weights_table(results),
    ]
    if cpu is not None:
        parts += [
            f"Upstream CPU per ensemble ({cpu_questions} questions each way after a "
            "500-question warm-up; voting over 0.9 and 0.6 x4, every member answering; the "
            "upstream as its own process):",
            cpu,
        ]
    seconds = sum(r.seconds for r in results)
    parts.append(f"Wall time of the scenarios: {seconds:.0f} s.")
    return "\n\n".join(parts)
