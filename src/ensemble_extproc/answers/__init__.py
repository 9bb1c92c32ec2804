"""Extracted answers: what an LLM answered, in a form that voting can compare.

Models phrase one answer many ways ("42", "The answer is 42 (6 groups of 7).",
"\\boxed{42}", "forty-two", a chain of thought ending in "#### 42"), so voting on raw strings
splits votes that agree. ``extract`` reduces an answer text to an ``Answer`` (a kind and a
canonical key; see ``locate`` for where the answer is found and ``values`` for how it is
read) and ``group`` decides which answers agree (see ``grouping`` and ``text``). When
unsure, answers are kept apart: a false merge turns disagreement into false confidence.
"""

from __future__ import annotations

from .grouping import group
from .locate import SHORT_TEXT_LIMIT, extract
from .messages import message_answer, tool_calls_key
from .model import Answer
from .text import normalise_text

__all__ = [
    "SHORT_TEXT_LIMIT",
    "Answer",
    "extract",
    "group",
    "message_answer",
    "normalise_text",
    "tool_calls_key",
]
