"""The seam between the orchestrator and the network: one model call -> one Candidate."""

from __future__ import annotations

import asyncio
import email.utils
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Protocol

import aiohttp
from aiohttp import hdrs

from ..config import Endpoint
from ..json_out import encode
from ..redact import Redactor
from ..strategies import Candidate, Failure, Status, Usage
from .sse import (
    Accumulator,
    MalformedStream,
    first_choice,
    is_done,
    loads,
    mean_logprob,
    parse_data_line,
)

# Called with each chunk of a relayed stream; False: stop reading (another model won).
Offer = Callable[[Mapping[str, Any]], Awaitable[bool]]
# A call's body (the client's, adjusted: ``orchestrator.call_body``), and the client's
# headers it may carry (``forwardable``), if any.
Body = Mapping[str, Any]
Headers = Mapping[str, str] | None


class EndpointClient(Protocol):
    async def complete(
        self, endpoint: Endpoint, body: Body, headers: Headers = None, offer: Offer | None = None
    ) -> Candidate:
        """Call one endpoint. Endpoint faults become failed candidates, never exceptions;
        the caller bounds the call's time (``asyncio.timeout``). With ``offer``, the body
        asks for a stream (``stream: true``): each chunk is handed to ``offer`` as it
        arrives, and the Candidate is the whole answer, accumulated."""
        ...


# W3C trace context: propagated from the client to every endpoint call.
TRACE_HEADERS = ("traceparent", "tracestate")


def forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers an endpoint call may carry (credentials only where configured)."""
    names = ("authorization", *TRACE_HEADERS)
    return {name: headers[name] for name in names if name in headers}


class ResponseTooLarge(Exception):
    pass


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    numbers = [raw.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return None
    return Usage(*numbers)  # type: ignore[arg-type]


# Statuses whose message describes the request as sent: the client can act on it, so it is
# kept (masked, shortened). Other bodies (401 and 403 echo keys, 5xx dump internals) are not.
REQUEST_FAULTS = frozenset({400, 404, 409, 413, 415, 422})
MAX_DETAIL = 200
# An OpenAI error's code or type, as a short reason: an identifier, never free text.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", re.ASCII)
NO_SECRETS = Redactor()


def _reason(error: object) -> str | None:
    """The endpoint's error code (else type), when it is a plain identifier."""
    if not isinstance(error, Mapping):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
            return value
    return None


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def error_summary(status: int, payload: object, redact: Callable[[str], str]) -> str:
    """An endpoint's error answer in a few words: ``HTTP 401 Unauthorized (invalid_api_key)``.

    The body is the endpoint's text and may echo anything it received (the configured key,
    every header): only its status, its error code and, for a mistake in the request, its
    message (secrets masked, then shortened) are kept.
    """
    try:
        summary = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        summary = f"HTTP {status}"
    error = payload.get("error") if isinstance(payload, dict) else None
    reason = _reason(error)
    if reason is not None:
        summary += f" ({reason})"
    message = error.get("message") if isinstance(error, Mapping) else None
    if status in REQUEST_FAULTS and isinstance(message, str) and message.strip():
        summary += ": " + _shorten(" ".join(redact(message).split()))
    return redact(summary)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # float() refuses other digits such as '²'.
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _failed(
    model: str,
    latency_ms: float,
    error: str,
    failure: Failure | None,
    status: Status = Status.ERROR,
) -> Candidate:
    """A call that gave no usable answer (an error status has its own fields)."""
    return Candidate(model, status, latency_ms=latency_ms, error=error, failure=failure)


def candidate_from_response(
    model: str,
    status: int,
    raw: bytes,
    latency_ms: float,
    retry_after: float | None = None,
    redact: Callable[[str], str] = NO_SECRETS,
) -> Candidate:
    """Interpret an endpoint's HTTP answer as an OpenAI chat completion."""
    try:
        payload = loads(raw)
    except ValueError:
        payload = None
    if status != 200:
        error = error_summary(status, payload, redact)
        return Candidate(
            model,
            Status.ERROR,
            latency_ms=latency_ms,
            error=error,
            failure=Failure.HTTP,
            http_status=status,
            retry_after=retry_after,
        )
    choice = first_choice(payload) if isinstance(payload, dict) else None
    if choice is None:
        what = "not JSON" if payload is None else "a completion without choices"
        return _failed(model, latency_ms, f"answer is {what}", Failure.BAD_ANSWER)
    message = choice.get("message")
    if not isinstance(message, dict):
        return _failed(model, latency_ms, "choice has no message", Failure.BAD_ANSWER)
    finish_reason = choice.get("finish_reason")
    answered_by = payload.get("model")
    return Candidate(
        model,
        Status.OK,
        message=message,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=_usage(payload.get("usage")),
        latency_ms=latency_ms,
        mean_logprob=mean_logprob(choice),
        response_model=answered_by if isinstance(answered_by, str) else None,
    )


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    length = response.content_length
    if length is not None and length > limit:
        raise ResponseTooLarge
    if length is not None and hdrs.CONTENT_ENCODING not in response.headers:
        # The parser delivers exactly Content-Length bytes of an uncompressed body: read at
        # once (chunk by chunk costs about 50 us more per call). A compressed body may
        # inflate past its length, so it is counted as it is read.
        return await response.read()
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise ResponseTooLarge
    return bytes(data)


