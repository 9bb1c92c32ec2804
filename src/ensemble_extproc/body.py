"""What the gateway accepts as a request body: uncompressed, standard JSON (RFC 8259).

Shared by the processor and the ensemble upstream, so that both read the same bytes the
same way and every mistake is the client's 4xx, never a 5xx:

- ``Content-Encoding`` other than ``identity`` is a 415. The processor reads the body as
  Envoy buffered it (still compressed) while the upstream's HTTP server would inflate it:
  the two would disagree, and inflating means a decompression bomb to bound in both.
  OpenAI's SDKs never compress requests, so the gateway refuses them plainly (RFC 7694).
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow a double (``1e999``) are
  not JSON; Python's parser accepts them and would pass them on to models. 400.
- An integer longer than ``MAX_INTEGER_DIGITS`` is a 400 with a clear message, before
  Python's own integer-string limit turns it into an error naming an interpreter setting.

msgspec reads a body first (it is 3-4x faster than ``json`` and refuses the same
non-standard numbers); whatever it refuses, and any body with a run of digits longer than
the limit, is read again by ``json`` with the checks above, whose answer (a value or the
client's error) is the reference. So a valid body is read fast, and every other body gets
the same answer and message as with ``json`` alone (``json`` also accepts a few inputs that
msgspec does not, such as a UTF-8 BOM and lone surrogate escapes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

import msgspec

from .errors import ApiError, ErrorCode

# No model API takes an integer this long (seeds and token counts fit in 64 bits).
MAX_INTEGER_DIGITS = 100
IDENTITY = "identity"
CONTENT_ENCODING = "content-encoding"
# Every digit to "0", every other byte to " ": a long run of digits is then a plain
# substring search (10x faster than the same regular expression).
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS = b"0" * (MAX_INTEGER_DIGITS + 1)
_FAST = msgspec.json.Decoder()


class NotStandardJson(ValueError):
    """A number or constant that Python's parser accepts but JSON does not have."""


def _no_constant(name: str) -> NoReturn:
    raise NotStandardJson(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStandardJson(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise NotStandardJson(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def loads_strict(raw: bytes | str) -> Any:
    """``json.loads`` that accepts standard JSON only (``ValueError`` otherwise)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _LONG_DIGITS not in data.translate(_DIGITS):
        try:
            return _FAST.decode(data)
        except (msgspec.DecodeError, RecursionError):
            pass  # read again below: json's answer (and message) is the reference
    return json.loads(raw, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the client's 400 saying what is wrong with it."""
    try:
        body = loads_strict(raw)
    except NotStandardJson as exc:
        message = f"request body is not standard JSON: {exc}"
        raise ApiError(ErrorCode.INVALID_JSON, message) from None
    except (ValueError, UnicodeDecodeError) as exc:
        message = f"request body is not valid JSON: {exc}"
        raise ApiError(ErrorCode.INVALID_JSON, message) from None
    except RecursionError:  # absurdly deep nesting: still the client's mistake
        raise ApiError(ErrorCode.INVALID_JSON, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(ErrorCode.INVALID_JSON, "request body must be a JSON object")
    return body


def check_content_encoding(headers: Mapping[str, str]) -> None:
    """415 unless the body is sent as it is (no ``Content-Encoding``, or ``identity``)."""
    value = headers.get(CONTENT_ENCODING)
    if value is None:
        return
    codings = [coding.strip().lower() for coding in value.split(",")]
    if all(coding in ("", IDENTITY) for coding in codings):
        return
    raise ApiError(
        ErrorCode.UNSUPPORTED_CONTENT_ENCODING,
        f"Content-Encoding {value.strip()[:40]!r} is not supported on requests: "
        "send the JSON body uncompressed",
        # RFC 7694: the codings the server accepts in requests.
        headers={"Accept-Encoding": IDENTITY},
    )
