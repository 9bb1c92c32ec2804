r"""Reading one short answer span as a value: a choice, yes/no, a number or math.

A span is what the locator found: a box's content, the start of an answer statement, a
whole short answer, the end of a concluding sentence. ``clean`` strips LaTeX and markdown
decoration; ``read`` classifies the result or returns None (then the span is text).

Numbers are exact (``Fraction``) and keyed by value: ``0.75`` = ``3/4`` = ``\frac{3}{4}``
= ``75%`` (a percentage is its value / 100), ``1,234`` = ``1 234`` = ``1\,234``,
``1.5 \times 10^{3}`` = ``1500``, ``forty-two`` = ``42``, ``negative 7`` = ``-7``. Units and
nouns after a number are dropped (``24 cm^2`` = ``24``). Everything else mathematical
(``x+1``, ``y = 3x + 5``, ``\frac{\pi}{4}``, ``\sqrt{2}``, tuples, intervals, sets) is keyed
by a canonical spelling, compared exactly: equal values written differently
(``2(x+1)`` and ``2x+2``) stay apart rather than risk a false merge.

Every regular expression here runs in linear time, and spans longer than ``SPAN_LIMIT``
are never read (they are text).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from .model import Answer
from .words import WEAK_WORDS, words_value

SPAN_LIMIT: Final = 400
_MAX_DIGITS: Final = 1000
_MAX_EXPONENT: Final = 1000

# --- cleaning ---------------------------------------------------------------------------

_THIN_SPACES: Final = "\u00a0\u2009\u202f"
_DELIMITERS = re.compile(r"\\[()\[\]]|\${1,2}|\\\$")
_TEXT_WRAP = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mathsf|mbox|operatorname|"
    r"boldsymbol|emph)[ \t]*\{([^{}]*)\}"
)
_FRAC_COMMAND = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_FRAC_DIGITS = re.compile(r"\\frac[ \t]*([0-9])[ \t]*([0-9])")
_SQRT_TOKEN = re.compile(r"\\sqrt[ \t]*([0-9]|[A-Za-z](?![A-Za-z]))")
_DEGREES = re.compile(r"\^[ \t]*\{?[ \t]*\\circ[ \t]*\}?|\\circ|\\degree(?![A-Za-z])|\u00b0")
_DIGIT_GROUPS = re.compile(
    rf"(?<![0-9.,])[0-9]{{1,3}}(?:(?:\\,|\\ |[ {_THIN_SPACES}])[0-9]{{3}})+(?![0-9])"
)
_GROUP_GAP = re.compile(rf"\\,|\\ |[ {_THIN_SPACES}]")
_SPACING = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle|textstyle)(?![A-Za-z])"
    r"|\\(?:quad|qquad)(?![A-Za-z])|\\[,;:! ]|~"
)
_TIMES = re.compile(r"\\times(?![A-Za-z])|\\cdot(?![A-Za-z])|[\u00d7\u00b7\u22c5]")
_SPACE_BEFORE_SCRIPT = re.compile(r" (?=[\^_])")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+[ \t]*", re.MULTILINE)
_EDGE_JUNK: Final = " \t\r\n,;:!?\"'*_`\u201c\u201d\u2018\u2019\u3002"


# Every substitution of ``clean`` but the digit groups needs one of these characters (a
# backslash, a math delimiter, markdown, a script, a degree or times sign): text without
# any, as most short answers are, skips them (the same result, a tenth of the cost).
_DECORATION = re.compile(r"[\\$*_`#~^\u00b0\u00d7\u00b7\u22c5]")


def clean(span: str) -> str:
    """The span without LaTeX spacing and wrappers, math delimiters or markdown emphasis."""
    s = _symbols(span)
    if _DECORATION.search(s) is None:
        s = _DIGIT_GROUPS.sub(lambda m: _GROUP_GAP.sub("", m.group()), s)
        return " ".join(s.split()).strip(_EDGE_JUNK).rstrip("." + _EDGE_JUNK)
    return _clean_decorated(s)


def _symbols(span: str) -> str:
    s = span.replace("\u2212", "-").replace("\u2013", "-").replace("\u00b2", "^2")
    return s.replace("\u00b3", "^3").replace("\\%", "%").replace("{,}", ",")


def _clean_decorated(s: str) -> str:
    s = _MARKDOWN.sub("", s)
    s = _DELIMITERS.sub(" ", s)
    s = _TEXT_WRAP.sub(r" \1 ", s)
    s = _FRAC_COMMAND.sub(r"\\frac", s)
    s = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_TOKEN.sub(r"\\sqrt{\1}", s)
    s = _DEGREES.sub(" ", s)
    s = _DIGIT_GROUPS.sub(lambda m: _GROUP_GAP.sub("", m.group()), s)
    s = _SPACING.sub(" ", s)
    s = _TIMES.sub("*", s)
    s = _SPACE_BEFORE_SCRIPT.sub("", " ".join(s.split()))
    return s.strip(_EDGE_JUNK).rstrip("." + _EDGE_JUNK)


# --- choices and yes/no ------------------------------------------------------------------

_CHOICE_WORD = r"(?:(?i:option|choice|letter)[ \t]*:?[ \t]*)?"
_CHOICE_ALONE = re.compile(
    _CHOICE_WORD + r"(?:\((?P<p>[A-Ea-e])\)|\[(?P<b>[A-Ea-e])\]|(?P<u>[A-Ea-e]))[.:)]?"
)
# A letter, a delimiter, then the option's text on the same line: "(B) 42", "C) Paris".
_CHOICE_WITH_TEXT = re.compile(
    _CHOICE_WORD
    + r"(?:\((?P<p>[A-Ea-e])\)[ \t]*[.:]?|(?P<u>[A-E])[.:)]|(?P<l>[a-e])\))[ \t]+[^\n]+"
)
_CHOICE_MANY = re.compile(
    r"\(?([A-E])\)?(?:[ \t]*(?:,|&|\band\b|\+)[ \t]*(?:\band\b[ \t]*)?\(?([A-E])\)?)+"
)
_MANY_LETTER = re.compile(r"\(?\b([A-E])\b\)?")
_BOOLEANS: Final = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_LEADING_BOOLEAN = re.compile(r"(?i:(yes|no|true|false))(?:[ \t]*[,.;:!\u2014\u2013-]|[ \t]*$)")


def choice(s: str) -> str | None:
    """Option letters when the cleaned span is a choice: "B", "(b)", "C) Paris", "A and C"."""
    if _CHOICE_MANY.fullmatch(s) is not None:
        return ",".join(sorted({m.group(1) for m in _MANY_LETTER.finditer(s)}))
    match = _CHOICE_ALONE.fullmatch(s) or _CHOICE_WITH_TEXT.fullmatch(s)
    if match is not None:
        letter = next(g for g in match.groups() if g is not None)
        return letter.upper()
    return None


def boolean(s: str, leading: bool = False) -> str | None:
    """ "yes" or "no" when the span is one (or, with ``leading``, starts with one followed by
    punctuation: "Yes, because ...")."""
    whole = _BOOLEANS.get(s.casefold())
    if whole is not None or not leading:
        return whole
    match = _LEADING_BOOLEAN.match(s)
    return _BOOLEANS[match.group(1).casefold()] if match else None


# --- numbers ---------------------------------------------------------------------------

_NUMBER = re.compile(
    r"""
    (?P<sign>[-+]|(?i:negative|minus)[ \t]+)?
    [ \t]*(?P<currency>[$\u20ac\u00a3\u00a5])?[ \t]*
    (?P<sign2>[-+])?
    (?:(?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.(?P<frac>[0-9]+))?
      |\.(?P<lonefrac>[0-9]+))
    (?:[eE](?P<exp>[-+]?[0-9]+)
      |[ \t]*\*[ \t]*10[ \t]*\^[ \t]*\{?[ \t]*(?P<exp2>[-+]?[0-9]+)[ \t]*\}?)?
    (?:[ \t]*/[ \t]*(?P<den>[0-9]+)(?![0-9.]))?
    (?P<pct>[ \t]*%|[ \t]+(?i:percent|per[ \t]+cent|pct)\b)?
    """,
    re.VERBOSE,
)
# Units and nouns after a number: "cm^2", "square meters", "m/s", "dollars a day", "°C".
_UNITS = re.compile(
    r"(?:[ \t]*[A-Za-z]{1,20}(?:\^-?[0-9])?(?:/[A-Za-z]{1,10}(?:\^[0-9])?)?\.?){1,5}"
)
_UNIT_STOP: Final = frozenset({"and", "or", "to", "plus", "minus", "times", "than", "not"})
_APPROX = re.compile(
    r"(?i:approximately|approx\.?|about|around|roughly|nearly)[ \t]+|[\u2248~][ \t]*"
)
_LABEL = re.compile(r"[A-Za-z][A-Za-z ]{0,24}:[ \t]*(?=\S)")
_SIMPLE_FRAC = re.compile(r"\\frac\{([-+]?[0-9.]+)\}\{([-+]?[0-9.]+)\}")
_NAME = re.compile(
    r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?'?|\\[A-Za-z]+|[A-Za-z][a-z]{1,15}(?: [a-z]{2,15})?"
)
_VARIABLE = re.compile(r"[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+")
_FREE_LETTER = re.compile(r"(?<![\\A-Za-z])[A-Za-z]")
_ARITHMETIC = re.compile(r"[-+*/^() 0-9.,]+")
_ELEMENT_OF = re.compile(r"\\in(?![A-Za-z])")


def number(s: str) -> Fraction | None:
    """The value of a span that is one number, with or without units after it."""
    match = _NUMBER.match(s)
    if match is not None:
        rest = s[match.end() :]
        if not rest.strip() or _units(rest):
            return _value(match)
        return None
    return _words_with_units(s)


def _units(rest: str) -> bool:
    if _UNITS.fullmatch(rest) is None or (not rest[:1].isspace() and len(rest.split()[0]) < 2):
        return False  # "2x" is an expression, not 2 of unit x
    return not any(word.strip(".").casefold() in _UNIT_STOP for word in rest.split())


def _words_with_units(s: str) -> Fraction | None:
    words = s.split()
    for cut in range(min(len(words), 12), 0, -1):
        head = " ".join(words[:cut])
        if cut == 1 and head.casefold() in WEAK_WORDS and len(words) > 1:
            return None
        value = words_value(head)
        if value is not None and (cut == len(words) or _units(" " + " ".join(words[cut:]))):
            return value
    return None


def _value(match: re.Match[str]) -> Fraction | None:
    whole = (match["int"] or "0").replace(",", "")
    decimals = match["frac"] or match["lonefrac"] or ""
    exponent = match["exp"] or match["exp2"] or "0"
    if len(whole) + len(decimals) > _MAX_DIGITS or len(exponent) > 6:
        return None
    power = int(exponent)
    if abs(power) > _MAX_EXPONENT:
        return None
    value = Fraction(int(whole + decimals), 10 ** len(decimals)) * Fraction(10) ** power
    if match["den"] is not None:
        if len(match["den"]) > _MAX_DIGITS or int(match["den"]) == 0:
            return None
        value /= int(match["den"])
    if match["pct"]:
        value /= 100
    signs = f"{match['sign'] or ''}{match['sign2'] or ''}".casefold()
    return -value if "-" in signs or "negative" in signs or "minus" in signs else value


def number_key(value: Fraction) -> str:
    """Canonical spelling of a value: "42", "0.75", "-3.5", or "1/3" when not decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    places = max(twos, fives)
    if denominator != 1 or places > 30:
        return f"{value.numerator}/{value.denominator}"
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0")
    return ("-" if value < 0 else "") + text


