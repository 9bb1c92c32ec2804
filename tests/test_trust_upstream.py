"""Learned trust in the real upstream, over real HTTP: fed by ensembles of demo quiz models,
shown at GET /admin/trust and in /metrics, saved at shutdown and restored at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
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

# Quiz models: same seed = the same model behind two names (they agree on every answer).
QUIZ_MODELS = (
    DemoModel("q85", 0, quiz_accuracy=0.85, seed=11),
    DemoModel("q70", 0, quiz_accuracy=0.70, seed=12),
    DemoModel("q60", 0, quiz_accuracy=0.60, seed=13),
    DemoModel("q60-copy", 0, quiz_accuracy=0.60, seed=13),
)
MODELS = ",".join(m.name for m in QUIZ_MODELS)


@pytest.fixture
async def quiz_models() -> AsyncIterator[DemoServers]:
    async with await start_demo_servers(QUIZ_MODELS) as servers:
        yield servers


def config(servers: DemoServers, trust: dict[str, Any]) -> Any:
    return compile_config(
        {
            "models": [{"name": name, "url": url} for name, url in servers.urls.items()],
            # Every member answers (no early stop): every ensemble is learned from.
            "ensemble": {"max_models_per_request": 5, "default_min_responses": 4, "trust": trust},
        }
    )


def upstream(cfg: Any) -> AbstractAsyncContextManager[str]:
    """The upstream for ``cfg``; the trust service saves its snapshot when it stops."""
    return serve_app(create_app(cfg), handler_cancellation=True)


async def ask_quiz(base: str, count: int, keys: int = 50) -> None:
    """``count`` quiz questions, voting over all four models, from ``keys`` API keys."""
    problems = quiz.generate(count, seed=5)
    async with aiohttp.ClientSession() as session:
        semaphore = asyncio.Semaphore(16)

        async def one(i: int, problem: quiz.Problem) -> None:
            body = {"model": "x", "messages": [{"role": "user", "content": problem.prompt}]}
            headers = {
                h.MODELS: MODELS,
                h.STRATEGY: "voting",
                "authorization": f"Bearer sk-client-{i % keys}",
            }
            async with (
                semaphore,
                session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as resp,
            ):
                assert resp.status == 200, await resp.text()

        await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        data: dict[str, Any] = await resp.json()
        return data


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


TRUST = {
    "enabled": True,
    "half_life": 300,
    "min_evidence": 50,
    "refit_every": 10,
}


async def test_the_upstream_learns_accuracies_and_catches_the_copy(
    quiz_models: DemoServers, tmp_path: Path
) -> None:
    cfg = config(quiz_models, {**TRUST, "snapshot_dir": str(tmp_path), "replica_id": "r1"})
    async with upstream(cfg) as base:
        await ask_quiz(base, 600)
        report = await get_json(f"{base}/admin/trust")
        metrics = await get_text(f"{base}/metrics")
    assert report["enabled"] is True
    assert report["observations"] == {"accepted": 600, "refused": 0, "not_sampled": 0}
    (key,) = report["keys"]
    assert key["key"] == "models:" + ",".join(sorted(m.name for m in QUIZ_MODELS))
    members = {m["model"]: m for m in key["members"]}
    for model in QUIZ_MODELS:
        member = members[model.name]
        low, high = member["interval"]
        assert low - 0.03 <= model.quiz_accuracy <= high + 0.03, member
        assert member["learned"] is True
        assert member["source"] == "learned"
        assert 0 < member["client_influence"] < 0.5
    assert key["groups"] == [["q60", "q60-copy"]]
    (pair,) = key["flagged_pairs"]
    assert pair["models"] == ["q60", "q60-copy"]
    assert pair["observed"] == 1.0
    assert pair["excess"] > 0.4
    # The same facts in Prometheus' text format.
    label = f'key="{key["key"]}"'
    assert f'ensemble_trust_accuracy_ratio{{{label},model="q85"}}' in metrics
    assert f'ensemble_trust_learned{{{label},model="q85"}} 1.0' in metrics
    pair = 'model_a="q60",model_b="q60-copy"'
    assert f"ensemble_trust_excess_agreement_ratio{{{label},{pair}}}" in metrics
    assert 'ensemble_trust_observations_total{outcome="accepted"} 600.0' in metrics
    # The snapshot written at shutdown, and a restart that starts from it.
    assert (tmp_path / "r1.json").exists()
    async with upstream(cfg) as base:
        restarted = await get_json(f"{base}/admin/trust")
    assert restarted["snapshots"]["restored"].startswith(str(tmp_path / "r1.json"))
    (again,) = restarted["keys"]
    assert again["observations"] == 600
    assert again["groups"] == [["q60", "q60-copy"]]
    for model in again["members"]:
        assert model["accuracy"] == pytest.approx(members[model["model"]]["accuracy"], abs=1e-3)


async def test_a_second_replica_starts_from_the_first_ones_snapshot(
    quiz_models: DemoServers, tmp_path: Path
) -> None:
    first = config(quiz_models, {**TRUST, "snapshot_dir": str(tmp_path), "replica_id": "r1"})
    second = config(quiz_models, {**TRUST, "snapshot_dir": str(tmp_path), "replica_id": "r2"})
    async with upstream(first) as base:
        await ask_quiz(base, 300)
    async with upstream(second) as base:
        report = await get_json(f"{base}/admin/trust")
        (key,) = report["keys"]
        assert report["snapshots"]["peers"][0]["replica"] == "r1"
        assert key["observations"] == 300
        assert key["replicas"] == 1  # the peer only: this one has seen nothing yet
        await ask_quiz(base, 100)
        (key,) = (await get_json(f"{base}/admin/trust"))["keys"]
        assert key["observations"] == 400
        assert key["replicas"] == 2


async def test_one_api_key_cannot_fill_the_book(quiz_models: DemoServers) -> None:
    """All traffic from one key: the cap refuses most of it, and nothing becomes learned."""
    cfg = config(quiz_models, {**TRUST, "max_client_share": 0.05})
    async with upstream(cfg) as base:
        await ask_quiz(base, 200, keys=1)
        report = await get_json(f"{base}/admin/trust")
    refused = report["observations"]["refused"]
    assert refused > 150
    (key,) = report["keys"]
    assert key["refused_by_client_cap"] == refused
    assert key["clients"]["largest_share"] == 1.0
    assert not any(m["learned"] for m in key["members"])
    assert "raise ensemble.trust.max_client_share" in key["hint"]


@pytest.mark.parametrize("trust", [{}, {"enabled": False, "half_life": 100}])
async def test_with_trust_off_the_endpoint_says_so(
    upstream: Callable[..., Any], trust: dict[str, Any]
) -> None:
    base = await upstream(trust=trust)
    report = await get_json(f"{base}/admin/trust")
    assert report["enabled"] is False
    assert report["keys"] == []
    assert "ensemble.trust.enabled" in report["hint"]
    assert "ensemble_trust_accuracy_ratio{" not in await get_text(f"{base}/metrics")


async def test_the_endpoint_is_read_only(upstream: Callable[..., Any]) -> None:
    base = await upstream()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/admin/trust", json={}) as resp:
            assert resp.status == 405
            body = await resp.json()
        assert body["error"]["code"] == "method_not_allowed"
        assert resp.headers["Allow"] == "GET,HEAD"


async def test_a_failure_in_learning_never_fails_the_answer(
    quiz_models: DemoServers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> bool:
        raise RuntimeError("a bug in the trust book")

    monkeypatch.setattr(TrustBook, "observe", broken)
    async with upstream(config(quiz_models, TRUST)) as base:
        await ask_quiz(base, 5)  # asserts every answer is a 200
        report = await get_json(f"{base}/admin/trust")
    assert report["observations"] == {"accepted": 0, "refused": 5, "not_sampled": 0}
    assert "trust: could not count an ensemble" in caplog.text


async def test_a_request_that_came_through_envoys_ensemble_route_gets_nothing(
    upstream: Callable[..., Any],
) -> None:
    base = await upstream(trust={"enabled": True})
    route = {h.ROUTE: h.ROUTE_VALUE}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/admin/trust", headers=route) as resp,
    ):
        assert resp.status == 404
        body = await resp.json()
    assert body["error"]["code"] == "not_found"
    assert "keys" not in body
