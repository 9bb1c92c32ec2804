"""The one-coin estimate from agreement: recovery, intervals, priors, correlated members."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc.answers.grouping import components
from ensemble_extproc.trust.fit import Prior, fit
from ensemble_extproc.trust.model import Observation, Source, TrustSettings
from ensemble_extproc.trust.stats import KeyStats, Totals
from trust_sim import answers, exact_totals, stream

SETTINGS = TrustSettings(enabled=True)


def priors(totals: Totals, p: float = 0.7, source: Source = Source.DEFAULT) -> dict[str, Prior]:
    return {m: Prior(p, source) for m in totals.members}


def learn(
    accuracies: dict[str, float],
    seed: int,
    count: int,
    clones: dict[str, str] | None = None,
    settings_: TrustSettings = SETTINGS,
) -> Totals:
    members = [*accuracies, *(clones or {})]
    stats = KeyStats(members, settings_.decay, settings_.client_cap)
    for observation in stream(accuracies, seed, count, clones):
        stats.add(observation, settings_.max_clients)
    return stats.totals()


@settings(max_examples=200, deadline=None)
@given(
    accuracies=st.lists(st.floats(0.55, 0.95), min_size=3, max_size=6),
    c=st.floats(0.05, 0.5),
    learn_c=st.booleans(),
)
def test_exact_rates_give_back_the_accuracies(
    accuracies: list[float], c: float, learn_c: bool
) -> None:
    """With the rates of infinitely many questions, the fit returns the true accuracies
    (c learned from the triples, or given as 1/k)."""
    if not learn_c:
        k = max(1, round(1 / c))
        c = 1 / k
    settings_ = TrustSettings(enabled=True, alternatives=None if learn_c else k)
    totals = exact_totals(accuracies, c)
    result = fit(totals, priors(totals), settings_)
    for name, p in zip(totals.members, accuracies, strict=True):
        assert result.view.members[name].accuracy == pytest.approx(p, abs=2e-3)
    view = result.view
    if learn_c:
        # Identified by the wrong answers only: with strong members there are few, and the
        # interval says how well c is known.
        assert view.wrong_agreement_low - 1e-3 <= c <= view.wrong_agreement_high + 1e-3
    else:
        assert view.wrong_agreement == c
    assert not view.flagged


def test_with_no_evidence_the_prior_is_the_answer() -> None:
    totals = Totals(("a", "b", "c"), {}, {}, {}, {})
    result = fit(totals, priors(totals, 0.8, Source.CONFIGURED), SETTINGS)
    for estimate in result.view.members.values():
        assert estimate.accuracy == pytest.approx(0.8)
        assert not estimate.learned
        assert estimate.evidence == pytest.approx(0.0, abs=1e-6)
        assert estimate.used == 0.8
        assert estimate.source is Source.CONFIGURED


def test_two_members_alone_never_become_learned() -> None:
    """p_a p_b + c (1-p_a)(1-p_b) is one equation for two unknowns: however much data,
    the interval stays as wide as the prior's, and the configured accuracy stays in use."""
    totals = learn({"a": 0.9, "b": 0.6}, seed=1, count=5000)
    result = fit(totals, priors(totals), SETTINGS)
    assert not any(e.learned for e in result.view.members.values())


def test_three_independent_members_are_learned_with_intervals_around_the_truth() -> None:
    truth = {"a": 0.85, "b": 0.7, "c": 0.6}
    totals = learn(truth, seed=3, count=3000)
    view = fit(totals, priors(totals), SETTINGS).view
    for name, p in truth.items():
        estimate = view.members[name]
        assert estimate.learned
        assert estimate.low <= p <= estimate.high
        assert estimate.high - estimate.low < 0.15
        assert estimate.evidence >= SETTINGS.min_evidence


def test_interval_coverage_over_seeds() -> None:
    """The 95 % intervals hold the truth about as often as they say (pair and triple
    rates share questions; the sandwich covariance accounts for it)."""
    truth = {"a": 0.9, "b": 0.6, "c": 0.6, "d": 0.6, "e": 0.6}
    inside = total = 0
    for seed in range(30):
        totals = learn(truth, seed=seed, count=2000)
        view = fit(totals, priors(totals), SETTINGS).view
        for name, p in truth.items():
            inside += view.members[name].low <= p <= view.members[name].high
            total += 1
    assert inside / total >= 0.88


