"""OpenAI-compatible demo model servers (aiohttp) for loopback use.

Each demo model gets its own aiohttp app and port. Answers are canned and
deterministic, failures are seeded, and everything a user sees is labelled demo.

Quiz mode (``DemoModel.quiz_accuracy``): quiz questions (``demo.quiz``) are answered
right with a known probability, judge prompts pick a right candidate with it, and
``"logprobs": true`` reports a confidence that depends on whether the answer is right. A
prompt that says "Think step by step." gets a 1-4 KB chain of thought (``quiz.render_long``).

Tool calls (``DemoModel.tool_call``), paced streams (``token_delay_ms``) and faults
(``DemoModel.fault``): see ``demo.payloads``, ``demo.streaming`` and ``demo.faults``.

Continuations (``DemoModel.continuation``, read as ``continuation`` says): asked to
continue a partial answer, a demo model sends the rest of its own answer when the partial
text is its start (as a replica of the model that wrote it would), else its answer after
the partial text.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Final, Self

from aiohttp import web
from aiohttp.typedefs import Handler

from ensemble_extproc import prompts
from ensemble_extproc.chat import ChatRequest, content_text, last_user_message, parse_chat_request
from ensemble_extproc.config import Address, Config
from ensemble_extproc.config.demo import DEMO_OWNER, DemoModel
from ensemble_extproc.continuation import ContinuationRefused, requested_continuation
from ensemble_extproc.demo import faults, quiz
from ensemble_extproc.demo.payloads import (
    Answer,
    JSONObject,
    ToolCallAnswer,
    argument_pieces,
    completion_body,
    error_body,
    stream_plan,
    word_pieces,
)
from ensemble_extproc.demo.streaming import Outcome, send_json, send_stream, sleep_ms
from ensemble_extproc.errors import ApiError, ErrorCode
from ensemble_extproc.serve import LISTEN_BACKLOG, wait_for_signal

__all__ = [
    "DEMO_MODEL_HEADER",
    "DEMO_MODEL_KEY",
    "DEMO_STATS_KEY",
    "DemoServers",
    "DemoStats",
    "create_demo_app",
    "serve_demo_forever",
    "start_demo_servers",
]

log = logging.getLogger(__name__)

DEMO_MODEL_HEADER: Final = "x-demo-model"
# Demo backends hold no state worth draining for long on shutdown.
_SHUTDOWN_TIMEOUT_S: Final = 1.0
# Spread of the reported confidence around DemoModel.confidence_*: per answer, and per token
# around the answer's mean.
_CONFIDENCE_JITTER: Final = 0.05
_TOKEN_JITTER: Final = 0.02
_MIN_PROBABILITY: Final = 0.01
_MAX_PROBABILITY: Final = 0.99
# "### Candidate 7" lines of a judge prompt, built from prompts.candidate_heading itself.
_SENTINEL: Final = 987654321
_CANDIDATE_HEADING_RE: Final = re.compile(
    "^"
    + re.escape(prompts.candidate_heading(_SENTINEL)).replace(str(_SENTINEL), r"(\d+)")
    + r"[ \t]*$",
    re.MULTILINE,
)
# How a demo judge names its pick; any reasonable judge parser reads all of them.
_JUDGE_STYLES: Final = ("{n}", "Candidate {n}", '{{"best": {n}}}', "The best is Candidate {n}.")


@dataclass(slots=True)
class DemoStats:
    """Per-backend request counters, served at GET /demo/stats.

    Invariant: requests == completed + failed + cancelled + in_flight. ``faults`` counts
    the requests that ``DemoModel.fault`` applied to, whatever their outcome (see
    ``demo.faults``).
    """

    requests: int = 0
    completed: int = 0
    failed: int = 0  # any 4xx/5xx answer: bad input, a seeded failure or an error fault
    cancelled: int = 0  # client went away before the answer was fully sent
    in_flight: int = 0
    faults: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


DEMO_MODEL_KEY: Final = web.AppKey("demo_model", DemoModel)
DEMO_STATS_KEY: Final = web.AppKey("demo_stats", DemoStats)
_RNG_KEY: Final = web.AppKey("demo_rng", random.Random)


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    # Whether the reply is right, which sets the confidence reported in logprobs; a
    # non-quiz answer counts as right.
    right: bool


# --------------------------------------------------------------------------- app


def create_demo_app(model: DemoModel) -> web.Application:
    """Build the aiohttp app serving one demo model."""
    app = web.Application(middlewares=[_openai_http_errors])
    app[DEMO_MODEL_KEY] = model
    app[DEMO_STATS_KEY] = DemoStats()
    # One RNG per app, drawn once per valid request: the failure sequence only
    # depends on the seed and the request order.
    app[_RNG_KEY] = random.Random(model.seed)
    app.on_response_prepare.append(_label_response)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/demo/stats", _stats)
    return app


async def _label_response(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[DEMO_MODEL_HEADER] = request.app[DEMO_MODEL_KEY].name


@web.middleware
async def _openai_http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # OpenAI clients parse error bodies, so unknown routes/methods get the same shape.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"demo model {request.app[DEMO_MODEL_KEY].name}: {exc.reason}"
        return web.json_response(
            error_body(message, "invalid_request_error"),
            status=exc.status,
            headers=headers,
        )


async def _list_models(request: web.Request) -> web.Response:
    name = request.app[DEMO_MODEL_KEY].name
    entry = {"id": name, "object": "model", "created": 0, "owned_by": DEMO_OWNER}
    return web.json_response({"object": "list", "data": [entry]})


async def _healthz(request: web.Request) -> web.Response:
    name = request.app[DEMO_MODEL_KEY].name
    return web.json_response({"status": "ok", "model": name, "demo": True})


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[DEMO_STATS_KEY].as_dict())


# ------------------------------------------------------------ chat completions


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    stats = request.app[DEMO_STATS_KEY]
    stats.requests += 1
    stats.in_flight += 1
    try:
        response, outcome = await _serve_chat(request)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (the runner is
        # started with handler_cancellation=True); also covers server shutdown.
        stats.cancelled += 1
        raise
    finally:
        stats.in_flight -= 1
    if outcome is Outcome.COMPLETED:
        stats.completed += 1
    elif outcome is Outcome.FAILED:
        stats.failed += 1
    else:
        stats.cancelled += 1
    return response


async def _serve_chat(request: web.Request) -> tuple[web.StreamResponse, Outcome]:
    model = request.app[DEMO_MODEL_KEY]
    try:
        chat = parse_chat_request(await _read_body(request))
    except ApiError as exc:
        return await send_json(request, exc.body(), exc.status, Outcome.FAILED)
    try:
        partial = requested_continuation(chat.body, model.continuation)
    except ContinuationRefused as exc:
        error = error_body(f"demo model {model.name}: {exc}", "invalid_request_error")
        return await send_json(request, error, 400, Outcome.FAILED)
    fails = request.app[_RNG_KEY].random() < model.failure_rate
    await sleep_ms(model.latency_ms)
    if fails:
        return await send_json(request, _failure_body(model), model.failure_status, Outcome.FAILED)
    kind = None if model.fault == "none" else model.fault  # "none" is read as None already
    fault = kind if faults.applies(kind, chat.stream) else None
    if fault is not None:
        request.app[DEMO_STATS_KEY].faults += 1
        faulty = await faults.serve_fault(request, model, fault, chat.stream)
        if faulty is not None:
            return faulty
    answer = _make_answer(model, chat, partial)
    if chat.stream:
        return await send_stream(
            request,
            stream_plan(answer, chat.include_usage),
            token_delay_ms=model.token_delay_ms,
            fault=fault,
            drip_ms=model.fault_drip_ms,
            break_after=model.fault_after_pieces,
        )
    if fault == "drip":
        return await faults.drip_json(request, completion_body(answer), model.fault_drip_ms)
    # As long as the stream would take after its first chunk.
    await sleep_ms(model.token_delay_ms * (len(answer.pieces) - 1))
    return await send_json(request, completion_body(answer), 200, Outcome.COMPLETED)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(ErrorCode.REQUEST_TOO_LARGE, "request body is too large") from None


# ------------------------------------------------------------------ answering


def _make_answer(model: DemoModel, chat: ChatRequest, partial: str | None = None) -> Answer:
    """The answer to ``chat``; with ``partial``, the continuation of that partial answer."""
    fields = chat.fields
    if model.tool_call is not None and fields.tools and fields.tool_choice != "none":
        arguments = model.tool_call.arguments_json
        call = ToolCallAnswer(f"call_{uuid.uuid4().hex[:24]}", model.tool_call.name, arguments)
        return _answer(model, chat, "", "tool_calls", None, argument_pieces(arguments), call)
    prompt = last_user_message(chat.body)
    reply = _reply(model, prompt)
    text = reply.text if partial is None else _continue(reply.text, partial)
    limits = [n for n in (fields.max_tokens, fields.max_completion_tokens) if n is not None]
    # Both given: honour the stricter one.
    content, finish_reason = _truncate(text, min(limits) if limits else None)
    logprobs = _logprobs(model, prompt, content, reply.right) if fields.logprobs else None
    return _answer(model, chat, content, finish_reason, logprobs, word_pieces(content))


def _answer(
    model: DemoModel,
    chat: ChatRequest,
    content: str,
    finish_reason: str,
    logprobs: JSONObject | None,
    pieces: list[str],
    tool_call: ToolCallAnswer | None = None,
) -> Answer:
    messages = chat.body["messages"]
    prompt_tokens = sum(_word_count(content_text(m.get("content"))) for m in messages)
    # A word per piece of text; a tool call's pieces are its tokens.
    completion_tokens = len(pieces) if tool_call is not None else _word_count(content)
    return Answer(
        id=f"chatcmpl-demo-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model.name,
        content=content,
        finish_reason=finish_reason,
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        logprobs=logprobs,
        pieces=tuple(pieces),
        tool_call=tool_call,
    )


def _reply(model: DemoModel, prompt: str) -> _Reply:
    if model.quiz_accuracy is not None:
        problem = quiz.parse(prompt)
        if problem is not None:
            rng = _prompt_rng(model, prompt)
            if prompts.JUDGE_INSTRUCTION in prompt and prompts.CANDIDATES_HEADING in prompt:
                verdict = _judge(problem, prompt, model.quiz_accuracy, rng)
                if verdict is not None:
                    return verdict
            # A question, or an aggregator prompt about one: answer it.
            return _quiz_answer(problem, model.quiz_accuracy, rng, quiz.wants_steps(prompt))
    return _Reply(_choose_answer(model, prompt), right=True)


def _prompt_digest(prompt: str) -> bytes:
    # surrogatepass: JSON can carry lone surrogates, which must not crash hashing.
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()


def _prompt_rng(model: DemoModel, prompt: str, purpose: str = "") -> random.Random:
    """Draws that depend only on (seed, prompt): reproducible, and independent per seed."""
    return random.Random(f"{model.seed}:{_prompt_digest(prompt).hex()}{purpose}")


def _quiz_answer(
    problem: quiz.Problem, accuracy: float, rng: random.Random, steps: bool = False
) -> _Reply:
    # Draw order (fixed, for reproducibility): right or wrong, the distractor, the style.
    right = rng.random() < accuracy
    answer = problem.correct if right else rng.choice(problem.distractors)
    if steps:  # "Think step by step.": a 1-4 KB chain of thought
        style = rng.randrange(quiz.LONG_STYLE_COUNT)
        return _Reply(quiz.render_long(problem, answer, style, rng), right)
    return _Reply(quiz.render(problem, answer, rng.randrange(quiz.STYLE_COUNT)), right)


def _judge(
    problem: quiz.Problem, prompt: str, accuracy: float, rng: random.Random
) -> _Reply | None:
    """Pick a candidate: the first right one with probability ``accuracy``, else a wrong one.

    With no right candidate, any candidate; with only right ones, another right one.
    None when the prompt holds no candidates.
    """
    candidates = _judge_candidates(prompt)
    if not candidates:
        return None
    numbers = list(candidates)
    right = [
        n for n, text in candidates.items() if quiz.final_answer(problem, text) == problem.correct
    ]
    if right and rng.random() < accuracy:
        pick = right[0]
    else:
        wrong = [n for n in numbers if n not in right]
        pick = rng.choice(wrong or [n for n in numbers if n != right[0]] or numbers)
    style = _JUDGE_STYLES[rng.randrange(len(_JUDGE_STYLES))]
    return _Reply(style.format(n=pick), right=pick in right)


def _judge_candidates(prompt: str) -> dict[int, str]:
    """Candidate number -> text, from the candidates section of a judge prompt."""
    _, _, section = prompt.partition(prompts.CANDIDATES_HEADING)
    headings = list(_CANDIDATE_HEADING_RE.finditer(section))
    candidates: dict[int, str] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following is not None else len(section)
        candidates.setdefault(int(heading.group(1)), section[heading.end() : end].strip())
    return candidates


def _logprobs(model: DemoModel, prompt: str, content: str, right: bool) -> JSONObject:
    """One entry per word piece; their mean probability is the answer's confidence."""
    rng = _prompt_rng(model, prompt, ":confidence")
    base = model.confidence_correct if right else model.confidence_wrong
    confidence = _clip(base + rng.uniform(-_CONFIDENCE_JITTER, _CONFIDENCE_JITTER))
    pieces = word_pieces(content)
    noise = [rng.uniform(-_TOKEN_JITTER, _TOKEN_JITTER) for _ in pieces]
    shift = sum(noise) / len(noise) if noise else 0.0  # keeps the mean at ``confidence``
    return {
        "content": [
            {
                "token": piece,
                "logprob": math.log(_clip(confidence + delta - shift)),
                "bytes": None,
                "top_logprobs": [],
            }
            for piece, delta in zip(pieces, noise, strict=True)
        ]
    }


