"""What the strategies will use: accuracies with their source, correlation multipliers,
independent voices, and the ``ensemble.weights`` details."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc.trust.weights import alternatives_of, log_odds, plan_weights
from trust_sim import trust_view as view

CLONES = view(
    {"strong": 0.8, "good": 0.7, "c1": 0.6, "c2": 0.6, "c3": 0.6},
    [("c1", "c2", 1.0), ("c1", "c3", 1.0), ("c2", "c3", 1.0)],
)


def test_three_clones_share_one_vote() -> None:
    plan = plan_weights(CLONES, ["strong", "good", "c1", "c2", "c3"], {})
    assert plan.multiplier("strong") == 1.0
    assert plan.multiplier("good") == 1.0
    for clone in ("c1", "c2", "c3"):
        assert plan.multiplier(clone) == pytest.approx(1 / 3)
    assert plan.voices(["c1", "c2", "c3"]) == 1
    assert plan.voices(["c1", "c2", "strong"]) == 2
    assert plan.groups == (("c1", "c2", "c3"),)


def test_only_the_members_of_this_ensemble_count() -> None:
    """An ensemble that asks one clone only: it is a full vote there."""
    plan = plan_weights(CLONES, ["strong", "c1"], {})
    assert plan.multiplier("c1") == 1.0
    assert plan.groups == ()
    two = plan_weights(CLONES, ["strong", "c1", "c2"], {})
    assert two.multiplier("c1") == pytest.approx(0.5)


def test_sources_learned_configured_weight() -> None:
    partly = view({"a": 0.9, "b": 0.6}, learned=False)
    plan = plan_weights(partly, ["a", "b", "c"], {"a": 0.85})
    assert (plan.accuracy("a"), plan.source("a")) == (0.85, "configured")
    # Not learned yet, nothing configured: the learner's prior (default_accuracy).
    assert (plan.accuracy("b"), plan.source("b")) == (0.7, "default")
    assert plan.source("c") == "weight"  # not in the key at all
    configured = plan_weights(partly, ["a", "b"], {"a": 0.85}, learned=False)
    assert (configured.accuracy("b"), configured.source("b")) == (None, "weight")
    learned = plan_weights(view({"a": 0.9, "b": 0.6}), ["a", "b"], {"a": 0.85})
    assert (learned.accuracy("a"), learned.source("a")) == (0.9, "learned")
    off = plan_weights(view({"a": 0.9, "b": 0.6}), ["a", "b"], {"a": 0.85}, learned=False)
    assert off.source("a") == "configured"


def test_no_view_yet_means_configured_or_weight_and_independent() -> None:
    plan = plan_weights(None, ["a", "b"], {"a": 0.8})
    assert plan.key is None
    assert plan.multiplier("a") == plan.multiplier("b") == 1.0
    assert plan.voices(["a", "b"]) == 2


def test_correlation_can_be_ignored() -> None:
    plan = plan_weights(CLONES, ["c1", "c2", "c3"], {}, correlation=False)
    assert all(plan.multiplier(m) == 1.0 for m in ("c1", "c2", "c3"))
    assert plan.voices(["c1", "c2", "c3"]) == 3


def test_details_say_which_weights_and_where_they_came_from() -> None:
    plan = plan_weights(CLONES, ["strong", "c1", "c2"], {})
    details = plan.details({"strong": 2.48, "c1": 0.75, "c2": 0.75})
    assert details["source"] == "learned"
    assert details["trust_key"] == "profile:p"
    assert details["groups"] == [["c1", "c2"]]
    assert details["members"]["strong"] == {
        "weight": 2.48,
        "accuracy": 0.8,
        "interval": [0.77, 0.83],
        "source": "learned",
        "multiplier": 1.0,
    }
    assert details["members"]["c1"]["multiplier"] == 0.5
    mixed = plan_weights(None, ["a", "b"], {"a": 0.8}).details()
    assert mixed["source"] == "mixed"
    assert "weight" not in mixed["members"]["a"]


names = st.sampled_from(["a", "b", "c", "d", "e"])


@given(
    kappas=st.dictionaries(
        st.tuples(names, names).filter(lambda p: p[0] < p[1]), st.floats(0.0, 1.0), max_size=10
    )
)
def test_multipliers_are_shares_of_a_vote(kappas: dict[tuple[str, str], float]) -> None:
    """Every multiplier is in (0, 1]; 1 exactly for members in no flagged pair; a group of
    members that all agree always (kappa 1 between every two) sums to one vote."""
    members = {m: 0.7 for m in "abcde"}
    v = view(members, [(a, b, k) for (a, b), k in kappas.items()])
    plan = plan_weights(v, list(members), {})
    flagged = {m for pair in kappas for m in pair}
    for m in members:
        assert 0 < plan.multiplier(m) <= 1
        if m not in flagged:
            assert plan.multiplier(m) == 1.0
    assert 1 <= plan.voices(members) <= len(members)


@given(size=st.integers(2, 5))
def test_a_clique_of_clones_is_one_vote(size: int) -> None:
    members = [f"m{i}" for i in range(size)]
    v = view(
        dict.fromkeys(members, 0.6), [(a, b, 1.0) for a, b in itertools.combinations(members, 2)]
    )
    plan = plan_weights(v, members, {})
    assert sum(plan.multiplier(m) for m in members) == pytest.approx(1.0)
    assert plan.voices(members) == 1


def test_log_odds_and_learned_alternatives() -> None:
    assert log_odds(0.75, 3) == pytest.approx(math.log(9))
    assert log_odds(1.0) == pytest.approx(math.log(99))  # clipped, as strategies/weighted.py
    assert alternatives_of(None, None) is None
    assert alternatives_of(None, 4) == 4
    # The largest k the data support: 1 / the low end of c's interval (0.25 - 0.05).
    assert alternatives_of(view({"a": 0.7}, c=0.25), None) == pytest.approx(5)
    assert alternatives_of(view({"a": 0.7}, c=0.04), None) is None  # c's interval reaches 0
    assert alternatives_of(view({"a": 0.7}, c=0.25, c_learned=False), None) is None
    plan = plan_weights(view({"a": 0.7}, c=0.25), ["a"], {})
    assert plan.alternatives(None) == pytest.approx(5)
    assert plan.alternatives_source(None) == "learned"
    assert plan.alternatives(3) == 3
    assert plan.alternatives_source(3) == "configured"
    assert plan_weights(None, ["a"], {}).alternatives(None) is None
    # Weights configured: k is not learned either.
    assert (
        plan_weights(view({"a": 0.7}, c=0.25), ["a"], {}, learned=False).alternatives(None) is None
    )
    # ensemble.trust.alternatives: k is known, c is not learned.
    fixed = plan_weights(view({"a": 0.7}, c_learned=False), ["a"], {}, fixed_alternatives=3)
    assert (fixed.alternatives(None), fixed.alternatives_source(None)) == (3, "configured")
