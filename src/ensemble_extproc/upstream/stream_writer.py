"""Answering ``"stream": true``: relay a committed call live, or stream a decided answer.

Relayed calls (first_success members, the fusion aggregator) go out chunk by chunk as they
arrive, from the first call that produces output. Other strategies decide first and then
stream the answer; while they wait, SSE comments keep proxies from timing the
connection out. An error after the stream started is an OpenAI-style error event, then
the end of the stream: never a silently truncated 200.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .. import headers as h
from ..errors import ApiError
from ..spec import EnsembleSpec
from .orchestrator import Fanout, Outcome
from .response import ensemble_details, ensemble_headers, failure, total_usage
from .sse import DONE, KEEPALIVE, Accumulator, event, message_chunks


class StreamWriter:
    """One client's SSE response (implements the orchestrator's ``Sink``)."""

    def __init__(self, request: web.Request, spec: EnsembleSpec, include_usage: bool) -> None:
        self._request = request
        self._spec = spec
        self._include_usage = include_usage
        self.envelope = {
            "id": f"chatcmpl-ens-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": f"ensemble/{spec.strategy}",
        }
        self.response: web.StreamResponse | None = None
        self.committed: str | None = None
        self.on_commit: Callable[[str], None] | None = None
        self._pending: dict[str, list[Mapping[str, Any]]] = {}
        self._final: dict[str, Any] | None = None  # held back to carry the ensemble object
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()

    async def start(self, headers: Mapping[str, str]) -> None:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache", **headers}
        )
        await response.prepare(self._request)
        self.response = response

    def _spec_headers(self) -> dict[str, str]:
        return {
            h.RESP_STRATEGY: self._spec.strategy,
            h.RESP_MODELS_QUERIED: ",".join(self._spec.models),
        }

    async def _write(self, data: bytes) -> None:
        assert self.response is not None
        async with self._lock:
            await self.response.write(data)
            self._last_write = time.monotonic()

    def idle_seconds(self) -> float:
        return time.monotonic() - self._last_write

    def _convert(self, chunk: Mapping[str, Any]) -> dict[str, Any] | None:
        """An endpoint's chunk under our id and model; usage-only chunks are dropped (the
        final usage counts every call)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        return {**self.envelope, "choices": [{**choices[0], "index": 0}]}

    async def _relay(self, chunk: Mapping[str, Any]) -> None:
        converted = self._convert(chunk)
        if converted is None:
            return
        if converted["choices"][0].get("finish_reason"):
            self._final = converted
        else:
            await self._write(event(converted))

    async def offer(self, model: str, chunk: Mapping[str, Any]) -> bool:
        if self.committed is not None:
            if model != self.committed:
                return False
            await self._relay(chunk)
            return True
        self._pending.setdefault(model, []).append(chunk)
        if not Accumulator.has_output(chunk):
            return True
        self.committed = model
        if self.on_commit is not None:
            self.on_commit(model)
        if self.response is None:
            await self.start({**self._spec_headers(), h.RESP_SELECTED_MODEL: model})
        for pending in self._pending.pop(model):
            await self._relay(pending)
        self._pending.clear()
        return True

    async def keepalive(self) -> None:
        if self.response is None:
            await self.start(self._spec_headers())
        await self._write(KEEPALIVE)

    async def error(self, error: ApiError) -> None:
        await self._write(event(error.body()))

    async def finish(self, outcome: Outcome) -> None:
        selection = outcome.selection
        winner = selection.winner if selection else None
        if self.committed is not None and (winner is None or winner.model != self.committed):
            await self.error(
                failure(outcome)
                if selection is None
                else ApiError(
                    502,
                    f"the streamed answer of {self.committed} failed",
                    type="upstream_error",
                    code="stream_failed",
                    extra={"ensemble": ensemble_details(outcome)},
                )
            )
            return
        if selection is None:
            await self.error(failure(outcome))
            return
        details = ensemble_details(outcome)
        if self.committed is None:
            message = selection.message or selection.winner.message or {}
            chunks = message_chunks(
                self.envelope, message, selection.winner.finish_reason or "stop"
            )
            for chunk in chunks[:-1]:
                await self._write(event(chunk))
            self._final = chunks[-1]
        final = self._final or {
            **self.envelope,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        }
        await self._write(event({**final, "ensemble": details}))
        if self._include_usage:
            usage = total_usage(outcome)
            totals = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
            await self._write(event({**self.envelope, "choices": [], "usage": totals}))
        await self._write(DONE)


async def stream_completion(
    request: web.Request,
    fanout: Fanout,
    spec: EnsembleSpec,
    body: Mapping[str, Any],
    keepalive_seconds: float,
    error_response: Callable[[ApiError, dict[str, str]], web.Response],
    client_headers: Mapping[str, str] | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    writer = StreamWriter(request, spec, include_usage)
    run = asyncio.create_task(fanout.run(spec, body, sink=writer, client_headers=client_headers))
    try:
        while not run.done():
            await asyncio.wait({run}, timeout=keepalive_seconds)
            if not run.done() and writer.idle_seconds() >= keepalive_seconds:
                await writer.keepalive()
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    outcome = run.result()
    if writer.response is None:
        if outcome.selection is None:
            return error_response(failure(outcome), ensemble_headers(outcome)), outcome
        await writer.start(ensemble_headers(outcome))
    await writer.finish(outcome)
    assert writer.response is not None
    await writer.response.write_eof()
    return writer.response, outcome
