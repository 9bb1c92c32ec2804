"""The prompt-difficulty estimator: orderings and ranges, features, and body parsing."""

from __future__ import annotations

import math
import random
from dataclasses import astuple

import msgspec
import pytest

from ensemble_extproc.adaptive.difficulty import (
    DEFAULT_WEIGHTS,
    SCAN_EDGE,
    DifficultyWeights,
    Features,
    confidence,
    difficulty,
    features,
)
from ensemble_extproc.chat import prompt_text

PLAIN_PROSE = (
    "The weather was lovely this morning, so we took the dog for a long walk along the "
    "river and stopped for coffee at the little cafe near the bridge. Later my sister "
    "called to say that her garden is full of tomatoes this year."
)

HI = "Hi!"
FRANCE = "What is the capital of France?"
CHIT_CHAT = "Hey, how are you doing today? Any fun plans for the weekend?"
PROVE = "Prove that the square root of 2 is irrational, step by step."
MEDICAL = "What is the maximum safe dosage of ibuprofen for an adult with kidney disease?"
CODE_DEBUG = """\
I'm getting this error when running my Flask app and I can't figure out why. The endpoint
worked yesterday, and the only change since then was a migration that renamed a column.
Here's the view:

```python
from flask import Flask, jsonify

app = Flask(__name__)

@app.route("/users/<int:user_id>")
def get_user(user_id):
    user = db.session.query(User).filter_by(id=user_id).first()
    return jsonify(user.to_dict())
```

And the traceback:

```
Traceback (most recent call last):
  File "/srv/app/views.py", line 42, in get_user
    return jsonify(user.to_dict())
AttributeError: 'NoneType' object has no attribute 'to_dict'
```

Why is user None here? How should I handle missing users properly, and what is the
idiomatic way to return a 404 instead of crashing with a 500?
"""


# --- whole prompts: ranges and orderings ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        pytest.param(HI, 0.0, 0.1, id="greeting"),
        pytest.param(FRANCE, 0.0, 0.2, id="factoid"),
        pytest.param(CHIT_CHAT, 0.0, 0.2, id="chit-chat"),
        pytest.param(PLAIN_PROSE, 0.0, 0.2, id="plain prose"),
        pytest.param(MEDICAL, 0.05, 0.5, id="medical dosage"),
        pytest.param(PROVE, 0.5, 1.0, id="proof step by step"),
        pytest.param(CODE_DEBUG, 0.5, 1.0, id="code debugging with stack trace"),
    ],
)
def test_difficulty_ranges(text: str, low: float, high: float) -> None:
    assert low <= difficulty(text) <= high


@pytest.mark.parametrize(
    ("easier", "harder"),
    [
        pytest.param(HI, FRANCE, id="greeting < factoid"),
        pytest.param(CHIT_CHAT, MEDICAL, id="chit-chat < medical"),
        pytest.param(FRANCE, MEDICAL, id="factoid < medical"),
        pytest.param(MEDICAL, PROVE, id="medical < proof"),
        pytest.param(FRANCE, CODE_DEBUG, id="factoid < debugging"),
        pytest.param(
            "Why is the sky blue?",
            "Explain why the sky is blue, and compare Rayleigh with Mie scattering.",
            id="one reasoning marker < several",
        ),
    ],
)
def test_difficulty_orderings(easier: str, harder: str) -> None:
    assert difficulty(easier) < difficulty(harder)


def test_default_weights_sum_to_one() -> None:
    weights = DifficultyWeights()
    assert weights == DEFAULT_WEIGHTS
    assert weights.bias == 0.0
    total = sum(
        getattr(weights, f.name) for f in msgspec.structs.fields(weights) if f.name != "bias"
    )
    assert math.isclose(total, 1.0)


def test_difficulty_is_the_weighted_sum() -> None:
    f = features(CODE_DEBUG)
    weights = DifficultyWeights(
        length=0.1, questions=0.2, reasoning=0.1, math=0.3, code=0.2, domain=0.1, bias=0.05
    )
    expected = 0.05 + sum(
        w * x for w, x in zip(msgspec.structs.astuple(weights)[:-1], astuple(f), strict=True)
    )
    assert difficulty(CODE_DEBUG, weights) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("bias", "expected"),
    [pytest.param(5.0, 1.0, id="clamped at 1"), pytest.param(-5.0, 0.0, id="clamped at 0")],
)
def test_difficulty_is_clamped(bias: float, expected: float) -> None:
    weights = DifficultyWeights(bias=bias)
    assert difficulty(PROVE, weights) == expected
    assert confidence(PROVE, weights) == 1.0 - expected


@pytest.mark.parametrize("text", [HI, FRANCE, MEDICAL, PROVE, CODE_DEBUG, ""])
def test_confidence_is_one_minus_difficulty(text: str) -> None:
    assert confidence(text) == pytest.approx(1.0 - difficulty(text))
    weights = DifficultyWeights(bias=0.3)
    assert confidence(text, weights) == pytest.approx(1.0 - difficulty(text, weights))


def test_weights_and_features_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_WEIGHTS.code = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        features(HI).code = 1.0  # type: ignore[misc]


