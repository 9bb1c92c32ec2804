"""What extracting and grouping answers costs: per answer, per 5-model vote, per bad input.

Short answers are the quiz models' tidy styles; 3 KB answers are their chains of thought
(demo.quiz.render_long, 2.9-3.1 KB). Each extraction is timed on its own (one thread,
back-to-back, after a warm-up), so the figures are what one answer costs the event loop.
The baseline, measured in the same run on the same texts, is ``json.loads`` of the
completion body that carried the answer, which the upstream parses anyway.

    python -m bench.answers [--answers 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from bench.speedkit import table
from ensemble_extproc.answers import extract, group, message_answer
from ensemble_extproc.demo import quiz

MB = 1_000_000
BAD_INPUTS = {
    "empty": "",
    "1 MB of prose": ("The quick brown fox jumps over 3 lazy dogs. " * 30_000)[:MB],
    "1 MB of digits": "1" * MB,
    "nested LaTeX in a box (5,000 levels)": "\\boxed{" + "\\frac{1}{" * 5_000 + "2" + "}" * 5_001,
    "\\frac{ x 10,000": "\\frac{" * 10_000,
    "unbalanced braces, 1 MB": "}{" * (MB // 2),
    "'answer:' x 125,000": "answer: " * (MB // 8),
    "1 MB of $x$": "$x$ " * (MB // 4),
}


def texts(count: int, seed: int, long: bool) -> list[str]:
    rng = random.Random(seed)
    problems = quiz.generate(count, seed)
    out = []
    for problem in problems:
        answer = rng.choice([problem.correct, *problem.distractors])
        if long:
            text = ""
            while not 2900 <= len(text) <= 3100:
                style = rng.randrange(quiz.LONG_STYLE_COUNT)
                text = quiz.render_long(problem, answer, style, rng)
        else:
            text = quiz.render(problem, answer, rng.randrange(quiz.STYLE_COUNT))
        out.append(text)
    return out


def body(text: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 700, "total_tokens": 720},
        }
    )


def timings(function: Callable[[str], object], inputs: Sequence[str]) -> list[float]:
    for text in inputs[:50]:
        function(text)  # warm-up
    out = []
    for text in inputs:
        started = time.perf_counter()
        function(text)
        out.append(time.perf_counter() - started)
    return out


def stats(seconds: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return 1e6 * statistics.median(ordered), 1e6 * p99, 1e6 * ordered[-1]


def vote_cost(inputs: Sequence[str]) -> list[float]:
    """Five answers as voting sees them: extracted once each, then grouped."""
    out = []
    for start in range(0, len(inputs) - 4, 5):
        five = inputs[start : start + 5]
        began = time.perf_counter()
        answers = [message_answer({"role": "assistant", "content": t}) for t in five]
        group(answers)
        out.append(time.perf_counter() - began)
    return out


def run(count: int, seed: int) -> str:
    rows = []
    for label, long in (("short", False), ("3 KB chain of thought", True)):
        inputs = texts(count, seed, long)
        bodies = [body(t) for t in inputs]
        median, p99, worst = stats(timings(extract, inputs))
        base_median, _, _ = stats(timings(json.loads, bodies))
        vote_median, vote_p99, _ = stats(vote_cost(inputs))
        size = statistics.median(len(t) for t in inputs)
        rows.append(
            [
                label,
                f"{size:.0f}",
                f"{median:.1f}",
                f"{p99:.1f}",
                f"{worst:.1f}",
                f"{base_median:.1f}",
                f"{median / base_median:.2f}",
                f"{vote_median:.1f}",
                f"{vote_p99:.1f}",
            ]
        )
    main = table(
        [
            "answers",
            "median chars",
            "extract median us",
            "p99 us",
            "max us",
            "json.loads of its body, median us",
            "ratio",
            "5-model vote (5 extractions + grouping) median us",
            "p99 us",
        ],
        "lrrrrrrrr",
        rows,
    )
    bad_rows = []
    for name, text in BAD_INPUTS.items():
        seconds = timings(extract, [text] * 5)
        answer = extract(text)
        base = timings(json.loads, [json.dumps(text)] * 5)
        bad_rows.append(
            [
                name,
                f"{len(text):,}",
                f"{1e3 * max(seconds):.2f}",
                f"{1e3 * statistics.median(base):.2f}",
                answer.kind,
            ]
        )
    bad = table(
        ["bad input", "chars", "extract max ms (5 runs)", "json.loads of it, median ms", "read as"],
        "lrrrl",
        bad_rows,
    )
    return (
        f"Extraction cost per answer ({count} answers each, seed {seed}).\n"
        "Load: one thread, back-to-back, each answer timed alone after a warm-up.\n\n"
        f"{main}\n\n{bad}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.answers", description=__doc__)
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(run(args.answers, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
