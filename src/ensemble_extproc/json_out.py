"""JSON out: every answer, chunk and error body the gateway writes is encoded here.

msgspec encodes fast, but only text that UTF-8 can carry. A lone surrogate can: JSON
escapes it (``"\\ud800"``), Python's parser reads it, and a model may echo it back. Such a
value is written as ``json`` writes it, escaped, so that the model's text is passed on
rather than turned into a 500.
"""

from __future__ import annotations

import json

import msgspec


def encode(value: object) -> bytes:
    try:
        return msgspec.json.encode(value)
    except UnicodeEncodeError:
        return json.dumps(msgspec.to_builtins(value), separators=(",", ":")).encode()