def _junk(rng: random.Random, size: int) -> str:
    alphabet = "ab1 \n\t$^`{};?=*/-_.()<>\"'#\\²∫é中"
    return "".join(rng.choice(alphabet) for _ in range(size))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " " * 50_000,
        "1" * 50_000,
        "$" * 50_000,
        "SELECT " * 10_000,
        "why " * 20_000,
        "step by " * 10_000,
        'File "' * 10_000,
        *(_junk(random.Random(seed), 20_000) for seed in range(3)),
    ],
    ids=lambda text: repr(text[:12]),
)
def test_features_stay_in_range_on_odd_input(text: str) -> None:
    for value in astuple(features(text)):
        assert 0.0 <= value <= 1.0
    assert 0.0 <= difficulty(text) <= 1.0


# --- the features one by one ----------------------------------------------------------------


def test_plain_prose_fires_no_content_feature() -> None:
    f = features(PLAIN_PROSE)
    assert (f.questions, f.reasoning, f.math, f.code, f.domain) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert f.length > 0.0


def test_empty_text_has_no_features() -> None:
    assert features("") == Features(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert difficulty("") == 0.0


@pytest.mark.parametrize(
    ("n_chars", "expected"),
    [(0, 0.0), (40, 0.0), (400, 0.5), (4000, 1.0), (100_000, 1.0)],
)
def test_length_is_log_scaled_and_saturates(n_chars: int, expected: float) -> None:
    assert features("a" * n_chars).length == pytest.approx(expected)


def test_length_ignores_surrounding_whitespace() -> None:
    assert features("  \n" * 100 + "short" + " " * 100).length == 0.0


@pytest.mark.parametrize(("marks", "expected"), [(0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)])
def test_questions_count_question_marks_up_to_four(marks: int, expected: float) -> None:
    text = " ".join(["Is it so?"] * marks) or "It is so."
    assert features(text).questions == expected


@pytest.mark.parametrize(
    "text",
    [
        "Solve it step by step.",
        "Go step-by-step.",
        "Prove the claim.",
        "Why not?",
        "WHY NOT?",
        "Explain it.",
        "Derive the formula.",
        "Compare these two.",
        "Analyze this.",
        "Analyse this.",
        "What are the trade-offs here?",
        "What is the tradeoff?",
        "Justify your choice.",
        "Evaluate the options.",
        "How does this work?",
        "List the pros and cons.",
        "Help me find the root cause.",
    ],
)
def test_reasoning_fires_on_markers(text: str) -> None:
    assert features(text).reasoning > 0.0


def test_reasoning_saturates_at_two_markers() -> None:
    assert features("Explain it.").reasoning == 0.5
    assert features("Explain why.").reasoning == 1.0
    assert features("Explain why, justify and compare.").reasoning == 1.0


@pytest.mark.parametrize(
    ("marker", "lookalike"),
    [
        pytest.param("How does it work here", "The knowhow does not transfer", id="knowhow"),
        pytest.param("Prove it", "Approve it and improve it", id="approve"),
        pytest.param("Why now", "Whyte lives here", id="whyte"),
        pytest.param("Explain it", "Unexplainable things", id="unexplainable"),
    ],
)
def test_reasoning_matches_whole_words_only(marker: str, lookalike: str) -> None:
    assert features(marker).reasoning > 0.0
    assert features(lookalike).reasoning == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "What is 12 * 7",
        "Compute 3.5+2",
        "If 2x + 3 = 7",
        "Then 10 - 3",
        "Plot x^2",
        "Expand (a+b)^n",
        r"Simplify \frac{1}{2}",
        r"Take \sqrt{2}",
        "Show $a^2 + b^2 = c^2$ holds",
        "Find the integral",
        "What is the probability",
        "Write the equation",
        "Solve for the unknown",
        "Calculate the total",
        "The square root of nine",
        "Minimise x² over the reals",
        "Since √2 is not rational",
        "For all n ≥ 1",
    ],
)
def test_math_fires_on_markers(text: str) -> None:
    assert features(text).math > 0.0


@pytest.mark.parametrize(
    "text",
    [
        PLAIN_PROSE,
        "We met on 2024-05-01 and again on 5/1/24.",
        "Version 1.2.3 shipped in room 12 on floor 3.",
        "It costs $5 and $7 with tax.",
        "I have 3 cats and 2 dogs.",
        "Hope all is well :-) see you at 10:30",
    ],
)
def test_math_does_not_fire_on_numbers_in_prose(text: str) -> None:
    assert features(text).math == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "```\nls -la\n```",
        "def area(r):\n    pi = 3.14\n",
        "class Shape:\n    pass",
        "if x:\n    return y",
        "const f = (x) => x + 1",
        "int main() {\n  puts(s);\n}",
        "#include <stdio.h>",
        "SELECT name, age FROM users",
        "Traceback (most recent call last):",
        '  File "app.py", line 3, in <module>',
        "Exception in thread main\n    at com.example.Foo.bar(Foo.java:10)",
        "TypeError: undefined is not a function",
        "java.lang.NullPointerException",
        "Segmentation fault (core dumped)",
        "import numpy as np",
        "from os import path",
        "console.log(x)",
        "<p>Hello</p>",
    ],
)
def test_code_fires_on_markers(text: str) -> None:
    assert features(text).code > 0.0


