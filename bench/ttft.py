"""Streaming time to first chunk through a running gateway, with the official openai SDK.

    make run            # in one terminal (demo models of 10, 50 and 100 ms)
    python -m bench.ttft [--url http://127.0.0.1:10000] [--requests 20]

Load pattern: one request at a time, cases interleaved, 5 warm-up rounds not counted;
the time from the call to the first chunk with content, measured by the client.
"""

from __future__ import annotations

import argparse
import statistics
import time

import openai

MEMBERS = "demo-slow,demo-medium,demo-fast"
CASES = {
    "first_success over 10/50/100 ms models (relayed live)": {
        "x-ensemble-models": MEMBERS,
        "x-ensemble-strategy": "first_success",
    },
    "voting over the same, quorum 3 (decide, then stream)": {
        "x-ensemble-models": MEMBERS,
        "x-ensemble-strategy": "voting",
        "x-ensemble-min-responses": "3",
    },
    "demo-slow alone (100 ms)": {"x-ensemble-models": "demo-slow"},
    "demo-fast alone (10 ms)": {"x-ensemble-models": "demo-fast"},
}


def first_chunk_ms(client: openai.OpenAI, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "Capital of France?"}],
        stream=True,
        extra_headers=headers,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            elapsed = (time.perf_counter() - started) * 1000
            stream.close()
            return elapsed
    raise RuntimeError("the stream had no content")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:10000")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=f"{args.url}/v1", api_key="unused", max_retries=0)
    results: dict[str, list[float]] = {name: [] for name in CASES}
    for round_ in range(args.requests + 5):
        for name, headers in CASES.items():
            elapsed = first_chunk_ms(client, headers)
            if round_ >= 5:
                results[name].append(elapsed)
    print("| case | time to first chunk p50 ms | p90 ms |")
    print("|---|---:|---:|")
    for name, values in results.items():
        values.sort()
        p90 = values[int(len(values) * 0.9) - 1]
        print(f"| {name} | {statistics.median(values):.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
