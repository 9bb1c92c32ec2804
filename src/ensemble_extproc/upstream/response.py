"""The OpenAI-shaped answer (or error) for an ensemble outcome, and its headers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from .. import headers as h
from .. import strategies
from ..cost.account import CostSummary, cost_of, format_usd
from ..errors import ApiError, ErrorCode
from ..spec import EnsembleSpec
from ..strategies import Selection, Usage
from .orchestrator import Outcome
from .wire import Calls, Candidate, ChatCompletion, Choice, Cost, Ensemble, StreamResume

# The fields of a candidate that the log's summary line carries (never its answer text).
LOG_FIELDS = ("model", "role", "status", "latency_ms", "attempts", "error", "cost_usd")
# Dollars in the JSON: a millionth of a millionth is far below any price.
_USD_DIGITS = 12


def spec_headers(spec: EnsembleSpec, seed: bool = False) -> dict[str, str]:
    """What a response says before the outcome is known (a stream's start); ``seed``: in
    the semantic router's dialect too."""
    out = {h.RESP_STRATEGY: spec.strategy, h.RESP_MODELS_QUERIED: ",".join(spec.models)}
    if seed:
        out |= {h.RESP_VSR_USED: "true", h.RESP_VSR_MODELS_QUERIED: str(len(spec.models))}
    return out


def cost_headers(spent: CostSummary) -> dict[str, str]:
    """What the ensemble cost; with the models whose cost is unknown (the sum is then a
    lower bound), and those the cost cap kept from starting."""
    out = {h.RESP_COST: format_usd(spent.total_usd)}
    if spent.unknown:
        out[h.RESP_COST_UNKNOWN] = ",".join(dict.fromkeys(spent.unknown))
    if spent.not_started:
        out[h.RESP_COST_CAPPED] = ",".join(dict.fromkeys(spent.not_started))
    return out


def ensemble_headers(outcome: Outcome, seed: bool = False) -> dict[str, str]:
    received = str(len(outcome.valid))
    out = spec_headers(outcome.spec, seed) | {h.RESP_RESPONSES_RECEIVED: received}
    if seed:
        out[h.RESP_VSR_RESPONSES_RECEIVED] = received
    out |= cost_headers(outcome.cost)
    if outcome.selection is not None:
        out[h.RESP_SELECTED_MODEL] = outcome.selection.winner.model
        if outcome.selection.agreement is not None:
            out[h.RESP_AGREEMENT] = f"{outcome.selection.agreement:.3f}"
        depth = outcome.selection.details.get("cascade_depth")
        if depth is not None:
            out[h.RESP_CASCADE_DEPTH] = str(depth)
    return out


def summarise(candidate: strategies.Candidate) -> Candidate:
    """A call as the response's ``ensemble.candidates`` and the log's summary report it."""
    valid = candidate.valid
    logprob = candidate.mean_logprob
    spent = cost_of(candidate)
    return Candidate(
        model=candidate.model,
        role=candidate.role,
        status=candidate.status,
        valid=valid,
        latency_ms=round(candidate.latency_ms, 1),
        attempts=candidate.attempts,
        finish_reason=candidate.finish_reason,
        answer=candidate.answer.key if valid else None,
        confidence=round(math.exp(logprob), 4) if logprob is not None else None,
        error=None if valid else candidate.invalid_reason,
        usage=candidate.usage,
        usage_counted=candidate.usage_counted,
        cost_usd=None if spent.usd is None else round(spent.usd, _USD_DIGITS),
        cost_unknown=spent.unknown,
    )


def cost_details(spent: CostSummary) -> Cost:
    return Cost(
        total_usd=round(spent.total_usd, _USD_DIGITS),
        complete=spent.complete,
        estimated=spent.estimated,
        unknown=list(spent.unknown),
        max_usd=spent.max_usd,
        not_started=list(spent.not_started),
    )


def log_fields(candidate: strategies.Candidate) -> dict[str, Any]:
    """The ``LOG_FIELDS`` of ``summarise(candidate)``, without building the rest of it."""
    return {
        "model": candidate.model,
        "role": candidate.role,
        "status": candidate.status,
        "latency_ms": round(candidate.latency_ms, 1),
        "attempts": candidate.attempts,
        "error": None if candidate.valid else candidate.invalid_reason,
        "cost_usd": None if (usd := cost_of(candidate).usd) is None else round(usd, _USD_DIGITS),
    }


def ensemble_details(outcome: Outcome) -> Ensemble:
    selection = outcome.selection
    return Ensemble(
        strategy=outcome.spec.strategy,
        models=list(outcome.spec.models),
        min_responses=outcome.spec.min_responses,
        responses_received=len(outcome.valid),
        selected_model=selection.winner.model if selection else None,
        agreement=selection.agreement if selection else None,
        reason=selection.reason if selection else None,
        details=dict(selection.details) if selection else {},
        calls=Calls(started=outcome.calls_started, cancelled=outcome.calls_cancelled),
        candidates=[summarise(c) for c in outcome.candidates],
        cost=cost_details(outcome.cost),
        resumes=[
            StreamResume(r.broken, r.resumed_on, r.chunks, r.chars, r.reason)
            for r in outcome.resumes
        ],
    )


def total_usage(outcome: Outcome) -> Usage:
    return sum((c.usage for c in outcome.candidates if c.usage is not None), Usage(0, 0, 0))


def answer(selection: Selection) -> tuple[Mapping[str, Any], str]:
    """The message and finish_reason of the answer, streamed or not."""
    winner = selection.winner
    message = selection.message or winner.message or {"role": "assistant", "content": ""}
    return message, winner.finish_reason or "stop"


def completion(outcome: Outcome, selection: Selection, created: int) -> ChatCompletion:
    message, finish_reason = answer(selection)
    choice = Choice(index=0, message=dict(message), finish_reason=finish_reason)
    return ChatCompletion(
        id=f"chatcmpl-ens-{uuid.uuid4().hex}",
        created=created,
        model=f"ensemble/{outcome.spec.strategy}",
        choices=[choice],
        usage=total_usage(outcome),
        ensemble=ensemble_details(outcome),
    )


def client_error(outcome: Outcome) -> int | None:
    """The 4xx (not 429) that every member answered, if they all answered the same one."""
    statuses = {c.http_status for c in outcome.members}
    if len(statuses) != 1:
        return None
    status = statuses.pop()
    if status is None or not 400 <= status < 500 or status == 429:
        return None
    return status


def failure(outcome: Outcome) -> ApiError:
    """Too few valid answers: 504 when the deadline passed, else 502; says who failed and why."""
    spec = outcome.spec
    reasons = "; ".join(f"{c.model}: {c.invalid_reason}" for c in outcome.candidates if not c.valid)
    extra = {"ensemble": ensemble_details(outcome)}
    rejected = client_error(outcome)
    if rejected is not None:
        # Every model refused the request itself: that is the client's mistake, not a
        # gateway fault, so the client gets a 400 (the models' own statuses in the message)
        # rather than a 502.
        message = f"every model rejected the request (HTTP {rejected}): {reasons}"
        return ApiError(ErrorCode.REJECTED_BY_MODELS, message, extra=extra)
    message = (
        f"ensemble needed {spec.min_responses} valid answer(s) from {len(spec.models)} "
        f"model(s) but got {len(outcome.valid)}: {reasons}"
    )
    if outcome.deadline_exceeded:
        return ApiError(ErrorCode.ENSEMBLE_DEADLINE_EXCEEDED, message, extra=extra)
    return ApiError(ErrorCode.ENSEMBLE_QUORUM_NOT_MET, message, extra=extra)
