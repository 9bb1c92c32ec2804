"""The ensemble upstream's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built in Python from the constants the code uses (header names, registered strategies,
candidate roles and statuses, the config's model names and limits), so the document
cannot drift from them; ``tests/test_openapi.py`` checks that the request validation
agrees with the request schema and ``tests/test_fuzz_api.py`` fuzzes the live service
against the whole document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from .. import __version__
from .. import headers as h
from ..config import Config, EnsembleSettings
from ..envoy_bootstrap import LOCAL_REPLY_ERRORS
from ..paths import CHAT_COMPLETIONS, MODELS
from ..spec import _FALSE, _TRUE
from ..strategies import STRATEGIES, Role, Status

OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = "/openapi.json"
CHAT_PATH = CHAT_COMPLETIONS
MODELS_PATH = MODELS
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
TRUST_PATH = "/admin/trust"

JSON = "application/json"
TEXT = "text/plain"
SSE = "text/event-stream"

Schema = dict[str, Any]

_REF = "#/components/schemas/"
_HEADER_SPACE = "[ \\t]*"
# Characters with a meaning in an ECMA-262 pattern (the dialect of JSON Schema's `pattern`).
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}/")


def _ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _escape(text: str) -> str:
    """``text`` as a literal in an ECMA-262 pattern (``re.escape`` also escapes ``-``,
    which a unicode-mode ECMA regex rejects)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _any_case(word: str) -> str:
    """A pattern matching ``word`` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def enable_pattern() -> str:
    """The values ``x-ensemble-enable`` accepts: those of ``spec.parse_enable``."""
    words = "|".join(_any_case(word) for word in sorted(_TRUE | _FALSE))
    return f"^{_HEADER_SPACE}(?:{words}){_HEADER_SPACE}$"


def models_pattern(names: Iterable[str], max_models: int) -> str:
    """A comma-separated list of 1..``max_models`` of ``names`` (duplicates are a 400 that a
    pattern does not express)."""
    alternatives = "|".join(_escape(name) for name in names)
    one = f"{_HEADER_SPACE}(?:{alternatives}){_HEADER_SPACE}"
    return f"^{one}(?:,{one}){{0,{max_models - 1}}}$"


MIN_RESPONSES_PATTERN = f"^{_HEADER_SPACE}0*[1-9][0-9]*{_HEADER_SPACE}$"


def min_responses_pattern(max_models: int) -> str:
    """A positive integer no larger than ``max_models`` (leading zeros allowed, as
    ``spec`` reads it); no larger than the request's own model count is a 400 that a
    pattern does not express."""
    numbers = "|".join(str(n) for n in range(max_models, 0, -1))
    return f"^{_HEADER_SPACE}0*(?:{numbers}){_HEADER_SPACE}$"


# Any comma-separated list of non-empty names (the document built without a config).
GENERIC_MODELS_PATTERN = (
    f"^{_HEADER_SPACE}[^,\\s]+{_HEADER_SPACE}(?:,{_HEADER_SPACE}[^,\\s]+{_HEADER_SPACE})*$"
)
DECIMAL_PATTERN = "^[0-9]+$"

# Error codes by HTTP status: what the code answers (the `code` of the error object).
# tests/test_openapi.py checks that every code literal in the upstream, the header contract
# and the processor is listed here; Envoy's own replies are added from its bootstrap below.
_CODES: dict[int, dict[str, str]] = {
    400: {
        "incomplete_body": "the client closed the connection before its body arrived (no "
        "one reads this answer; it is counted and not logged as an error)",
        "invalid_json": "the body is not standard JSON (`NaN`, `Infinity` and numbers out of a "
        "double's range are not), or not a JSON object",
        "missing_messages": "`messages` is missing",
        "invalid_messages": "`messages` is empty, or an entry is not an object with a "
        "non-empty string `role`, or its `content` is not a string, null or an array of "
        "content parts",
        "invalid_type": "a field has the wrong JSON type (the `param` names it)",
        "invalid_value": "a field has a value outside its range or choices "
        "(`max_tokens` < 1, an unknown `tool_choice`)",
        "unsupported_n": "`n` is not 1: an ensemble returns one choice",
        "invalid_header": "an `x-ensemble-*` header is empty or malformed",
        "missing_models": f"an ensemble was asked for but `{h.MODELS}` is absent and the config "
        "has no `ensemble.default_models`",
        "model_not_found": f"`{h.MODELS}` names a model that is not in the config",
        "too_many_models": f"`{h.MODELS}` names more than `ensemble.max_models_per_request`",
        "duplicate_model": f"`{h.MODELS}` names a model twice",
        "unknown_strategy": f"`{h.STRATEGY}` is not a registered strategy",
        "strategy_not_configured": f"`{h.STRATEGY}` needs a config key that is not set "
        "(`reranking`: `ensemble.reranking.judge_model`, `fusion`: "
        "`ensemble.fusion.aggregator_model`)",
        "invalid_min_responses": f"`{h.MIN_RESPONSES}` is not a positive integer, or is larger "
        "than the number of models",
        "rejected_by_models": "every model answered the same 4xx to the request as sent (the "
        "message has their statuses and reasons): a mistake in the request, not a fault",
    },
    403: {
        "unsigned_internal_headers": "the upstream has an internal secret and the request was "
        "not signed by the processor for this very request (its `x-request-id`, method and "
        "path), within `security.signature_lifetime_seconds`, or the signature was already "
        "used once: only requests through the gateway are served",
        "ensemble_headers_not_allowed": "through the gateway: `header_control` restricts the "
        "`x-ensemble-*` headers to other clients (API key or header value)",
    },
    404: {"not_found": "no such route"},
    405: {"method_not_allowed": "the route exists but not with this method"},
    408: {
        "request_timeout": "the body did not arrive within `ensemble.body_timeout_seconds` "
        "(through the gateway: Envoy's `envoy.request_timeout_seconds`)"
    },
    413: {
        "request_too_large": "the body is larger than `ensemble.max_body_bytes` (or Envoy's buffer)"
    },
    415: {
        "unsupported_content_encoding": "the body has a `Content-Encoding` other than "
        "`identity`: send it uncompressed"
    },
    429: {
        "too_many_ensembles": "the upstream serves `ensemble.max_in_flight` ensembles already; "
        "retry after `Retry-After` seconds"
    },
    500: {
        "internal_error": "a bug in the upstream (logged)",
        "http_error": "another HTTP error of the server framework",
    },
    502: {
        "ensemble_quorum_not_met": "fewer valid answers than the quorum (`min_responses`); the "
        "message names each failed model and why, `ensemble` has the per-model breakdown",
    },
    503: {
        "replay_window_full": "more signed requests within `security.signature_lifetime_seconds` "
        "than one upstream process remembers (100,000); retry after `Retry-After` seconds",
    },
    504: {
        "ensemble_deadline_exceeded": "the quorum was not met by `ensemble.timeout_seconds` "
        "(or the profile's deadline)",
    },
}
# Envoy's local replies (e.g. the upstream unreachable, its route timeout) as JSON errors.
_ENVOY_TYPES = {(status, code): kind for status, kind, code in LOCAL_REPLY_ERRORS}
ERROR_CODES: dict[int, dict[str, str]] = {
    status: {
        **_CODES.get(status, {}),
        **{
            code: "through the gateway: Envoy's own error reply"
            for envoy_status, _, code in LOCAL_REPLY_ERRORS
            if envoy_status == status and code not in _CODES.get(status, {})
        },
    }
    for status in sorted({*_CODES, *(status for status, _, _ in LOCAL_REPLY_ERRORS)})
}
# The error event that ends a stream which had already started (HTTP status 200).
STREAM_ERROR_CODES = {
    "stream_failed": "the relayed model's stream failed after the first chunk went out",
    "ensemble_quorum_not_met": "as the 502 above, after keep-alives went out",
    "ensemble_deadline_exceeded": "as the 504 above, after keep-alives went out",
}

_STATUS_TITLES = {
    400: "Bad request: the body or an `x-ensemble-*` header is invalid",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "The request (its body) arrived too slowly",
    413: "Body too large",
    415: "Compressed body",
    426: "Through the gateway: HTTP/1.0 is not supported",
    429: "Too many ensembles in flight",
    431: "Through the gateway: request headers too large",
    500: "Internal error",
    501: "Through the gateway: an HTTP feature it does not implement",
    502: "The ensemble failed",
    503: "Through the gateway: upstream unavailable",
    504: "The ensemble's deadline passed",
}
_ERROR_TYPES = {
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "server_error",
    504: "timeout_error",
}

# --------------------------------------------------------------------------- schemas


def _error_schemas() -> dict[str, Schema]:
    return {
        "ErrorObject": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "description": "what went wrong, for a person"},
                "type": {
                    "type": "string",
                    "examples": sorted(
                        {"invalid_request_error", *_ERROR_TYPES.values(), *_ENVOY_TYPES.values()}
                    ),
                },
                "param": _nullable("string", description="the field or header at fault"),
                "code": _nullable(
                    "string",
                    description="machine-readable reason; see each status's description",
                    examples=sorted({c for codes in ERROR_CODES.values() for c in codes}),
                ),
            },
        },
        "ErrorResponse": {
            "type": "object",
            "description": 'OpenAI-style error: `{"error": {"message", "type", "param", '
            '"code"}}`; a failed ensemble (502, 504) adds the `ensemble` breakdown.',
            "required": ["error"],
            "properties": {"error": _ref("ErrorObject"), "ensemble": _ref("Ensemble")},
        },
    }


def _request_schemas(config: Config | None) -> dict[str, Schema]:
    model: Schema = {
        "type": "string",
        "description": "Ignored by the upstream (each member is sent its own "
        "`upstream_model`). Through the gateway, a config profile's name selects that "
        "profile; any other value goes to the default model unless headers or rules "
        "ask for an ensemble.",
    }
    if config is not None and config.profiles:
        model["examples"] = sorted(config.profiles)
    positive_integer = _nullable(
        "integer",
        minimum=1,
        description="An integer literal (like OpenAI, `1.0` is rejected, although JSON "
        "Schema counts it as an integer).",
    )
    return {
        "ChatCompletionRequest": {
            "type": "object",
            "description": "An OpenAI chat completion request. Only the fields below are "
            "checked; every other field is passed on to the models unchanged. Every "
            "optional field accepts `null` for 'not set'.",
            "required": ["messages"],
            "additionalProperties": True,
            "properties": {
                "model": model,
                "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
                "stream": _nullable(
                    "boolean", description="`true`: answer with server-sent events"
                ),
                "stream_options": _nullable(
                    "object",
                    properties={
                        "include_usage": _nullable(
                            "boolean",
                            description="`true`: a last chunk (`choices: []`) carries "
                            "`usage` summed over every call",
                        )
                    },
                ),
                "temperature": _nullable("number"),
                "max_tokens": positive_integer,
                "max_completion_tokens": positive_integer,
                "n": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": 1,
                    "description": "Only 1: an ensemble returns one choice.",
                },
                "tools": _nullable(
                    "array",
                    items={"type": "object"},
                    description="OpenAI tool definitions, passed on to the members.",
                ),
                "tool_choice": {
                    "anyOf": [
                        {"type": "string", "enum": ["none", "auto", "required"]},
                        {"type": "object"},
                        {"type": "null"},
                    ]
                },
                "response_format": _nullable(
                    "object",
                    required=["type"],
                    properties={
                        "type": {
                            "type": "string",
                            "examples": ["text", "json_object", "json_schema"],
                        }
                    },
                ),
                "logprobs": _nullable("boolean"),
                "seed": _nullable("integer"),
                "stop": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}},
                        {"type": "null"},
                    ]
                },
                "user": _nullable("string"),
                "metadata": _nullable("object"),
            },
            "examples": [
                {
                    "model": "any",
                    "messages": [{"role": "user", "content": "Capital of France?"}],
                }
            ],
        },
        "Message": {
            "type": "object",
            "required": ["role"],
            "additionalProperties": True,
            "properties": {
                "role": {
                    "type": "string",
                    "minLength": 1,
                    "examples": ["system", "developer", "user", "assistant", "tool"],
                },
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": _ref("ContentPart")},
                        {"type": "null"},
                    ],
                    "description": "Text, content parts, or null (an assistant message with "
                    "`tool_calls`).",
                },
            },
        },
        "ContentPart": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": True,
            "properties": {
                "type": {"type": "string", "examples": ["text", "image_url", "input_audio"]},
                "text": {"type": "string"},
            },
            "if": {"properties": {"type": {"const": "text"}}},
            "then": {"required": ["text"]},
            "description": "A text part needs `text`; other parts are passed on unread.",
        },
    }


def _response_schemas() -> dict[str, Schema]:
    usage: Schema = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            name: {"type": "integer", "minimum": 0}
            for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    return {
        "ChatCompletion": {
            "type": "object",
            "description": "An OpenAI chat completion. `model` is `ensemble/<strategy>` and "
            "`usage` sums every call of the ensemble, judge and aggregator included. Through "
            "the gateway, a request that is not ensembled is answered by the default model: "
            "same schema, without `ensemble`.",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string", "examples": [f"ensemble/{s}" for s in STRATEGIES]},
                "choices": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "message", "finish_reason"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 0},
                            "message": _ref("AssistantMessage"),
                            "finish_reason": _nullable("string"),
                            "logprobs": _nullable("object"),
                        },
                    },
                },
                "usage": _ref("Usage"),
                "ensemble": _ref("Ensemble"),
            },
        },
        "AssistantMessage": {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"type": "string"},
                "content": _nullable("string"),
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Usage": usage,
        "Ensemble": {
            "type": "object",
            "description": "How the ensemble decided (docs/strategies.md).",
            "required": [
                "strategy",
                "models",
                "min_responses",
                "responses_received",
                "selected_model",
                "agreement",
                "reason",
                "details",
                "calls",
                "candidates",
            ],
            "properties": {
                "strategy": _strategy_schema(),
                "models": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "min_responses": {"type": "integer", "minimum": 1},
                "responses_received": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "valid member answers",
                },
                "selected_model": _nullable("string"),
                "agreement": _nullable(
                    "number",
                    minimum=0,
                    maximum=1,
                    description="winning votes / valid votes",
                ),
                "reason": _nullable("string"),
                "details": {
                    "type": "object",
                    "description": "depends on the strategy: vote groups, average "
                    "confidences, the judge's verdict, the cascade depth, a fallback; "
                    "weights: the weights used and where they came from (configured or "
                    "learned, docs/trust.md); learning_sample: every member was asked "
                    "to the end for learned trust",
                },
                "calls": {
                    "type": "object",
                    "required": ["started", "cancelled"],
                    "properties": {
                        "started": {"type": "integer", "minimum": 0},
                        "cancelled": {"type": "integer", "minimum": 0},
                    },
                },
                "candidates": {"type": "array", "items": _ref("Candidate")},
            },
        },
        "Candidate": {
            "type": "object",
            "required": [
                "model",
                "role",
                "status",
                "valid",
                "latency_ms",
                "finish_reason",
                "answer",
                "confidence",
                "error",
            ],
            "properties": {
                "model": {"type": "string"},
                "role": {"type": "string", "enum": [r.value for r in Role]},
                "status": {"type": "string", "enum": [s.value for s in Status]},
                "valid": {"type": "boolean"},
                "latency_ms": {"type": "number", "minimum": 0},
                "finish_reason": _nullable("string"),
                "answer": _nullable("string", description="the extracted, comparable answer"),
                "confidence": _nullable(
                    "number",
                    minimum=0,
                    maximum=1,
                    description="mean token probability, when the model returned logprobs",
                ),
                "error": _nullable("string"),
            },
        },
        "ChatCompletionChunk": {
            "type": "object",
            "description": "One `data:` event of a streamed answer. The chunk with a "
            "`finish_reason` carries `ensemble`; with `stream_options.include_usage` a last "
            "chunk has `choices: []` and `usage`.",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion.chunk"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "delta"],
                        "properties": {
                            "index": {"const": 0},
                            "delta": {"type": "object"},
                            "finish_reason": _nullable("string"),
                            "logprobs": _nullable("object"),
                        },
                    },
                },
                "usage": _ref("Usage"),
                "ensemble": _ref("Ensemble"),
            },
        },
        "ServerSentEvent": {
            "type": "object",
            "description": "One event of a streamed answer, modelled as OpenAPI 3.2 models "
            "server-sent events (`event`, `data`, `id`, `retry`): the stream is a sequence "
            "of these. `data` is a JSON `ChatCompletionChunk`, an `ErrorResponse` (the last "
            "event of a stream that failed after it started), or `[DONE]` (the last event of "
            "a stream that succeeded). `: keep-alive` comments are not events.",
            "required": ["data"],
            "properties": {
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
                "data": {
                    "type": "string",
                    "if": {"const": "[DONE]"},
                    "else": {
                        "contentMediaType": JSON,
                        "contentSchema": {
                            "anyOf": [_ref("ChatCompletionChunk"), _ref("ErrorResponse")]
                        },
                    },
                },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object", "created", "owned_by"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"type": "string"}},
        },
        "TrustReport": _trust_report_schema(),
    }


def _trust_report_schema() -> Schema:
    share: Schema = {"type": "number", "minimum": 0, "maximum": 1}
    span: Schema = {"type": "array", "items": share, "minItems": 2, "maxItems": 2}
    member: Schema = {
        "type": "object",
        "required": ["model", "accuracy", "interval", "evidence", "learned", "used", "source"],
        "properties": {
            "model": {"type": "string"},
            "accuracy": share,
            "interval": span,
            "evidence": {"type": "number", "minimum": 0},
            "learned": {"type": "boolean"},
            "used": share,
            "source": {"enum": ["learned", "configured", "default"]},
            "prior": share,
            "failure_rate": share,
            "changes": {"type": "integer", "minimum": 0},
            "client_influence": {"type": ["number", "null"], "minimum": 0},
        },
    }
    pair: Schema = {
        "type": "object",
        "required": ["models", "observed", "expected", "excess"],
        "properties": {
            "models": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "observed": share,
            "expected": share,
            "excess": {"type": "number"},
            "z": {"type": "number"},
            "kappa": share,
            "evidence": {"type": "number", "minimum": 0},
        },
    }
    key: Schema = {
        "type": "object",
        "required": ["key", "observations", "members", "flagged_pairs", "groups"],
        "properties": {
            "key": {"type": "string"},
            "observations": {"type": "integer", "minimum": 0},
            "members": {"type": "array", "items": member},
            "flagged_pairs": {"type": "array", "items": pair},
            "groups": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        },
    }
    return {
        "type": "object",
        "description": "What the upstream learned about its members (ensemble.trust): per "
        "trust key (a profile, or a set of models), each member's accuracy with its 95 % "
        "interval and whether it replaced the configured one, and the pairs of members "
        "flagged as moving together with their excess agreement. See docs/trust.md.",
        "required": ["enabled", "keys"],
        "properties": {
            "enabled": {"type": "boolean"},
            "hint": {"type": "string"},
            "replica": {"type": "string"},
            "keys": {"type": "array", "items": key},
        },
    }


# --------------------------------------------------------------------------- headers


def _request_headers(config: Config | None) -> list[Schema]:
    strategies = ", ".join(f"`{name}`" for name in STRATEGIES)
    if config is None:
        models: Schema = {"type": "string", "pattern": GENERIC_MODELS_PATTERN}
        models_limit = "`ensemble.max_models_per_request`"
    else:
        names = list(config.endpoints)
        limit = config.ensemble.max_models_per_request
        models = {
            "type": "string",
            "pattern": models_pattern(names, limit),
            "examples": [",".join(names[:limit][:3])],
        }
        models_limit = str(limit)
    if config is None or not config.ensemble.default_models:
        default_models = "none: an ensemble must name its models"
    else:
        default_models = ", ".join(config.ensemble.default_models)
    settings = EnsembleSettings() if config is None else config.ensemble
    default_strategy = settings.default_strategy

    def header(name: str, description: str, schema: Schema) -> Schema:
        return {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": schema,
        }

    return [
        header(
            h.ENABLE,
            "`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case). Read by the "
            "gateway's processor: `false` wins over everything, and without it any other "
            "`x-ensemble-*` header asks for an ensemble. The upstream itself always "
            "ensembles and ignores this header.",
            {"type": "string", "pattern": enable_pattern(), "examples": ["true"]},
        ),
        header(
            h.MODELS,
            "Comma-separated model *names* from the config (never URLs), at most "
            f"{models_limit}, each once (a repeated name is a 400 `duplicate_model`). "
            f"Default: {default_models}.",
            models,
        ),
        header(
            h.STRATEGY,
            f"One of the registered strategies: {strategies}. `reranking` and `fusion` "
            "need their judge or aggregator configured, else 400 `strategy_not_configured`. "
            f"Default: `{default_strategy}`.",
            {**_strategy_schema(), "examples": [default_strategy]},
        ),
        header(
            h.MIN_RESPONSES,
            "Quorum: valid answers needed, a positive integer no larger than the number "
            "of models (else 400 `invalid_min_responses`). Default: 1 for `first_success` "
            "and `cascade`, else `ensemble.default_min_responses` capped at the number of "
            "models.",
            {
                "type": "string",
                "pattern": MIN_RESPONSES_PATTERN
                if config is None
                else min_responses_pattern(settings.max_models_per_request),
                "examples": [str(min(2, settings.max_models_per_request))],
            },
        ),
    ]


def _strategy_schema() -> Schema:
    return {"type": "string", "enum": list(STRATEGIES)}


def _header(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "required": False, "schema": schema or {"type": "string"}}


def _ensemble_response_headers(*, outcome: bool) -> dict[str, Schema]:
    """The ``x-ensemble-*`` headers of an answered (``outcome``) or failed ensemble."""
    headers = {
        h.RESP_STRATEGY: _header("the strategy that ran", _strategy_schema()),
        h.RESP_MODELS_QUERIED: _header("the member models, comma-separated"),
        h.RESP_RESPONSES_RECEIVED: _header(
            "valid member answers", {"type": "string", "pattern": DECIMAL_PATTERN}
        ),
    }
    if outcome:
        headers |= {
            h.RESP_SELECTED_MODEL: _header("the model whose answer was returned"),
            h.RESP_AGREEMENT: _header(
                "winning votes / valid votes, 3 decimals",
                {"type": "string", "pattern": "^[01]\\.[0-9]{3}$"},
            ),
            h.RESP_CASCADE_DEPTH: _header(
                "`cascade` only: how many models were asked",
                {"type": "string", "pattern": DECIMAL_PATTERN},
            ),
        }
    return headers | {
        h.RESP_DECISION: _header(
            "through the gateway: who decided (`header`, `rule:<name>`, `adaptive`, `none`)"
        ),
        h.RESP_CONFIDENCE: _header("through the gateway: the adaptive confidence, if computed"),
    }


# --------------------------------------------------------------------------- responses


def _error_response(status: int) -> Schema:
    codes = ERROR_CODES[status]
    lines = "\n".join(f"- `{code}`: {why}" for code, why in codes.items())
    default_type = _ERROR_TYPES.get(status, "invalid_request_error")
    examples = {
        code: {
            "summary": why.split(";")[0],
            "value": {
                "error": {
                    "message": why,
                    "type": _ENVOY_TYPES.get((status, code), default_type),
                    "param": None,
                    "code": code,
                }
            },
        }
        for code, why in codes.items()
    }
    response: Schema = {
        "description": f"{_STATUS_TITLES[status]}.\n\n`code`:\n{lines}",
        "content": {JSON: {"schema": _ref("ErrorResponse"), "examples": examples}},
    }
    return response


def _responses() -> dict[str, Schema]:
    out = {f"Error{status}": _error_response(status) for status in ERROR_CODES}
    out["Error429"]["headers"] = {
        "Retry-After": _header("seconds to wait", {"type": "string", "pattern": DECIMAL_PATTERN})
    }
    out["Error415"]["headers"] = {
        "Accept-Encoding": _header(
            "the content codings accepted in requests", {"type": "string", "enum": ["identity"]}
        )
    }
    for status in (502, 504):
        out[f"Error{status}"]["headers"] = _ensemble_response_headers(outcome=False)
    return out


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _chat_operation(config: Config | None) -> Schema:
    stream_codes = "\n".join(f"- `{c}`: {why}" for c, why in STREAM_ERROR_CODES.items())
    return {
        "operationId": "createChatCompletion",
        "tags": ["chat"],
        "summary": "Ask several models and return one aggregated answer",
        "description": "The ensemble upstream fans the request out to the models named by "
        f"`{h.MODELS}` (or the config's defaults, or the profile the processor chose), "
        "aggregates their answers with the strategy and answers as one OpenAI chat "
        "completion. In a deployment with an internal secret (`make run`), only requests "
        "signed by the gateway's processor are served: call the gateway (Envoy), not the "
        "upstream.",
        "parameters": _request_headers(config),
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _ref("ChatCompletionRequest")}},
        },
        "responses": {
            "200": {
                "description": "The aggregated answer: a chat completion, or with "
                "`stream: true` server-sent events: `data: <ChatCompletionChunk>` events "
                "(`#/components/schemas/ChatCompletionChunk`), `: keep-alive` comments "
                "while the strategy decides, and `data: [DONE]`. An error after the stream "
                "started is a last `data: <ErrorResponse>` event without `[DONE]`:\n"
                + stream_codes,
                "headers": _ensemble_response_headers(outcome=True),
                "content": {
                    JSON: {"schema": _ref("ChatCompletion")},
                    SSE: {"schema": _ref("ServerSentEvent")},
                },
            },
            **_errors(400, 403, 408, 413, 415, 426, 429, 431, 500, 501, 502, 503, 504),
        },
    }


def _get_operation(
    operation_id: str, tag: str, summary: str, schema: str, description: str = ""
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "responses": {
            "200": {"description": summary, "content": {JSON: {"schema": _ref(schema)}}},
            **_errors(500),
        },
    }
    if description:
        operation["description"] = description
    return operation


def _metrics_operation() -> Schema:
    return {
        "operationId": "metrics",
        "tags": ["operations"],
        "summary": "Prometheus metrics",
        "description": "Optional route: the upstream's metrics in the Prometheus text "
        "exposition format (ensembles by strategy and outcome, per-model calls, in-flight "
        "requests, circuit states). Served by upstreams built with metrics, as this one is.",
        "responses": {
            "200": {
                "description": "Prometheus text exposition",
                "content": {TEXT: {"schema": {"type": "string"}}},
            },
            **_errors(500),
        },
    }


def build_openapi(config: Config | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the upstream; with ``config``, also the deployment's
    model names and limits (the ``x-ensemble-models`` pattern, profile names)."""
    paths: dict[str, Any] = {
        CHAT_PATH: {"post": _chat_operation(config)},
        MODELS_PATH: {
            "get": _get_operation(
                "listModels",
                "models",
                "The models of the config, by name",
                "ModelList",
                f"The names `{h.MODELS}` accepts.",
            )
        },
        HEALTH_PATH: {
            "get": _get_operation("health", "operations", "Liveness of the upstream", "Health")
        },
        METRICS_PATH: {"get": _metrics_operation()},
        TRUST_PATH: {
            "get": _get_operation(
                "trust",
                "operations",
                "Learned trust: accuracies and correlated members",
                "TrustReport",
                "Read-only, for operators, on the upstream's own port: a request that came "
                "through Envoy's ensemble route (it carries the processor's route header) "
                "gets a 404. With ensemble.trust disabled: `enabled: false` and no keys.",
            )
        },
        OPENAPI_PATH: {
            "get": _get_operation("openapi", "operations", "This document", "OpenApiDocument")
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ensemble-extproc ensemble upstream",
            "version": __version__,
            "summary": "OpenAI-compatible chat completions answered by an ensemble of models",
            "description": "The internal service that the gateway (Envoy with the ext_proc "
            "processor) re-routes ensemble requests to. Clients normally call the gateway, "
            "which answers on the same path and also serves non-ensembled requests from the "
            "default model. Errors are OpenAI-style JSON "
            '(`{"error": {"message", "type", "param", "code"}}`) for every status, including '
            "404 `not_found` for an unknown route and 405 `method_not_allowed` for a known "
            "route with another method. See README.md, docs/strategies.md and docs/policy.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "chat", "description": "Ensemble chat completions"},
            {"name": "models", "description": "Configured models"},
            {"name": "operations", "description": "Health and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": {
                **_request_schemas(config),
                **_response_schemas(),
                **_error_schemas(),
            },
            "responses": _responses(),
        },
    }


def openapi_handler(
    config: Config | None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /openapi.json`` handler: the document of this deployment, built once."""
    body = json.dumps(build_openapi(config), indent=1).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=JSON)

    return openapi_json
