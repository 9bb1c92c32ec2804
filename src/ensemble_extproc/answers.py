"""Extracted answers: what an LLM answered, in a form that voting can compare.

Models phrase one answer many ways ("42", "The answer is 42.", "\\boxed{42}", "$42.00"), so
voting on raw strings splits votes that agree. ``extract`` reduces an answer text to an
``Answer``: a kind and a canonical ``key``; answers with equal (kind, key) agree.

Rules, in priority order (the first that applies wins):

1. ``\\boxed{...}``: the content of the LAST closed ``\\boxed{}`` (or ``\\fbox{}``), with
   nested braces, classified by rules 2-6 with numbers always allowed. A box is the most
   deliberate way a model marks its final result, so it beats everything written around it
   (``"\\boxed{7}. Answer: 9"`` is 7).
2. An explicit final-answer statement: the LAST ``answer is``, ``answer:``, ``final answer``,
   ``answer would/should/must be`` (any case, markdown emphasis allowed, optional filler
   such as "therefore"), and the text after it up to the end of that sentence or line.
   Reasoning often mentions other values first ("I first thought 12 but the answer is 42"),
   and the model's own conclusion is the best evidence. The statement is classified by
   rules 3-6, numbers always allowed; a statement that is plain text is keyed by itself
   ("The answer is Paris." and "Paris" agree). A statement with nothing in it ("The answer
   is:" at the very end) is skipped in favour of the previous one.
3. A multiple-choice letter A-E (uppercase in the source only, so the words "a" and "I" never
   count): the whole answer, or the statement, is a letter with decoration -- ``B``,
   ``(B)``, ``B)``, ``B.``, ``**B**``, ``[B]``, ``Option B``, ``Choice B`` -- optionally
   followed, on the same line, by the option's text after a bracket or ``.``/``:``/``)``
   (``(B) 42``, ``B) 42``). Checked before numbers so that ``(B) 42`` is B, not 42. Key: the
   letter. A bare letter followed by a word (``A cat``) is not a choice; a letter with a dot
   and text (``E. coli``) is -- a known, accepted false positive.
4. yes/no/true/false as the whole (normalised) answer or statement: kind ``boolean``, key
   ``"yes"`` (yes, true) or ``"no"`` (no, false). Before numbers and text so "True." and
   "**YES**" agree with "yes".
5. A number: the LAST number in the text or statement, only when reached through rules 1/2
   or when the whole text has at most ``SHORT_TEXT_LIMIT`` characters; in long free text an
   incidental number says little about the answer, which then stays ``text``. Understood:
   signs (``-3``, ``+7``, U+2212), comma thousands separators in groups of three
   (``1,000``), decimals (``1000.0``, ``.5``), exponents (``1e3``), fractions (``3/4``,
   ``\\frac{3}{4}``, ``\\dfrac``), currency signs ``$ \u20ac \u00a3 \u00a5`` (dropped:
   ``$42`` is 42) and percent. The key is the exact ``Fraction`` as a string, so ``1000``,
   ``1,000``, ``1000.00`` and ``$1,000`` share ``"1000"`` and ``0.75``, ``3/4`` and
   ``\\frac{3}{4}`` share ``"3/4"``. Percentages keep their sign in the key (``"50%"``,
   with ``number`` 50), so "50%" and "50" (or "0.5") do not agree: a share and a count are
   different answers. A number that is part of a bigger token -- a date ``2024-01-05``, a
   time ``10:30``, a range ``3-5``, a version ``1.2.3``, a list ``1,2,3``, a name
   ``COVID-19``, a space-grouped ``1 000`` (spaces are not read as thousands separators) --
   is not read as a number at all, and the answer stays text, rather than being cut into a
   wrong number. The same goes for absurd numbers (more than ``_MAX_DIGITS`` digits, an
   exponent beyond ``_MAX_EXPONENT``) and a division by zero.
6. Otherwise ``text``, keyed by ``normalise_text`` of the whole text (of the box content or
   statement when reached through rules 1/2).

Details:

- An answer that is empty, whitespace only, or nothing but punctuation and decoration is
  ``Answer("empty", "")``; if a box or statement holds only such, the next rule is tried.
- A little LaTeX is read (fractions of numbers, ``\\text{}``-like wrappers,
  ``\\left``/``\\right``, spacing commands, degrees, ``$``/``\\(``/``\\[`` delimiters) in
  boxes, statements and short texts, before rules 3-5. A number touching ``{ } \\ ^ _`` is
  part of a LaTeX expression (``\\sqrt{2}``, ``x^2``, ``2\\pi``, ``\\frac{\\pi}{2}``), so
  such an answer stays text.
- "Last number" holds in statements too, for one rule everywhere: "The answer is 42, since
  40 + 2" reads 2 (a statement runs to its sentence end, so this needs a justification
  inside the same sentence, which is rare after an explicit "the answer is").
- Every regular expression runs in linear time on any input (no nested or overlapping
  unbounded quantifiers); the choice pattern, whose optional decoration groups could
  backtrack, only ever sees texts of at most ``SHORT_TEXT_LIMIT`` characters.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

Kind = Literal["number", "choice", "boolean", "text", "tool_calls", "empty"]

# Texts longer than this (stripped) are "free text": no choice/boolean/number reading of the
# whole text, only boxes and explicit answer statements can turn them into a number.
SHORT_TEXT_LIMIT: Final = 200

# Sanity limits for numbers; anything beyond is not read as a number.
_MAX_DIGITS: Final = 1000
_MAX_EXPONENT: Final = 1000

_TRAILING_PUNCT: Final = ".!?;:,\u3002\uff01\uff1f"
_DECORATION: Final = "\"'`*\u201c\u201d\u2018\u2019"
_ASCII_ALNUM: Final = frozenset(string.ascii_letters + string.digits)
# Characters that join a number to a neighbour into a compound (date, time, range, version).
_NUMBER_JOINERS: Final = frozenset("-/:.,\u2212")
# A number next to these is part of a LaTeX expression (\\sqrt{2}, x^2, 2\\pi), not the answer.
_LATEX_GLUE: Final = frozenset("{}\\^_")
# Spaces some locales group thousands with; we do not read those, but must not misread them.
_SPACE_GROUPING: Final = frozenset(" \u00a0\u2009\u202f")
_SPACE_GROUP = re.compile(r"[0-9]{3}")
_MINUS_SIGNS: Final = frozenset("-\u2212")
_BOOLEANS: Final[Mapping[str, str]] = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BRACE = re.compile(r"[{}]")

_ANSWER_MARKER = re.compile(
    r"""
    (?:
        \bfinal\s+answer\b[*_]*(?:[ \t]*(?:is\b|:|=))?
      | \banswer\b[*_]*[ \t]*
        (?: : | = | is\b | was\b | (?:would|should|must|will)[ \t]+be\b )
    )
    [\s*_:]*
    (?:(?:therefore|thus|then|so|clearly|simply|just|indeed|probably|likely|definitely
        |actually)\b[\s,:*_]*)?
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Where an answer statement ends: a sentence end (not a decimal point) or a line end.
_STATEMENT_END = re.compile(r"[.!?](?=\s|$)|[\r\n\u3002\uff01\uff1f]")

