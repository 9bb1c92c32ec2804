"""What the ensemble upstream answers, declared once: the completion, its stream chunks,
the ``ensemble`` object, errors, the model list and health.

``response.py`` and ``stream_writer.py`` build these and msgspec encodes them; the OpenAPI
document (``openapi.py``) derives its response schemas from them. A model's message and
a relayed chunk's choice stay JSON objects: they carry whatever fields the model wrote
(``refusal``, ``annotations``, provider extras), passed on unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from ..config.model import Strategy
from ..cost.model import Dollars
from ..envoy_names import LOCAL_REPLY_ERRORS
from ..errors import ErrorCode
from ..strategies import STRATEGIES, Role, Status, Usage

Fraction = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=0)]

AssistantMessage = Annotated[
    dict[str, Any],
    Meta(
        description="The selected answer's message as the model wrote it (every field kept).",
        extra_json_schema={
            "required": ["role"],
            "properties": {
                "role": {"type": "string"},
                "content": {"type": ["string", "null"]},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
        },
    ),
]


class Calls(Struct):
    started: Count
    cancelled: Count


class Candidate(Struct):
    """One call of the ensemble, as the response reports it."""

    model: str
    role: Role
    status: Status
    valid: bool
    latency_ms: Annotated[float, Meta(ge=0)]
    attempts: Annotated[int, Meta(ge=1)]
    finish_reason: str | None
    answer: Annotated[str | None, Meta(description="the extracted, comparable answer")]
    confidence: Annotated[
        Fraction | None,
        Meta(description="mean token probability, when the model returned logprobs"),
    ]
    error: str | None
    usage: Annotated[
        Usage | None,
        Meta(description="this call's share of the response's usage (null: none reported)"),
    ]
    usage_counted: Annotated[
        bool,
        Meta(
            description="usage counted by the gateway, not reported by the model: a stream "
            "that broke and was resumed (its chunks, and the prompt of the call that "
            "continued it); its cost_usd is an estimate"
        ),
    ]
    cost_usd: Annotated[
        Dollars | None,
        Meta(description="what this call cost: its usage at its model's price; null: unknown"),
    ]
    cost_unknown: Annotated[
        str | None,
        Meta(
            description="why cost_usd is null: no price declared for the model, or no usage "
            "reported (cancelled, timed out, broken, or never reported)"
        ),
    ]


class Cost(Struct):
    """What the ensemble cost, in US dollars (docs/cost.md). Never a silent 0: a call
    whose cost is not known makes the total incomplete, and says why."""

    total_usd: Annotated[Dollars, Meta(description="the calls whose cost is known, summed")]
    complete: Annotated[
        bool,
        Meta(
            description="every call's cost is known: total_usd is the cost; false: it is a "
            "lower bound, and `unknown` names the calls' models"
        ),
    ]
    estimated: Annotated[
        bool, Meta(description="some call's cost comes from usage the gateway counted")
    ]
    unknown: Annotated[list[str], Meta(description="models of the calls whose cost is unknown")]
    max_usd: Annotated[
        Dollars | None,
        Meta(description="the cost cap (x-ensemble-max-cost-usd or the profile's), if any"),
    ]
    not_started: Annotated[
        list[str],
        Meta(description="models of the calls the cost cap kept from starting"),
    ]


class StreamResume(Struct):
    """A relayed stream that broke midway, and the model that continued it."""

    broken: Annotated[str, Meta(description="the model whose stream broke")]
    resumed_on: Annotated[
        str | None, Meta(description="the model that continued the text; null: none could")
    ]
    chunks: Annotated[Count, Meta(description="content chunks the broken call had relayed")]
    chars: Annotated[Count, Meta(description="characters of the answer the client had")]
    reason: Annotated[str, Meta(description="why it broke (and, if not resumed, why not)")]


class Ensemble(Struct):
    """How the ensemble decided (docs/strategies.md)."""

    strategy: Strategy
    models: Annotated[list[str], Meta(min_length=1)]
    min_responses: Annotated[int, Meta(ge=1)]
    responses_received: Annotated[int, Meta(ge=0, description="valid member answers")]
    selected_model: str | None
    agreement: Annotated[Fraction | None, Meta(description="winning votes / valid votes")]
    reason: str | None
    details: Annotated[
        dict[str, Any],
        Meta(
            description="depends on the strategy: vote groups, average confidences, the "
            "judge's verdict, the cascade depth, a fallback; weights: the weights used and "
            "where they came from (configured or learned, docs/trust.md); learning_sample: "
            "every member was asked to the end for learned trust"
        ),
    ]
    calls: Calls
    candidates: list[Candidate]
    cost: Cost
    resumes: Annotated[
        list[StreamResume],
        Meta(description="breaks of the relayed stream, in order (docs/strategies.md)"),
    ]


class Choice(Struct):
    index: Count
    message: AssistantMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(Struct, kw_only=True):
    """An OpenAI chat completion. `model` is `ensemble/<strategy>` and `usage` sums every
    call of the ensemble, judge and aggregator included. Through the gateway, a request
    that is not ensembled is answered by the default model: the same fields, without
    `ensemble`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: Annotated[str, Meta(examples=[f"ensemble/{name}" for name in STRATEGIES])]
    choices: Annotated[list[Choice], Meta(min_length=1)]
    # Always set by the upstream; optional in the document, which also describes the
    # default model's answers through the gateway.
    usage: Usage | UnsetType = UNSET
    ensemble: Ensemble | UnsetType = UNSET


