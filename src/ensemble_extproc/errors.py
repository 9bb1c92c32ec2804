"""Error types: ``ApiError`` for clients (OpenAI-style), ``ConfigError`` for operators.

``ErrorCode`` is the one list of the codes the gateway's own code answers: each with its
HTTP status, its OpenAI error ``type`` and what it means. Raise sites name a member, and
the OpenAPI document's error tables are built from it (``upstream/openapi.py``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from . import headers as h
from .json_out import encode

INVALID_REQUEST = "invalid_request_error"
# OpenAI's error type by status (any other 4xx: invalid_request_error).
TYPES = {
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "server_error",
    504: "timeout_error",
}


class ErrorCode(Enum):
    """``code`` of an error: its status, meaning and, for the codes that can also end a
    stream already started, what that event means; its OpenAI ``type`` follows from the
    status unless given."""

    status: int
    type: str
    description: str
    in_stream: str

    def __init__(
        self, status: int, description: str, in_stream: str = "", type: str | None = None
    ) -> None:
        self.status = status
        self.type = type or TYPES.get(status, INVALID_REQUEST)
        self.description = description
        self.in_stream = in_stream

    @property
    def code(self) -> str:
        """The ``code`` of the error object: the member's name in lower case."""
        return self.name.lower()

    INCOMPLETE_BODY = (
        400,
        "the client closed the connection before its body arrived (no one reads this "
        "answer; it is counted and not logged as an error)",
    )
    INVALID_JSON = (
        400,
        "the body is not standard JSON (`NaN`, `Infinity` and numbers out of a double's "
        "range are not), or not a JSON object",
    )
    MISSING_MESSAGES = (400, "`messages` is missing")
    INVALID_MESSAGES = (
        400,
        "`messages` is empty, or an entry is not an object with a non-empty string `role`, "
        "or its `content` is not a string, null or an array of content parts",
    )
    INVALID_TYPE = (
        400,
        "a field has the wrong JSON type (the `param` names it)",
    )
    INVALID_VALUE = (
        400,
        "a field has a value outside its range or choices (`max_tokens` < 1, an unknown "
        "`tool_choice`)",
    )
    UNSUPPORTED_N = (
        400,
        "`n` is not 1: an ensemble returns one choice",
    )
    INVALID_HEADER = (
        400,
        "an `x-ensemble-*` header is empty or malformed",
    )
    MISSING_MODELS = (
        400,
        f"an ensemble was asked for but `{h.MODELS}` is absent and the config has no "
        "`ensemble.default_models`",
    )
    MODEL_NOT_FOUND = (
        400,
        f"`{h.MODELS}` names a model that is not in the config",
    )
    TOO_MANY_MODELS = (
        400,
        f"`{h.MODELS}` names more than `ensemble.max_models_per_request`",
    )
    DUPLICATE_MODEL = (
        400,
        f"`{h.MODELS}` names a model twice",
    )
    UNKNOWN_STRATEGY = (
        400,
        f"`{h.STRATEGY}` is not a registered strategy",
    )
    STRATEGY_NOT_CONFIGURED = (
        400,
        f"`{h.STRATEGY}` needs a config key that is not set (`reranking`: "
        "`ensemble.reranking.judge_model`, `fusion`: `ensemble.fusion.aggregator_model`)",
    )
    INVALID_MIN_RESPONSES = (
        400,
        f"`{h.MIN_RESPONSES}` is not a positive integer, or is larger than the number of models",
    )
    INVALID_MAX_COST = (
        400,
        f"`{h.MAX_COST}` is not a non-negative decimal number of US dollars",
    )
    UNPRICED_MODELS = (
        400,
        "a cost cap (`x-ensemble-max-cost-usd` or the profile's `max_cost_usd`) is set but "
        "a model the ensemble calls has no `price` in the config: its cost cannot be "
        "estimated",
    )
    MAX_COST_EXCEEDED = (
        400,
        "the calls the strategy starts at once are estimated to cost more than the cost cap "
        "(the message has the estimate per model): raise the cap, lower `max_tokens`, or "
        "name fewer or cheaper models (docs/cost.md)",
    )
    REJECTED_BY_MODELS = (
        400,
        "every model answered the same 4xx to the request as sent (the message has their "
        "statuses and reasons): a mistake in the request, not a fault",
    )
    UNSIGNED_INTERNAL_HEADERS = (
        403,
        "the upstream has an internal secret and the request was not signed by the "
        "processor for this very request (its `x-request-id`, method and path), within "
        "`security.signature_lifetime_seconds`, or the signature was already used once: "
        "only requests through the gateway are served",
    )
    ENSEMBLE_HEADERS_NOT_ALLOWED = (
        403,
        "through the gateway: `header_control` restricts the `x-ensemble-*` headers to "
        "other clients (API key or header value)",
    )
    NOT_FOUND = (404, "no such route")
    UNKNOWN_MODEL = (
        404,
        "`GET /v1/models/{model}`: no model or profile of that name is listed by `GET /v1/models`",
    )
    METHOD_NOT_ALLOWED = (
        405,
        "the route exists but not with this method",
    )
    REQUEST_TIMEOUT = (
        408,
        "the body did not arrive within `ensemble.body_timeout_seconds` (through the "
        "gateway: Envoy's `envoy.request_timeout_seconds`)",
    )
    REQUEST_TOO_LARGE = (
        413,
        "the body is larger than `ensemble.max_body_bytes` (or Envoy's buffer)",
    )
    UNSUPPORTED_CONTENT_ENCODING = (
        415,
        "the body has a `Content-Encoding` other than `identity`: send it uncompressed",
    )
    TOO_MANY_ENSEMBLES = (
        429,
        "the upstream serves `ensemble.max_in_flight` ensembles already; retry after "
        "`Retry-After` seconds",
    )
    INTERNAL_ERROR = (500, "a bug in the upstream (logged)")
    # Its status is the framework's own (documented under 500).
    HTTP_ERROR = (500, "another HTTP error of the server framework", "", INVALID_REQUEST)
    ENSEMBLE_QUORUM_NOT_MET = (
        502,
        "fewer valid answers than the quorum (`min_responses`); the message names each "
        "failed model and why, `ensemble` has the per-model breakdown",
        "as the 502 above, after keep-alives went out",
    )
    STREAM_FAILED = (
        502,
        "",
        "the relayed model's stream failed after the first chunk went out",
    )
    REPLAY_WINDOW_FULL = (
        503,
        "more signed requests within `security.signature_lifetime_seconds` than one "
        "upstream process remembers (100,000); retry after `Retry-After` seconds",
    )
    ENSEMBLE_DEADLINE_EXCEEDED = (
        504,
        "the quorum was not met by `ensemble.timeout_seconds` (or the profile's deadline)",
        "as the 504 above, after keep-alives went out",
    )


class ApiError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = code
        # The code's status, unless the framework chose another (``HTTP_ERROR``).
        self.status = code.status if status is None else status
        self.message = message
        self.type = code.type
        self.code = code.code
        self.param = param
        # Top-level keys beside "error" (e.g. the per-model breakdown of a failed ensemble).
        self.extra = extra or {}
        # Response headers that go with the error (e.g. Retry-After).
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error, **self.extra}

    def body_bytes(self) -> bytes:
        return encode(self.body())


class ConfigError(ValueError):
    """Invalid configuration: names the key path and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        message = f"config key '{key}': {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)
