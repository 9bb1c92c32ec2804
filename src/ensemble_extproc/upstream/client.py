"""The seam between the orchestrator and the network: one model call -> one Candidate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from ..config import Endpoint
from ..strategies import Candidate, Status, Usage


class EndpointClient(Protocol):
    async def complete(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Candidate:
        """Call one endpoint. Endpoint faults become failed candidates, never exceptions;
        the caller bounds the call's time (``asyncio.timeout``)."""
        ...


class ResponseTooLarge(Exception):
    pass


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    numbers = [raw.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return None
    return Usage(*numbers)  # type: ignore[arg-type]


def mean_logprob(choice: Mapping[str, Any]) -> float | None:
    """Mean token log-probability of an OpenAI choice, when it carries logprobs."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    values = [t.get("logprob") for t in content if isinstance(t, dict)]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(content):
        return None
    return sum(numbers) / len(numbers)


def _error_detail(payload: object, raw: bytes) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        message = payload["error"].get("message")
        if isinstance(message, str):
            return message[:200]
    return raw[:200].decode("utf-8", "replace")


def candidate_from_response(model: str, status: int, raw: bytes, latency_ms: float) -> Candidate:
    """Interpret an endpoint's HTTP answer as an OpenAI chat completion."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if status != 200:
        detail = _error_detail(payload, raw)
        error = f"HTTP {status}: {detail}"
        return Candidate(model, Status.ERROR, latency_ms=latency_ms, error=error)
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        what = "not JSON" if payload is None else "a completion without choices"
        return Candidate(model, Status.ERROR, latency_ms=latency_ms, error=f"answer is {what}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        return Candidate(model, Status.ERROR, latency_ms=latency_ms, error="choice has no message")
    finish_reason = choice.get("finish_reason")
    return Candidate(
        model,
        Status.OK,
        message=message,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=_usage(payload.get("usage")),
        latency_ms=latency_ms,
        mean_logprob=mean_logprob(choice),
    )


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise ResponseTooLarge
    return bytes(data)


class HttpEndpointClient:
    """Calls OpenAI-compatible endpoints over the app's one ClientSession."""

    def __init__(self, session: aiohttp.ClientSession, max_response_bytes: int) -> None:
        self._session = session
        self._max_response_bytes = max_response_bytes

    async def complete(self, endpoint: Endpoint, body: Mapping[str, Any]) -> Candidate:
        loop = asyncio.get_running_loop()
        started = loop.time()

        def failed(status: Status, error: str) -> Candidate:
            latency = (loop.time() - started) * 1000
            return Candidate(endpoint.name, status, latency_ms=latency, error=error)

        headers = {"content-type": "application/json"}
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        payload = {**body, "model": endpoint.upstream_model}
        try:
            async with self._session.post(endpoint.url, json=payload, headers=headers) as response:
                raw = await _read_capped(response, self._max_response_bytes)
                status = response.status
        except ResponseTooLarge:
            limit = self._max_response_bytes
            return failed(Status.ERROR, f"answer larger than max_response_bytes ({limit})")
        except aiohttp.ClientError as exc:
            return failed(Status.ERROR, f"request failed: {type(exc).__name__}: {exc}")
        latency = (loop.time() - started) * 1000
        return candidate_from_response(endpoint.name, status, raw, latency)
