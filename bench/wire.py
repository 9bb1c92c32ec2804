"""Micro-benchmark: the upstream's wire path, the project's against msgspec and pydantic v2.

Times, per request, what the ensemble upstream does with JSON apart from the network:

- decode: a 3.7 KB chat request (system prompt, two earlier turns, a long last question,
  a few parameters) read as standard JSON and checked against the request model, keeping
  the body as sent for the models (unknown fields pass on);
- encode: a completion with a 5-candidate ``ensemble`` object, built and serialised;
- start-up: importing the upstream app, and each library with the models defined, in a
  fresh interpreter.

The first row of each table is the project's own path as installed: run it on two
checkouts to compare them (``PYTHONPATH=<other checkout>/src python -m bench.wire``). The
other rows are each library on its own, with models equivalent to the project's.

Load pattern: one thread, back-to-back calls, best of ``--runs`` runs of at least
``--seconds`` each (the least disturbed run on a shared machine); start-up is the median of
``--runs`` fresh interpreters. Not a timed test: it prints tables.

    python -m bench.wire [--runs 7] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import msgspec
import pydantic
import pydantic_core

from bench.speedkit import MACHINE, chat_body, table
from ensemble_extproc.spec import EnsembleSpec
from ensemble_extproc.strategies import Candidate, Role, Selection, Status, Usage
from ensemble_extproc.upstream import response
from ensemble_extproc.upstream.orchestrator import Outcome

REQUEST_BYTES = 3700
MODELS = ("gpt-4o", "claude-sonnet", "llama-70b", "mistral-large", "qwen-72b")


def request_body() -> bytes:
    body = json.loads(chat_body(REQUEST_BYTES - 150, "gpt-4o-mini"))
    body |= {
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": False,
        "stream_options": None,
        "user": "u-1234",
        "top_p": 0.9,  # not checked: passed on
    }
    return json.dumps(body).encode()


def outcome() -> Outcome:
    answer = "The export jobs first: they block the dashboards. " * 8
    candidates = tuple(
        Candidate(
            model,
            Status.OK,
            {"role": "assistant", "content": f"{answer} ({model})"},
            "stop",
            Usage(812, 96, 908),
            latency_ms=412.3 + 10 * i,
            order=i,
            role=Role.MEMBER,
        )
        for i, model in enumerate(MODELS)
    )
    selection = Selection(
        candidates[0],
        agreement=0.8,
        reason="4 of 5 valid answers agree",
        details={"groups": [{"answer": "export jobs", "votes": 4}, {"answer": "x", "votes": 1}]},
    )
    spec = EnsembleSpec(MODELS, "voting", 3)
    return Outcome(spec, candidates, selection, False, len(MODELS), 0)


# --------------------------------------------------------------------- the project's path


def project_decode() -> Callable[[bytes], object]:
    """The upstream's own request reading, whichever version is installed."""
    try:
        module = importlib.import_module("ensemble_extproc.chat")
    except ImportError:  # before the wire models: stdlib json and hand-written checks
        module = importlib.import_module("ensemble_extproc.upstream.request")
    parse: Callable[[bytes], object] = module.parse_chat_request
    return parse


def project_encode() -> Callable[[Outcome], bytes]:
    """Build and serialise the completion as the upstream's handler does."""
    build = getattr(response, "completion", None)
    if build is not None:
        return lambda done: msgspec.json.encode(build(done, done.selection, 0))
    # Before the wire models: a dict, serialised by aiohttp's json_response (json.dumps).
    body = response.completion_body  # type: ignore[attr-defined]
    return lambda done: json.dumps(body(done, done.selection, 0)).encode()


# ------------------------------------------------------------- msgspec, as a library alone


class MPart(msgspec.Struct):
    type: str
    text: str | msgspec.UnsetType = msgspec.UNSET


class MMessage(msgspec.Struct):
    role: Annotated[str, msgspec.Meta(min_length=1)]
    content: str | list[MPart] | None = None


class MStreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class MRequest(msgspec.Struct):
    messages: Annotated[list[MMessage], msgspec.Meta(min_length=1)]
    model: str | None = None
    stream: bool | None = None
    stream_options: MStreamOptions | None = None
    temperature: float | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class MUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MCandidate(msgspec.Struct):
    model: str
    role: str
    status: str
    valid: bool
    latency_ms: float
    attempts: int
    finish_reason: str | None
    answer: str | None
    confidence: float | None
    error: str | None
    usage: MUsage | None


