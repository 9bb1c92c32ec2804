r"""Finding the final answer in a whole answer text, as real models write it.

Rules, in priority order (the first that gives an answer wins):

1. Reasoning in ``<think>...</think>`` is skipped: the answer follows it.
2. ``\boxed{...}`` / ``\fbox{...}``: the content of the LAST closed, non-empty box.
3. GSM8K's ``#### 18``: the last such line.
4. An answer statement: the LAST "the answer is", "answer:", "final answer", "the answers
   are", "the correct option is", "I would choose", "I'd go with", ... (any case, markdown
   allowed). The statement is read from its START, up to a reason: "The answer is 42 (6
   groups of 7)." is 42, "The answer is B, not C." is B, "The answer is yes, because ..." is
   yes.
5. "C is correct", "Option C is the right one", "B is the correct answer".
6. The whole answer, when short, is one value: a choice ("(A) and (C)", "C) Paris"), yes/no,
   a number (with units, in words, with separators), a formula, tuple, interval or set.
7. A leading yes/no or choice followed by a reason: "Yes, because ...", "No. 15 = 3 x 5",
   "B. photosynthesis".
8. The concluding sentence: the last sentence that holds a number: the value after its
   last "=", or its only inline formula, or its only number ("...so she makes $18 every
   day."). A sentence of fewer than 3 words or with several numbers states none.
9. Otherwise free text, keyed by ``normalise_text``.

Cost is bounded whatever the input: only the last ``TAIL_LIMIT`` characters are searched
for the final answer, spans are read only up to ``SPAN_LIMIT`` characters, and every
regular expression is linear.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from .model import EMPTY, Answer
from .text import normalise_text
from .values import SPAN_LIMIT, boolean, choice, clean, number, number_key, read
from .words import NUMBER_WORDS, WEAK_WORDS, words_value

TAIL_LIMIT: Final = 16_384
SHORT_TEXT_LIMIT: Final = 200
_SENTENCES_BACK: Final = 3
_STATEMENTS_TRIED: Final = 8

_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BRACE = re.compile(r"(?<!\\)[{}]")
_HASHES = re.compile(r"^[ \t]*####[ \t]*(\S[^\n]*)$", re.MULTILINE)
_ANSWER_MARKER = re.compile(
    r"""
    (?:
        \bfinal\s+answer\b[*_]*(?:[ \t]*(?:is\b|:|=))?
      | \banswers?\b[*_]*[ \t]*
        (?: : | = | (?:is|are|was)\b | (?:would|should|must|will)[ \t]+be\b )
      | \b(?:correct|right|best)[ \t]+(?:option|choice|letter)\b[*_]*[ \t]*(?::|is\b)
      | \bI(?:[ \t]+would|'d|[ \t]+will|'ll)?[ \t]+(?:choose|pick|select|go[ \t]+with)\b
      | \bmy[ \t]+(?:choice|pick)[ \t]+(?:is\b|:)
      | \u7b54\u6848[\u662f\u4e3a\uff1a:]
    )
    [\s*_:]*
    (?:(?:therefore|thus|then|so|clearly|simply|just|indeed|probably|likely|definitely
        |actually)\b[\s,:*_]*)?
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Where a statement ends: a sentence end (not a decimal point) or a line end.
_STATEMENT_END = re.compile(r"[.!?](?=\s|$)|[\r\n\u3002\uff01\uff1f]")
_ABBREVIATION = re.compile(r"(?:^|\W)(?:Mr|Mrs|Ms|Dr|St|vs)$")
# Words every answer marker contains; the marker pattern runs only around them.
_MARKER_WORDS: Final = ("answer", "choose", "pick", "select", "go with", "option", "choice")
_MARKER_WINDOW: Final = 40
_MARKERS_SEEN: Final = 32
_REVERSE_CHOICE = re.compile(
    r"(?:^|[.!?\n][ \t*]*|\b(?i:option|choice)[ \t]+)\(?([A-E])\)?[*]*[ \t]+is[ \t]+"
    r"(?:the[ \t]+)?(?i:correct|right|best)\b"
)
# A reason after the value: "42 (6 groups of 7)", "B, not C", "yes, because ...".
_REASON = re.compile(
    r"[ \t]\(|,[ \t]*(?:not|since|because|as|which|so|given|for|but)\b"
    r"|[ \t](?:since|because|as|but)[ \t]|;|[ \t][\u2014\u2013][ \t]|[ \t]--[ \t]"
)
_STATEMENT_CHOICE = re.compile(
    r"(?i:option|choice|letter)?[ \t]*(?:\(([A-Ea-e])\)|([A-E])|([a-e]))(?=$|[ \t]*[.,;:!)\]])"
)
_LEADING_CHOICE = re.compile(r"\(?([A-E])[.)][ \t]+\S|\(([A-Ea-e])\)[ \t]+\S")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")
_INLINE_MATH = re.compile(r"\$\$?([^$]{1,300}?)\$\$?|\\\((.{1,300}?)\\\)")
_CONCLUSION = re.compile(r"\b(?i:so|therefore|thus|hence|in total|altogether)\b")
_CUE = re.compile(r"\b(?i:so|therefore|thus|hence|total|altogether|gives|get|is)\b")
_NUMBER_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_.^{\\])-?[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?(?:[ \t]*%)?(?![0-9])"
)
_JOINERS: Final = frozenset("-/:.,")
_WORDY = re.compile(r"[A-Za-z]{2,}|\b[A-Za-z]\b")
_WORD_TOKEN = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


