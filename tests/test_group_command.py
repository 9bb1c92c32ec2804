"""``ensemble-extproc group``: the real command, JSON on stdin, groups on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import answer_table
from ensemble_extproc.group_command import groups_of


def run_group(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ensemble_extproc", "group", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


def test_group_prints_groups_strongest_first() -> None:
    answers = [
        "y = 3x + 5",
        "y = -x + 5",
        "The equation is $\\boxed{y = 3x+5}$.",
        "The answer is 42 (6 groups of 7).",
        "7",
        "",
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f"}}]},
    ]
    done = run_group(json.dumps(answers))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"answer": "y=3x+5", "kind": "math", "votes": 2, "indices": [0, 2]},
        {"answer": "y=-x+5", "kind": "math", "votes": 1, "indices": [1]},
        {"answer": "42", "kind": "number", "votes": 1, "indices": [3]},
        {"answer": "7", "kind": "number", "votes": 1, "indices": [4]},
        {"answer": "", "kind": "empty", "votes": 1, "indices": [5]},
        {"answer": '[["f",""]]', "kind": "tool_calls", "votes": 1, "indices": [6]},
    ]


def test_similarity_comes_from_the_flag_or_the_config(tmp_path: Path) -> None:
    answers = json.dumps(["colour of the sky is blue", "color of the sky is blue"])
    assert len(json.loads(run_group(answers).stdout)) == 1
    assert len(json.loads(run_group(answers, "--similarity", "1").stdout)) == 2
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  - {name: a, url: 'http://127.0.0.1:9/v1'}\n"
        "ensemble:\n  similarity_threshold: 1.0\n"
    )
    assert len(json.loads(run_group(answers, "--config", str(config)).stdout)) == 2


@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        ("not json", (), "not JSON"),
        ('{"a": 1}', (), "JSON list"),
        ("[1]", (), "answer 0 must be a string or a message object"),
        ('["x"]', ("--similarity", "0"), "--similarity must be in (0, 1]"),
        ('["x"]', ("--config", "/nonexistent.yaml"), "nonexistent"),
    ],
)
def test_bad_input_is_a_clear_error(stdin: str, args: tuple[str, ...], message: str) -> None:
    done = run_group(stdin, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def _grouper(texts: Sequence[str]) -> list[list[int]]:
    return [g["indices"] for g in groups_of(list(texts), 0.9)]


def test_the_answer_table_through_the_command_code() -> None:
    score = answer_table.score(_grouper)
    assert score.false_merges == []
    assert score.accuracy >= 0.97, "\n".join(score.wrong_rows)


def test_one_table_question_through_the_real_command() -> None:
    groups = answer_table.QUESTIONS["mmlu capital"]
    texts = [text for answers in groups.values() for text in answers]
    labels = [label for label, answers in groups.items() for _ in answers]
    done = run_group(json.dumps(texts))
    assert done.returncode == 0, done.stderr
    found = [sorted(labels[i] for i in g["indices"]) for g in json.loads(done.stdout)]
    assert found == [[label] * len(answers) for label, answers in groups.items()]