_CHOICE = re.compile(
    r"""
    [*_`]*
    (?:(?i:option|choice)[ \t]*:?[ \t]*[*_`]*)?
    (?:
        \((?P<paren>[A-E])\)
      | \[(?P<bracket>[A-E])\]
      | (?P<bare>[A-E])(?P<delim>[.:)])?
    )
    [*_`]*
    """,
    re.VERBOSE,
)
_CHOICE_TAIL_JUNK: Final = " \t" + _TRAILING_PUNCT + _DECORATION + "_"

_NUMBER = re.compile(
    r"""
    (?<![A-Za-z0-9_.])
    (?:
        (?P<sign>[-+\u2212])[$\u20ac\u00a3\u00a5]?
      | [$\u20ac\u00a3\u00a5](?P<sign2>[-+\u2212])?
    )?
    (?:
        (?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.(?P<frac>[0-9]+))?
      | \.(?P<lonefrac>[0-9]+)
    )
    (?:[eE](?P<exp>[-+]?[0-9]+))?
    (?:/(?P<den>[0-9]+))?
    (?P<pct>[ \t]?%)?
    """,
    re.VERBOSE,
)

# Just enough LaTeX to read math answers: fractions, text wrappers, spacing, delimiters.
_LATEX_TEXT = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)[ \t]*\{([^{}]*)\}"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac[ \t]*\{([^{}]*)\}[ \t]*\{([^{}]*)\}")
_LATEX_DROP = re.compile(
    r"\^[ \t]*\{?[ \t]*\\circ[ \t]*\}?|\\degree(?![A-Za-z])"  # degrees: 90^\circ is 90
    r"|\\(?:left|right|displaystyle)(?![A-Za-z])|\\[,;:! ()\[\]$]|\$"
)
_PLAIN_NUMBER = re.compile(r"[-+]?[0-9.]+")


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    key: str  # canonical value used for grouping: "1000", "3/4", "B", "yes", normalised text
    number: Fraction | None = None  # set when kind == "number"


_EMPTY: Final = Answer("empty", "")


def extract(text: str) -> Answer:
    """The extracted answer of one answer text (rules in the module docstring)."""
    stripped = text.strip()
    if not stripped:
        return _EMPTY
    boxed = _last_boxed(stripped)
    if boxed is not None and (answer := _after_box(boxed)) != _EMPTY:
        return answer
    statement = _final_statement(stripped)
    if statement is not None and (answer := _classify(statement, explicit=True)) != _EMPTY:
        return answer
    return _classify(stripped, explicit=False)


