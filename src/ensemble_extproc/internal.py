"""Internal headers: how the processor tells the upstream what it decided, unforgeably.

The processor sets them (overwriting) and removes clients' copies; Envoy strips them
before any request leaves for a model endpoint. The upstream believes them only with a
valid HMAC that binds their values to one request (Envoy's ``x-request-id``, which clients
cannot choose, the method and the path), made within ``signature_lifetime_seconds``, and
seen for the first time: a captured signature cannot be replayed, even with another body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from . import headers as h


@dataclass(frozen=True, slots=True)
class Binding:
    """The request a signature is good for."""

    request_id: str
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""
    # When ok: what identifies this signature for the replay check, and until when.
    token: bytes = b""
    expires_at: float = 0.0


def _payload(values: Mapping[str, str], binding: Binding, timestamp: int, nonce: str) -> bytes:
    lines = [
        f"t={timestamp}",
        f"n={nonce}",
        f"rid={binding.request_id}",
        f"m={binding.method}",
        f"p={binding.path}",
    ] + [f"{name}={values.get(name, '')}" for name in h.SIGNED]
    return "\n".join(lines).encode()


def sign(
    secret: bytes,
    values: Mapping[str, str],
    binding: Binding,
    now: float,
    nonce: str | None = None,
) -> str:
    """The signature header's value. The random nonce keeps two identical requests in the
    same second apart, so that the replay check never refuses a legitimate one."""
    timestamp = int(now)
    nonce = nonce or secrets.token_hex(12)
    payload = _payload(values, binding, timestamp, nonce)
    digest = hmac.new(secret, payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},n={nonce},v1={digest}"


def verify(
    secret: bytes, values: Mapping[str, str], binding: Binding, now: float, lifetime: float
) -> Verdict:
    signature = values.get(h.SIGNATURE)
    if not signature:
        return Verdict(
            False, "no signature: internal ensemble headers come only from the processor"
        )
    fields = dict(part.partition("=")[::2] for part in signature.split(","))
    stamp, nonce, digest = fields.get("t", ""), fields.get("n", ""), fields.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12 or not nonce or not digest:
        return Verdict(False, "malformed signature")
    if abs(now - int(stamp)) > lifetime:
        return Verdict(False, f"signature expired (older than {lifetime:g} s)")
    payload = _payload(values, binding, int(stamp), nonce)
    expected = hmac.new(secret, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.encode()):
        return Verdict(False, "signature does not match this request")
    return Verdict(True, token=bytes.fromhex(expected), expires_at=int(stamp) + lifetime)


class ReplayWindowFull(Exception):
    """More unexpired signatures than the guard may remember: refuse rather than forget."""


class ReplayGuard:
    """Signatures seen by this process until they expire, at most ``capacity`` of them.

    Entries come in roughly in expiry order (signing time plus a fixed lifetime), so
    expired ones are dropped from the front. Only signatures that verified are recorded:
    nobody without the secret can fill it.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, token: bytes, expires_at: float, now: float) -> bool:
        """True the first time a token is offered; False for a replay. Raises
        ``ReplayWindowFull`` when it cannot remember one more without forgetting a live one."""
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry >= now:
                break
            del self._seen[oldest]
        if token in self._seen:
            return False
        if len(self._seen) >= self.capacity:
            # Out-of-order expiries (clocks of processor replicas differ) may hide
            # expired entries behind a live one: sweep them all before giving up.
            self._seen = OrderedDict((k, t) for k, t in self._seen.items() if t >= now)
            if len(self._seen) >= self.capacity:
                raise ReplayWindowFull
        self._seen[token] = expires_at
        return True
