"""Checkable quiz questions for the quality benchmark (pure: no I/O, no clocks).

A question's text determines everything about it: the correct answer is computed from
the arithmetic in it, and the distractors (plausible wrong answers) come from a hash of
the expression, never from the generation RNG. So ``parse`` recovers the exact problem
``generate`` made from any text that contains the question (a chat message, a judge or
aggregator prompt) without shared state.

Two kinds of question:

* arithmetic: ``What is 37 + 45?``; the answer is an integer, the distractors are
  near misses (off by one or ten, swapped digits, one operand too many or too few);
* choice: ``Which number is 12 + 7?`` followed by four ``(A) 19`` lines; the answer is
  a letter, the distractors are the three wrong letters.

Operators are ``+``, ``-`` and the multiplication sign U+00D7 (``parse`` also reads ``*``
and ``x`` as a product).

Canonical answers: an integer as ``str(int)``, or an upper-case letter ``A``-``D``.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "LETTERS",
    "LONG_STYLE_COUNT",
    "STEP_BY_STEP",
    "STYLE_COUNT",
    "TIMES",
    "Problem",
    "canonical",
    "final_answer",
    "generate",
    "is_correct",
    "parse",
    "render",
    "render_long",
    "wants_steps",
]

Kind = Literal["arithmetic", "choice"]

LETTERS: Final = ("A", "B", "C", "D")
TIMES: Final = "\u00d7"
_OPERATORS: Final = ("+", "-", TIMES)
_OPERATOR_RE: Final = rf"[+\-{TIMES}*x]"

_ARITHMETIC_RE: Final = re.compile(rf"What is (\d{{1,6}}) ({_OPERATOR_RE}) (\d{{1,6}})\?")
_CHOICE_RE: Final = re.compile(
    rf"Which number is (\d{{1,6}}) ({_OPERATOR_RE}) (\d{{1,6}})\?"
    + "".join(rf"[ \t]*\r?\n[ \t]*\({letter}\) (-?\d{{1,12}})" for letter in LETTERS)
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One quiz question with its canonical correct answer and three wrong ones."""

    prompt: str
    correct: str
    kind: Kind
    distractors: tuple[str, ...]  # exactly three, canonical, never the correct answer
    options: tuple[str, ...] = ()  # choice only: the four option values, in letter order


# ------------------------------------------------------------------ generation