def candidate_from_stream(model: str, acc: Accumulator, latency_ms: float) -> Candidate:
    if acc.error is not None:
        # Mid-stream, as for an error status: the event's code or type, not its message.
        reason = _reason(acc.error)
        error = "error event" + (f" ({reason})" if reason else "")
        return _failed(model, latency_ms, error, Failure.ERROR_EVENT)
    return Candidate(
        model,
        Status.OK,
        message=acc.message(),
        finish_reason=acc.finish_reason,
        usage=_usage(acc.usage),
        latency_ms=latency_ms,
        mean_logprob=acc.mean_logprob(),
        response_model=acc.model,
    )


class _Stopwatch:
    """Time since a call started, and failed candidates stamped with it."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()

    def ms(self) -> float:
        return (self._loop.time() - self._started) * 1000

    def failed(self, status: Status, error: str, failure: Failure | None = None) -> Candidate:
        return _failed(self._model, self.ms(), error, failure, status)


class StreamStopped(Exception):
    """The offer refused a chunk: another model is being relayed."""


class HttpEndpointClient:
    """Calls OpenAI-compatible endpoints over the app's one ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_response_bytes: int,
        redact: Callable[[str], str],
    ) -> None:
        self._session = session
        self._max_response_bytes = max_response_bytes
        # Masks the config's secrets in what endpoints answer (redact.config_redactor).
        self._redact = redact
        # One TLS context per configured CA file, made at its first use.
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _masked(self, candidate: Candidate) -> Candidate:
        """Every failed call's error, whatever built it (an exception's text included)."""
        if candidate.error is None:
            return candidate
        return replace(candidate, error=self._redact(candidate.error))

    def _tls(self, endpoint: Endpoint) -> ssl.SSLContext | bool:
        """An https endpoint's certificate and host name are verified, with SNI: against
        the system CAs (aiohttp's default, ``True``), or only the endpoint's ``ca_file``."""
        if endpoint.ca_file is None:
            return True
        context = self._contexts.get(endpoint.ca_file)
        if context is None:
            context = ssl.create_default_context(cafile=endpoint.ca_file)
            self._contexts[endpoint.ca_file] = context
        return context

    @staticmethod
    def _headers(endpoint: Endpoint, client_headers: Headers) -> dict[str, str]:
        """The endpoint's own key (the client's Authorization only where configured), and
        the client's trace context."""
        client = client_headers or {}
        headers = {"content-type": "application/json"}
        headers.update({k: v for k, v in client.items() if k in TRACE_HEADERS})
        if endpoint.api_key:
            headers["authorization"] = f"Bearer {endpoint.api_key}"
        elif endpoint.forward_client_auth and "authorization" in client:
            headers["authorization"] = client["authorization"]
        return headers

    def _post(
        self, endpoint: Endpoint, body: Body, client_headers: Headers
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        headers = self._headers(endpoint, client_headers)
        # Encoded here (msgspec) rather than by aiohttp's json.dumps: a tenth of the cost.
        data = encode(body)
        return self._session.post(endpoint.url, data=data, headers=headers, ssl=self._tls(endpoint))

    async def complete(
        self, endpoint: Endpoint, body: Body, headers: Headers = None, offer: Offer | None = None
    ) -> Candidate:
        watch = _Stopwatch(endpoint.name)
        # What its errors call the answer: a stream's, or a whole one's.
        what, whole = ("stream", "stream") if offer is not None else ("request", "answer")
        acc = Accumulator()
        try:
            async with self._post(endpoint, body, headers) as response:
                if offer is None or response.status != 200:
                    raw = await _read_capped(response, self._max_response_bytes)
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    return candidate_from_response(
                        endpoint.name, response.status, raw, watch.ms(), retry_after, self._redact
                    )
                await self._relay(response, acc, offer)
        except StreamStopped:
            return watch.failed(Status.CANCELLED, "cancelled: another model streamed first")
        except MalformedStream as exc:
            return watch.failed(Status.ERROR, f"malformed stream: {exc}", Failure.MALFORMED_STREAM)
        except ResponseTooLarge:
            limit = self._max_response_bytes
            error = f"{whole} larger than max_response_bytes ({limit})"
            return watch.failed(Status.ERROR, error, Failure.TOO_LARGE)
        except aiohttp.ClientError as exc:
            error = f"{what} failed: {type(exc).__name__}: {exc}"
            return self._masked(watch.failed(Status.ERROR, error, Failure.CONNECTION))
        return self._masked(candidate_from_stream(endpoint.name, acc, watch.ms()))

    async def _relay(
        self, response: aiohttp.ClientResponse, acc: Accumulator, offer: Offer
    ) -> None:
        received = 0
        async for line in response.content:
            received += len(line)
            if received > self._max_response_bytes:
                raise ResponseTooLarge
            if is_done(line):
                return
            chunk = parse_data_line(line)
            if chunk is None:
                continue
            acc.add(chunk)
            if not await offer(chunk):
                raise StreamStopped
        raise MalformedStream("the stream ended without data: [DONE]")
