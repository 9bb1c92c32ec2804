"""Reading a chat completion request's body: whole, uncompressed, bounded in size and time.

Its checks against the request model are ``chat.parse_chat_request``; every client
mistake is a 4xx ``ApiError``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..body import check_content_encoding
from ..errors import ApiError, ErrorCode


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole body, uncompressed, within ``limit`` bytes and ``seconds``.

    Bounded in time so that a client trickling its body cannot hold a connection for ever;
    the caller reads it before taking an in-flight slot, so slow clients never hold one.
    """
    check_content_encoding(request.headers)
    too_large = ApiError(
        ErrorCode.REQUEST_TOO_LARGE, f"request body is larger than the limit of {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        if request.content.is_eof():
            # It arrived whole with the headers (the common case): nothing to wait for,
            # so no timer to set and cancel.
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked bodies have no content-length
        raise too_large from exc
    except TimeoutError:
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {seconds:g} s"
        ) from None
    except ConnectionResetError:
        # The client left mid-body: nobody reads this answer, but it is no internal error
        # (a traceback per hang-up would let any client flood the log).
        raise ApiError(
            ErrorCode.INCOMPLETE_BODY, "the client closed the connection before its body arrived"
        ) from None
