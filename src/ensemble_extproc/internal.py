"""Internal headers: how the processor tells the upstream what it decided, unforgeably.

The processor sets them (overwriting), Envoy strips nothing of ours, and clients' copies
are removed by the processor. The upstream believes them only with a valid HMAC over
their values and a recent timestamp, so a caller that reaches the upstream directly
cannot pick a profile or multiply models.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from . import headers as h

# Signatures older than this are refused (replay of a captured request).
MAX_AGE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


def _payload(values: Mapping[str, str], timestamp: int) -> bytes:
    lines = [f"t={timestamp}"] + [f"{name}={values.get(name, '')}" for name in h.SIGNED]
    return "\n".join(lines).encode()


def sign(secret: bytes, values: Mapping[str, str], now: float) -> str:
    timestamp = int(now)
    digest = hmac.new(secret, _payload(values, timestamp), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, values: Mapping[str, str], now: float) -> Verdict:
    signature = values.get(h.SIGNATURE)
    if not signature:
        return Verdict(
            False, "no signature: internal ensemble headers come only from the processor"
        )
    fields = dict(part.partition("=")[::2] for part in signature.split(","))
    stamp, digest = fields.get("t", ""), fields.get("v1", "")
    # ASCII digits, and few: int() refuses '²' and thousands of digits with a ValueError.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not digest:
        return Verdict(False, "malformed signature")
    if abs(now - int(stamp)) > MAX_AGE_SECONDS:
        return Verdict(False, "signature expired")
    expected = hmac.new(secret, _payload(values, int(stamp)), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        return Verdict(False, "signature does not match")
    return Verdict(True)