def generate(count: int, seed: int) -> list[Problem]:
    """``count`` distinct problems, about half of each kind; the same for the same seed."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < count:
        a, op, b = _operands(rng)
        if rng.random() < 0.5:
            prompt = f"What is {a} {op} {b}?"
        else:
            values = _option_values(a, op, b, correct_index=rng.randrange(len(LETTERS)))
            options = "".join(
                f"\n({letter}) {v}" for letter, v in zip(LETTERS, values, strict=True)
            )
            prompt = f"Which number is {a} {op} {b}?{options}"
        if prompt in seen:
            continue  # a repeated question would be a correlated second sample
        seen.add(prompt)
        problem = parse(prompt)
        if problem is None or problem.prompt != prompt:  # generate and parse must agree
            raise AssertionError(f"generated question does not parse back: {prompt!r}")
        problems.append(problem)
    return problems


def _operands(rng: random.Random) -> tuple[int, str, int]:
    op = rng.choice(_OPERATORS)
    if op == "+":
        return rng.randint(10, 999), op, rng.randint(10, 999)
    if op == "-":
        a = rng.randint(20, 999)
        return a, op, rng.randint(10, a - 1)  # the answer stays positive
    a = rng.randint(10, 99) if rng.random() < 0.5 else rng.randint(100, 999)
    return a, op, rng.randint(10, 99)


def _option_values(a: int, op: str, b: int, correct_index: int) -> list[int]:
    value = _compute(a, op, b)
    wrong = iter(_distractor_values(a, op, b, value))
    return [value if i == correct_index else next(wrong) for i in range(len(LETTERS))]


# --------------------------------------------------------------------- parsing


def parse(text: str) -> Problem | None:
    """The first generated-style question found anywhere in ``text``; None if there is none.

    A choice question whose options do not contain the computed value exactly once is
    not one of ours (None).
    """
    matches = [m for m in (_ARITHMETIC_RE.search(text), _CHOICE_RE.search(text)) if m]
    if not matches:
        return None
    match = min(matches, key=lambda m: m.start())
    a, op, b = int(match.group(1)), _normal_operator(match.group(2)), int(match.group(3))
    value = _compute(a, op, b)
    if match.re is _ARITHMETIC_RE:
        wrong = _distractor_values(a, op, b, value)
        return Problem(
            prompt=match.group(0),
            correct=str(value),
            kind="arithmetic",
            distractors=tuple(str(v) for v in wrong),
        )
    options = tuple(str(int(match.group(4 + i))) for i in range(len(LETTERS)))
    if options.count(str(value)) != 1:
        return None
    correct = LETTERS[options.index(str(value))]
    return Problem(
        prompt=match.group(0),
        correct=correct,
        kind="choice",
        distractors=tuple(letter for letter in LETTERS if letter != correct),
        options=options,
    )


def _normal_operator(op: str) -> str:
    return TIMES if op in ("*", "x") else op


def _compute(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def _distractor_values(a: int, op: str, b: int, value: int) -> list[int]:
    """Three plausible wrong values, chosen by a hash of the expression (stable everywhere)."""
    pool = [value + 1, value - 1, value + 10, value - 10, _swap_last_digits(value)]
    if op == TIMES:
        pool += [value + a, value - a, value + b, value - b]  # one operand too many or few
    if abs(value) >= 100:
        pool += [value + 100, value - 100]
    # Keep the sign of the correct answer (a positive answer has positive near misses).
    candidates = list(dict.fromkeys(v for v in pool if v != value and (v > 0) == (value > 0)))
    for extra in (2, 3, 11):  # tiny answers can run short of near misses
        if len(candidates) >= 3:
            break
        if value + extra not in candidates:
            candidates.append(value + extra)
    digest = hashlib.sha256(f"quiz-distractors:{a} {op} {b}".encode()).hexdigest()
    return random.Random(digest).sample(candidates, 3)


def _swap_last_digits(value: int) -> int:
    sign, digits = ("-", str(-value)) if value < 0 else ("", str(value))
    if len(digits) < 2:
        return value
    swapped = digits[:-2] + digits[-1] + digits[-2]
    if swapped[0] == "0":
        return value  # 10 -> 01 is not a plausible slip; value is filtered out later
    return int(sign + swapped)


def _expression(problem: Problem) -> str:
    match = re.search(rf"(\d+) ({_OPERATOR_RE}) (\d+)\?", problem.prompt)
    return f"{match.group(1)} {match.group(2)} {match.group(3)}" if match else "it"


# ------------------------------------------------------------------- checking


def canonical(problem: Problem, text: str) -> str | None:
    """A short answer key in canonical form ("42", "B"); None when it is not one.

    For choice problems an option's value counts as its letter ("84" -> "B").
    """
    cleaned = text.strip().strip("*$().:,;!? \t\n").replace(",", "")
    if problem.kind == "choice":
        if cleaned.upper() in LETTERS and len(cleaned) == 1:
            return cleaned.upper()
        number = _integer(cleaned)
        if number is not None and str(number) in problem.options:
            return LETTERS[problem.options.index(str(number))]
        return None
    number = _integer(cleaned)
    return None if number is None else str(number)


def _integer(text: str) -> int | None:
    if re.fullmatch(r"-?\d+(?:\.0+)?", text):
        return int(text.split(".")[0])
    return None


def is_correct(problem: Problem, extracted_key: str) -> bool:
    """True when an extracted answer key means the problem's correct answer."""
    return canonical(problem, extracted_key) == problem.correct


_BOXED_RE: Final = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES_RE: Final = re.compile(r"^####\s*(\S[^\n]*)$", re.MULTILINE)
_STATEMENT_RE: Final = re.compile(r"\b[Aa]nswer(?:\s+is|\s*:)\s*([^\n]{0,40})")
_NUMBER_RE: Final = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LETTER_RE: Final = re.compile(r"\(([A-Da-d])\)|\b([A-D])\b")