# --- math --------------------------------------------------------------------------------

_MATH_CHARS = re.compile(r"[A-Za-z0-9\s+\-*/^_=().,\[\]{}\\|<>!']+")
_MATH_OPERATOR = re.compile(r"[+\-*/^_=\\()\[\]{}<>|]")
_WORD_RUN = re.compile(r"(?<!\\)\b[A-Za-z]{3,}")
_MATH_WORDS: Final = frozenset(
    [
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "log",
        "ln",
        "exp",
        "lim",
        "max",
        "min",
        "mod",
        "gcd",
        "lcm",
        "det",
        "oo",
        "inf",
    ]
)
_DATE_LIKE = re.compile(r"[0-9]+(?:-[0-9]+)+|[0-9]+(?:[/.][0-9]+){2,}")
_DANGLING = re.compile(r"^[*/^_=]|[-+*/^_=]$")
_SPACES = re.compile(r"\s+")
_FRAC = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")
_SINGLE_TOKEN_PARENS = re.compile(
    r"(?<![A-Za-z0-9)])\((-?[A-Za-z0-9.]+|\\[A-Za-z]+)\)(?![A-Za-z0-9(])"
)
_SINGLE_TOKEN_SCRIPT = re.compile(r"([\^_])\{(-?[A-Za-z0-9.]+|\\[A-Za-z]+)\}")
_IMPLICIT_TIMES = re.compile(r"(?<=[0-9])\*(?=[A-Za-z\\(])")
_INFINITY = re.compile(r"\\infty|\u221e|\binfinity\b|\binf\b")
_ELEMENT_LIMIT: Final = 20


