"""Answering ``"stream": true``: relay a committed call live, or stream a decided answer.

Relayed calls (first_success members, the fusion aggregator) go out chunk by chunk as they
arrive, from the first call that produces output. If that call breaks midway, another
model may continue the text sent so far on the same stream (``resume``). Other strategies
decide first and then stream the answer; while they wait, SSE comments keep proxies from
timing the connection out. An error after the stream started is an OpenAI-style error
event, then the end of the stream: never a silently truncated 200.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from .. import headers as h
from ..chat import ChatRequest
from ..errors import ApiError, ErrorCode
from ..spec import EnsembleSpec
from ..strategies.base import Continuation
from .orchestrator import Fanout, Outcome, Relay
from .response import answer, ensemble_details, ensemble_headers, failure, spec_headers, total_usage
from .resume import EchoFilter
from .sse import DONE, KEEPALIVE, Accumulator, event, first_choice, message_choices
from .wire import ChatCompletionChunk

FINISH = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


class StreamWriter:
    """One client's SSE response (implements the orchestrator's ``Sink``)."""

    def __init__(
        self, request: web.Request, spec: EnsembleSpec, include_usage: bool, seed: bool = False
    ) -> None:
        self._request = request
        self._spec = spec
        # The semantic router's dialect in the headers too.
        self._seed = seed
        self._include_usage = include_usage
        # Every chunk of the response: this id, time and model, and its own choices.
        self.head = ChatCompletionChunk(
            id=f"chatcmpl-ens-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=f"ensemble/{spec.strategy}",
            choices=[],
        )
        self.response: web.StreamResponse | None = None
        self.committed: Relay | None = None
        self.on_commit: Callable[[Relay], None] | None = None
        self._pending: dict[Relay, list[Mapping[str, Any]]] = {}
        # The relayed finish_reason chunk's choice, held back to carry the ensemble object.
        self._final: dict[str, Any] | None = None
        # What the client got of the relayed answer: its text, in chunks, and whether a
        # tool call started (a tool call's arguments cannot be continued).
        self._sent: list[str] = []
        self._tool_call = False
        # Set while relaying a continuation: drops a repeat of the text it continues.
        self._echo: EchoFilter | None = None
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()

    def chunk(self, choice: dict[str, Any] | None) -> ChatCompletionChunk:
        return msgspec.structs.replace(self.head, choices=[] if choice is None else [choice])

    async def start(self, headers: Mapping[str, str]) -> None:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache", **headers}
        )
        await response.prepare(self._request)
        self.response = response

    async def _write(self, data: bytes) -> None:
        assert self.response is not None
        async with self._lock:
            await self.response.write(data)
            self._last_write = time.monotonic()

    def idle_seconds(self) -> float:
        return time.monotonic() - self._last_write

    async def _relay(self, chunk: Mapping[str, Any]) -> None:
        """An endpoint's chunk under our id and model; usage-only chunks are dropped (the
        final usage counts every call)."""
        first = first_choice(chunk)
        if first is None:
            return
        choice = {**first, "index": 0}
        if self._echo is not None:
            continued = self._continued(choice, self._echo)
            if continued is None:
                return
            choice = continued
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._sent.append(content)
            if delta.get("tool_calls"):
                self._tool_call = True
        if choice.get("finish_reason"):
            self._final = choice
        else:
            await self._write(event(self.chunk(choice)))

    @staticmethod
    def _continued(choice: dict[str, Any], echo: EchoFilter) -> dict[str, Any] | None:
        """A continuation's choice as part of the answer already under way: no second
        role, no repeat of the text it continues; None when nothing is left of it."""
        raw = choice.get("delta")
        delta = {k: v for k, v in raw.items() if k != "role"} if isinstance(raw, dict) else {}
        content = delta.get("content")
        text = echo.feed(content if isinstance(content, str) else "")
        if choice.get("finish_reason"):
            text += echo.flush()
        if text:
            delta["content"] = text
        else:
            delta.pop("content", None)
        if not delta and not choice.get("finish_reason"):
            return None
        return {**choice, "delta": delta}

    async def offer(self, relay: Relay, chunk: Mapping[str, Any]) -> bool:
        if self.committed is not None:
            if relay != self.committed:
                return False
            await self._relay(chunk)
            return True
        self._pending.setdefault(relay, []).append(chunk)
        if not Accumulator.has_output(chunk):
            return True
        self.committed = relay
        if self.on_commit is not None:
            self.on_commit(relay)
        if self.response is None:
            await self.start(
                {**spec_headers(self._spec, self._seed), h.RESP_SELECTED_MODEL: relay.model}
            )
        for pending in self._pending.pop(relay):
            await self._relay(pending)
        self._pending.clear()
        return True

    def partial(self) -> Continuation | None:
        """The answer so far, when another model may continue it: text went out, no tool
        call did, and the relayed call had not finished."""
        if self._tool_call or self._final is not None or not self._sent:
            return None
        return Continuation("".join(self._sent), len(self._sent))

    def resume(self, relay: Relay) -> None:
        self.committed = relay
        self._echo = EchoFilter("".join(self._sent))

    async def keepalive(self) -> None:
        if self.response is None:
            await self.start(spec_headers(self._spec, self._seed))
        await self._write(KEEPALIVE)

    async def error(self, error: ApiError) -> None:
        await self._write(event(error.body()))

    async def finish(self, outcome: Outcome) -> None:
        selection = outcome.selection
        winner = selection.winner if selection else None
        committed = self.committed
        if committed is not None and (winner is None or winner.model != committed.model):
            # The answer being streamed broke (and was not resumed), or another was chosen:
            # what was sent cannot be taken back. A plain quorum failure says less.
            broke = selection is not None or bool(outcome.resumes)
            await self.error(
                ApiError(
                    ErrorCode.STREAM_FAILED,
                    stream_failure(committed.model, outcome),
                    extra={"ensemble": ensemble_details(outcome)},
                )
                if broke
                else failure(outcome)
            )
            return
        if selection is None:
            await self.error(failure(outcome))
            return
        if self.committed is None:
            choices = message_choices(*answer(selection))
            for choice in choices[:-1]:
                await self._write(event(self.chunk(choice)))
            self._final = choices[-1]
        final = self.chunk(self._final or FINISH)
        final.ensemble = ensemble_details(outcome)
        await self._write(event(final))
        if self._include_usage:
            usage = self.chunk(None)
            usage.usage = total_usage(outcome)
            await self._write(event(usage))
        await self._write(DONE)


def stream_failure(model: str, outcome: Outcome) -> str:
    """Why the answer being streamed ends with an error event."""
    if not outcome.resumes:
        return f"the streamed answer of {model} failed"
    last = outcome.resumes[-1]
    return (
        f"the streamed answer of {last.broken} broke after {last.chars} characters: {last.reason}"
    )


async def stream_completion(
    request: web.Request,
    fanout: Fanout,
    spec: EnsembleSpec,
    chat: ChatRequest,
    keepalive_seconds: float,
    error_response: Callable[[ApiError, dict[str, str]], web.Response],
    client_headers: Mapping[str, str] | None = None,
    seed: bool = False,
) -> tuple[web.StreamResponse, Outcome]:
    writer = StreamWriter(request, spec, chat.include_usage, seed)
    run = asyncio.create_task(
        fanout.run(spec, chat.body, sink=writer, client_headers=client_headers)
    )
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
            return error_response(failure(outcome), ensemble_headers(outcome, seed)), outcome
        await writer.start(ensemble_headers(outcome, seed))
    await writer.finish(outcome)
    assert writer.response is not None
    await writer.response.write_eof()
    return writer.response, outcome
