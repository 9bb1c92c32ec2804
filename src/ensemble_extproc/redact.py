"""Configured secrets never leave in a text: error messages, candidate errors, log lines.

Endpoint API keys, the internal HMAC secret and the ``header_control`` client keys are
known at start-up; a ``Redactor`` built from them replaces each occurrence (also as it
reads inside a JSON string) with ``[redacted]``. It is applied where text from outside
(an endpoint's error body) is turned into an error, and to every log line.

Redact before truncating: a secret cut in half no longer matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from .config import Config

MASK = "[redacted]"


def _forms(secret: str) -> set[str]:
    # Inside a JSON string (a log line, an error body) quotes, backslashes and non-ASCII
    # characters of the secret are escaped.
    return {secret, json.dumps(secret)[1:-1]}


class Redactor:
    """Masks a fixed set of secret values in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {form for secret in secrets if secret for form in _forms(secret)}
        # Longest first: a secret that contains another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


def config_redactor(config: Config) -> Redactor:
    """Masks every secret value the config holds."""
    values = [endpoint.api_key for endpoint in config.endpoints.values() if endpoint.api_key]
    values.extend(config.client_api_keys)
    if config.internal_secret is not None:
        values.append(config.internal_secret.decode("utf-8", "replace"))
    return Redactor(values)


def client_credentials(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credentials a client sent (``Authorization``'s token, ``x-api-key``): an endpoint
    that echoes a forwarded key must not put it into a log line either."""
    values = []
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if token.strip() or scheme:
        values.append(token.strip() or scheme)
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        values.append(api_key)
    return tuple(values)