def _clip(probability: float) -> float:
    return min(max(probability, _MIN_PROBABILITY), _MAX_PROBABILITY)


def _choose_answer(model: DemoModel, prompt: str) -> str:
    digest = _prompt_digest(prompt)
    template = model.answers[int.from_bytes(digest[:8], "big") % len(model.answers)]
    # {model} first, so a prompt that contains "{model}" is echoed verbatim.
    return template.replace("{model}", model.name).replace("{prompt}", prompt)


def _continue(answer: str, partial: str) -> str:
    """What follows ``partial``: the rest of the answer it starts, else the answer after it."""
    if answer.startswith(partial):
        return answer[len(partial) :]
    return answer if not partial or partial[-1].isspace() else " " + answer


def _truncate(answer: str, max_words: int | None) -> tuple[str, str]:
    if max_words is None or _word_count(answer) <= max_words:
        return answer, "stop"
    return "".join(word_pieces(answer)[:max_words]).rstrip(), "length"


def _word_count(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------ payloads


def _failure_body(model: DemoModel) -> JSONObject:
    rate_limited = model.failure_status == 429
    return error_body(
        f"demo model {model.name}: simulated failure "
        f"(failure_rate {model.failure_rate:g}, seed {model.seed})",
        "rate_limit_error" if rate_limited else "server_error",
        "rate_limit_exceeded" if rate_limited else "demo_simulated_failure",
    )


# -------------------------------------------------------------------- servers


class DemoServers:
    """Running demo backends; close() (or ``async with``) stops them all."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.urls: dict[str, str] = {}  # model name -> base URL ending in /v1
        self.ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []

    async def _start(self, model: DemoModel) -> None:
        # handler_cancellation: aiohttp (>= 3.9) no longer cancels handlers on
        # client disconnect by default; the "cancelled" counter relies on it.
        runner = web.AppRunner(
            create_demo_app(model),
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        self._runners.append(runner)  # before binding, so close() cleans it up
        # As a provider would: a burst of connections is queued, not dropped.
        site = web.TCPSite(runner, self.host, model.port, backlog=LISTEN_BACKLOG)
        await site.start()
        self.ports[model.name] = site.port  # the real port, also when 0 was asked
        self.urls[model.name] = f"http://{Address(self.host, site.port).authority}/v1"

    async def close(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def start_demo_servers(models: Sequence[DemoModel], host: str = "127.0.0.1") -> DemoServers:
    """Start one HTTP server per demo model; on any failure, nothing stays running."""
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ValueError(f"demo model names must be unique, got {names}")
    servers = DemoServers(host)
    try:
        for model in models:
            await servers._start(model)
    except BaseException:
        await servers.close()
        raise
    return servers


async def serve_demo_forever(models: Sequence[DemoModel], host: str = "127.0.0.1") -> None:
    """Serve the demo models until cancelled; the servers are always closed."""
    async with await start_demo_servers(models, host) as servers:
        for model in models:
            log.info(
                "demo model %s (latency %s ms) on %s",
                model.name,
                f"{model.latency_ms:g}",
                servers.urls[model.name],
            )
        await asyncio.Event().wait()


async def serve_demo(config: Config) -> None:
    """Serve the config's demo models until SIGINT/SIGTERM (``serve.py``)."""
    task = asyncio.create_task(serve_demo_forever(config.demo_models, "127.0.0.1"))
    try:
        await wait_for_signal()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
