"""An endpoint's answer is read whole only within ``max_response_bytes``, however it is
framed: with a Content-Length, chunked, or compressed (a small body that inflates)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from ensemble_extproc.config import Endpoint
from ensemble_extproc.strategies import Failure, Status
from ensemble_extproc.upstream.client import NO_SECRETS, HttpEndpointClient

from helpers import serve_app

LIMIT = 4096


def completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps({"object": "chat.completion", "choices": [choice]}).encode()


SMALL = completion("Paris.")
LARGE = completion("x" * (LIMIT * 4))


async def sized(request: web.Request) -> web.Response:
    body = LARGE if request.query.get("size") == "large" else SMALL
    return web.Response(body=body, content_type="application/json")


async def chunked(request: web.Request) -> web.StreamResponse:
    body = LARGE if request.query.get("size") == "large" else SMALL
    response = web.StreamResponse(headers={"content-type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(body), 1000):
        await response.write(body[start : start + 1000])
    await response.write_eof()
    return response


async def compressed(request: web.Request) -> web.Response:
    body = LARGE if request.query.get("size") == "large" else SMALL
    packed = gzip.compress(body)
    assert len(packed) < LIMIT  # the Content-Length alone is within the limit
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    return web.Response(body=packed, headers=headers)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/sized", sized)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/compressed", compressed)
    async with serve_app(app) as url:
        yield url


@pytest.mark.parametrize("framing", ["sized", "chunked", "compressed"])
@pytest.mark.parametrize("size", ["small", "large"])
async def test_answers_larger_than_the_limit_are_refused(
    base_url: str, framing: str, size: str
) -> None:
    endpoint = Endpoint("m", f"{base_url}/{framing}?size={size}", "m")
    request = {"messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        client = HttpEndpointClient(session, LIMIT, NO_SECRETS)
        candidate = await client.complete(endpoint, request)
    if size == "small":
        assert candidate.status is Status.OK
        assert candidate.content == "Paris."
    else:
        assert candidate.status is Status.ERROR
        assert candidate.failure is Failure.TOO_LARGE
        assert candidate.error == f"answer larger than max_response_bytes ({LIMIT})"
