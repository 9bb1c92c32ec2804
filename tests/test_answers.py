"""Table tests of answer extraction and grouping (pure functions, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from fractions import Fraction

import pytest

from ensemble_extproc.answers import (
    SHORT_TEXT_LIMIT,
    Answer,
    extract,
    group,
    message_answer,
    normalise_text,
    tool_calls_key,
)

# --- answers that must agree -----------------------------------------------------------

EQUIVALENT = {
    "42": [
        "42",
        "The answer is 42.",
        "\\boxed{42}",
        "**42**",
        "42.0",
        "$42",
        "Answer: 42",
        "So the final answer is 42",
        "the answer is therefore 42",
        "**Answer:** 42",
        "**Final Answer**: 42",
        "Final answer\n\n42",
        "The answer is:\n**42**",
        "I first thought 12 but the answer is 42",
        "+42",
        "42 apples",
        "x = 42",
        "\u7b54\u6848\u662f42",  # 答案是42
        "The answer is $\\boxed{42}$.",
        "$$\\boxed{42}$$",
    ],
    "1000": ["1,000", "1000", "1000.00", "$1,000", "\\boxed{1000}", "1e3", "1{,}000", "1\\,000"],
    "3/4": ["3/4", "0.75", "\\frac{3}{4}", "\\boxed{\\dfrac{3}{4}}", "$\\tfrac{3}{4}$", ".75"],
    "choice B": [
        "(B)",
        "B",
        "Answer: B",
        "**B**",
        "The correct answer is (B).",
        "B) 42",
        "Option B",
        "Choice B",
        "B.",
        "**(B)**",
        "[B]",
        "(B) 42",
        "B: Paris",
        "option: B",
        "**B)** 42",
        "\\boxed{B}",
        "\\boxed{\\text{(B)}}",
        "Answer:\n\n**(B)**",
        "The answer is (B) 42.",
    ],
    "yes": ["Yes", "yes.", "**YES**", "True", "TRUE", "`true`", "The answer is yes.", "Yes!"],
    "no": ["No", "false", "false!", "**No**", "Answer: No", "\\boxed{\\text{no}}"],
    "paris": ["Paris", "paris.", "  PARIS!! ", '"Paris"', "The answer is Paris. It is lovely."],
}


@pytest.mark.parametrize(
    ("name", "text"), [(name, text) for name, texts in EQUIVALENT.items() for text in texts]
)
def test_equivalent_answers_share_kind_and_key(name: str, text: str) -> None:
    assert extract(text) == extract(EQUIVALENT[name][0])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("42", "43"),
        ("B", "C"),
        ("50%", "50"),
        ("50%", "0.5"),
        ("yes", "no"),
        ("Paris", "Lyon"),
        ("Paris", "B"),
        ("3/4", "4/3"),
        ("-3", "3"),
        ("yes", "Yes, Paris is the capital."),
        ("1000", "1000%"),
    ],
)
def test_different_answers_differ(a: str, b: str) -> None:
    assert extract(a) != extract(b)
    assert group([extract(a), extract(b)]) == [0, 1]


# --- exact extraction results ------------------------------------------------------------


def number(key: str, value: Fraction | int) -> Answer:
    return Answer("number", key, Fraction(value))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # rule 1: boxes
        ("\\boxed{42}", number("42", 42)),
        ("\\boxed{\\frac{3}{4}}", number("3/4", Fraction(3, 4))),
        ("\\boxed{-\\frac{7}{2}}", number("-7/2", Fraction(-7, 2))),
        ("\\boxed{B}", Answer("choice", "B")),
        ("\\boxed{Paris}", Answer("text", "paris")),
        ("\\boxed{\\text{Paris}}", Answer("text", "paris")),
        ("\\boxed{7} then \\boxed{9}", number("9", 9)),  # the last box
        ("\\boxed{7} and \\boxed{9", number("7", 7)),  # an unclosed box does not count
        ("\\boxed{\\boxed{5}}", number("5", 5)),
        ("\\boxed{x = 5}", number("5", 5)),
        ("\\boxed{5 \\text{ cm}}", number("5", 5)),
        ("\\boxed{90^\\circ}", number("90", 90)),
        ("\\fbox{12}", number("12", 12)),
        ("\\boxed {8}", number("8", 8)),
        ("\\boxed{} so 3", number("3", 3)),  # an empty box is ignored
        ("\\boxed{**} Answer: 4", number("4", 4)),  # a box with nothing in it too
        # LaTeX expressions are not numbers: they stay text
        ("\\boxed{\\frac{\\pi}{2}}", Answer("text", "\\frac{\\pi}{2}")),
        ("\\boxed{\\sqrt{2}}", Answer("text", "\\sqrt{2}")),
        ("\\boxed{2\\pi}", Answer("text", "2\\pi")),
        ("\\boxed{x^2}", Answer("text", "x^2")),
        ("\\boxed{2^{10}}", Answer("text", "2^{10}")),
        ("\\boxed{90^{\\circ}}", number("90", 90)),
        ("\\boxed{\\left(\\frac{1}{2}\\right)}", number("1/2", Fraction(1, 2))),
        # rule 2: final-answer statements (the last one)
        ("The answer is 42.", number("42", 42)),
        ("Answer: 7. Wait, no. Answer: 8.", number("8", 8)),
        ("The answer would be 5", number("5", 5)),
        ("The answer is 3.5.", number("7/2", Fraction(7, 2))),
        ("The answer is Mr. Smith", Answer("text", "mr")),  # a statement ends at ". "
        ("Answer: 12\nBecause 3 * 4 = 12, and 5 is not.", number("12", 12)),
        ("Answer: $1,000.50.", number("2001/2", Fraction(2001, 2))),
        ("The answer is 4. Final answer:", number("4", 4)),  # an empty statement is skipped
        ("The answer is:", Answer("text", "the answer is")),
        ("Answer = 6", number("6", 6)),
        ("the answer was 11", number("11", 11)),
        ("My ANSWER IS 13", number("13", 13)),
        ("The answers are 1 and 2", number("2", 2)),  # not a statement: rule 5 on short text
        ("answered: 3", number("3", 3)),  # likewise
        # rule 3: choices
        ("A", Answer("choice", "A")),
        ("E", Answer("choice", "E")),
        ("E. coli", Answer("choice", "E")),  # documented false positive
        ("F", Answer("text", "f")),  # only A-E
        ("a", Answer("text", "a")),  # lowercase never
        ("I", Answer("text", "i")),
        ("(b)", Answer("text", "(b)")),
        ("A cat", Answer("text", "a cat")),  # a bare letter then a word is not a choice
        ("Be careful", Answer("text", "be careful")),
        ("C++", Answer("text", "c++")),
        ("D'Artagnan", Answer("text", "d'artagnan")),
        ("B 42", number("42", 42)),
        ("B) 42\n\nBecause the sum is 42.", number("42", 42)),  # option text on one line only
        ("B2", Answer("text", "b2")),
        # rule 4: booleans
        ("Yes.", Answer("boolean", "yes")),
        ("**No**", Answer("boolean", "no")),
        ("TRUE", Answer("boolean", "yes")),
        ("false!", Answer("boolean", "no")),
        ("Yes, it is.", Answer("text", "yes, it is")),
        ("Not", Answer("text", "not")),
        # rule 5: numbers
        ("-3", number("-3", -3)),
        ("\u22123", number("-3", -3)),
        ("+7", number("7", 7)),
        ("-$5", number("-5", -5)),
        ("$-5", number("-5", -5)),
        ("\u20ac5", number("5", 5)),
        ("\u00a31,234,567.5", number("2469135/2", Fraction(2469135, 2))),
        ("50%", number("50%", 50)),
        ("50 %", number("50%", 50)),
        ("12.5%", number("25/2%", Fraction(25, 2))),
        ("\\boxed{50\\%}", number("50%", 50)),
        ("1e3", number("1000", 1000)),
        ("1.5E-3", number("3/2000", Fraction(3, 2000))),
        (".5", number("1/2", Fraction(1, 2))),
        ("007", number("7", 7)),
        ("-0", number("0", 0)),
        ("3 cats and 2 dogs", number("2", 2)),  # the last number
        ("Windows 100", number("100", 100)),
        ("12,34", Answer("text", "12,34")),  # not comma thousands
        ("1,0000", Answer("text", "1,0000")),
        ("1 000", Answer("text", "1 000")),  # spaces are not thousands separators
        ("1/0", Answer("text", "1/0")),
        ("2024-01-05", Answer("text", "2024-01-05")),
        ("1/2/2024", Answer("text", "1/2/2024")),
        ("10:30", Answer("text", "10:30")),
        ("3-5", Answer("text", "3-5")),
        ("1.2.3", Answer("text", "1.2.3")),
        ("v1.2", Answer("text", "v1.2")),
        ("1,2,3", Answer("text", "1,2,3")),
        ("COVID-19", Answer("text", "covid-19")),
        ("H2O", Answer("text", "h2o")),
        ("1" * 2000, Answer("text", "1" * 2000)),  # absurdly long: not a number
        ("Answer: 1e99999999", Answer("text", "1e99999999")),
        # rule 6 and empty
        ("", Answer("empty", "")),
        ("   \n\t ", Answer("empty", "")),
        ("...", Answer("empty", "")),
        ("**", Answer("empty", "")),
        ("\\boxed{}", Answer("text", "\\boxed{}")),
        ("The capital of France is Paris.", Answer("text", "the capital of france is paris")),
        ("\u5df4\u9ece\u3002", Answer("text", "\u5df4\u9ece")),
        ("Stra\u00dfe", Answer("text", "strasse")),
        ("\U0001f600", Answer("text", "\U0001f600")),
    ],
)
def test_extract(text: str, expected: Answer) -> None:
    assert extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I first thought 12 but the answer is 42", "42"),  # rule 2 over rule 5
        ("\\boxed{7}. Answer: 9", "7"),  # rule 1 over rule 2
        ("Answer: 9. Check: \\boxed{7}", "7"),  # a box wins wherever it is
        ("(B) 42", "B"),  # rule 3 over rule 5
        ("The answer is (C) 17.", "C"),  # rule 3 on the statement
        ("The answer is yes, 3 times.", "3"),  # a statement that is not only "yes"
    ],
)
def test_priority_order(text: str, expected: str) -> None:
    assert extract(text).key == expected


def test_long_text_with_an_incidental_number_stays_text() -> None:
    text = "Paris has been the capital for a long time. " * 5 + "It has 2 million people."
    assert len(text) > SHORT_TEXT_LIMIT
    assert extract(text) == Answer("text", normalise_text(text))


def test_short_text_threshold_is_inclusive() -> None:
    padding = "x" * (SHORT_TEXT_LIMIT - 2)
    assert extract(padding + " 7").kind == "number"
    assert extract(padding + "  7").kind == "text"


def test_long_text_with_a_statement_or_box_is_a_number() -> None:
    reasoning = "Let us think step by step about the 3 apples and 5 pears. " * 20
    assert extract(reasoning + "The answer is 42.") == number("42", 42)
    assert extract(reasoning + "So we get \\boxed{42} in total, not 41.") == number("42", 42)


# --- normalise_text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("  Paris. ", "paris"),
        ("PARIS!!", "paris"),
        ("The  answer\n is 42.", "the answer is 42"),
        ("42?", "42"),
        ("Yes;", "yes"),
        ("Yes :", "yes"),
        ("\u5df4\u9ece\u3002", "\u5df4\u9ece"),
        ("\u5df4\u9ece\uff01\uff1f", "\u5df4\u9ece"),
        ("3.14", "3.14"),
        ("**Paris**", "paris"),
        ('**"Paris."**', "paris"),
        ("`x`", "x"),
        ("\u201cParis\u201d", "paris"),
        ("'Paris'", "paris"),
        ("Hello, world", "hello, world"),  # inner punctuation stays
        ("(x)", "(x)"),
        ("", ""),
        ("*.*.*", ""),
    ],
)
def test_normalise_text(text: str, expected: str) -> None:
    assert normalise_text(text) == expected


# --- tool calls and messages ------------------------------------------------------------


def call(name: str, arguments: object, call_id: str = "call_1") -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ([call("f", '{"a":1,"b":2}')], [call("f", '{"b": 2, "a": 1}', "call_9")], True),
        ([call("f", '{"a":1}')], [call("f", '{"a":2}')], False),
        ([call("f", '{"a":1}')], [call("g", '{"a":1}')], False),
        ([call("f", "not json ")], [call("f", " not json")], True),
        ([call("f", "{}"), call("g", "{}")], [call("g", "{}"), call("f", "{}")], False),
        ([call("f", '"x"')], [call("f", "x")], False),  # a JSON string is not raw text
        ([call("f", "{}"), "junk", None], [call("f", "{}")], True),  # non-dicts ignored
        ([call("f", {"b": 2, "a": 1})], [call("f", '{"a":1,"b":2}')], True),  # parsed args
        ([call("f", '{"a":1.0}')], [call("f", '{"a":1}')], False),
    ],
)
def test_tool_calls_key(a: list[object], b: list[object], same: bool) -> None:
    assert (tool_calls_key(a) == tool_calls_key(b)) is same


def test_tool_calls_key_format() -> None:
    calls: list[object] = [call("f", '{"b": 2, "a": "\u00e9"}'), call("g", "  raw  "), {}]
    assert tool_calls_key(calls) == '[["f","{\\"a\\":\\"\u00e9\\",\\"b\\":2}"],["g","raw"],["",""]]'


def test_tool_calls_key_survives_hostile_json() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert tool_calls_key([call("f", deep)]) == f'[["f","{deep}"]]'


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (None, Answer("empty", "")),
        ({}, Answer("empty", "")),
        ({"role": "assistant", "content": None}, Answer("empty", "")),
        ({"role": "assistant", "content": "The answer is 42."}, number("42", 42)),
        (
            {"role": "assistant", "content": "B", "tool_calls": [call("f", "{}")]},
            Answer("choice", "B"),
        ),
        (
            {"role": "assistant", "content": " \n", "tool_calls": [call("f", '{"a": 1}')]},
            Answer("tool_calls", '[["f","{\\"a\\":1}"]]'),
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [call("f", "{}")]},
            Answer("tool_calls", '[["f","{}"]]'),
        ),
        ({"role": "assistant", "content": None, "tool_calls": []}, Answer("empty", "")),
        ({"role": "assistant", "content": None, "tool_calls": ["x"]}, Answer("empty", "")),
        ({"role": "assistant", "content": None, "tool_calls": "f"}, Answer("empty", "")),
        (
            {"role": "assistant", "content": [{"type": "text", "text": "4"}, {"text": "2"}]},
            number("42", 42),
        ),
        ({"role": "assistant", "content": 42}, Answer("empty", "")),
    ],
)
def test_message_answer(message: Mapping[str, object] | None, expected: Answer) -> None:
    assert message_answer(message) == expected


# --- group ----------------------------------------------------------------------------------


def texts(*keys: str) -> list[Answer]:
    return [Answer("text", key) for key in keys]


@pytest.mark.parametrize(
    ("answers", "similarity", "expected"),
    [
        ([], 0.9, []),
        ([extract(t) for t in ("42", "B", "42.0", "Answer: B", "43")], 0.9, [0, 1, 0, 1, 2]),
        ([extract(t) for t in ("1000", "1000.0", "$1,000")], 0.9, [0, 0, 0]),
        ([Answer("boolean", "yes"), Answer("text", "yes")], 0.9, [0, 1]),
        ([Answer("choice", "B"), Answer("text", "b")], 0.5, [0, 1]),
        ([Answer("number", "1"), Answer("choice", "1")], 0.9, [0, 1]),
        (
            [extract("The capital of France is Paris"), extract("the capital of france is paris.")],
            0.9,
            [0, 0],
        ),
        (
            [extract("Paris is the capital"), extract("Lyon is the capital of France")],
            0.9,
            [0, 1],
        ),
        (texts("abcd", "abce"), 0.75, [0, 0]),  # ratio 0.75 is enough at 0.75
        (texts("abcd", "abce"), 0.76, [0, 1]),
        (texts("abcd", "abcd"), 1.0, [0, 0]),  # 1.0: equal keys only
        (texts("abcd", "abce"), 1.0, [0, 1]),
        (texts("a", "b"), 0.01, [0, 1]),  # nothing in common: ratio 0
        ([Answer("empty", ""), Answer("empty", "")], 0.9, [0, 1]),
        ([Answer("empty", ""), Answer("text", ""), Answer("empty", "")], 0.9, [0, 1, 2]),
        (
            [Answer("tool_calls", "k"), Answer("tool_calls", "k"), Answer("text", "k")],
            0.9,
            [0, 0, 1],
        ),
        # greedy against each group's FIRST member: "abcd"~"abcx"~"abxy", "abcd"!~"abxy"
        (texts("abcd", "abcx", "abxy"), 0.75, [0, 0, 1]),
        (texts("abcx", "abcd", "abxy"), 0.75, [0, 0, 0]),
        # the first matching group wins, even when a later one matches better
        (texts("abcd", "wxyz", "abcz", "wxyz"), 0.75, [0, 1, 0, 1]),
    ],
)
def test_group(answers: list[Answer], similarity: float, expected: list[int]) -> None:
    assert group(answers, similarity) == expected


def test_group_merges_equal_long_texts() -> None:
    # difflib's autojunk can score two equal long strings below 1.0; equal keys still merge.
    key = "a" * 300 + "b" + "a" * 300
    assert group(texts(key, key), 1.0) == [0, 0]
    assert group(texts(key, key), 0.99) == [0, 0]


@pytest.mark.parametrize("similarity", [0.0, -0.5, 1.01, float("nan")])
def test_group_rejects_bad_similarity(similarity: float) -> None:
    with pytest.raises(ValueError, match="similarity"):
        group(texts("a"), similarity)


def test_answer_is_frozen_and_slotted() -> None:
    answer = Answer("text", "x")
    with pytest.raises(AttributeError):
        answer.key = "y"  # type: ignore[misc]
    assert not hasattr(answer, "__dict__")


# --- big and hostile input ------------------------------------------------------------------

SIZE = 100_000

HOSTILE = {
    "prose": ("The quick brown fox jumps over 3 lazy dogs. " * 3000)[:SIZE],
    "digits": "1" * SIZE,
    "comma groups": "1," + "000," * (SIZE // 4),
    "stars": "*" * SIZE,
    "stars then letter": "*" * SIZE + "B",
    "unclosed boxes": "\\boxed{" * (SIZE // 7),
    "nested boxes": "\\boxed{" * (SIZE // 16) + "42" + "}" * (SIZE // 16),
    "braces": "{" * SIZE,
    "markers": "answer: " * (SIZE // 8),
    "empty markers": "answer:. " * (SIZE // 9),
    "marker then stars": "The answer is " + "*" * SIZE,
    "spaces in marker": "final" + " " * SIZE + "x",
    "long statement": "The answer is " + "1 " * (SIZE // 2),
    "unclosed fracs": "\\frac{" * (SIZE // 6),
    "dots": "." * SIZE + "a",
    "signs": "-" * SIZE + "5",
    "huge exponent": "The answer is 1e" + "9" * SIZE,
    "percent runs": "Answer: " + "5 % " * (SIZE // 4),
    "dashes": "Answer: " + "-1" * (SIZE // 2),
    "slashes": "Answer: " + "1/" * (SIZE // 2),
    "options": "Option " * (SIZE // 7),
    "parens": "Answer: " + "(B" * (SIZE // 2),
    "whitespace": " \n\t" * (SIZE // 3) + "x",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_fast(text: str) -> None:
    # Typically a few ms; the bound only catches super-linear behaviour (seconds or worse).
    started = time.perf_counter()
    answer = extract(text)
    assert time.perf_counter() - started < 1.0
    assert answer.kind in {"number", "choice", "boolean", "text", "empty"}


def test_nested_boxes_read_the_innermost() -> None:
    assert extract(HOSTILE["nested boxes"]) == number("42", 42)
