"""The fan-out with an in-memory endpoint client: quorum, early stop, cancellation, deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from ensemble_extproc.config import Endpoint
from ensemble_extproc.spec import EnsembleSpec
from ensemble_extproc.strategies import Candidate, Failure, Selection, Status, Usage
from ensemble_extproc.upstream import Fanout
from ensemble_extproc.upstream.client import Offer
from ensemble_extproc.upstream.orchestrator import stop_reason

from helpers import make_config


@dataclass
class Script:
    delay: float
    content: str | None = "answer"  # None: the endpoint fails
    # Arrives when this other model's answer has, then needs this many turns of the event
    # loop to be read (as an HTTP call reads its body once the headers are in).
    after: str | None = None
    turns: int = 0


@dataclass
class FakeClient:
    scripts: Mapping[str, Script]
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    answered: dict[str, asyncio.Event] = field(default_factory=dict)

    def _answered(self, name: str) -> asyncio.Event:
        return self.answered.setdefault(name, asyncio.Event())

    async def complete(
        self,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        client_headers: Mapping[str, str] | None = None,
        offer: Offer | None = None,
    ) -> Candidate:
        assert offer is None  # these tests do not stream
        script = self.scripts[endpoint.name]
        self.started.append(endpoint.name)
        try:
            await asyncio.sleep(script.delay)
            if script.after is not None:
                await self._answered(script.after).wait()
            for _ in range(script.turns):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(endpoint.name)
            raise
        self._answered(endpoint.name).set()
        if script.content is None:
            return Candidate(
                endpoint.name,
                Status.ERROR,
                error="HTTP 500: boom",
                failure=Failure.HTTP,
                http_status=500,
            )
        message = {"role": "assistant", "content": script.content}
        usage = Usage(10, 2, 12)
        return Candidate(endpoint.name, Status.OK, message, "stop", usage, script.delay * 1000)


def fanout(client: FakeClient, **ensemble: Any) -> Fanout:
    config = make_config(
        {name: "http://127.0.0.1:9/v1" for name in client.scripts}, ensemble=ensemble
    )
    return Fanout(config.endpoints, config.ensemble, client)


async def test_first_success_returns_fastest_and_cancels_the_rest() -> None:
    client = FakeClient({"a": Script(0.3), "b": Script(0.01, "fast"), "c": Script(0.3)})
    outcome = await fanout(client).run(EnsembleSpec(("a", "b", "c"), "first_success", 1), {})
    assert outcome.selection is not None
    assert outcome.selection.winner.content == "fast"
    assert sorted(client.cancelled) == ["a", "c"]
    statuses = {c.model: c.status for c in outcome.candidates}
    assert statuses == {"a": Status.CANCELLED, "b": Status.OK, "c": Status.CANCELLED}


async def test_an_answer_already_in_hand_when_the_plan_decides_is_kept_not_cancelled() -> None:
    # b's answer is in when a's is, and is read in the turns that follow the plan's own
    # wake-up: cancelling it would throw away a paid answer and close its connection. c is
    # still waiting for its model: it is cancelled (that stops its generation).
    client = FakeClient(
        {
            "a": Script(0.01, "fast"),
            "b": Script(0, "also", after="a", turns=2),
            "c": Script(5),
        }
    )
    outcome = await fanout(client).run(EnsembleSpec(("a", "b", "c"), "first_success", 1), {})
    assert outcome.selection is not None
    assert outcome.selection.winner.content == "fast"
    assert client.cancelled == ["c"]
    statuses = {c.model: c.status for c in outcome.candidates}
    assert statuses == {"a": Status.OK, "b": Status.OK, "c": Status.CANCELLED}
    assert outcome.calls_cancelled == 1
    # b's answer is counted as spent: its usage is in the outcome.
    usage = {c.model: c.usage for c in outcome.candidates}
    assert usage["b"] == Usage(10, 2, 12)


async def test_an_answer_still_on_its_way_when_the_plan_decides_is_cancelled() -> None:
    # The same, but b needs more turns than the one the plan waits: cancelled as before.
    client = FakeClient(
        {"a": Script(0.01, "fast"), "b": Script(0, "also", after="a", turns=5), "c": Script(5)}
    )
    outcome = await fanout(client).run(EnsembleSpec(("a", "b", "c"), "first_success", 1), {})
    assert sorted(client.cancelled) == ["b", "c"]
    assert outcome.calls_cancelled == 2


async def test_first_success_skips_failures() -> None:
    client = FakeClient({"a": Script(0.01, None), "b": Script(0.05, "second")})
    outcome = await fanout(client).run(EnsembleSpec(("a", "b"), "first_success", 1), {})
    assert outcome.selection is not None
    assert outcome.selection.winner.model == "b"


async def test_voting_waits_for_all_and_sums_nothing_it_did_not_get() -> None:
    client = FakeClient(
        {"a": Script(0.01, "Paris"), "b": Script(0.02, "Lyon"), "c": Script(0.03, "paris.")}
    )
    outcome = await fanout(client).run(EnsembleSpec(("a", "b", "c"), "voting", 2), {})
    assert outcome.selection is not None
    assert outcome.selection.winner.model == "a"
    assert outcome.selection.agreement == pytest.approx(2 / 3)
    assert client.cancelled == []
    assert [c.model for c in outcome.candidates] == ["a", "b", "c"]


async def test_quorum_not_met_answers_as_soon_as_it_is_impossible() -> None:
    client = FakeClient({"a": Script(0.01, None), "b": Script(0.02, None), "c": Script(5)})
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await fanout(client).run(EnsembleSpec(("a", "b", "c"), "voting", 2), {})
    assert loop.time() - started < 1
    assert outcome.selection is None
    assert outcome.deadline_exceeded is False
    assert client.cancelled == ["c"]


def reasons(outcome: Any) -> dict[str, tuple[Status, str | None]]:
    return {c.model: (c.status, c.error) for c in outcome.candidates}


async def test_calls_cut_short_by_an_impossible_quorum_say_so() -> None:
    client = FakeClient({"a": Script(0.01, None), "b": Script(5)})
    outcome = await fanout(client).run(EnsembleSpec(("a", "b"), "voting", 2), {})
    assert outcome.selection is None
    assert reasons(outcome)["b"] == (
        Status.CANCELLED,
        "cancelled: the quorum could no longer be met",
    )


async def test_a_quorum_made_impossible_by_an_open_circuit_is_not_called_an_answer() -> None:
    """Issue 12: the other members were reported as "the ensemble had its answer"."""
    client = FakeClient({"a": Script(0.01, None), "b": Script(5)})
    ensemble = fanout(client, circuit_breaker={"failures": 1, "cooldown_seconds": 60})
    await ensemble.run(EnsembleSpec(("a",), "voting", 1), {})  # opens a's circuit
    outcome = await ensemble.run(EnsembleSpec(("a", "b"), "voting", 2), {})
    assert outcome.selection is None
    got = reasons(outcome)
    assert got["a"][0] is Status.SKIPPED
    assert got["b"] == (Status.CANCELLED, "cancelled: the quorum could no longer be met")


def test_the_stop_reason_says_whether_the_ensemble_had_an_answer() -> None:
    winner = Candidate("a", Status.OK, {"role": "assistant", "content": "x"})
    assert stop_reason(Selection(winner, reason="only one")) == "the ensemble had its answer"
    assert stop_reason(None) == "the quorum could no longer be met"


async def test_deadline_stops_everything() -> None:
    client = FakeClient({"a": Script(0.01), "b": Script(5), "c": Script(5)})
    run = fanout(client, timeout_seconds=0.2).run(EnsembleSpec(("a", "b", "c"), "voting", 2), {})
    outcome = await asyncio.wait_for(run, 2)
    assert outcome.selection is None
    assert outcome.deadline_exceeded is True
    assert {c.model: c.status for c in outcome.candidates if not c.valid} == {
        "b": Status.TIMEOUT,
        "c": Status.TIMEOUT,
    }


async def test_per_model_timeout_fails_one_candidate() -> None:
    client = FakeClient({"a": Script(0.01), "b": Script(5)})
    ens = fanout(client, timeout_seconds=2, model_timeout_seconds=0.1)
    outcome = await ens.run(EnsembleSpec(("a", "b"), "voting", 1), {})
    assert outcome.selection is not None
    timed_out = next(c for c in outcome.candidates if c.model == "b")
    assert timed_out.status is Status.TIMEOUT
    assert "no answer within model_timeout_seconds (0.1 s)" in (timed_out.error or "")


async def test_concurrency_cap_limits_parallel_calls() -> None:
    client = FakeClient({name: Script(0.05) for name in "abcd"})
    ens = fanout(client, max_concurrent_requests=2, max_models_per_request=4)
    run = asyncio.create_task(ens.run(EnsembleSpec(tuple("abcd"), "voting", 4), {}))
    await asyncio.sleep(0.02)
    assert len(client.started) == 2
    outcome = await run
    assert outcome.selection is not None
    assert len(client.started) == 4


async def test_cancelling_the_request_cancels_every_call() -> None:
    client = FakeClient({"a": Script(5), "b": Script(5)})
    run = asyncio.create_task(fanout(client).run(EnsembleSpec(("a", "b"), "voting", 2), {}))
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(client.cancelled) == ["a", "b"]