def test_five_independent_equal_members_flag_nothing() -> None:
    truth = {f"m{i}": 0.7 for i in range(5)}
    for seed in range(40):
        totals = learn(truth, seed=seed, count=1500)
        view = fit(totals, priors(totals), SETTINGS).view
        assert not view.flagged, (seed, view.flagged)


@pytest.mark.parametrize("seed", range(8))
def test_three_clones_are_one_group_and_the_others_keep_their_accuracy(seed: int) -> None:
    """Three names for one 0.6 model agree on every answer: their pairs are flagged, not
    the pair of independent members (which is what a pair-by-pair search picks: the
    clones then look perfect)."""
    truth = {"strong": 0.8, "good": 0.7, "clone-a": 0.6}
    clones = {"clone-b": "clone-a", "clone-c": "clone-a"}
    totals = learn(truth, seed=seed, count=1500, clones=clones)
    view = fit(totals, priors(totals), SETTINGS).view
    assert view.groups == (("clone-a", "clone-b", "clone-c"),)
    assert {frozenset((p.a, p.b)) for p in view.flagged} == {
        frozenset(("clone-a", "clone-b")),
        frozenset(("clone-a", "clone-c")),
        frozenset(("clone-b", "clone-c")),
    }
    for pair in view.flagged:
        assert pair.kappa > 0.95
        assert pair.excess > 0.5
    for name, p in {**truth, "clone-b": 0.6, "clone-c": 0.6}.items():
        estimate = view.members[name]
        # Within twice its 95 % half-width (about 4 standard errors): a sure bound.
        assert abs(estimate.accuracy - p) <= estimate.high - estimate.low


def test_a_clone_pair_among_four_independent_members_is_flagged() -> None:
    truth = {"a": 0.75, "b": 0.7, "c": 0.65, "d": 0.6}
    totals = learn(truth, seed=5, count=1500, clones={"d-copy": "d"})
    view = fit(totals, priors(totals), SETTINGS).view
    assert view.groups == (("d", "d-copy"),)


def test_partly_correlated_members_are_flagged_with_a_smaller_kappa() -> None:
    """Two fine-tunes of one base: independent answers, except that half of the time the
    second copies the first (right or wrong)."""
    truth = {"a": 0.8, "b": 0.7, "c": 0.7, "d": 0.65, "e": 0.65}
    rng = random.Random(11)
    stats = KeyStats(list(truth), SETTINGS.decay, SETTINGS.client_cap)
    for _ in range(3000):
        answer = answers(truth, rng)
        if rng.random() < 0.5:
            answer["e"] = answer["d"]
        stats.add(Observation(answer, client=f"c{rng.randrange(100)}"), 4096)
    view = fit(stats.totals(), priors(stats.totals()), SETTINGS).view
    assert [(p.a, p.b) for p in view.flagged] == [("d", "e")]
    assert 0.2 < view.flagged[0].kappa < 0.8


def test_one_client_alone_cannot_switch_a_member_to_learned() -> None:
    truth = {"a": 0.85, "b": 0.7, "c": 0.6}
    settings_ = TrustSettings(enabled=True, max_client_share=1.0)
    stats = KeyStats(list(truth), settings_.decay, settings_.client_cap)
    for observation in stream(truth, seed=2, count=3000, clients=1):
        stats.add(observation, settings_.max_clients)
    totals = stats.totals()
    assert totals.top_client_share == pytest.approx(1.0)
    view = fit(totals, priors(totals), settings_).view
    # max_client_share 1 means "one client may be everyone": then it may.
    assert all(e.learned for e in view.members.values())
    strict = TrustSettings(enabled=True, max_client_share=0.2)
    view = fit(totals, priors(totals), strict).view
    assert not any(e.learned for e in view.members.values())


def test_groups_are_connected_components() -> None:
    assert components([("a", "b"), ("b", "c"), ("d", "e")]) == (("a", "b", "c"), ("d", "e"))
    assert components([]) == ()


def test_the_fit_is_a_pure_function_of_the_statistics() -> None:
    totals = learn({"a": 0.8, "b": 0.7, "c": 0.6, "d": 0.6}, seed=9, count=800)
    first = fit(totals, priors(totals), SETTINGS)
    second = fit(totals, priors(totals), SETTINGS)
    assert first == second
    warm = fit(totals, priors(totals), SETTINGS, start=first)
    for name in totals.members:
        assert warm.view.members[name].accuracy == pytest.approx(
            first.view.members[name].accuracy, abs=1e-4
        )
