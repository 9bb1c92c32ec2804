"""The extracted answer: a kind and a canonical key; equal (kind, key) means agreement."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal, get_args

# number: an exact value ("0.75" for 3/4, 75 % and \frac{3}{4}); math: an expression,
# equation, tuple, interval or set, keyed by its canonical spelling; choice: one or more
# option letters ("B", "A,C"); boolean: "yes" / "no"; text: normalised free text.
Kind = Literal["number", "math", "choice", "boolean", "text", "tool_calls", "empty"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    key: str  # canonical value used for grouping: "1000", "0.75", "B", "yes", "x+1", text
    number: Fraction | None = None  # set when kind == "number"


EMPTY: Final = Answer("empty", "")