@pytest.mark.parametrize(
    "text",
    [
        PLAIN_PROSE,
        "I want to return my order; which class should I pick for the trip?",
        "Please select one option from the list and let me know by Friday.",
        "There was an error in the report, and the exception proves the rule.",
        "Import duties apply to goods from abroad.",
    ],
)
def test_code_does_not_fire_on_prose(text: str) -> None:
    assert features(text).code == 0.0


def test_code_saturates() -> None:
    assert features(CODE_DEBUG).code == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "What dosage is safe?",
        "Are these symptoms serious?",
        "Does the drug have side effects?",
        "My blood pressure is high.",
        "Who carries the liability?",
        "Should I file a lawsuit?",
        "Is this contract binding?",
        "Do I owe tax on it?",
        "Is this a good investment?",
        "Should I refinance my mortgage?",
        "What are the capital gains?",
        "My 401(k) is small.",
    ],
)
def test_domain_fires_on_high_stakes_words(text: str) -> None:
    assert features(text).domain > 0.0


@pytest.mark.parametrize(
    "text",
    [
        PLAIN_PROSE,
        "I took a taxi to the airport.",  # "taxi" is not "tax"
        "What is the capital of France?",  # "capital" alone is not "capital gains"
        "The stockade was built on a hill.",  # "stockade" is not "stock"
        "The cat was lost, and nobody had seen it since.",  # "lost", "since": no "sue"
    ],
)
def test_domain_matches_whole_words_only(text: str) -> None:
    assert features(text).domain == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "Pourquoi? Explain — why “this” happens.",
        "Erklären Sie: why does Straße differ? Explain it.",
    ],
)
def test_non_ascii_text_is_tokenised_too(text: str) -> None:
    assert features(text).reasoning == 1.0


def test_long_prompts_are_scanned_at_head_and_tail() -> None:
    filler = "lorem ipsum dolor sit amet " * (4 * SCAN_EDGE // 27)
    head = features("Prove this. Explain it. " + filler)
    tail = features(filler + " Prove this. Explain it.")
    middle = features(filler[: 2 * SCAN_EDGE] + " Prove this. Explain it. " + filler)
    assert head.reasoning == tail.reasoning == 1.0
    assert middle.reasoning == 0.0  # documented: the middle of a long prompt is skipped
    assert middle.length == 1.0  # length still counts the whole prompt


def test_scan_window_cut_does_not_join_words() -> None:
    # A word cut at the head boundary and a word cut at the tail boundary must not fuse
    # into a marker: "pro" + "ve" would read "prove" without the separator.
    head = "x" * (SCAN_EDGE - 4) + " pro"
    tail = "ve " + "z" * (SCAN_EDGE - 3)
    text = head + "y" * (2 * SCAN_EDGE) + tail
    assert len(head) == len(tail) == SCAN_EDGE
    assert features(head + tail).reasoning == 0.5  # joined, the halves do read "prove"
    assert features(text).reasoning == 0.0


# --- prompt_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"messages": [{"role": "user", "content": "hello"}]}, ("hello", ""), id="string content"
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "second"},
                    {"role": "assistant", "content": "done"},
                ]
            },
            ("second", "Be brief."),
            id="last user message",
        ),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look at"},
                            {"type": "image_url", "image_url": {"url": "data:..."}},
                            {"type": "text", "text": "this"},
                        ],
                    }
                ]
            },
            ("look at\nthis", ""),
            id="content parts, image skipped",
        ),
        pytest.param(
            {
                "messages": [
                    {"role": "system", "content": "One."},
                    {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
                    {"role": "user", "content": "q"},
                ]
            },
            ("q", "One.\nTwo."),
            id="system and developer joined",
        ),
        pytest.param({}, ("", ""), id="no messages"),
        pytest.param({"messages": "hello"}, ("", ""), id="messages not a list"),
        pytest.param({"messages": []}, ("", ""), id="empty messages"),
        pytest.param({"messages": [None, 3, "x", {"role": "user"}]}, ("", ""), id="odd messages"),
        pytest.param(
            {"messages": [{"role": "user", "content": None}]}, ("", ""), id="null content"
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": {"text": "x"}}]}, ("", ""), id="dict content"
        ),
        pytest.param(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": 5},
                            {"type": "text"},
                            {"text": "no type"},
                            None,
                            {"type": "text", "text": "kept"},
                        ],
                    }
                ]
            },
            ("kept", ""),
            id="odd parts",
        ),
        pytest.param(
            {"messages": [{"role": "system", "content": 7}, {"role": "user", "content": "u"}]},
            ("u", ""),
            id="odd system content",
        ),
    ],
)
def test_prompt_text(body: dict[str, object], expected: tuple[str, str]) -> None:
    assert prompt_text(body) == expected


def test_prompt_text_tolerates_a_non_mapping_body() -> None:
    assert prompt_text([1, 2]) == ("", "")  # type: ignore[arg-type]
