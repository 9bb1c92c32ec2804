"""What one ensemble teaches learned trust (trust.feed): who agreed, who failed, who is
left out; and the strategy's own groups, handed over so that answers are grouped once."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc.strategies.base import Candidate, Role, Status
from ensemble_extproc.strategies.tally import names, tally
from ensemble_extproc.trust.feed import client_identity, observation
from ensemble_extproc.trust.model import Observation


def ok(model: str, text: str) -> Candidate:
    return Candidate(model, Status.OK, {"role": "assistant", "content": text}, "stop")


def partition(seen: Observation) -> set[frozenset[str]]:
    """Who agrees with whom: the group numbers themselves mean nothing."""
    by_group: dict[int, set[str]] = {}
    for model, index in seen.answers.items():
        by_group.setdefault(index, set()).add(model)
    return {frozenset(g) for g in by_group.values()}


def test_agreement_failures_and_members_left_out() -> None:
    candidates = [
        ok("a", "The answer is 42."),
        ok("b", "\\boxed{42}"),
        ok("c", "41"),
        Candidate("d", Status.ERROR, error="HTTP 500"),
        Candidate("e", Status.OK, {"role": "assistant", "content": "x"}, "content_filter"),
        Candidate("f", Status.CANCELLED, error="cancelled: early stop"),
        Candidate("g", Status.SKIPPED, error="circuit open"),
        Candidate(
            "judge", Status.OK, {"role": "assistant", "content": "1"}, "stop", role=Role.JUDGE
        ),
    ]
    seen = observation(candidates, 0.9, "key:abc")
    assert partition(seen) == {frozenset({"a", "b"}), frozenset({"c"})}
    assert seen.failed == frozenset({"d", "e"})
    assert seen.client == "key:abc"


def test_the_strategys_groups_are_used_when_they_cover_every_answer() -> None:
    candidates = [ok("a", "7"), ok("b", "7"), ok("c", "8")]
    # Groups that disagree with the answers, to see which grouping was used.
    handed = observation(candidates, 0.9, grouped=[["a"], ["b", "c"]])
    assert partition(handed) == {frozenset({"a"}), frozenset({"b", "c"})}
    # A member that answered while the others were cancelled is not in the strategy's
    # groups: the answers are grouped again.
    late = observation([*candidates, ok("d", "8")], 0.9, grouped=[["a", "b"], ["c"]])
    assert partition(late) == {frozenset({"a", "b"}), frozenset({"c", "d"})}
    # A member twice, or one that did not answer, is not a grouping of these answers.
    for bad in ([["a", "b"], ["c"], ["c"]], [["a", "b"], ["c", "x"]]):
        regrouped = observation(candidates, 0.9, grouped=bad)
        assert partition(regrouped) == {frozenset({"a", "b"}), frozenset({"c"})}


TEXTS = ["42", "The answer is 42.", "43", "B", "(b)", "Paris", "paris!", "Lyon", "rhythm", ""]


@settings(max_examples=300, deadline=None)
@given(
    answers=st.dictionaries(
        st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5"]),
        st.sampled_from(TEXTS),
        min_size=1,
    ),
    similarity=st.sampled_from([0.5, 0.8, 0.9, 1.0]),
)
def test_handing_the_tally_over_is_the_same_as_grouping_again(
    answers: Mapping[str, str], similarity: float
) -> None:
    candidates = [ok(m, text) for m, text in sorted(answers.items())]
    valid = [c for c in candidates if c.valid]
    order = sorted(answers, reverse=True)  # a model order unlike the arrival order
    grouped = names(tally(valid, order, similarity)) if valid else ()
    handed = observation(candidates, similarity, grouped=grouped)
    again = observation(candidates, similarity)
    assert partition(handed) == partition(again)
    assert handed.failed == again.failed


def test_clients_are_told_apart_by_key_else_address_and_never_kept_in_clear() -> None:
    bearer = client_identity({"authorization": "Bearer sk-secret-1"}, "10.0.0.1")
    assert bearer.startswith("key:")
    assert "sk-secret" not in bearer
    assert client_identity({"x-api-key": "sk-secret-1"}, None) == bearer
    assert client_identity({"authorization": "Bearer sk-secret-2"}, None) != bearer
    forwarded = client_identity({"x-forwarded-for": "1.2.3.4, 10.0.0.9"}, "127.0.0.1")
    assert forwarded == client_identity({}, "10.0.0.9")  # the hop Envoy appended
    assert forwarded.startswith("addr:")
    assert "10.0.0.9" not in forwarded
    assert client_identity({}, None) == "anonymous"
