"""Free text: its normalised key, and when two free texts say the same thing.

Similarity is deliberately strict, because a false merge turns disagreement into false
confidence: two texts are similar only when

- they contain the same numbers (digit runs), so "March 3" never meets "March 4" and
  "10:30" never meets "10:45";
- and either one is a short answer (up to 4 words) that ends the other after a copula or
  preposition, in a sentence with no negation ("Paris" and "The capital of France is
  Paris"),
- or their character similarity (difflib ratio) reaches the threshold AND every word that
  differs is a stop word ("the", "of", ...) or a one-letter typo of a word of 5 letters or
  more ("colour" / "color"); "Monday" / "Sunday" differ in two letters and stay apart.

Texts longer than ``FUZZY_LIMIT`` characters are compared exactly (after normalisation).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Final

FUZZY_LIMIT: Final = 2000
# Free text longer than this is keyed by a digest of its raw text: normalising and keeping
# a megabyte-long key per answer costs more than it could ever merge.
TEXT_KEY_LIMIT: Final = 16_384

_TRAILING: Final = " .!?;:,\u3002\uff01\uff1f"
_DECORATION: Final = " \"'`*_\u201c\u201d\u2018\u2019"
_MARKUP = re.compile(r"\*\*|__|`+|^#+[ \t]+", re.MULTILINE)
_ARTICLE = re.compile(r"(?:the|a|an)\s+(?=\S)")
_DIGITS = re.compile(r"[0-9]+")
_WORDS = re.compile(r"\w+")
_STOP_WORDS: Final = frozenset(
    [
        "the",
        "a",
        "an",
        "is",
        "are",
        "was",
        "were",
        "be",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "by",
        "it",
        "its",
        "this",
        "that",
        "there",
        "and",
    ]
)
_COPULAS: Final = frozenset(
    ["is", "was", "are", "were", "be", "at", "on", "in", "by", "equals", "called", "named"]
)
_NEGATIONS: Final = frozenset(
    ["not", "no", "never", "neither", "nor", "isn't", "wasn't", "aren't", "weren't", "cannot"]
)


def normalise_text(text: str) -> str:
    """Casefold, drop markdown emphasis, surrounding quotes, trailing punctuation and a
    leading article, collapse whitespace: ``**"The Paris."**`` is ``paris``."""
    if len(text) > TEXT_KEY_LIMIT:
        return "sha256:" + hashlib.sha256(text.strip().encode("utf-8", "replace")).hexdigest()
    folded = unicodedata.normalize("NFKC", text).casefold()
    collapsed = " ".join(_MARKUP.sub("", folded).split())
    stripped = collapsed.rstrip(_TRAILING + _DECORATION).lstrip(_DECORATION)
    without_article = _ARTICLE.sub("", stripped, count=1) if _ARTICLE.match(stripped) else stripped
    return without_article.rstrip(_TRAILING + _DECORATION)


def similar(a: str, b: str, threshold: float) -> bool:
    """Whether two normalised free texts say the same thing (rules in the module doc)."""
    if a == b:
        return True
    if threshold >= 1 or len(a) > FUZZY_LIMIT or len(b) > FUZZY_LIMIT:
        return False
    if _DIGITS.findall(a) != _DIGITS.findall(b):
        return False
    words_a, words_b = _WORDS.findall(a), _WORDS.findall(b)
    if _ends_sentence(words_a, words_b) or _ends_sentence(words_b, words_a):
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    # real_quick_ratio and quick_ratio are cheap upper bounds of ratio: skip the costly part.
    if (
        matcher.real_quick_ratio() < threshold
        or matcher.quick_ratio() < threshold
        or matcher.ratio() < threshold
    ):
        return False
    return _same_words(words_a, words_b)


def _ends_sentence(short: Sequence[str], sentence: Sequence[str]) -> bool:
    """ "paris" ends "capital of france is paris" after a copula, without negation."""
    n = len(short)
    return (
        1 <= n <= 4
        and len(sentence) >= n + 2
        and list(sentence[-n:]) == list(short)
        and sentence[-n - 1] in _COPULAS
        and not any(word in _NEGATIONS for word in sentence)
    )


def _same_words(a: Sequence[str], b: Sequence[str]) -> bool:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        left = [w for w in a[a1:a2] if w not in _STOP_WORDS]
        right = [w for w in b[b1:b2] if w not in _STOP_WORDS]
        if not left and not right:
            continue
        if len(left) == len(right) and all(
            _typo(x, y) or x == y for x, y in zip(left, right, strict=True)
        ):
            continue
        return False
    return True


def _typo(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or transposition, in words of 5+ letters."""
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1 or not (a + b).isalpha():
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        if len(diffs) != 2:
            return False
        i, j = diffs
        return j == i + 1 and a[i] == b[j] and a[j] == b[i]
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))