def looks_math(s: str) -> bool:
    """Whether a cleaned span is a formula rather than words: math characters only, an
    operator or LaTeX command in it, and no words except function names."""
    if len(s) > 200 or _MATH_CHARS.fullmatch(s) is None or _DATE_LIKE.fullmatch(s):
        return False
    if _MATH_OPERATOR.search(s) is None or _DANGLING.search(s) or "\\boxed" in s:
        return False
    return all(word.casefold() in _MATH_WORDS for word in _WORD_RUN.findall(s))


def math_key(s: str) -> str:
    """The canonical spelling of a formula: no spaces, ``\\frac{a}{b}`` as ``a/b``, no
    braces around single tokens, no ``*`` between a number and what it multiplies."""
    key = _SPACES.sub("", s)
    key = _INFINITY.sub("oo", key)
    for _ in range(4):  # innermost fractions first; nesting deeper than this stays LaTeX
        new = _FRAC.sub(r"(\1)/(\2)", key)
        new = _SINGLE_TOKEN_PARENS.sub(r"\1", new)
        new = _SINGLE_TOKEN_SCRIPT.sub(r"\1\2", new)
        if new == key:
            break
        key = new
    key = _IMPLICIT_TIMES.sub("", key)
    return key.lstrip("+")


def _structure(s: str) -> Answer | None:
    """A tuple, interval or set of numbers and formulas: ``(1, 2)``, ``[2, 5)``, ``\\{1,2\\}``."""
    if s.startswith("\\{") and s.endswith("\\}"):
        opening, inner, closing = "{", s[2:-2], "}"
    elif s[:1] in "([" and s[-1:] in ")]":
        opening, inner, closing = s[0], s[1:-1], s[-1]
    else:
        return None
    parts = _split_top_level(inner)
    if parts is None or (len(parts) < 2 and opening != "{"):
        return None
    elements = [_element(part) for part in parts]
    if any(e is None for e in elements):
        return None
    keys = [e for e in elements if e is not None]
    if opening == "{":
        keys = sorted(set(keys))
    return Answer("math", f"{opening}{','.join(keys)}{closing}")


