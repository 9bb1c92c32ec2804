"""Decayed statistics: exact decay, bounded memory, merging, the per-client cap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc.trust.model import Observation, TrustSettings
from ensemble_extproc.trust.stats import Counts, KeyStats, Totals

MEMBERS = ("a", "b", "c", "d")

observations = st.lists(
    st.builds(
        Observation,
        answers=st.dictionaries(st.sampled_from(MEMBERS), st.integers(0, 2), min_size=0),
        failed=st.frozensets(st.sampled_from(MEMBERS)),
        client=st.sampled_from(["x", "y", "z"]),
    ),
    max_size=60,
)


def naive(obs: list[Observation], decay: float) -> dict[tuple[str, ...], tuple[float, float]]:
    """Decayed (n, agree) of every pair and triple, the slow and obvious way."""
    out: dict[tuple[str, ...], tuple[float, float]] = {}
    total = len(obs)
    for t, o in enumerate(obs):
        weight = decay ** (total - 1 - t)
        present = sorted(o.answers)
        for size in (2, 3):
            for group in itertools.combinations(present, size):
                agree = len({o.answers[m] for m in group}) == 1
                n, a = out.get(group, (0.0, 0.0))
                out[group] = (n + weight, a + weight * agree)
    return out


@settings(max_examples=80, deadline=None)
@given(obs=observations, half_life=st.sampled_from([0.05, 0.3, 3.0, 500.0]))
def test_lazy_decay_equals_decaying_every_count_at_every_step(
    obs: list[Observation], half_life: float
) -> None:
    """Counters scaled up by decay^-t (and rescaled before they overflow: a half-life of
    0.05 rescales every few steps) give exactly the decayed counts."""
    decay = 2.0 ** (-1.0 / half_life)
    stats = KeyStats(MEMBERS, decay, client_cap=1e9)
    for o in obs:
        stats.add(o, max_clients=100)
    totals = stats.totals()
    expected = naive(obs, decay)
    got = {**totals.pairs, **totals.triples}
    assert set(got) == set(expected)
    for group, (n, agree) in expected.items():
        assert got[group].n == pytest.approx(n, rel=1e-9, abs=1e-300)
        assert got[group].agree == pytest.approx(agree, rel=1e-9, abs=1e-300)
    assert totals.mass == pytest.approx(sum(decay**k for k in range(len(obs))), rel=1e-9)


def test_evidence_one_half_life_old_weighs_half() -> None:
    settings_ = TrustSettings(half_life=100)
    stats = KeyStats(MEMBERS, settings_.decay, client_cap=1e9)
    stats.add(Observation({"a": 1, "b": 1}, client="x"), 10)
    for i in range(100):
        stats.add(Observation({"c": 1, "d": 2}, client=f"y{i}"), 1000)
    assert stats.totals().pairs[("a", "b")].n == pytest.approx(0.5)
    assert stats.totals().pairs[("c", "d")].n < settings_.full_mass


def test_memory_is_bounded_whatever_the_traffic() -> None:
    stats = KeyStats(MEMBERS, 0.99, client_cap=1e9)
    for i in range(5000):
        stats.add(Observation({m: i % 3 for m in MEMBERS}, client=f"client-{i}"), 50)
    totals = stats.totals()
    assert len(totals.pairs) == 6
    assert len(totals.triples) == 4
    assert len(stats._clients) == 50  # bounded by max_clients
    assert totals.mass <= 1 / (1 - 0.99) + 1e-9


def totals_strategy() -> st.SearchStrategy[Totals]:
    count = st.floats(0, 1000)

    def build(values: list[float]) -> Totals:
        pairs = {
            p: Counts(values[i], values[i] ** 2 / 10, values[i] / 2)
            for i, p in enumerate(itertools.combinations(MEMBERS, 2))
        }
        return Totals(MEMBERS, dict.fromkeys(MEMBERS, values[0]), {}, pairs, {}, sum(values))

    return st.lists(count, min_size=6, max_size=6).map(build)


@given(a=totals_strategy(), b=totals_strategy(), c=totals_strategy())
def test_merging_adds_counts_and_is_commutative_and_associative(
    a: Totals, b: Totals, c: Totals
) -> None:
    ab = a.merged(b)
    assert ab.pairs.keys() == a.pairs.keys()
    for key in ab.pairs:
        assert ab.pairs[key].n == pytest.approx(a.pairs[key].n + b.pairs[key].n)
        assert ab.pairs[key].agree == pytest.approx(a.pairs[key].agree + b.pairs[key].agree)
    assert ab.mass == pytest.approx(a.mass + b.mass)
    for key in ab.pairs:
        assert b.merged(a).pairs[key].n == pytest.approx(ab.pairs[key].n)
        left = a.merged(b).merged(c).pairs[key]
        right = a.merged(b.merged(c)).pairs[key]
        assert left.n == pytest.approx(right.n)
        assert left.agree == pytest.approx(right.agree)


def test_merging_two_replicas_counts_what_each_saw() -> None:
    """Two replicas that each saw half the questions: merged, as many questions as one
    replica that saw all (in decayed units, each replica's own clock)."""
    left = KeyStats(MEMBERS, 1.0 - 1e-12, client_cap=1e9)
    right = KeyStats(MEMBERS, 1.0 - 1e-12, client_cap=1e9)
    both = KeyStats(MEMBERS, 1.0 - 1e-12, client_cap=1e9)
    for i in range(200):
        o = Observation({"a": i % 2, "b": 0, "c": i % 3}, client=f"c{i}")
        (left if i % 2 else right).add(o, 1000)
        both.add(o, 1000)
    merged = left.totals().merged(right.totals())
    for key, counts in both.totals().pairs.items():
        assert merged.pairs[key].n == pytest.approx(counts.n, rel=1e-6)
        assert merged.pairs[key].agree == pytest.approx(counts.agree, rel=1e-6)


def test_a_client_never_holds_more_than_its_cap() -> None:
    settings_ = TrustSettings(half_life=200, max_client_share=0.1)
    stats = KeyStats(MEMBERS, settings_.decay, settings_.client_cap)
    accepted = sum(
        stats.add(Observation({"a": 0, "b": 0}, client="greedy"), 100) for _ in range(10_000)
    )
    assert stats.client_mass("greedy") <= settings_.client_cap + 1e-9
    # Refused observations do not advance the decay: the key holds only what was accepted.
    assert stats.observations == accepted
    assert stats.rejected == 10_000 - accepted
    assert stats.mass == pytest.approx(stats.client_mass("greedy"))


def test_refused_observations_cannot_wash_out_other_clients() -> None:
    settings_ = TrustSettings(half_life=200, max_client_share=0.1)
    stats = KeyStats(MEMBERS, settings_.decay, settings_.client_cap)
    for i in range(2000):
        stats.add(Observation({"a": 0, "b": 1}, client=f"honest-{i % 50}"), 1000)
    honest = stats.totals().pairs[("a", "b")].n
    for _ in range(100_000):
        stats.add(Observation({"a": 0, "b": 0}, client="flood"), 1000)
    pair = stats.totals().pairs[("a", "b")]
    # Until the flood reaches its cap, each of its accepted observations decays the rest:
    # decay^t = 1 - max_client_share when its mass reaches the cap, so the honest mass
    # keeps at least (1 - max_client_share) of itself.
    assert pair.n - stats.client_mass("flood") >= honest * (1 - settings_.max_client_share)
    assert pair.agree <= settings_.client_cap + 1e-9  # only the flood agreed


def test_forgetting_a_member_keeps_a_share_of_its_evidence() -> None:
    stats = KeyStats(MEMBERS, 0.999, client_cap=1e9)
    for i in range(100):
        stats.add(Observation({"a": 0, "b": 0, "c": i % 2}, client=f"c{i}"), 1000)
    before = stats.totals()
    stats.forget("a", 0.25)
    after = stats.totals()
    assert after.pairs[("a", "b")].n == pytest.approx(before.pairs[("a", "b")].n * 0.25)
    assert after.pairs[("a", "b")].rate == pytest.approx(before.pairs[("a", "b")].rate)
    assert after.pairs[("b", "c")] == before.pairs[("b", "c")]
    assert after.triples[("a", "b", "c")].n == pytest.approx(
        before.triples[("a", "b", "c")].n * 0.25
    )