class MCalls(msgspec.Struct):
    started: int
    cancelled: int


class MEnsemble(msgspec.Struct):
    strategy: str
    models: list[str]
    min_responses: int
    responses_received: int
    selected_model: str | None
    agreement: float | None
    reason: str | None
    details: dict[str, Any]
    calls: MCalls
    candidates: list[MCandidate]


class MChoice(msgspec.Struct):
    index: int
    message: dict[str, Any]
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class MCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[MChoice]
    usage: MUsage
    ensemble: MEnsemble


_M_ANY = msgspec.json.Decoder()


def msgspec_decode(raw: bytes) -> object:
    body = _M_ANY.decode(raw)  # the body as sent, for the models
    return msgspec.convert(body, MRequest), body


def msgspec_encode(done: Outcome) -> bytes:
    assert done.selection is not None
    ensemble = MEnsemble(
        strategy=done.spec.strategy,
        models=list(done.spec.models),
        min_responses=done.spec.min_responses,
        responses_received=len(done.valid),
        selected_model=done.selection.winner.model,
        agreement=done.selection.agreement,
        reason=done.selection.reason,
        details=dict(done.selection.details),
        calls=MCalls(done.calls_started, done.calls_cancelled),
        candidates=[
            MCandidate(
                c.model,
                c.role.value,
                c.status.value,
                c.valid,
                round(c.latency_ms, 1),
                c.attempts,
                c.finish_reason,
                c.answer.key,
                None,
                None,
                MUsage(c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens)
                if c.usage
                else None,
            )
            for c in done.candidates
        ],
    )
    winner = done.selection.winner
    completion = MCompletion(
        id="chatcmpl-ens-0",
        created=0,
        model="ensemble/voting",
        choices=[MChoice(0, dict(winner.message or {}), winner.finish_reason)],
        usage=MUsage(4060, 480, 4540),
        ensemble=ensemble,
    )
    return msgspec.json.encode(completion)


# ------------------------------------------------------------ pydantic v2, as a library alone


class PModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)


class PPart(PModel):
    type: str
    text: str | None = None


class PMessage(PModel):
    role: Annotated[str, pydantic.Field(min_length=1)]
    content: str | list[PPart] | None = None


class PStreamOptions(PModel):
    include_usage: bool | None = None


