"""Grouping extracted answers: which answers agree.

Non-text answers group by (kind, key) exactly: a number never meets a choice, ``x+1``
never meets ``1``. Free text groups by equal keys, and merges with similar texts (see
``text.similar``) only when EVERY pair in the merged group is similar: when a third
answer is similar to two that are not similar to each other, nothing is merged beyond
equal keys. The groups depend only on the set of answers, never on their order, and a
later answer can split a merged text group but never merge two groups.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

from .model import Answer
from .text import similar

T = TypeVar("T", int, str)


def group(answers: Sequence[Answer], similarity: float = 0.9) -> list[int]:
    """The group index of each answer: 0, 1, 2, ... in order of first appearance.

    ``similarity`` (in (0, 1]) is the character similarity free texts need at least;
    1.0 merges equal keys only. Empty answers never merge with anything.
    """
    if not 0 < similarity <= 1 or math.isnan(similarity):
        raise ValueError(f"similarity must be in (0, 1], got {similarity!r}")
    # Exact buckets first: equal (kind, key) always agree.
    bucket_of: dict[tuple[str, str], int] = {}
    buckets: list[tuple[str, str]] = []
    member_bucket: list[int] = []
    for index, answer in enumerate(answers):
        if answer.kind == "empty":
            buckets.append(("empty", str(index)))
            member_bucket.append(len(buckets) - 1)
            continue
        identity = (answer.kind, answer.key)
        if identity not in bucket_of:
            bucket_of[identity] = len(buckets)
            buckets.append(identity)
        member_bucket.append(bucket_of[identity])
    merged = _merge_texts(buckets, similarity)
    numbering: dict[int, int] = {}
    return [numbering.setdefault(merged[b], len(numbering)) for b in member_bucket]


def _merge_texts(buckets: Sequence[tuple[str, str]], similarity: float) -> list[int]:
    """For each bucket, the bucket it merges into (itself unless a text clique joins it)."""
    parent = list(range(len(buckets)))
    texts = [i for i, (kind, _) in enumerate(buckets) if kind == "text"]
    if len(texts) < 2 or similarity >= 1:
        return parent
    edges = {
        (a, b)
        for a, b in itertools.combinations(texts, 2)
        if similar(buckets[a][1], buckets[b][1], similarity)
    }
    if not edges:
        return parent
    for members in components(edges):
        if all((a, b) in edges for a, b in itertools.combinations(members, 2)):
            for member in members:
                parent[member] = members[0]
    return parent


def components(edges: Iterable[tuple[T, T]]) -> tuple[tuple[T, ...], ...]:
    """The connected components of the graph of ``edges`` (those of two nodes or more),
    each sorted, in sorted order."""
    parent: dict[T, T] = {}

    def root(x: T) -> T:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    found: dict[T, list[T]] = {}
    for node in parent:
        found.setdefault(root(node), []).append(node)
    return tuple(sorted(tuple(sorted(c)) for c in found.values() if len(c) > 1))