def normalise_text(text: str) -> str:
    """Casefold, collapse whitespace, drop trailing punctuation and surrounding decoration.

    Decoration is quotes, asterisks and backticks; trailing punctuation is ``. ! ? ; : ,``
    and the CJK sentence ends. Both are stripped in one pass, so ``**"Yes."**`` is ``yes``.
    """
    collapsed = " ".join(text.casefold().split())
    return collapsed.rstrip(_TRAILING_PUNCT + _DECORATION + " ").lstrip(_DECORATION + " ")


def tool_calls_key(tool_calls: Sequence[object]) -> str:
    """A canonical key for an OpenAI ``message.tool_calls`` list.

    Function names and arguments, in call order; arguments that are JSON are re-serialised
    with sorted keys and no spaces, others are the raw string stripped. Ids and non-dict
    entries are ignored.
    """
    calls: list[list[str]] = []
    for call in tool_calls:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = {}
        name = function.get("name")
        calls.append([name if isinstance(name, str) else "", _canonical_arguments(function)])
    return json.dumps(calls, ensure_ascii=False, separators=(",", ":"))


def message_answer(message: Mapping[str, object] | None) -> Answer:
    """The extracted answer of an OpenAI assistant message.

    Content text is extracted; without content, tool calls give a ``tool_calls`` answer;
    with neither the answer is empty.
    """
    if message is None:
        return _EMPTY
    content = _content_text(message.get("content"))
    if content.strip():
        return extract(content)
    tool_calls = message.get("tool_calls")
    if (
        isinstance(tool_calls, Sequence)
        and not isinstance(tool_calls, str | bytes)
        and any(isinstance(call, Mapping) for call in tool_calls)
    ):
        return Answer("tool_calls", tool_calls_key(tool_calls))
    return _EMPTY


def group(answers: Sequence[Answer], similarity: float = 0.9) -> list[int]:
    """The group index of each answer: 0, 1, 2, ... in order of first appearance.

    Non-text answers group by (kind, key) exactly, so a boolean and a text never merge.
    A text answer joins the first group (in order of creation) whose FIRST member is a text
    with ``difflib.SequenceMatcher(None, a, b).ratio() >= similarity``, or equal keys. This is
    greedy and order-dependent: with A~B and B~C but not A~C, the order A, B, C gives
    [0, 0, 1] while B, A, C gives [0, 0, 0]. Similarity is never transitive through later
    members. ``similarity`` must be in (0, 1]; 1.0 merges equal keys only. Empty answers
    never merge with anything.
    """
    if not 0 < similarity <= 1:
        raise ValueError(f"similarity must be in (0, 1], got {similarity!r}")
    indices: list[int] = []
    exact: dict[tuple[str, str], int] = {}
    text_groups: list[tuple[str, int]] = []  # (key of the first member, group index)
    count = 0
    for answer in answers:
        index: int | None = None
        if answer.kind == "text":
            index = _text_group(text_groups, answer.key, similarity)
        elif answer.kind != "empty":
            index = exact.get((answer.kind, answer.key))
        if index is None:
            index, count = count, count + 1
            if answer.kind == "text":
                text_groups.append((answer.key, index))
            elif answer.kind != "empty":
                exact[(answer.kind, answer.key)] = index
        indices.append(index)
    return indices


# --- rule 1: boxes -------------------------------------------------------------------


