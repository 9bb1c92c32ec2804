"""Numbers written in English words: "forty-two", "five hundred forty", "one half"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Final

_UNITS: Final[Mapping[str, int]] = {
    word: value
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS: Final[Mapping[str, int]] = {
    word: 10 * (index + 2)
    for index, word in enumerate(
        ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    )
}
_SCALES: Final[Mapping[str, int]] = {
    "thousand": 10**3,
    "million": 10**6,
    "billion": 10**9,
    "trillion": 10**12,
}
_FRACTIONS: Final[Mapping[str, int]] = {
    "half": 2,
    "halves": 2,
    "third": 3,
    "thirds": 3,
    "quarter": 4,
    "quarters": 4,
    "fourth": 4,
    "fourths": 4,
    "fifth": 5,
    "fifths": 5,
}
_SIGNS: Final = frozenset({"negative", "minus"})
NUMBER_WORDS: Final = frozenset(
    {*_UNITS, *_TENS, *_SCALES, *_FRACTIONS, *_SIGNS, "hundred", "and", "a"}
)
# Words that mean a number only when they are the whole answer ("one" is also a pronoun,
# "a" an article): a sentence never reads them as its number.
WEAK_WORDS: Final = frozenset({"zero", "one", "a", "and"})

_WORD = re.compile(r"[a-z]+")


def words_value(text: str) -> Fraction | None:
    """The value of ``text`` when it is only a number in words (any case, hyphens or
    spaces between words), else None. "one half" and "three quarters" are fractions."""
    words = _WORD.findall(text.casefold())
    if not words or len(words) > 12 or "".join(words) != re.sub(r"[\s\-]", "", text.casefold()):
        return None
    sign = 1
    if words[0] in _SIGNS:
        sign, words = -1, words[1:]
    if not words:
        return None
    if words[-1] in _FRACTIONS:
        count = _integer(words[:-1]) if len(words) > 1 else None
        if len(words) > 1 and words[:-1] == ["a"]:
            count = 1
        if count is None:
            return None
        return sign * Fraction(count, _FRACTIONS[words[-1]])
    value = _integer(words)
    return None if value is None else Fraction(sign * value)


def _integer(words: list[str]) -> int | None:
    total, current, seen = 0, 0, False
    for word in words:
        if word == "and":
            continue
        if word in _UNITS:
            if current % 10 or 0 < current % 100 < 20:
                return None  # "five six", "twelve three"
            current += _UNITS[word]
        elif word in _TENS:
            if current % 100:
                return None  # "five twenty"
            current += _TENS[word]
        elif word == "hundred":
            if current == 0 or current >= 100:
                return None
            current *= 100
        elif word in _SCALES:
            if current == 0:
                return None
            total += current * _SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return total + current if seen else None
