"""The live trust benchmark's harness: its scenarios, its measures, and a short real run."""

from __future__ import annotations

import pytest
from bench.trust_live import SCENARIOS, Look, Watch, run_live
from bench.trust_live_report import _converged_at, _followed_after, theory


def test_clones_are_the_members_of_one_group() -> None:
    clones = next(s for s in SCENARIOS if s.goal == "best")
    assert clones.correlated == {
        frozenset({"q60", "q60-copy1"}),
        frozenset({"q60", "q60-copy2"}),
        frozenset({"q60-copy1", "q60-copy2"}),
    }
    assert [m.name for m in clones.distinct] == ["q80", "q70", "q60"]
    assert clones.best.name == "q80"
    # The best any aggregation can do: the three distinct members, optimally weighted.
    assert theory(clones) == pytest.approx(0.852, abs=0.001)
    labels = [row.label for row in clones.learning_rows()]
    assert labels == [
        "learned weighted",
        "voting, trust on",
        "voting, trust on, early stop",
        "cascade, trust on",
    ]


def look(samples: int, accuracies: dict[str, float], learned: bool = True) -> Look:
    members = {m: (a, a - 0.05, a + 0.05, learned) for m, a in accuracies.items()}
    return Look(samples, members, frozenset(), 1 / 3)


def test_convergence_counts_from_the_look_after_which_every_member_stays_close() -> None:
    equal = next(s for s in SCENARIOS if s.goal == "voting")
    names = [m.name for m in equal.members]
    watch = Watch(
        [
            look(50, dict.fromkeys(names, 0.65), learned=False),  # close but not used yet
            look(100, dict.fromkeys(names, 0.66)),
            look(150, {**dict.fromkeys(names, 0.65), names[0]: 0.75}),  # one strays
            look(200, dict.fromkeys(names, 0.64)),
            look(250, dict.fromkeys(names, 0.65)),
        ]
    )
    assert _converged_at(watch, equal) == 200


def test_following_a_model_update_is_counted_from_the_update() -> None:
    drop = next(s for s in SCENARIOS if s.goal == "follow")
    others = {m.name: 0.6 for m in drop.members if m.later is None}
    watch = Watch(
        [
            look(1000, {**others, "q90": 0.9}),
            look(1025, {**others, "q90": 0.8}),
            look(1050, {**others, "q90": 0.52}),
            look(1075, {**others, "q90": 0.6}),  # not yet: it wanders off again
            look(1100, {**others, "q90": 0.51}),
            look(1125, {**others, "q90": 0.5}),
        ],
        change_at=1000,
    )
    assert _followed_after(drop, watch) == 100


async def test_a_short_run_meets_the_equal_members_target_and_reports() -> None:
    """The harness end to end on one scenario: demo models, two upstreams, warm-up,
    looks at /admin/trust, the tables."""
    equal = next(s for s in SCENARIOS if s.goal == "voting")
    lines: list[str] = []
    text = await run_live(3, 60, 100, 16, [equal.name], progress=lines.append)
    assert lines[0].endswith("learned weighted warmed up (60 learning samples in 100 ensembles)")
    assert "| 0.65 x5, independent | no worse than plain voting; no pair flagged |" in text
    assert "a pair flagged in 0 of 8 looks" in text  # 2 keys x (2 + 2) looks
    rows = [line for line in text.splitlines() if line.startswith("| 0.65 x5, independent |")]
    accuracy = next(line for line in rows if line.count(" ± ") >= 5)
    assert accuracy.endswith("| 0 |")  # no request failed
