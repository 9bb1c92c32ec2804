"""The trust service the upstream holds: snapshots saved atomically, restored at start-up,
merged across replicas; and the weight plan it hands the strategies."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc.strategies.base import Candidate, Status
from ensemble_extproc.trust.book import TrustBook, priors_from
from ensemble_extproc.trust.model import Observation, TrustSettings
from ensemble_extproc.trust.persist import (
    FORMAT,
    Snapshot,
    SnapshotError,
    decode,
    encode,
    read,
    read_peers,
    snapshot_path,
    write_atomic,
)
from ensemble_extproc.trust.service import TrustService
from ensemble_extproc.trust.stats import KeyStats
from trust_sim import stream

TRUTH = {"a": 0.85, "b": 0.7, "c": 0.65, "d": 0.6}
SETTINGS = TrustSettings(enabled=True)
KEY = "profile:p"


def book_after(observations: list[Observation], settings_: TrustSettings = SETTINGS) -> TrustBook:
    book = TrustBook(settings_, priors_from(dict.fromkeys(TRUTH), settings_))
    for o in observations:
        book.observe(KEY, list(TRUTH), o)
    return book


observation_lists = st.lists(
    st.builds(
        Observation,
        answers=st.dictionaries(st.sampled_from(list(TRUTH)), st.integers(0, 3), min_size=2),
        failed=st.frozensets(st.sampled_from(list(TRUTH))),
        client=st.sampled_from(["x", "y", "z"]),
    ),
    max_size=40,
)


@settings(max_examples=50, deadline=None)
@given(obs=observation_lists)
def test_a_snapshot_survives_json_exactly(obs: list[Observation]) -> None:
    stats = KeyStats(list(TRUTH), SETTINGS.decay, 1e9, SETTINGS.change_threshold)
    for o in obs:
        stats.add(o, 100)
    snapshot = Snapshot("r1", 1700000000.5, {KEY: stats.totals()})
    assert decode(json.loads(json.dumps(encode(snapshot)))) == snapshot


def test_restoring_continues_where_the_replica_stopped(tmp_path: Path) -> None:
    observations = list(stream(TRUTH, seed=1, count=1500))
    book = book_after(observations)
    path = tmp_path / "r1.json"
    write_atomic(path, Snapshot("r1", 1.0, book.own()))
    restored = TrustBook(SETTINGS, priors_from(dict.fromkeys(TRUTH), SETTINGS))
    restored.restore(read(path).keys)
    before, after = book.view(KEY, refit=True), restored.view(KEY)
    assert before is not None
    assert after is not None
    assert after.observations == before.observations == 1500
    assert path.stat().st_mode & 0o777 == 0o644  # peers under another user can read it
    for model in TRUTH:
        assert after.members[model].accuracy == pytest.approx(
            before.members[model].accuracy, abs=1e-6
        )
        assert after.members[model].learned == before.members[model].learned
    # And it goes on learning from there, as the original would.
    more = list(stream(TRUTH, seed=2, count=100))
    for o in more:
        book.observe(KEY, list(TRUTH), o)
        restored.observe(KEY, list(TRUTH), o)
    mine, theirs = book.totals(KEY), restored.totals(KEY)
    assert mine is not None
    assert theirs is not None
    for pair, counts in mine.pairs.items():
        assert theirs.pairs[pair].n == pytest.approx(counts.n)
        assert theirs.pairs[pair].agree == pytest.approx(counts.agree)


def test_restoring_drops_models_no_longer_configured(tmp_path: Path) -> None:
    book = book_after(list(stream(TRUTH, seed=1, count=300)))
    fewer = TrustBook(SETTINGS, priors_from({"a": None, "b": None, "c": None}, SETTINGS))
    fewer.restore(book.own())
    totals = fewer.totals(KEY)
    assert totals is not None
    assert totals.members == ("a", "b", "c")
    assert all("d" not in pair for pair in totals.pairs)


def test_replicas_merge_what_they_learned_without_counting_twice() -> None:
    """Two replicas, each half the traffic: with the other's snapshot as a peer, each sees
    the evidence of both, and its own snapshot still holds only its own."""
    observations = list(stream(TRUTH, seed=4, count=3000))
    left = book_after(observations[0::2])
    right = book_after(observations[1::2])
    alone = left.view(KEY, refit=True)
    left.set_peers({"right": right.own()})
    merged = left.view(KEY)
    assert alone is not None
    assert merged is not None
    assert merged.observations == 3000
    assert merged.mass == pytest.approx(alone.mass + right.own()[KEY].mass)
    for model, p in TRUTH.items():
        # More evidence: a narrower interval, still around the truth.
        assert merged.members[model].high - merged.members[model].low < (
            alone.members[model].high - alone.members[model].low
        )
        assert merged.members[model].low - 0.02 <= p <= merged.members[model].high + 0.02
    assert left.own()[KEY].observations == 1500
    assert left.sources(KEY) == 2


def test_a_write_that_fails_leaves_the_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r1.json"
    write_atomic(path, Snapshot("r1", 1.0, {}))
    old = path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, Snapshot("r1", 2.0, book_after([]).own()))
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"format": "other"}', "format is 'other'"),
        (
            json.dumps({"format": FORMAT, "replica": "r", "written_at": -1, "keys": {}}),
            "written_at must not be negative",
        ),
        (
            json.dumps(
                {
                    "format": FORMAT,
                    "replica": "r",
                    "written_at": 1,
                    "keys": {
                        "k": {
                            "members": ["a", "b"],
                            "answered": {},
                            "failed": {},
                            "pairs": [["a", "b", 1.0, 1.0, 2.0]],
                            "triples": [],
                            "mass": 1,
                            "observations": 1,
                        }
                    },
                }
            ),
            "agree more often than they answered",
        ),
    ],
)
def test_an_unusable_snapshot_says_why(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SnapshotError, match=message) as error:
        read(path)
    assert str(path) in str(error.value)


def test_peers_are_the_other_recent_readable_snapshots(tmp_path: Path) -> None:
    book = book_after(list(stream(TRUTH, seed=1, count=50)))
    write_atomic(snapshot_path(tmp_path, "me"), Snapshot("me", 1000.0, book.own()))
    write_atomic(snapshot_path(tmp_path, "fresh"), Snapshot("fresh", 990.0, book.own()))
    write_atomic(snapshot_path(tmp_path, "old"), Snapshot("old", 10.0, book.own()))
    (tmp_path / "broken.json").write_text("{")
    write_atomic(tmp_path / "copy.json", Snapshot("fresh", 995.0, {}))
    peers = read_peers(tmp_path, "me", now=1000.0, max_age_seconds=100.0)
    assert list(peers.snapshots) == ["fresh"]
    reasons = " | ".join(peers.ignored)
    assert "broken.json" in reasons
    assert "old.json: written 990 s ago" in reasons
    assert "a second file of replica 'fresh'" in reasons


def candidates(answers: dict[str, str]) -> list[Candidate]:
    return [
        Candidate(m, Status.OK, {"role": "assistant", "content": a}, "stop")
        for m, a in answers.items()
    ]


async def test_the_service_saves_periodically_and_at_the_end_and_restores(
    tmp_path: Path,
) -> None:
    settings_ = TrustSettings(
        enabled=True, snapshot_dir=str(tmp_path), snapshot_interval_seconds=0.05
    )
    service = TrustService(settings_, dict.fromkeys(TRUTH), 0.9, "replica-1")
    async with service.running():
        for i in range(20):
            answers = {"a": "42", "b": "42", "c": "41" if i % 3 else "42", "d": "40"}
            service.observe("p", list(TRUTH), candidates(answers), f"client-{i}")
        await asyncio.sleep(0.2)
        assert service.status.last_saved is not None  # saved while running
    saved = read(tmp_path / "replica-1.json")
    assert saved.keys["profile:p"].observations == 20
    again = TrustService(settings_, dict.fromkeys(TRUTH), 0.9, "replica-1")
    async with again.running():
        view = again.book.view("profile:p")
        assert view is not None
        assert view.observations == 20
        assert again.status.restored is not None
        assert again.status.restored.startswith(str(tmp_path / "replica-1.json"))


async def test_a_snapshot_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings_ = TrustSettings(enabled=True, snapshot_dir=str(blocker / "trust"))
    service = TrustService(settings_, dict.fromkeys(TRUTH), 0.9, "r")
    async with service.running():
        service.observe("p", list(TRUTH), candidates(dict.fromkeys(TRUTH, "1")), "c")
    assert service.status.last_error is not None
    assert "cannot write" in service.status.last_error


def test_the_service_hands_strategies_a_weight_plan() -> None:
    """What phase 2's strategies read: learned accuracies and clone groups of the key."""
    settings_ = TrustSettings(enabled=True, min_evidence=50)
    service = TrustService(settings_, {**dict.fromkeys(TRUTH), "d-copy": None}, 0.9, "r")
    models = [*TRUTH, "d-copy"]
    for o in stream(TRUTH, seed=3, count=1500, clones={"d-copy": "d"}):
        texts = {m: str(a) for m, a in o.answers.items()}
        service.observe(None, models, candidates(texts), o.client)
    plan = service.weights(None, models, {"a": 0.9})
    assert plan.key == "models:a,b,c,d,d-copy"
    assert plan.source("a") == "learned"
    assert plan.accuracy("a") == pytest.approx(0.85, abs=0.05)
    assert plan.multiplier("d") == pytest.approx(0.5, abs=0.01)
    assert plan.voices(["d", "d-copy"]) == 1
    off = TrustService(TrustSettings(), dict.fromkeys(TRUTH), 0.9, "r")
    plain = off.weights(None, list(TRUTH), {"a": 0.9})
    assert (plain.source("a"), plain.source("b")) == ("configured", "weight")
    assert plain.multiplier("a") == 1.0
