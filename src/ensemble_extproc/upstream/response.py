"""The OpenAI-shaped answer (or error) for an ensemble outcome, and its headers."""

from __future__ import annotations

import math
import uuid
from typing import Any

from .. import headers as h
from ..errors import ApiError
from ..strategies import Candidate, Selection, Usage
from .orchestrator import Outcome


def ensemble_headers(outcome: Outcome) -> dict[str, str]:
    out = {
        h.RESP_STRATEGY: outcome.spec.strategy,
        h.RESP_MODELS_QUERIED: ",".join(outcome.spec.models),
        h.RESP_RESPONSES_RECEIVED: str(len(outcome.valid)),
    }
    if outcome.selection is not None:
        out[h.RESP_SELECTED_MODEL] = outcome.selection.winner.model
        if outcome.selection.agreement is not None:
            out[h.RESP_AGREEMENT] = f"{outcome.selection.agreement:.3f}"
        depth = outcome.selection.details.get("cascade_depth")
        if depth is not None:
            out[h.RESP_CASCADE_DEPTH] = str(depth)
    return out


def _candidate_summary(candidate: Candidate) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "model": candidate.model,
        "role": candidate.role.value,
        "status": candidate.status.value,
        "valid": candidate.valid,
        "latency_ms": round(candidate.latency_ms, 1),
        "attempts": candidate.attempts,
        "finish_reason": candidate.finish_reason,
        "answer": candidate.answer.key if candidate.valid else None,
        "confidence": (
            round(math.exp(candidate.mean_logprob), 4)
            if candidate.mean_logprob is not None
            else None
        ),
        "error": None if candidate.valid else candidate.invalid_reason,
        # This call's share of the response's usage (None: the endpoint reported none).
        "usage": (
            {
                "prompt_tokens": candidate.usage.prompt_tokens,
                "completion_tokens": candidate.usage.completion_tokens,
                "total_tokens": candidate.usage.total_tokens,
            }
            if candidate.usage is not None
            else None
        ),
    }
    return summary


def ensemble_details(outcome: Outcome) -> dict[str, Any]:
    selection = outcome.selection
    return {
        "strategy": outcome.spec.strategy,
        "models": list(outcome.spec.models),
        "min_responses": outcome.spec.min_responses,
        "responses_received": len(outcome.valid),
        "selected_model": selection.winner.model if selection else None,
        "agreement": selection.agreement if selection else None,
        "reason": selection.reason if selection else None,
        "details": dict(selection.details) if selection else {},
        "calls": {"started": outcome.calls_started, "cancelled": outcome.calls_cancelled},
        "candidates": [_candidate_summary(c) for c in outcome.candidates],
    }


def total_usage(outcome: Outcome) -> Usage:
    usage = Usage()
    for candidate in outcome.candidates:
        if candidate.usage is not None:
            usage += candidate.usage
    return usage


def completion_body(outcome: Outcome, selection: Selection, created: int) -> dict[str, Any]:
    winner = selection.winner
    usage = total_usage(outcome)
    return {
        "id": f"chatcmpl-ens-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": f"ensemble/{outcome.spec.strategy}",
        "choices": [
            {
                "index": 0,
                "message": dict(
                    selection.message or winner.message or {"role": "assistant", "content": ""}
                ),
                "finish_reason": winner.finish_reason or "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "ensemble": ensemble_details(outcome),
    }


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
    message = (
        f"ensemble needed {spec.min_responses} valid answer(s) from {len(spec.models)} "
        f"model(s) but got {len(outcome.valid)}: {reasons}"
    )
    rejected = client_error(outcome)
    if rejected is not None:
        # Every model refused the request itself: that is the client's mistake, not a
        # gateway fault, so the client gets a 400 (the models' own statuses in the message)
        # rather than a 502.
        return ApiError(
            400,
            f"every model rejected the request (HTTP {rejected}): {reasons}",
            code="rejected_by_models",
            extra={"ensemble": ensemble_details(outcome)},
        )
    if outcome.deadline_exceeded:
        return ApiError(
            504,
            message,
            type="timeout_error",
            code="ensemble_deadline_exceeded",
            extra={"ensemble": ensemble_details(outcome)},
        )
    return ApiError(
        502,
        message,
        type="upstream_error",
        code="ensemble_quorum_not_met",
        extra={"ensemble": ensemble_details(outcome)},
    )
