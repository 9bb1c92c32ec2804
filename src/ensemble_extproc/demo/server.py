"""OpenAI-compatible demo model servers (aiohttp) for loopback use.

Each demo model gets its own aiohttp app and port. Answers are canned and
deterministic, failures are seeded, and everything a user sees is labelled demo.

Quiz mode (``DemoModel.quiz_accuracy``): quiz questions (``demo.quiz``) are answered
right with a known probability, judge prompts pick a right candidate with it, and
``"logprobs": true`` reports a confidence that depends on whether the answer is right.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from ensemble_extproc import prompts
from ensemble_extproc.demo import quiz
from ensemble_extproc.demo.models import DemoModel
from ensemble_extproc.errors import ApiError, bad_request

__all__ = [
    "DEMO_MODEL_HEADER",
    "DEMO_MODEL_KEY",
    "DEMO_OWNED_BY",
    "DEMO_STATS_KEY",
    "DemoServers",
    "DemoStats",
    "create_demo_app",
    "serve_demo_forever",
    "start_demo_servers",
]

log = logging.getLogger(__name__)

DEMO_MODEL_HEADER: Final = "x-demo-model"
DEMO_OWNED_BY: Final = "ensemble-extproc-demo"
# Demo backends hold no state worth draining for long on shutdown.
_SHUTDOWN_TIMEOUT_S: Final = 1.0
_WORD_PIECE_RE: Final = re.compile(r"\s*\S+\s*")
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

JSONObject = dict[str, Any]
_MISSING: Final = object()  # tells an absent key apart from an explicit null


@dataclass(slots=True)
class DemoStats:
    """Per-backend request counters, served at GET /demo/stats.

    Invariant: requests == completed + failed + cancelled + in_flight.
    """

    requests: int = 0
    completed: int = 0
    failed: int = 0  # any 4xx/5xx answer: bad input or a seeded failure
    cancelled: int = 0  # client went away before the answer was fully sent
    in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


DEMO_MODEL_KEY: Final = web.AppKey("demo_model", DemoModel)
DEMO_STATS_KEY: Final = web.AppKey("demo_stats", DemoStats)
_RNG_KEY: Final = web.AppKey("demo_rng", random.Random)


class _Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class _ChatRequest:
    texts: tuple[str, ...]  # text of every message, for prompt_tokens
    prompt: str  # text of the last user message ("" if none)
    max_words: int | None
    stream: bool
    include_usage: bool
    logprobs: bool


@dataclass(frozen=True, slots=True)
class _Answer:
    id: str
    created: int
    model: str
    content: str
    finish_reason: str
    usage: dict[str, int]
    logprobs: JSONObject | None  # choices[0].logprobs of a non-streamed answer


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
async def _openai_http_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # OpenAI clients parse error bodies, so unknown routes/methods get the same shape.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"demo model {request.app[DEMO_MODEL_KEY].name}: {exc.reason}"
        return web.json_response(
            ApiError(exc.status, message, code=None).body(),
            status=exc.status,
            headers=headers,
        )


async def _list_models(request: web.Request) -> web.Response:
    name = request.app[DEMO_MODEL_KEY].name
    entry = {"id": name, "object": "model", "created": 0, "owned_by": DEMO_OWNED_BY}
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
    if outcome is _Outcome.COMPLETED:
        stats.completed += 1
    elif outcome is _Outcome.FAILED:
        stats.failed += 1
    else:
        stats.cancelled += 1
    return response


async def _serve_chat(request: web.Request) -> tuple[web.StreamResponse, _Outcome]:
    model = request.app[DEMO_MODEL_KEY]
    try:
        chat = _parse_chat_request(await _read_body(request))
    except ApiError as exc:
        return await _send_json(request, exc.body(), exc.status, _Outcome.FAILED)
    fails = request.app[_RNG_KEY].random() < model.failure_rate
    if model.latency_ms > 0:
        await asyncio.sleep(model.latency_ms / 1000)
    if fails:
        return await _send_json(
            request, _failure_body(model), model.failure_status, _Outcome.FAILED
        )
    answer = _make_answer(model, chat)
    if chat.stream:
        return await _send_stream(request, answer, chat.include_usage)
    return await _send_json(request, _completion_body(answer), 200, _Outcome.COMPLETED)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ApiError(exc.status, "request body is too large", code="request_too_large") from None


async def _send_json(
    request: web.Request, body: JSONObject, status: int, outcome: _Outcome
) -> tuple[web.StreamResponse, _Outcome]:
    # Sent here rather than by aiohttp after return, so "completed" means fully sent.
    response = web.json_response(body, status=status)
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        return response, _Outcome.CANCELLED
    return response, outcome


async def _send_stream(
    request: web.Request, answer: _Answer, include_usage: bool
) -> tuple[web.StreamResponse, _Outcome]:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        for chunk in _stream_chunks(answer, include_usage):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        # aiohttp finishes a response on a closed connection quietly; just count it.
        return response, _Outcome.CANCELLED
    return response, _Outcome.COMPLETED


# ------------------------------------------------------------- request parsing


def _parse_chat_request(raw: bytes) -> _ChatRequest:
    payload = _load_json_object(raw)
    texts, prompt = _parse_messages(payload.get("messages", _MISSING))
    return _ChatRequest(
        texts=texts,
        prompt=prompt,
        max_words=_parse_max_words(payload),
        stream=_optional_bool(payload, "stream"),
        include_usage=_parse_include_usage(payload),
        logprobs=_optional_bool(payload, "logprobs"),
    )


def _load_json_object(raw: bytes) -> JSONObject:
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="invalid_json",
        ) from None
    except (ValueError, RecursionError):
        # Undecodable bytes or absurdly deep nesting: still the client's mistake.
        raise bad_request("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("request body must be a JSON object", code="invalid_type")
    return payload


def _parse_messages(raw: object) -> tuple[tuple[str, ...], str]:
    if raw is _MISSING:
        raise bad_request(
            "missing required parameter: 'messages'",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(raw, list):
        raise bad_request("'messages' must be a list", param="messages", code="invalid_type")
    if not raw:
        raise bad_request("'messages' must not be empty", param="messages", code="empty_array")
    texts: list[str] = []
    prompt = ""
    for index, message in enumerate(raw):
        role, text = _parse_message(message, f"messages[{index}]")
        texts.append(text)
        if role == "user":
            prompt = text
    return tuple(texts), prompt


def _parse_message(message: object, param: str) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise bad_request(f"'{param}' must be an object", param=param, code="invalid_type")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise bad_request(
            f"'{param}.role' must be a non-empty string", param=f"{param}.role", code="invalid_type"
        )
    return role, _content_text(message.get("content"), f"{param}.content")


def _content_text(content: object, param: str) -> str:
    # Content is a string, null (e.g. assistant tool calls) or a list of parts.
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(
            f"'{param}' must be a string or a list of content parts",
            param=param,
            code="invalid_type",
        )
    texts: list[str] = []
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(
                f"'{part_param}' must be an object with a string 'type'",
                param=part_param,
                code="invalid_type",
            )
        if part["type"] != "text":
            continue  # images, audio...: a demo model only reads text
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"'{part_param}.text' must be a string", param=f"{part_param}.text")
        texts.append(text)
    return "\n".join(texts)


def _parse_max_words(payload: JSONObject) -> int | None:
    limits: list[int] = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(
                f"'{name}' must be a positive integer", param=name, code="invalid_value"
            )
        limits.append(value)
    # Both given: honour the stricter one.
    return min(limits) if limits else None


def _optional_bool(payload: JSONObject, name: str) -> bool:
    value = payload.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be a boolean", param=name, code="invalid_type")
    return value


def _parse_include_usage(payload: JSONObject) -> bool:
    options = payload.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad_request(
            "'stream_options' must be an object", param="stream_options", code="invalid_type"
        )
    value = options.get("include_usage")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(
            "'stream_options.include_usage' must be a boolean",
            param="stream_options.include_usage",
            code="invalid_type",
        )
    return value


# ------------------------------------------------------------------ answering


def _make_answer(model: DemoModel, chat: _ChatRequest) -> _Answer:
    reply = _reply(model, chat.prompt)
    content, finish_reason = _truncate(reply.text, chat.max_words)
    logprobs = _logprobs(model, chat.prompt, content, reply.right) if chat.logprobs else None
    prompt_tokens = sum(_word_count(text) for text in chat.texts)
    completion_tokens = _word_count(content)
    return _Answer(
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
            return _quiz_answer(problem, model.quiz_accuracy, rng)
    return _Reply(_choose_answer(model, prompt), right=True)


def _prompt_digest(prompt: str) -> bytes:
    # surrogatepass: JSON can carry lone surrogates, which must not crash hashing.
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest()


def _prompt_rng(model: DemoModel, prompt: str, purpose: str = "") -> random.Random:
    """Draws that depend only on (seed, prompt): reproducible, and independent per seed."""
    return random.Random(f"{model.seed}:{_prompt_digest(prompt).hex()}{purpose}")


def _quiz_answer(problem: quiz.Problem, accuracy: float, rng: random.Random) -> _Reply:
    # Draw order (fixed, for reproducibility): right or wrong, the distractor, the style.
    right = rng.random() < accuracy
    answer = problem.correct if right else rng.choice(problem.distractors)
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
    pieces = _word_pieces(content)
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


def _truncate(answer: str, max_words: int | None) -> tuple[str, str]:
    if max_words is None or _word_count(answer) <= max_words:
        return answer, "stop"
    return "".join(_word_pieces(answer)[:max_words]).rstrip(), "length"


def _word_pieces(text: str) -> list[str]:
    """Split into words, each keeping its surrounding whitespace: "".join() == text."""
    pieces: list[str] = _WORD_PIECE_RE.findall(text)
    if not pieces:
        return [text] if text else []
    return pieces


def _word_count(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------ payloads


def _failure_body(model: DemoModel) -> JSONObject:
    rate_limited = model.failure_status == 429
    return ApiError(
        model.failure_status,
        f"demo model {model.name}: simulated failure "
        f"(failure_rate {model.failure_rate:g}, seed {model.seed})",
        type="rate_limit_error" if rate_limited else "server_error",
        code="rate_limit_exceeded" if rate_limited else "demo_simulated_failure",
    ).body()


def _completion_body(answer: _Answer) -> JSONObject:
    message = {"role": "assistant", "content": answer.content}
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": answer.logprobs,
    }
    return {
        **_envelope(answer, "chat.completion"),
        "choices": [choice],
        "usage": answer.usage,
    }


def _stream_chunks(answer: _Answer, include_usage: bool) -> list[JSONObject]:
    deltas: list[tuple[JSONObject, str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": piece}, None) for piece in _word_pieces(answer.content)]
    deltas.append(({}, answer.finish_reason))
    chunks = [_chunk(answer, delta, finish, include_usage) for delta, finish in deltas]
    if include_usage:
        chunks.append(
            {**_envelope(answer, "chat.completion.chunk"), "choices": [], "usage": answer.usage}
        )
    return chunks


def _chunk(
    answer: _Answer, delta: JSONObject, finish_reason: str | None, include_usage: bool
) -> JSONObject:
    # Streamed chunks carry no logprobs, even when asked for: only non-streamed answers do.
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    chunk: JSONObject = {**_envelope(answer, "chat.completion.chunk"), "choices": [choice]}
    if include_usage:
        chunk["usage"] = None  # as OpenAI: only the final usage chunk carries it
    return chunk


def _envelope(answer: _Answer, obj: str) -> JSONObject:
    return {
        "id": answer.id,
        "object": obj,
        "created": answer.created,
        "model": answer.model,
        "system_fingerprint": "demo",
    }


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
        site = web.TCPSite(runner, self.host, model.port)
        await site.start()
        self.ports[model.name] = site.port  # the real port, also when 0 was asked
        self.urls[model.name] = f"http://{_url_host(self.host)}:{site.port}/v1"

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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
