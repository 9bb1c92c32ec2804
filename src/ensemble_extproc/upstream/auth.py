"""Ensembles only for the processor's signed requests, each signature used once.

Checked when the request's headers are in, before its body is read: the lifetime of a
signature counts from the processor to the upstream, not to the end of a slow upload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .. import headers as h
from ..config import Config
from ..errors import ApiError, ErrorCode
from ..internal import Binding, ReplayGuard, ReplayWindowFull, verify
from ..paths import is_chat_completion


def _refused(reason: str) -> ApiError:
    return ApiError(
        ErrorCode.UNSIGNED_INTERNAL_HEADERS,
        f"ensemble request not signed by the processor: {reason}",
    )


def check_signature(
    headers: Mapping[str, str],
    binding: Binding,
    config: Config,
    guard: ReplayGuard,
    now: float,
) -> None:
    """Raise the client's error unless the headers carry a fresh, unused signature made
    for this request. Without a configured secret, nothing is checked."""
    if config.internal_secret is None:
        return
    verdict = verify(
        config.internal_secret, headers, binding, now, config.security.signature_lifetime_seconds
    )
    if not verdict.ok:
        raise _refused(verdict.reason)
    try:
        first = guard.first_use(verdict.token, verdict.expires_at, now)
    except ReplayWindowFull:
        raise ApiError(
            ErrorCode.REPLAY_WINDOW_FULL,
            f"more than {guard.capacity} signed requests within "
            f"{config.security.signature_lifetime_seconds:g} s; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    if not first:
        raise _refused("this signature was already used (a replay)")


def signed_ensembles(config: Config, guard: ReplayGuard, clock: Callable[[], float]) -> Middleware:
    """The middleware checking chat completions; other routes carry no internal headers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_chat_completion(request.method, request.path):
            binding = Binding(
                request.headers.get(h.REQUEST_ID, ""), request.method, request.raw_path
            )
            check_signature(request.headers, binding, config, guard, clock())
        return await handler(request)

    return middleware
