"""GET /v1/models and /v1/models/{id}: what a client may name, marked with what it is.

The catalog as a pure function of the config (a table), then the upstream over real HTTP.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest

from ensemble_extproc.config import compile_config
from ensemble_extproc.demo.server import DemoServers
from ensemble_extproc.upstream import create_app
from ensemble_extproc.upstream.discovery import catalog, find

from helpers import serve_app

SECRET_URL = "https://models.internal.example/base/v1"


def config(**extra: Any) -> Any:
    raw = {
        "models": [
            {"name": "gpt-small", "url": SECRET_URL, "api_key_env": "K"},
            {"name": "org/llama-70b", "url": "http://10.0.0.7:8000/v1", "upstream_model": "x"},
            {"name": "judge", "url": "http://10.0.0.8:8000/v1"},
        ],
        "default_model": "org/llama-70b",
        "profiles": {"critical": {"models": ["gpt-small", "org/llama-70b"], "strategy": "voting"}},
        **extra,
    }
    return compile_config(raw, {"K": "sk-secret-key-1234"})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {},
            [
                ("org/llama-70b", "default"),
                ("gpt-small", "member"),
                ("judge", "member"),
                ("critical", "profile"),
            ],
        ),
        # Ensembles off: nothing but the default model can be named.
        ({"ensemble": {"enabled": False}}, [("org/llama-70b", "default")]),
        # No profiles: models only.
        (
            {"profiles": {}},
            [("org/llama-70b", "default"), ("gpt-small", "member"), ("judge", "member")],
        ),
    ],
)
def test_catalog_lists_what_a_client_may_name(
    extra: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    listed = catalog(config(**extra))
    assert [(m.id, m.ensemble_kind) for m in listed] == expected
    for model in listed:
        assert find(config(**extra), model.id) == model
    assert find(config(**extra), "nope") is None


def test_a_profile_says_its_strategy_and_members_and_nothing_leaks() -> None:
    listed = {m.id: m for m in catalog(config())}
    profile = listed["critical"]
    assert profile.ensemble_strategy == "voting"
    assert profile.ensemble_models == ["gpt-small", "org/llama-70b"]
    text = msgspec.json.encode(catalog(config())).decode()
    # Never an endpoint's URL, host, key or upstream model name.
    for secret in ("models.internal.example", "10.0.0.7", "sk-secret", "/base/v1", '"x"'):
        assert secret not in text
    # A model entry has exactly OpenAI's fields plus its kind.
    assert set(json.loads(msgspec.json.encode(listed["judge"]))) == {
        "id",
        "object",
        "created",
        "owned_by",
        "ensemble_kind",
    }


async def test_the_upstream_lists_and_retrieves_models_over_http(demo: DemoServers) -> None:
    urls = dict(demo.urls)
    raw = {
        "models": [{"name": name, "url": url} for name, url in urls.items()]
        + [{"name": "org/model-b", "url": urls["demo-fast"]}],
        "default_model": "demo-medium",
        "profiles": {"critical": {"models": ["demo-fast", "demo-slow"]}},
    }
    app = create_app(compile_config(raw))
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/models") as resp:
            assert resp.status == 200
            listing = await resp.json()
        async with session.get(f"{url}/v1/models/critical") as resp:
            assert resp.status == 200
            profile = await resp.json()
        # Ids with a slash, as they are and percent-encoded (as SDKs send them).
        async with session.get(f"{url}/v1/models/org/model-b") as resp:
            slashed = resp.status, await resp.json()
        async with session.get(f"{url}/v1/models/{quote('org/model-b', safe='')}") as resp:
            encoded = resp.status, await resp.json()
        async with session.get(f"{url}/v1/models/no-such-model") as resp:
            missing_status, missing = resp.status, await resp.json()
    assert listing["object"] == "list"
    kinds = {m["id"]: m["ensemble_kind"] for m in listing["data"]}
    assert kinds["demo-medium"] == "default"
    assert listing["data"][0]["id"] == "demo-medium"
    assert kinds["demo-fast"] == kinds["org/model-b"] == "member"
    assert kinds["critical"] == "profile"
    assert profile == next(m for m in listing["data"] if m["id"] == "critical")
    assert profile["ensemble_models"] == ["demo-fast", "demo-slow"]
    assert slashed[0] == encoded[0] == 200
    assert slashed[1]["id"] == encoded[1]["id"] == "org/model-b"
    assert missing_status == 404
    assert missing["error"]["code"] == "unknown_model"
    assert missing["error"]["param"] == "model"
    assert "127.0.0.1" not in json.dumps(listing)