def extract(text: str) -> Answer:
    """The extracted answer of one answer text (rules in the module docstring)."""
    body = _after_thinking(text).strip()
    if not body:
        return EMPTY
    tail = body[-TAIL_LIMIT:]
    boxed = _last_boxed(tail)
    if boxed is not None and (answer := _read_box(boxed)) is not None:
        return answer
    for span in _explicit_spans(tail):
        answer = read_statement(span)
        if answer is not None:
            return answer
    reverse = list(_REVERSE_CHOICE.finditer(tail[-2000:]))
    if reverse:
        return Answer("choice", reverse[-1].group(1))
    short = len(body) <= SHORT_TEXT_LIMIT
    if short and (whole := read(body)) is not None:
        return whole
    leading = _leading(body)
    if leading is not None:
        return leading
    concluded = _conclusion(tail)
    if concluded is not None:
        return concluded
    if short and (first := _first_value(body)) is not None:
        return first
    key = normalise_text(body)
    return Answer("text", key) if key else EMPTY


def _after_thinking(text: str) -> str:
    ends = list(_THINK_END.finditer(text[-TAIL_LIMIT * 4 :]))
    if not ends:
        return text
    after = text[-TAIL_LIMIT * 4 :][ends[-1].end() :]
    return after if after.strip() else text


# --- boxes -----------------------------------------------------------------------------


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


def _read_box(content: str) -> Answer | None:
    inner = _last_boxed(content) if len(content) <= SPAN_LIMIT else None
    if inner is not None:
        return _read_box(inner)
    statements = _explicit_spans(content)
    if statements:
        return read_statement(statements[0])
    answer = read(content)
    if answer is not None:
        return answer
    key = normalise_text(clean(content[:SPAN_LIMIT]) if len(content) <= SPAN_LIMIT else content)
    return Answer("text", key) if key else None


# --- statements -------------------------------------------------------------------------


def _explicit_spans(text: str) -> list[str]:
    """Spans after "####" and answer markers, the last first (non-empty ones only)."""
    spans: list[tuple[int, str]] = []
    for match in _HASHES.finditer(text):
        spans.append((match.start(), match.group(1)))
    for marker in _markers(text):
        start = marker.end()
        end = _statement_end(text, start)
        spans.append((marker.start(), text[start:end]))
    spans.sort(key=lambda item: -item[0])
    # The last few statements only: a text of thousands of "answer:" must stay cheap.
    return [span for _, span in spans[:_STATEMENTS_TRIED] if normalise_text(span)]


def _markers(text: str) -> list[re.Match[str]]:
    """The answer markers of a text, found only around the words they contain (a full
    scan with the marker pattern costs ten times more), the last ``_MARKERS_SEEN``."""
    folded = text.casefold() if text.isascii() else text.lower()
    hits: list[int] = []
    for word in _MARKER_WORDS:
        position = folded.find(word)
        while position != -1:
            hits.append(position)
            position = folded.find(word, position + 1)
    if "\u7b54\u6848" in text:
        hits += [m.start() for m in re.finditer("\u7b54\u6848", text)]
    found: dict[int, re.Match[str]] = {}
    for hit in sorted(hits)[-_MARKERS_SEEN:]:
        window_start = max(0, hit - _MARKER_WINDOW)
        for match in _ANSWER_MARKER.finditer(text, window_start, hit + _MARKER_WINDOW):
            if match.start() <= hit < match.end():
                found[match.start()] = _ANSWER_MARKER.match(text, match.start()) or match
    return [found[start] for start in sorted(found)]


def _statement_end(text: str, start: int) -> int:
    limit = min(len(text), start + SPAN_LIMIT)
    position = start
    while (end := _STATEMENT_END.search(text, position, limit)) is not None:
        if not _ABBREVIATION.search(text[max(start, end.start() - 4) : end.start()]):
            return end.start()
        position = end.end()  # "Mr. Smith": not the end of the statement
    return limit


