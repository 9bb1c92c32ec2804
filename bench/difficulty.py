"""Micro-benchmark of ``difficulty()``: microseconds per call by prompt size.

Run with ``python -m bench.difficulty``. Not a test: timings depend on the machine.

Load pattern: one thread, calls back to back with nothing else running in the process
(no event loop, no concurrency), garbage collection paused while timing. For each size a
fixed set of generated prompts (chat, code, mathematics and mixed, ASCII) is cycled
through; a run times enough calls to last at least ``--min-time`` seconds, and the table
shows the median (and the fastest and slowest) per-call time of ``--runs`` runs, after one
warm-up run. A second table times deliberately awkward 64 KB inputs, to show that the
work stays bounded.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import time
from collections.abc import Sequence

from ensemble_extproc.adaptive.difficulty import SCAN_EDGE, difficulty

SIZES = (("100 B", 100), ("1 KB", 1024), ("8 KB", 8 * 1024), ("64 KB", 64 * 1024))
PROMPTS_PER_SIZE = 8

_PROSE = (
    "The team met on Tuesday to go over the plan for the next quarter. ",
    "We walked along the river and stopped for coffee near the old bridge. ",
    "Thanks for the quick reply, that makes a lot of sense to me now. ",
    "The report is attached; the figures are in the second section. ",
    "My sister says the garden is full of tomatoes again this year. ",
)
_QUESTIONS = (
    "What do you think we should do next? ",
    "Can you summarise the main points? ",
    "Why does this happen, and how would you fix it? ",
    "Could you explain the trade-offs step by step? ",
)
_CODE = (
    "```python\ndef load(path):\n    with open(path) as f:\n        return f.read()\n```\n",
    "const total = items.reduce((sum, x) => sum + x.price, 0);\n",
    "SELECT id, name FROM users WHERE active = 1;\n",
    "Traceback (most recent call last):\n  File \"app.py\", line 12, in main\nKeyError: 'id'\n",
)
_MATH = (
    "Prove that the sum of the first n odd numbers is n^2. ",
    "Solve 3x + 7 = 22 and check the answer. ",
    r"Evaluate the integral $\int_0^1 x^2 \, dx$ and explain each step. ",
    "What is the probability of two sixes in a row? ",
)
_DOMAIN = (
    "What is a safe dosage of ibuprofen with kidney disease? ",
    "Does the contract limit my liability if the tenant sues? ",
    "Should I refinance my mortgage or pay down other debt first? ",
)
_MIXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (_PROSE, _PROSE, _PROSE, _QUESTIONS),
    "code": (_PROSE, _CODE, _CODE, _QUESTIONS),
    "math": (_PROSE, _MATH, _MATH, _QUESTIONS),
    "mixed": (_PROSE, _QUESTIONS, _CODE, _MATH, _DOMAIN),
}


def generate_prompt(size: int, mix: str, seed: int) -> str:
    """An ASCII prompt of exactly ``size`` bytes, built from fragments of ``mix``."""
    rng = random.Random(seed)
    pools = _MIXES[mix]
    parts: list[str] = []
    length = 0
    while length < size:
        fragment = rng.choice(rng.choice(pools))
        parts.append(fragment)
        length += len(fragment)
    return "".join(parts)[:size]


def prompt_set(size: int) -> list[str]:
    mixes = sorted(_MIXES)
    return [
        generate_prompt(size, mixes[i % len(mixes)], seed=size * 100 + i)
        for i in range(PROMPTS_PER_SIZE)
    ]


def adversarial_inputs(size: int = 64 * 1024) -> dict[str, str]:
    """Inputs shaped to stress the patterns: long runs the regexes must not re-scan."""
    return {
        "one long digit run": "1" * size,
        "digits and spaces": "1 " * (size // 2),
        "dollar signs": "$x" * (size // 2),
        "SELECT without FROM": "SELECT " * (size // 7),
        'unclosed File "': 'File "' * (size // 6),
        "marker words only": "why " * (size // 4),
        "pair-start words only": "in " * (size // 3),
        "indentation": "\n\t " * (size // 3),
        "non-ASCII symbols": "x²∫√ " * (size // 5),
    }


def time_per_call(prompts: Sequence[str], runs: int, min_time: float) -> list[float]:
    """Microseconds per ``difficulty()`` call, one figure per run."""

    def run(loops: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(loops):
            for prompt in prompts:
                difficulty(prompt)
        return (time.perf_counter_ns() - start) / 1000 / (loops * len(prompts))

    loops = 1
    while run(loops) * loops * len(prompts) < min_time * 1e6:  # calibrate (and warm up)
        loops *= 2
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return [run(loops) for _ in range(runs)]
    finally:
        if gc_was_enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.difficulty", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per row (default 7)")
    parser.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per run, at least (default 0.05)"
    )
    args = parser.parse_args(argv)

    print(
        f"difficulty() on Python {platform.python_version()} ({platform.machine()}); "
        f"single thread, back-to-back calls, GC paused; median of {args.runs} runs "
        f"of >= {args.min_time * 1000:g} ms each; prompts over {2 * SCAN_EDGE} chars "
        f"are scanned at head and tail only.\n"
    )
    print("| prompt size | prompts | median µs/call | fastest run | slowest run |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for label, size in SIZES:
        prompts = prompt_set(size)
        times = time_per_call(prompts, args.runs, args.min_time)
        print(
            f"| {label} | {len(prompts)} | {statistics.median(times):.1f} "
            f"| {min(times):.1f} | {max(times):.1f} |"
        )

    print("\n| awkward 64 KB input | median µs/call |")
    print("| --- | ---: |")
    for name, text in adversarial_inputs().items():
        times = time_per_call([text], args.runs, args.min_time)
        print(f"| {name} | {statistics.median(times):.1f} |")


if __name__ == "__main__":
    main()