def final_answer(problem: Problem, text: str) -> str | None:
    """The final answer a reply states, canonical; None when it states none.

    A small local rule set, in priority order: the last ``\\boxed{...}``, GSM8K's last
    ``#### n``, the last "answer is ..." / "Answer: ..." statement, a reply that is just a
    letter (choice), a letter in the reply's last line (choice), then the last number.
    """
    boxed = _BOXED_RE.findall(text)
    if boxed:
        return canonical(problem, boxed[-1])
    hashes = _HASHES_RE.findall(text)
    if hashes:
        return canonical(problem, hashes[-1])
    statements = _STATEMENT_RE.findall(text)
    if statements:
        found = _first_key(problem, statements[-1])
        if found is not None:
            return found
    if problem.kind == "choice":
        whole = canonical(problem, text)
        if whole is not None:
            return whole
        letters = _LETTER_RE.findall(text.strip().rsplit("\n", 1)[-1])
        if letters:
            return "".join(letters[-1]).upper()
    numbers = _NUMBER_RE.findall(text)
    return canonical(problem, numbers[-1]) if numbers else None


def _first_key(problem: Problem, fragment: str) -> str | None:
    if problem.kind == "choice":
        letter = _LETTER_RE.search(fragment)
        if letter:
            return (letter.group(1) or letter.group(2)).upper()
    number = _NUMBER_RE.search(fragment)
    return canonical(problem, number.group(0)) if number else None


# ------------------------------------------------------------------- rendering

# Every format states its answer last, or behind an explicit "answer is"/"Answer:"/boxed,
# so the extraction rule (boxed > answer statement > letter > last number) recovers it.
# The fields of every format: ``_fields``.
_NUMBER_STYLES: Final[tuple[str, ...]] = (
    "{n}",
    "The answer is {n}.",
    "\\boxed{{{n}}}",
    "**{n}**",
    "After computing, {e} = {n}, so the answer is {n}.",
    "Answer: {n}",
    "${n}",
    "{n}.",
    "Let me work it out: {e} = {n}.\n\nFinal answer: \\boxed{{{n}}}",
    "It is {n}.",
)
_LETTER_STYLES: Final[tuple[str, ...]] = (
    "({x})",
    "{x}",
    "Answer: {x}",
    "**{x}**",
    "The correct answer is ({x}).",
    # Not "B) 84": a last-number rule would read 84. The statement comes last instead.
    "{e} = {v}, so the answer is ({x}).",
    "\\boxed{{{x}}}",
    "{x}.",
    "The answer is {x}",
    "Final answer: **{x}**",
)
STYLE_COUNT: Final = len(_NUMBER_STYLES)
assert len(_LETTER_STYLES) == STYLE_COUNT


def _fields(problem: Problem, answer: str) -> dict[str, str]:
    """What a format may name: the expression ``e``; a letter ``x`` (``x_lower``) and its
    option's value ``v``, or a number ``n`` (``n_commas``)."""
    expression = _expression(problem)
    if problem.kind == "choice":
        if answer not in LETTERS:
            raise ValueError(f"a choice answer must be one of A-D, got {answer!r}")
        value = problem.options[LETTERS.index(answer)]
        return {"e": expression, "x": answer, "x_lower": answer.lower(), "v": value}
    if _integer(answer) is None:
        raise ValueError(f"an arithmetic answer must be an integer, got {answer!r}")
    return {"e": expression, "n": answer, "n_commas": f"{int(answer):,}"}


def render(problem: Problem, answer: str, style: int) -> str:
    """A reply stating ``answer`` (canonical) in format ``style`` (taken modulo STYLE_COUNT)."""
    styles = _LETTER_STYLES if problem.kind == "choice" else _NUMBER_STYLES
    return styles[style % STYLE_COUNT].format(**_fields(problem, answer))


# ------------------------------------------------------------ chains of thought

# A prompt that asks for reasoning gets a chain of thought of 1-4 KB, as real models write
# one: steps with other numbers in them (operands, partial results, a wrong value tried
# first), then the answer in one of the styles of GSM8K, MATH, Minerva, markdown,
# <think> blocks or multiple-choice phrasings. Every style keeps the answer recoverable by
# ``final_answer`` (a box, "####", an answer statement, a letter in the last line, or the
# last number).
STEP_BY_STEP: Final = "Think step by step."
_LONG_MIN, _LONG_MAX = 1200, 4000