ChunkChoice = Annotated[
    dict[str, Any],
    Meta(
        description="The choice of a chunk: a relayed model's own (every field kept) under "
        "index 0.",
        extra_json_schema={
            "required": ["index", "delta"],
            "properties": {
                "index": {"const": 0},
                "delta": {"type": "object"},
                "finish_reason": {"type": ["string", "null"]},
                "logprobs": {"type": ["object", "null"]},
            },
        },
    ),
]


class ChatCompletionChunk(Struct, kw_only=True):
    """One `data:` event of a streamed answer. The chunk with a `finish_reason` carries
    `ensemble`; with `stream_options.include_usage` a last chunk has `choices: []` and
    `usage`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: Annotated[list[ChunkChoice], Meta(max_length=1)]
    usage: Usage | UnsetType = UNSET
    ensemble: Ensemble | UnsetType = UNSET


# Every error an answer may carry, its type by (status, code): ours, and Envoy's own replies.
ERROR_TYPES = {(c.status, c.code): c.type for c in ErrorCode} | {
    (status, code): kind for status, kind, code in LOCAL_REPLY_ERRORS
}


class ErrorObject(Struct):
    message: Annotated[str, Meta(description="what went wrong, for a person")]
    type: Annotated[str, Meta(examples=sorted(set(ERROR_TYPES.values())))]
    param: Annotated[str | None, Meta(description="the field or header at fault")]
    code: Annotated[
        str | None,
        Meta(
            description="machine-readable reason; see each status's description",
            examples=sorted({code for _, code in ERROR_TYPES}),
        ),
    ]


class ErrorResponse(Struct):
    """OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`; a failed
    ensemble (502, 504) adds the `ensemble` breakdown."""

    error: ErrorObject
    ensemble: Ensemble | UnsetType = UNSET


EnsembleKind = Annotated[
    Literal["default", "member", "profile"],
    Meta(
        description="default: the model of requests that are not ensembled (also a member); "
        "member: a model `x-ensemble-models` may name; profile: a named ensemble, selected "
        'with `"model": "<id>"`'
    ),
]


class Model(Struct, kw_only=True):
    """An OpenAI model object, plus what it is to the gateway (`ensemble_*` fields). Never
    an endpoint's URL or key."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    ensemble_kind: EnsembleKind
    # A profile's strategy and members.
    ensemble_strategy: Strategy | UnsetType = UNSET
    ensemble_models: list[str] | UnsetType = UNSET


class ModelList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


class Health(Struct):
    """`ok`, or `draining` (with status 503) from SIGTERM until the upstream stops."""

    status: Literal["ok", "draining"]


class SeedHealth(Struct):
    """`GET /health` in the semantic router's ensemble-service dialect: `healthy`, or
    `draining` (with status 503) from SIGTERM until the upstream stops."""

    status: Literal["healthy", "draining"]
    service: Literal["ensemble"] = "ensemble"
