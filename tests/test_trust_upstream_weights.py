"""The strategies using learned trust in the real upstream, over real HTTP, with demo quiz
models: learned weights in weighted, clones sharing a vote in voting and one voice in
cascade, and the response's ``ensemble.details.weights`` saying what was used.

Quiz models with the same seed and accuracy are one model behind several names: they
answer every question identically (demo.server draws from the seed and the prompt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from ensemble_extproc import headers as h
from ensemble_extproc.config import compile_config
from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.demo import quiz
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.trust.book import TrustBook
from ensemble_extproc.upstream import create_app

from helpers import serve_app

# 0.8, 0.7 and three names for one 0.6 model: the failing case.
CLONED = (
    DemoModel("q80", 0, quiz_accuracy=0.80, seed=21, confidence_correct=0.9),
    DemoModel("q70", 0, quiz_accuracy=0.70, seed=22, confidence_correct=0.9),
    DemoModel("q60", 0, quiz_accuracy=0.60, seed=23, confidence_correct=0.9),
    DemoModel("q60-b", 0, quiz_accuracy=0.60, seed=23, confidence_correct=0.9),
    DemoModel("q60-c", 0, quiz_accuracy=0.60, seed=23, confidence_correct=0.9),
)
MODELS = tuple(m.name for m in CLONED)
CLONE_GROUP = ["q60", "q60-b", "q60-c"]
TRUST = {"enabled": True, "half_life": 400, "min_evidence": 50, "refit_every": 10}


@pytest.fixture
async def cloned() -> AsyncIterator[DemoServers]:
    async with await start_demo_servers(CLONED) as servers:
        yield servers


def config(servers: DemoServers, trust: dict[str, Any] | None, **ensemble: Any) -> Any:
    return compile_config(
        {
            "models": [{"name": name, "url": url} for name, url in servers.urls.items()],
            "ensemble": {
                "max_models_per_request": 5,
                # Every member answers: early stop would leave the slower ones out of
                # what is learned (docs/trust.md, limits).
                "default_min_responses": 5,
                "cascade": {"order": ["q60", "q60-b", "q60-c", "q70", "q80"]},
                **({"trust": trust} if trust is not None else {}),
                **ensemble,
            },
        }
    )


def upstream(cfg: Any) -> AbstractAsyncContextManager[str]:
    return serve_app(create_app(cfg), handler_cancellation=True)


async def ask(
    base: str, problems: Sequence[quiz.Problem], strategy: str, keys: int = 50
) -> list[dict[str, Any]]:
    """Every problem through ``strategy`` over the five models, from ``keys`` API keys."""
    semaphore = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def one(i: int, problem: quiz.Problem) -> dict[str, Any]:
            body = {"model": "x", "messages": [{"role": "user", "content": problem.prompt}]}
            headers = {
                h.MODELS: ",".join(MODELS),
                h.STRATEGY: strategy,
                "authorization": f"Bearer sk-client-{i % keys}",
            }
            async with (
                semaphore,
                session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp,
            ):
                assert resp.status == 200, await resp.text()
                data: dict[str, Any] = await resp.json()
                return data

        return await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))


def accuracy(problems: Sequence[quiz.Problem], answers: Sequence[dict[str, Any]]) -> float:
    right = sum(
        quiz.final_answer(p, a["choices"][0]["message"]["content"]) == p.correct
        for p, a in zip(problems, answers, strict=True)
    )
    return right / len(problems)


WARMUP = quiz.generate(600, seed=31)
MEASURED = quiz.generate(900, seed=32)[600:]  # 300 questions the warm-up did not ask


async def test_after_a_warm_up_every_strategy_uses_what_was_learned(
    cloned: DemoServers,
) -> None:
    """0.8, 0.7 and three names for one 0.6 model. Without trust the clones decide
    voting and cascade (about 0.6). With trust, after 600 questions of voting, the clones
    are one group: a third of a vote each (voting beats the 0.8 model alone), one voice in
    cascade, and weighted uses the learned accuracies and k. Each response says so."""
    async with upstream(config(cloned, None)) as base:
        plain_voting = await ask(base, MEASURED, "voting")
        plain_cascade = await ask(base, MEASURED, "cascade")
    async with upstream(config(cloned, TRUST, weighted={"weights": "learned"})) as base:
        (first_voting,) = await ask(base, WARMUP[:1], "voting")
        (first_weighted,) = await ask(base, WARMUP[:1], "weighted")
        await ask(base, WARMUP, "voting")
        voting = await ask(base, MEASURED, "voting")
        cascade = await ask(base, MEASURED, "cascade")
        weighted = await ask(base, MEASURED, "weighted")
    key = "models:" + ",".join(sorted(MODELS))

    # Before anything is learned: plain votes, and the learner's prior for every member
    # (nothing is configured): votes first.
    weights = first_voting["ensemble"]["details"]["weights"]
    assert (weights["source"], weights["groups"]) == ("equal", [])
    weights = first_weighted["ensemble"]["details"]["weights"]
    assert weights["rule"] == "votes, then log-odds"
    assert weights["source"] == "default"
    assert {m["accuracy"] for m in weights["members"].values()} == {0.7}

    # voting: the clones are one group, a third of a vote each.
    weights = voting[-1]["ensemble"]["details"]["weights"]
    assert (weights["rule"], weights["source"], weights["trust_key"]) == ("votes", "learned", key)
    assert weights["groups"] == [CLONE_GROUP]
    for clone in CLONE_GROUP:
        assert weights["members"][clone]["multiplier"] == pytest.approx(1 / 3, abs=0.02)
    assert weights["members"]["q80"]["multiplier"] == 1.0
    without, with_trust = accuracy(MEASURED, plain_voting), accuracy(MEASURED, voting)
    assert without < 0.7, without  # the clones' answer: 0.6 in theory
    assert with_trust >= 0.78, with_trust  # 0.852 in theory; the 0.8 model alone: 0.8
    assert with_trust - without >= 0.15

    # cascade (clones first): without trust an unsure clone "agreed" by its own copy is
    # accepted at stage 2 at the latest; with trust the copies are one voice.
    assert max(a["ensemble"]["details"]["cascade_depth"] for a in plain_cascade) == 2
    assert "weights" not in plain_cascade[0]["ensemble"]["details"]
    assert any(a["ensemble"]["details"]["cascade_depth"] > 3 for a in cascade)
    weights = cascade[-1]["ensemble"]["details"]["weights"]
    assert (weights["rule"], weights["groups"]) == ("voices", [CLONE_GROUP])
    assert accuracy(MEASURED, cascade) - accuracy(MEASURED, plain_cascade) >= 0.15

    # weighted: learned accuracies near the truth, and k never below what the data
    # support (3 wrong options: c = 1/3). With three independent voices c is uncertain:
    # k is large (weights near votes first) or not used yet (votes first).
    weights = weighted[-1]["ensemble"]["details"]["weights"]
    assert weights["source"] == "learned"
    if weights["rule"] == "log-odds":
        assert weights["alternatives"]["source"] == "learned"
        assert weights["alternatives"]["value"] >= 2.5
    else:
        assert weights["rule"] == "votes, then log-odds"
        assert "alternatives" not in weights
    truth = {m.name: m.quiz_accuracy for m in CLONED}
    for model, member in weights["members"].items():
        assert member["source"] == "learned"
        low, high = member["interval"]
        assert low - 0.05 <= truth[model] <= high + 0.05, (model, member)
    q80, clone = weights["members"]["q80"], weights["members"]["q60"]
    assert clone["multiplier"] == pytest.approx(1 / 3, abs=0.02)
    assert q80["weight"] > 3 * clone["weight"]
    assert accuracy(MEASURED, weighted) >= 0.78


async def test_a_failure_reading_the_weights_answers_with_configured_ones(
    cloned: DemoServers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the trust book")

    monkeypatch.setattr(TrustBook, "view", broken)
    cfg = compile_config(
        {
            "models": [
                {"name": name, "url": url, "accuracy": 0.7} for name, url in cloned.urls.items()
            ],
            "ensemble": {
                "max_models_per_request": 5,
                "weighted": {"weights": "learned"},
                "trust": TRUST,
            },
        }
    )
    async with upstream(cfg) as base:
        answers = await ask(base, WARMUP[:5], "weighted")  # asserts every answer is a 200
    weights = answers[0]["ensemble"]["details"]["weights"]
    assert weights["source"] == "configured"
    assert weights["trust_key"] is None
    assert "trust: could not read the weights" in caplog.text


# The clones are the cheap, fast copies: with early stop, their three agreeing answers
# arrive first and end every vote before the others answer.
FAST_CLONES = tuple(
    DemoModel(
        m.name,
        0,
        quiz_accuracy=m.quiz_accuracy,
        seed=m.seed,
        latency_ms={"q80": 30, "q70": 20}.get(m.name, 1),
    )
    for m in CLONED
)


async def test_with_early_stop_a_sample_of_complete_ensembles_is_learned_from() -> None:
    """Voting that may stop early (min_responses 2 of 5): learning counts only the
    sampled ensembles, which ask every member to the end. Counting the others would see
    the fast clones agree alone, every time: they would look perfect and never flagged."""
    problems = quiz.generate(1500, seed=41)
    trust = {**TRUST, "sample_share": 0.3}
    async with (
        await start_demo_servers(FAST_CLONES) as servers,
        upstream(config(servers, trust, default_min_responses=2)) as base,
    ):
        answers = await ask(base, problems, "voting")
        async with aiohttp.ClientSession() as session, session.get(f"{base}/admin/trust") as r:
            report = await r.json()
    counts = report["observations"]
    assert counts["accepted"] + counts["refused"] + counts["not_sampled"] == 1500
    assert 300 <= counts["accepted"] + counts["refused"] <= 600  # 30 % of 1500 = 450
    samples = [a for a in answers if a["ensemble"]["details"].get("learning_sample")]
    assert len(samples) == counts["accepted"] + counts["refused"]
    for answer in samples:
        assert answer["ensemble"]["calls"] == {"started": 5, "cancelled": 0}
    stopped = [a for a in answers if a["ensemble"]["details"]["stopped_early"]]
    assert len(stopped) > 300  # outside the sample, early stop goes on
    (key,) = report["keys"]
    assert key["groups"] == [CLONE_GROUP]
    truth = {m.name: m.quiz_accuracy for m in CLONED}
    for member in key["members"]:
        assert abs(member["accuracy"] - truth[member["model"]]) < 0.1, member
    # Once learned, the clones share a vote: the last questions are answered as well as
    # the 0.8 model alone at least.
    assert accuracy(problems[-400:], answers[-400:]) >= 0.78
