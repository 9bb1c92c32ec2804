"""What the upstream feeds the trust book after each ensemble (pure).

The observation is made of the members' extracted answers: members whose answers group
together (``answers.group``, the strategies' own rule) agree. Members that failed (an
error, a timeout, an empty or filtered answer) are counted as failures; members that
were cancelled (early stop, a decided cascade) or skipped (open circuit) are left out,
since they neither answered nor failed.

The strategy usually grouped the same answers already (``Selection.groups``): those
groups are used when they hold exactly the members that answered, so that the answers
are not grouped twice (grouping is most of learning's cost per ensemble).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Set

from ..answers import group
from ..strategies.base import Candidate, Role, Status
from .model import Observation

_LEFT_OUT = frozenset({Status.CANCELLED, Status.SKIPPED})


def observation(
    candidates: Sequence[Candidate],
    similarity: float,
    client: str = "",
    grouped: Sequence[Sequence[str]] | None = None,
) -> Observation:
    """``grouped``: the strategy's groups of agreeing members (model names), if any."""
    members = [c for c in candidates if c.role is Role.MEMBER and c.status not in _LEFT_OUT]
    valid = [c for c in members if c.valid]
    answers = _handed(grouped, {c.model for c in valid}) if grouped is not None else None
    if answers is None:
        groups = group([c.answer for c in valid], similarity) if valid else []
        answers = {c.model: g for c, g in zip(valid, groups, strict=True)}
    failed = frozenset(c.model for c in members if not c.valid and c.model not in answers)
    return Observation(answers, failed, client)


def _handed(grouped: Sequence[Sequence[str]], valid: Set[str]) -> dict[str, int] | None:
    """The strategy's groups as answer indices, if they hold every member that answered
    exactly once (a call that finished while the others were cancelled is not in them)."""
    answers = {model: index for index, models in enumerate(grouped) for model in models}
    if answers.keys() != valid or sum(len(models) for models in grouped) != len(valid):
        return None
    return answers


def _digest(secret: str) -> str:
    # Keys and addresses are never kept, logged or saved: only a short hash that tells
    # clients apart.
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def client_identity(headers: Mapping[str, str], peer: str | None) -> str:
    """Who sent a request, for the per-client cap: its API key if it has one, else its
    address.

    The key is ``Authorization: Bearer`` or ``x-api-key`` (hashed). The address is the
    last ``x-forwarded-for`` hop, the one Envoy appends, else the connection's peer. A
    client that can rotate keys or addresses at will counts as many clients: see
    docs/trust.md.
    """
    authorization = headers.get("authorization", "").strip()
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return "key:" + _digest(credential.strip())
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return "key:" + _digest(api_key)
    forwarded = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
    forwarded = [hop for hop in forwarded if hop]
    address = forwarded[-1] if forwarded else peer
    # Addresses are hashed too: snapshots on disk hold no personal data.
    return "addr:" + _digest(address) if address else "anonymous"