def _last_boxed(text: str) -> str | None:
    """The content of the last closed, non-empty ``\\boxed{...}``, or None."""
    opens = [match.end() - 1 for match in _BOX_OPEN.finditer(text)]
    if not opens:
        return None
    closing = _matching_braces(text, opens[0])
    for start in reversed(opens):
        end = closing.get(start)
        if end is not None and text[start + 1 : end].strip():
            return text[start + 1 : end]
    return None


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """Position of each ``{`` from ``start`` on -> position of its ``}`` (closed ones only)."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    for brace in _BRACE.finditer(text, start):
        if brace.group() == "{":
            stack.append(brace.start())
        elif stack:
            closing[stack.pop()] = brace.start()
    return closing


def _after_box(content: str) -> Answer:
    statement = _final_statement(content)
    return _classify(statement if statement is not None else content.strip(), explicit=True)


# --- rule 2: answer statements -------------------------------------------------------------


def _final_statement(text: str) -> str | None:
    """The text of the last non-empty explicit answer statement, or None."""
    for marker in reversed(list(_ANSWER_MARKER.finditer(text))):
        start = marker.end()
        end_match = _STATEMENT_END.search(text, start)
        statement = text[start : end_match.start() if end_match else len(text)].strip()
        if normalise_text(statement):
            return statement
    return None


# --- rules 3-6 ---------------------------------------------------------------------------


def _classify(text: str, *, explicit: bool) -> Answer:
    """Rules 3-6 on a whole answer (``explicit=False``) or a box / statement (``True``)."""
    short = len(text) <= SHORT_TEXT_LIMIT
    plain = _delatex(text).strip() if explicit or short else text
    if len(plain) <= SHORT_TEXT_LIMIT:
        letter = _choice(plain)
        if letter is not None:
            return Answer("choice", letter)
        boolean = _BOOLEANS.get(normalise_text(plain))
        if boolean is not None:
            return Answer("boolean", boolean)
    if explicit or short:
        number = _last_number(plain)
        if number is not None:
            return number
    key = normalise_text(plain if explicit else text)
    return Answer("text", key) if key else _EMPTY


def _delatex(text: str) -> str:
    text = _LATEX_TEXT.sub(r"\1", text)
    text = _LATEX_FRAC.sub(_frac_to_slash, text)
    text = text.replace("{,}", ",").replace("\\%", "%")
    return _LATEX_DROP.sub("", text)


def _frac_to_slash(match: re.Match[str]) -> str:
    """``\\frac{3}{4}`` -> ``3/4``; fractions of expressions stay LaTeX (and not numbers)."""
    numerator, denominator = match.group(1).strip(), match.group(2).strip()
    if _PLAIN_NUMBER.fullmatch(numerator) and _PLAIN_NUMBER.fullmatch(denominator):
        return f"{numerator}/{denominator}"
    return match.group()


def _choice(text: str) -> str | None:
    """The letter when the whole text is a decorated choice letter (A-E), else None."""
    match = _CHOICE.match(text)
    if match is None:
        return None
    letter = match["paren"] or match["bracket"] or match["bare"]
    rest = text[match.end() :]
    if not rest.strip(_CHOICE_TAIL_JUNK):
        return letter
    delimited = match["bare"] is None or match["delim"] is not None
    if delimited and rest[0] in " \t" and "\n" not in rest and "\r" not in rest:
        return letter  # the option's text after the letter: "(B) 42", "B) 42"
    return None


def _last_number(text: str) -> Answer | None:
    matches = deque(_NUMBER.finditer(text), maxlen=1)
    last = matches[0] if matches else None
    if last is None or _is_compound(text, last):
        return None
    value = _number_value(last)
    if value is None:
        return None
    key = f"{value}%" if last["pct"] else str(value)
    return Answer("number", key, value)


def _is_compound(text: str, match: re.Match[str]) -> bool:
    """Whether the number is part of a bigger token: a date, time, range, version, list, a
    space-grouped number ("1 000", whose last group alone would read as 0) or LaTeX."""
    start, end = match.span()
    if (start > 0 and text[start - 1] in _LATEX_GLUE) or text[end : end + 1] in _LATEX_GLUE:
        return True
    if start >= 2 and text[start] not in "+-\u2212":
        before, joiner = text[start - 2], text[start - 1]
        if joiner in _NUMBER_JOINERS and before in _ASCII_ALNUM:
            return True
        if (
            joiner in _SPACE_GROUPING
            and before in string.digits
            and _SPACE_GROUP.fullmatch(match.group())
        ):
            return True
    return end + 1 < len(text) and text[end] in _NUMBER_JOINERS and text[end + 1] in _ASCII_ALNUM


def _number_value(match: re.Match[str]) -> Fraction | None:
    whole = (match["int"] or "0").replace(",", "")
    decimals = match["frac"] or match["lonefrac"] or ""
    exponent = match["exp"] or "0"
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
    signs = {match["sign"], match["sign2"]}
    return -value if signs & _MINUS_SIGNS else value


# --- messages --------------------------------------------------------------------------


def _content_text(content: object) -> str:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        return "".join(parts)
    return ""


def _canonical_arguments(function: Mapping[object, object]) -> str:
    arguments = function.get("arguments")
    if arguments is None:
        return ""
    if not isinstance(arguments, str):
        return _canonical_json(arguments) or str(arguments)
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments.strip()
    return _canonical_json(parsed) or arguments.strip()


def _canonical_json(value: object) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _text_group(groups: Sequence[tuple[str, int]], key: str, similarity: float) -> int | None:
    for first_key, index in groups:
        if _similar(first_key, key, similarity):
            return index
    return None


def _similar(a: str, b: str, similarity: float) -> bool:
    if a == b:
        return True  # also guards against difflib's autojunk scoring long equal strings < 1
    if similarity >= 1:
        return False
    matcher = difflib.SequenceMatcher(None, a, b)
    # real_quick_ratio and quick_ratio are cheap upper bounds of ratio: skip the costly part.
    return (
        matcher.real_quick_ratio() >= similarity
        and matcher.quick_ratio() >= similarity
        and matcher.ratio() >= similarity
    )
