"""What the strategies will use: accuracies with their source, correlation multipliers,
independent voices, and the ``ensemble.weights`` details."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc.trust.fit import groups_of_names
from ensemble_extproc.trust.model import MemberEstimate, PairEstimate, Source, TrustView
from ensemble_extproc.trust.weights import alternatives_of, log_odds, plan_weights


def estimate(model: str, accuracy: float, learned: bool = True) -> MemberEstimate:
    return MemberEstimate(
        model=model,
        accuracy=accuracy,
        low=accuracy - 0.03,
        high=accuracy + 0.03,
        evidence=500.0 if learned else 0.0,
        prior=0.7,
        prior_source=Source.DEFAULT,
        learned=learned,
        answered=1000.0,
        failed=0.0,
    )


def pair(a: str, b: str, kappa: float, flagged: bool = True) -> PairEstimate:
    expected = 0.4
    return PairEstimate(a, b, expected + kappa * (1 - expected), expected, 900.0, 20.0, flagged)


def view(
    members: dict[str, float],
    flagged: list[tuple[str, str, float]] = (),  # type: ignore[assignment]
    learned: bool = True,
    c: float = 1 / 3,
) -> TrustView:
    pairs = tuple(pair(a, b, k) for a, b, k in flagged)
    return TrustView(
        key="profile:p",
        members={m: estimate(m, p, learned) for m, p in members.items()},
        pairs=pairs,
        wrong_agreement=c,
        wrong_agreement_low=c - 0.05,
        wrong_agreement_high=c + 0.05,
        wrong_agreement_learned=True,
        observations=2000,
        mass=700.0,
        top_client_share=0.02,
        client_share_bound=0.2,
        groups=groups_of_names((a, b) for a, b, _ in flagged),
    )


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
    assert (plan.accuracy("b"), plan.source("b")) == (None, "weight")
    assert plan.source("c") == "weight"
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
    assert alternatives_of(view({"a": 0.7}, c=0.25), None) == pytest.approx(4)
    plan = plan_weights(view({"a": 0.7}, c=0.25), ["a"], {})
    assert plan.alternatives(None) == pytest.approx(4)
    assert plan.alternatives(3) == 3
    assert plan_weights(None, ["a"], {}).alternatives(None) is None