def _split_top_level(inner: str) -> list[str] | None:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(inner):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif char == "," and depth == 0:
            parts.append(inner[start:index])
            start = index + 1
    parts.append(inner[start:])
    if depth != 0 or len(parts) > _ELEMENT_LIMIT:
        return None
    return [part.strip() for part in parts]


def _element(part: str) -> str | None:
    if not part:
        return None
    value = number(part) if _NUMBER.fullmatch(part) else None
    if value is not None:
        return number_key(value)
    key = math_key(part)
    if key in ("oo", "-oo") or (looks_math(part) or re.fullmatch(r"[A-Za-z]", part)):
        return key
    return None


# --- reading a span ----------------------------------------------------------------------


def read(span: str) -> Answer | None:
    """The value a span states (choice, boolean, number or math), else None."""
    if len(span) > SPAN_LIMIT:
        return None
    s = clean(span)
    if not s:
        return None
    letters = choice(s)
    if letters is not None:
        return Answer("choice", letters)
    yes_no = boolean(s)
    if yes_no is not None:
        return Answer("boolean", yes_no)
    return read_value(s)


def read_value(s: str) -> Answer | None:
    """A number (units allowed) or a formula, from a cleaned span."""
    s = _SIMPLE_FRAC.sub(r"\1/\2", s)
    approx = _APPROX.match(s)
    if approx is not None and s[approx.end() :].strip():
        s = s[approx.end() :].strip()
    if s[:1] == "(" and s[-1:] == ")" and len(_split_top_level(s[1:-1]) or ()) == 1:
        s = s[1:-1].strip()  # "(1/2)" is 1/2; "(1, 2)" stays a tuple
    label = _LABEL.match(s)
    if label is not None and not looks_math(s):
        s = s[label.end() :]
    if _ELEMENT_OF.search(s):
        s = _ELEMENT_OF.sub("=", s)  # "x \in [2, 5)" states the interval
    if "=" in s:
        return _equation(s)
    value = number(s)
    if value is not None:
        return Answer("number", number_key(value), value)
    structure = _structure(s)
    if structure is not None:
        return structure
    if looks_math(s):
        return Answer("math", math_key(s))
    return None


def _equation(s: str) -> Answer | None:
    """``x = 5`` and ``6 * 7 = 42`` are the number on the right; ``y = 3x + 5`` is itself."""
    parts = [part.strip() for part in s.split("=")]
    if not all(parts):
        return None
    last = number(parts[-1])
    if last is not None and all(_NAME.fullmatch(p) or _ARITHMETIC.fullmatch(p) for p in parts[:-1]):
        return Answer("number", number_key(last), last)
    if len(parts) == 2 and _VARIABLE.fullmatch(parts[0]):
        # "x = (1, 2)", "\theta = \frac{\pi}{4}": a variable set to a constant is the constant.
        right = _structure(parts[1])
        if right is None and looks_math(parts[1]) and not _FREE_LETTER.search(parts[1]):
            right = Answer("math", math_key(parts[1]))
        if right is not None:
            return right
    if looks_math(s):
        return Answer("math", math_key(s))
    return None