def read_statement(span: str) -> Answer | None:
    """What an answer statement states, read from its start (None: nothing in it)."""
    s = clean(span[:SPAN_LIMIT])
    if not s:
        return None
    head = _cut_reason(s)
    whole = read(head)
    if whole is not None:
        return whole
    letter = _STATEMENT_CHOICE.match(s)
    if letter is not None:
        return Answer("choice", next(g for g in letter.groups() if g).upper())
    yes_no = boolean(s, leading=True)
    if yes_no is not None:
        return Answer("boolean", yes_no)
    first = _first_value(head)
    if first is not None:
        return first
    key = normalise_text(head)
    return Answer("text", key) if key else None


def _cut_reason(s: str) -> str:
    match = _REASON.search(s, 1)
    return s[: match.start()].strip() if match else s


def _first_value(s: str) -> Answer | None:
    """A number at the very start of a span, when nothing after it is a number too."""
    head = _cut_reason(clean(s[:SPAN_LIMIT]))
    words = head.split()
    for cut in range(min(len(words), 6), 0, -1):
        answer = read(" ".join(words[:cut]))
        if answer is not None and answer.kind == "number":
            rest = " ".join(words[cut:])
            return None if _has_number(rest) else answer
    return None


# --- leading answers and concluding sentences ---------------------------------------------


def _leading(body: str) -> Answer | None:
    first_line = clean(body[:SPAN_LIMIT].split("\n", 1)[0])
    yes_no = boolean(first_line, leading=True)
    if yes_no is not None:
        return Answer("boolean", yes_no)
    match = _LEADING_CHOICE.match(first_line)
    if match is not None:
        return Answer("choice", (match.group(1) or match.group(2)).upper())
    letters = choice(_cut_reason(first_line))
    return Answer("choice", letters) if letters is not None else None


def _conclusion(tail: str) -> Answer | None:
    sentences = [s for s in _SENTENCE_SPLIT.split(tail[-2000:]) if s.strip()]
    for sentence in reversed(sentences[-_SENTENCES_BACK:]):
        if not _INLINE_MATH.search(sentence) and not _has_number(clean(sentence)):
            continue  # "Hope this helps!" after the conclusion
        return _sentence_value(sentence)
    return None


def _sentence_value(sentence: str) -> Answer | None:
    if len(sentence) > SPAN_LIMIT:
        return None
    formulas = [m.group(1) or m.group(2) for m in _INLINE_MATH.finditer(sentence)]
    if formulas:
        last = _INLINE_MATH.split(sentence)[0] if len(formulas) == 1 else sentence
        if len(formulas) == 1 or _CUE.search(last):
            answer = read(formulas[-1])
            if answer is not None:
                return answer
    s = clean(sentence)
    if "=" in s:
        middle = s.split("=")[1:-1]
        if any(_WORDY.search(part) and _has_number(part) for part in middle):
            return None  # "x = 3 or x = -3": several equations, not one chain
        right = _cut_reason(s.rsplit("=", 1)[1])
        return read(right) or _first_value(right)
    if len(s.split()) < 3:
        return None
    cues = list(_CONCLUSION.finditer(s))
    if cues and _has_number(s[cues[-1].end() :]):
        s = s[cues[-1].end() :]  # "...9 eggs at $2 each, so she makes $18 a day"
    values = _numbers(_cut_reason(s))
    if len(values) != 1:
        return None
    return Answer("number", number_key(values[0]), values[0])


def _numbers(s: str) -> list[Fraction]:
    """The numbers of a sentence, in digits or words; parts of dates, times, versions,
    names (COVID-19, H2O) and formulas are not numbers."""
    values: list[Fraction] = []
    for match in _NUMBER_TOKEN.finditer(s):
        start, end = match.span()
        before = s[start - 2 : start] if start >= 2 else " " + s[:start]
        after = s[end : end + 2]
        if (before[-1:] in _JOINERS and before[:1].isalnum()) or (
            after[:1] in _JOINERS and after[1:2].isalnum()
        ):
            continue
        if after[:1].isalpha() or (after and after[0] in "^_{\\"):
            continue
        value = number(match.group())
        if value is not None:
            values.append(value)
    run: list[str] = []
    for word in [*_WORD_TOKEN.findall(s), ""]:
        parts = word.casefold().split("-")
        if word and all(part in NUMBER_WORDS for part in parts):
            run.append(word)
            continue
        meaningful = [w for w in run if w.casefold() not in WEAK_WORDS]
        if meaningful:
            value = words_value(" ".join(run).strip())
            if value is None and run[0].casefold() in WEAK_WORDS:
                value = words_value(" ".join(run[1:]))
            if value is not None:
                values.append(value)
        run = []
    return values


def _has_number(s: str) -> bool:
    return bool(_numbers(s))
