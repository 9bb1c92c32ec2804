"""What the spans say: attribute names and pure builders of attribute maps.

Names follow the OpenTelemetry semantic conventions of the ``opentelemetry-semantic-
conventions`` release the ``otel`` extra installs (0.66b2: GenAI names ``gen_ai.*``, with
``gen_ai.provider.name`` in place of the deprecated ``gen_ai.system``; ``error.type``,
``server.*``, ``http.*``); tests/test_tracing.py checks them against that package. The
project's own facts are under ``ensemble.*``. No OpenTelemetry import here: these are
plain values, tested without the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from ..config.model import Endpoint
from ..strategies.base import Candidate, Role, Status

# OpenTelemetry attribute values: scalars, or sequences of one scalar type.
AttributeValue: TypeAlias = str | bool | int | float | Sequence[str] | Sequence[float]
Attributes: TypeAlias = dict[str, AttributeValue]

# GenAI semantic conventions.
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TOP_P = "gen_ai.request.top_p"
# General and HTTP conventions.
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RESEND_COUNT = "http.request.resend_count"
HTTP_STATUS = "http.response.status_code"

CHAT = "chat"
# Every endpoint speaks OpenAI's chat completions API.
OPENAI = "openai"

# The project's own: the decision, the ensemble, each call.
DECISION = "ensemble.decision"
DECISION_REASON = "ensemble.decision.reason"
DECISION_PHASE = "ensemble.decision.phase"
CONFIDENCE = "ensemble.confidence"
STRATEGY = "ensemble.strategy"
MODELS = "ensemble.models"
PROFILE = "ensemble.profile"
MIN_RESPONSES = "ensemble.min_responses"
OUTCOME = "ensemble.outcome"
WINNER = "ensemble.winner"
AGREEMENT = "ensemble.agreement"
SELECTION_REASON = "ensemble.selection.reason"
CALLS_STARTED = "ensemble.calls.started"
CALLS_CANCELLED = "ensemble.calls.cancelled"
CALL_MODEL = "ensemble.call.model"
CALL_ROLE = "ensemble.call.role"
CALL_ATTEMPT = "ensemble.call.attempt"
CALL_STATUS = "ensemble.call.status"
CALL_ERROR = "ensemble.call.error"

# error.type of a call that gave no answer, by how it ended (HTTP errors: their status).
CANCELLED = "cancelled"
TIMEOUT = "timeout"

# Request fields copied to gen_ai.request.* when the client set them.
_REQUEST_FIELDS = {
    "temperature": REQUEST_TEMPERATURE,
    "top_p": REQUEST_TOP_P,
    "max_tokens": REQUEST_MAX_TOKENS,
    "max_completion_tokens": REQUEST_MAX_TOKENS,
}


def request_attributes(body: Mapping[str, Any]) -> Attributes:
    """gen_ai.request.* of one chat completion request (the model sent, its settings)."""
    attributes: Attributes = {OPERATION: CHAT, PROVIDER: OPENAI}
    model = body.get("model")
    if isinstance(model, str):
        attributes[REQUEST_MODEL] = model
    for field, name in _REQUEST_FIELDS.items():
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    return attributes


def call_attributes(
    endpoint: Endpoint, role: Role, attempt: int, body: Mapping[str, Any]
) -> Attributes:
    """What is known when one call (one attempt) to an endpoint starts."""
    attributes = request_attributes(body)
    attributes.update(
        {
            CALL_MODEL: endpoint.name,
            CALL_ROLE: role.value,
            CALL_ATTEMPT: attempt,
            SERVER_ADDRESS: endpoint.address.host,
            SERVER_PORT: endpoint.address.port,
        }
    )
    if attempt > 1:
        attributes[RESEND_COUNT] = attempt - 1
    return attributes


def error_type(candidate: Candidate) -> str | None:
    """``error.type`` of a finished call: its HTTP status, else how it failed or ended;
    None for an answer."""
    if candidate.status is Status.OK:
        return None
    if candidate.http_status is not None:
        return str(candidate.http_status)
    if candidate.failure is not None:
        return candidate.failure.value
    return candidate.status.value  # timeout, cancelled, skipped


def result_attributes(candidate: Candidate) -> Attributes:
    """What one call's answer (or failure) says."""
    attributes: Attributes = {CALL_STATUS: candidate.status.value}
    if candidate.response_model:
        attributes[RESPONSE_MODEL] = candidate.response_model
    if candidate.finish_reason is not None:
        attributes[FINISH_REASONS] = [candidate.finish_reason]
    attributes.update(usage_attributes((candidate,)))
    if candidate.http_status is not None:
        attributes[HTTP_STATUS] = candidate.http_status
    kind = error_type(candidate)
    if kind is not None:
        attributes[ERROR_TYPE] = kind
    if candidate.error:
        attributes[CALL_ERROR] = candidate.error
    return attributes


def usage_attributes(candidates: Sequence[Candidate]) -> Attributes:
    """Token usage summed over the calls that reported it (none: no attribute)."""
    counted = [c.usage for c in candidates if c.usage is not None]
    if not counted:
        return {}
    return {
        INPUT_TOKENS: sum(u.prompt_tokens for u in counted),
        OUTPUT_TOKENS: sum(u.completion_tokens for u in counted),
    }