class PRequest(PModel):
    messages: Annotated[list[PMessage], pydantic.Field(min_length=1)]
    model: str | None = None
    stream: bool | None = None
    stream_options: PStreamOptions | None = None
    temperature: float | None = None
    max_tokens: Annotated[int, pydantic.Field(ge=1)] | None = None
    n: Annotated[int, pydantic.Field(ge=1, le=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


class PUsage(PModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PCandidate(PModel):
    model: str
    role: str
    status: str
    valid: bool
    latency_ms: float
    attempts: int
    finish_reason: str | None
    answer: str | None
    confidence: float | None
    error: str | None
    usage: PUsage | None


class PCalls(PModel):
    started: int
    cancelled: int


class PEnsemble(PModel):
    strategy: str
    models: list[str]
    min_responses: int
    responses_received: int
    selected_model: str | None
    agreement: float | None
    reason: str | None
    details: dict[str, Any]
    calls: PCalls
    candidates: list[PCandidate]


class PChoice(PModel):
    index: int
    message: dict[str, Any]
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class PCompletion(PModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[PChoice]
    usage: PUsage
    ensemble: PEnsemble


def pydantic_decode(raw: bytes) -> object:
    body = pydantic_core.from_json(raw)  # the body as sent, for the models
    return PRequest.model_validate(body), body


def pydantic_decode_typed_only(raw: bytes) -> object:
    return PRequest.model_validate_json(raw)


def pydantic_encode(done: Outcome) -> bytes:
    assert done.selection is not None
    ensemble = PEnsemble(
        strategy=done.spec.strategy,
        models=list(done.spec.models),
        min_responses=done.spec.min_responses,
        responses_received=len(done.valid),
        selected_model=done.selection.winner.model,
        agreement=done.selection.agreement,
        reason=done.selection.reason,
        details=dict(done.selection.details),
        calls=PCalls(started=done.calls_started, cancelled=done.calls_cancelled),
        candidates=[
            PCandidate(
                model=c.model,
                role=c.role.value,
                status=c.status.value,
                valid=c.valid,
                latency_ms=round(c.latency_ms, 1),
                attempts=c.attempts,
                finish_reason=c.finish_reason,
                answer=c.answer.key,
                confidence=None,
                error=None,
                usage=PUsage(
                    prompt_tokens=c.usage.prompt_tokens,
                    completion_tokens=c.usage.completion_tokens,
                    total_tokens=c.usage.total_tokens,
                )
                if c.usage
                else None,
            )
            for c in done.candidates
        ],
    )
    winner = done.selection.winner
    completion = PCompletion(
        id="chatcmpl-ens-0",
        created=0,
        model="ensemble/voting",
        choices=[
            PChoice(index=0, message=dict(winner.message or {}), finish_reason=winner.finish_reason)
        ],
        usage=PUsage(prompt_tokens=4060, completion_tokens=480, total_tokens=4540),
        ensemble=ensemble,
    )
    return completion.model_dump_json().encode()


# ------------------------------------------------------------------------------ timing


def per_call_us(call: Callable[[], object], runs: int, seconds: float) -> float:
    """Best of ``runs`` runs of back-to-back calls, each at least ``seconds`` long."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            call()
        if time.perf_counter() - start >= seconds / 4:
            break
        count *= 2
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(count):
                call()
            n += count
        best = min(best, elapsed / n)
    return best * 1e6


# A model of ten fields, as each library declares it (the import plus class creation).
_FIELDS = "; ".join(f"f{i}: int | None = None" for i in range(10))
IMPORTS = {
    "the upstream app (as installed)": "import ensemble_extproc.upstream.app",
    "the processor (as installed)": "import ensemble_extproc.extproc.server",
    "msgspec + one 10-field Struct": "import msgspec\nclass M(msgspec.Struct): " + _FIELDS,
    "pydantic v2 + one 10-field model": "import pydantic\nclass M(pydantic.BaseModel): " + _FIELDS,
}


def import_ms(statement: str, runs: int) -> float:
    code = (
        "import time\nt = time.perf_counter()\n"
        + statement
        + "\nprint((time.perf_counter() - t) * 1000)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(times)


def rows(
    cases: Sequence[tuple[str, Callable[[], object]]], runs: int, seconds: float
) -> list[list[str]]:
    timings = [(name, per_call_us(call, runs, seconds)) for name, call in cases]
    first = timings[0][1]
    return [[name, f"{us:.1f}", f"{us / first:.2f}"] for name, us in timings]


def run(args: argparse.Namespace) -> str:
    raw = request_body()
    done = outcome()
    decode = project_decode()
    encode = project_encode()
    sizes = len(raw), len(encode(done))
    # The same answer from every path: the libraries' models are equivalent.
    assert json.loads(encode(done))["ensemble"]["candidates"][0]["model"] == MODELS[0]
    decoding = [
        ("the project's path (as installed)", lambda: decode(raw)),
        ("stdlib json, no checks (floor of today's path)", lambda: json.loads(raw)),
        ("msgspec: decode, convert to Structs, keep the body", lambda: msgspec_decode(raw)),
        ("pydantic v2: from_json, model_validate, keep the body", lambda: pydantic_decode(raw)),
        ("pydantic v2: model_validate_json (typed only)", lambda: pydantic_decode_typed_only(raw)),
    ]
    encoding = [
        ("the project's path (as installed)", lambda: encode(done)),
        ("msgspec: build Structs, msgspec.json.encode", lambda: msgspec_encode(done)),
        ("pydantic v2: build models, model_dump_json", lambda: pydantic_encode(done)),
    ]
    startup = [[name, f"{import_ms(code, args.runs):.1f}"] for name, code in IMPORTS.items()]
    header = ["path", "us/call", "ratio to first row"]
    return "\n".join(
        [
            f"Wire path of the upstream, {MACHINE}.",
            f"Load: one thread, back-to-back calls, best of {args.runs} runs of >= "
            f"{args.seconds:g} s; start-up: median of {args.runs} fresh interpreters.",
            "",
            f"Decode a {sizes[0]} B chat request into checked fields, keeping the body:",
            "",
            table(header, "lrr", rows(decoding, args.runs, args.seconds)),
            "",
            f"Build and encode a {sizes[1]} B completion with a 5-candidate ensemble object:",
            "",
            table(header, "lrr", rows(encoding, args.runs, args.seconds)),
            "",
            "Start-up (import time, ms):",
            "",
            table(["import", "ms"], "lr", startup),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wire", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per case (best is kept)")
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds per run")
    print(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