_STEPS: Final = (
    "First, let me restate the problem: we need {e}.",
    "The two numbers involved are {a} and {b}.",
    "Let me break {a} into tens and units: {a_tens} and {a_units}.",
    "A quick sanity check: the result should be close to {estimate}.",
    "At first glance one might say {wrong}, but that comes from a slip in the last digit.",
    "Working it digit by digit, the units give {units} and the tens carry over.",
    "We can double-check by estimating: {a} is about {a_round} and {b} is about {b_round}.",
    "Careful with the carries here, since a mistake of 1 or 10 is easy to make.",
    "Note that {b} has {b_digits} digits, so the partial results line up as follows.",
    "Writing the computation out in full keeps track of every step.",
    "Let me verify once more by going the other way around.",
    "Some people would answer {wrong} here, but the check below rules that out.",
    "Rounding first gives a rough value of {estimate}, so the exact value is near it.",
)
_NUMBER_ENDINGS: Final[tuple[str, ...]] = (
    "\n\nPutting it together: {e} = {n}.\n#### {n}",
    "\n\nTherefore, the answer is $\\boxed{{{n}}}$.",
    "\n\nFinal Answer: The final answer is ${n}$. I hope it is correct.",
    "\n\nSo the answer is {n}, not {wrong}.",
    "\n\n### Final answer\n**{n_commas}**",
    "\n\nAnswer: {n} (that is, {e}).",
    "\n\nPutting it all together, the total comes to {n} in all.",
    "\n\nSo {e} = {n}.",
)
_LETTER_ENDINGS: Final[tuple[str, ...]] = (
    "\n\nI would choose {x}.",
    "\n\nTherefore the answer is $\\boxed{{{x}}}$.",
    "\n\n{x} is correct.",
    "\n\nThe correct option is {x}) {v}",
    "\n\n**Answer: ({x})**",
    "\n\nSo the answer is ({x_lower}).",
    "\n\nFinal answer: **{x}**",
    "\n\nThe answer is {x}, since {e} = {v}.",
)
LONG_STYLE_COUNT: Final = len(_NUMBER_ENDINGS)
assert len(_LETTER_ENDINGS) == LONG_STYLE_COUNT


def wants_steps(prompt: str) -> bool:
    """Whether a prompt asks for reasoning (the demo models then write a chain of thought)."""
    return STEP_BY_STEP.casefold() in prompt.casefold()


def render_long(problem: Problem, answer: str, style: int, rng: random.Random) -> str:
    """A 1-4 KB chain of thought ending with ``answer`` in format ``style``."""
    expression = _expression(problem)
    numbers = [int(n) for n in re.findall(r"\d+", expression)] or [0, 0]
    a, b = numbers[0], numbers[-1]
    wrong = problem.distractors[0]
    if problem.kind == "choice":  # a wrong option's value, not its letter
        wrong = problem.options[LETTERS.index(wrong)]
    fields = {
        "e": expression,
        "a": a,
        "b": b,
        "a_tens": a // 10 * 10,
        "a_units": a % 10,
        "a_round": round(a, -1),
        "b_round": round(b, -1),
        "b_digits": len(str(b)),
        "units": (a + b) % 10,
        "estimate": round(int(problem.correct) if problem.kind == "arithmetic" else a, -1),
        "wrong": wrong,
    }
    target = rng.randint(_LONG_MIN, _LONG_MAX)
    steps: list[str] = []
    length = 0
    while length < target - 200:
        step = rng.choice(_STEPS).format(**fields)
        steps.append(step)
        length += len(step) + 1
    reasoning = " ".join(steps)
    if style % 4 == 3:  # reasoning inside a <think> block, as reasoning models write it
        reasoning = f"<think>\n{reasoning}\n</think>\n\nHere is the worked solution."
    endings = _LETTER_ENDINGS if problem.kind == "choice" else _NUMBER_ENDINGS
    return reasoning + endings[style % LONG_STYLE_COUNT].format(
        **_fields(problem, answer), wrong=wrong
    )
