"""Quiz questions and the demo models' quiz mode (known accuracy, judge, confidence)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from ensemble_extproc import prompts
from ensemble_extproc.config.demo import DemoModel, parse_demo_models
from ensemble_extproc.demo import quiz
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.errors import ConfigError

QUESTIONS = quiz.generate(2000, seed=11)


@pytest.fixture
async def servers() -> AsyncIterator[DemoServers]:
    models = [
        DemoModel("quiz-70", 0, quiz_accuracy=0.7, seed=1),
        DemoModel("quiz-70-again", 0, quiz_accuracy=0.7, seed=1),
        DemoModel("quiz-70-other", 0, quiz_accuracy=0.7, seed=2),
        DemoModel("quiz-half", 0, quiz_accuracy=0.5, seed=3),
        DemoModel("quiz-perfect", 0, quiz_accuracy=1.0, seed=4),
        DemoModel("quiz-never", 0, quiz_accuracy=0.0, seed=5),
        DemoModel("plain", 0, answers=("canned {model}",), confidence_correct=0.7),
    ]
    async with await start_demo_servers(models) as running:
        yield running


async def ask(
    session: aiohttp.ClientSession, base: str, content: str, **extra: Any
) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def ask_all(
    session: aiohttp.ClientSession, base: str, contents: Sequence[str], **extra: Any
) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(ask(session, base, c, **extra) for c in contents)))


def text(data: dict[str, Any]) -> str:
    content: str = data["choices"][0]["message"]["content"]
    return content


def judge_pick(reply: str) -> int:
    numbers = re.findall(r"\d+", reply)
    assert len(numbers) == 1, reply
    return int(numbers[0])


# ------------------------------------------------------------------ questions


def test_generate_is_seeded_and_mixes_both_kinds() -> None:
    assert quiz.generate(50, seed=3) == quiz.generate(50, seed=3)
    assert quiz.generate(50, seed=3) != quiz.generate(50, seed=4)
    assert quiz.generate(0, seed=1) == []
    kinds = Counter(p.kind for p in QUESTIONS)
    assert 900 <= kinds["arithmetic"] <= 1100
    assert len({p.prompt for p in QUESTIONS}) == len(QUESTIONS)


def test_problems_are_well_formed() -> None:
    for problem in QUESTIONS:
        assert len(problem.distractors) == 3
        assert len(set(problem.distractors)) == 3
        assert problem.correct not in problem.distractors
        if problem.kind == "arithmetic":
            assert re.fullmatch(r"What is \d{2,3} [-+\u00d7] \d{2,3}\?", problem.prompt)
            assert problem.options == ()
            assert all(int(d) > 0 for d in (problem.correct, *problem.distractors))
        else:
            lines = problem.prompt.split("\n")
            assert re.fullmatch(r"Which number is \d{2,3} [-+\u00d7] \d{2,3}\?", lines[0])
            assert lines[1:] == [
                f"({letter}) {value}"
                for letter, value in zip(quiz.LETTERS, problem.options, strict=True)
            ]
            assert sorted((problem.correct, *problem.distractors)) == list(quiz.LETTERS)
            assert len(set(problem.options)) == 4


def test_correct_values_and_uniform_letters() -> None:
    for problem in QUESTIONS[:200]:
        a, op, b = re.findall(r"(\d+) (\S) (\d+)\?", problem.prompt)[0]
        value = {"+": int(a) + int(b), "-": int(a) - int(b)}.get(op, int(a) * int(b))
        if problem.kind == "arithmetic":
            assert problem.correct == str(value)
        else:
            assert problem.options[quiz.LETTERS.index(problem.correct)] == str(value)
    letters = Counter(p.correct for p in QUESTIONS if p.kind == "choice")
    assert set(letters) == set(quiz.LETTERS)
    assert all(190 <= n <= 310 for n in letters.values()), letters


def test_parse_recovers_the_problem_from_any_surrounding_text() -> None:
    candidates = ["The answer is 5.", "What else? 7"]
    for problem in QUESTIONS[:100]:
        assert quiz.parse(problem.prompt) == problem
        assert quiz.parse(f"Please help.\n{problem.prompt}\nThanks!") == problem
        judge = prompts.candidates_prompt(prompts.JUDGE_INSTRUCTION, problem.prompt, candidates)
        assert quiz.parse(judge) == problem
    first, second = QUESTIONS[0], QUESTIONS[1]
    assert quiz.parse(f"{first.prompt}\n\n{second.prompt}") == first


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello there",
        "What is the capital of France?",
        "What is 12 / 4?",
        "Which number is 12 + 7?\n(A) 1\n(B) 2\n(C) 3\n(D) 4",  # no option is right
        "Which number is 12 + 7?\n(A) 19\n(B) 19\n(C) 3\n(D) 4",  # two options are
    ],
)
def test_parse_rejects_other_text(text: str) -> None:
    assert quiz.parse(text) is None


def test_parse_accepts_star_for_a_product() -> None:
    problem = quiz.parse("What is 12 * 7?")
    assert problem is not None
    assert problem.correct == "84"
    assert problem.distractors == quiz.parse("What is 12 \u00d7 7?").distractors  # type: ignore[union-attr]


def test_every_style_states_exactly_its_answer() -> None:
    for problem in QUESTIONS[:300]:
        for answer in (problem.correct, *problem.distractors):
            texts = {quiz.render(problem, answer, style) for style in range(quiz.STYLE_COUNT)}
            assert len(texts) == quiz.STYLE_COUNT  # really different formats
            for rendered in texts:
                assert quiz.final_answer(problem, rendered) == answer, rendered
    assert quiz.STYLE_COUNT >= 8


def test_every_long_style_is_a_chain_of_thought_stating_its_answer() -> None:
    sizes = []
    for index, problem in enumerate(QUESTIONS[:200]):
        for answer in (problem.correct, *problem.distractors):
            for style in range(quiz.LONG_STYLE_COUNT):
                rendered = quiz.render_long(problem, answer, style, random.Random(index))
                sizes.append(len(rendered))
                assert quiz.final_answer(problem, rendered) == answer, rendered[-200:]
                # Other numbers come before the answer.
                assert len(re.findall(r"[0-9]+", rendered)) >= 4
    assert min(sizes) >= 1000
    assert max(sizes) <= 4096
    choice = next(p for p in QUESTIONS if p.kind == "choice")
    with pytest.raises(ValueError, match="A-D"):
        quiz.render_long(choice, "9", 0, random.Random(0))


def test_render_examples_and_bad_answers() -> None:
    arithmetic = quiz.parse("What is 37 + 45?")
    choice = quiz.parse("Which number is 12 \u00d7 7?\n(A) 84\n(B) 86\n(C) 74\n(D) 94")
    assert arithmetic is not None
    assert choice is not None
    assert quiz.render(arithmetic, "82", 1) == "The answer is 82."
    assert quiz.render(arithmetic, "82", 2) == "\\boxed{82}"
    assert quiz.render(choice, "B", 4) == "The correct answer is (B)."
    assert quiz.render(arithmetic, "82", quiz.STYLE_COUNT) == quiz.render(arithmetic, "82", 0)
    with pytest.raises(ValueError, match="integer"):
        quiz.render(arithmetic, "B", 0)
    with pytest.raises(ValueError, match="A-D"):
        quiz.render(choice, "84", 0)


def test_is_correct_and_final_answer() -> None:
    arithmetic = quiz.parse("What is 37 + 45?")
    choice = quiz.parse("Which number is 12 \u00d7 7?\n(A) 86\n(B) 84\n(C) 74\n(D) 94")
    assert arithmetic is not None
    assert choice is not None
    assert quiz.is_correct(arithmetic, "82")
    assert quiz.is_correct(arithmetic, " 82.0 ")
    assert quiz.is_correct(arithmetic, "$82")
    assert not quiz.is_correct(arithmetic, "83")
    assert not quiz.is_correct(arithmetic, "eighty-two")
    assert quiz.is_correct(choice, "b")
    assert quiz.is_correct(choice, "(B)")
    assert quiz.is_correct(choice, "84")  # the right option's value
    assert not quiz.is_correct(choice, "A")
    assert not quiz.is_correct(choice, "85")
    assert quiz.final_answer(arithmetic, "37 + 45 is 81... no wait, 82") == "82"
    assert quiz.final_answer(arithmetic, "I think 80, Answer: 82, as 37 + 45 = 82") == "82"
    assert quiz.final_answer(arithmetic, "no idea") is None
    assert quiz.final_answer(choice, "It must be 84") == "B"
    assert quiz.final_answer(choice, "**C**") == "C"


# ----------------------------------------------------------------- quiz answers


async def test_accuracy_matches_quiz_accuracy(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    replies = await ask_all(session, servers.urls["quiz-70"], [p.prompt for p in QUESTIONS])
    answers = [quiz.final_answer(p, text(r)) for p, r in zip(QUESTIONS, replies, strict=True)]
    right = sum(a == p.correct for p, a in zip(QUESTIONS, answers, strict=True))
    assert abs(right / len(QUESTIONS) - 0.7) <= 0.03
    # Every wrong answer is one of the problem's distractors, each about equally often.
    positions = Counter(
        p.distractors.index(a) for p, a in zip(QUESTIONS, answers, strict=True) if a != p.correct
    )
    assert sum(positions.values()) == len(QUESTIONS) - right
    assert all(abs(n / (len(QUESTIONS) - right) - 1 / 3) < 0.06 for n in positions.values())
    # The formats vary.
    assert len({re.sub(r"\d+|\b[A-D]\b", "#", text(r)) for r in replies}) >= 8


@pytest.mark.parametrize(("model", "expected"), [("quiz-perfect", 1.0), ("quiz-never", 0.0)])
async def test_accuracy_bounds(
    servers: DemoServers, session: aiohttp.ClientSession, model: str, expected: float
) -> None:
    sample = QUESTIONS[:100]
    replies = await ask_all(session, servers.urls[model], [p.prompt for p in sample])
    right = [
        quiz.final_answer(p, text(r)) == p.correct for p, r in zip(sample, replies, strict=True)
    ]
    assert sum(right) / len(sample) == expected


async def test_answers_are_reproducible_and_seeded(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    sample = [p.prompt for p in QUESTIONS[:60]]
    first = [text(r) for r in await ask_all(session, servers.urls["quiz-70"], sample)]
    again = [text(r) for r in await ask_all(session, servers.urls["quiz-70"], sample)]
    same_seed = [text(r) for r in await ask_all(session, servers.urls["quiz-70-again"], sample)]
    other_seed = [text(r) for r in await ask_all(session, servers.urls["quiz-70-other"], sample)]
    assert first == again == same_seed
    assert sum(a != b for a, b in zip(first, other_seed, strict=True)) > 30
    async with await start_demo_servers(
        [DemoModel("quiz-70", 0, quiz_accuracy=0.7, seed=1)]
    ) as new:
        restarted = [text(r) for r in await ask_all(session, new.urls["quiz-70"], sample)]
    assert restarted == first


async def test_quiz_question_inside_a_longer_message_is_answered(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    problem = QUESTIONS[0]
    content = f"Solve this, please:\n\n{problem.prompt}\n\nReply briefly."
    reply = await ask(session, servers.urls["quiz-perfect"], content)
    assert quiz.final_answer(problem, text(reply)) == problem.correct


async def test_step_by_step_prompts_get_a_chain_of_thought(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    problem = QUESTIONS[0]
    content = f"{problem.prompt}\n\n{quiz.STEP_BY_STEP}"
    reply = await ask(session, servers.urls["quiz-perfect"], content)
    assert len(text(reply)) >= 1000
    assert quiz.final_answer(problem, text(reply)) == problem.correct
    short = await ask(session, servers.urls["quiz-perfect"], problem.prompt)
    assert len(text(short)) < 200


async def test_non_quiz_prompts_and_models_keep_canned_answers(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    reply = await ask(session, servers.urls["quiz-perfect"], "hello there")
    assert text(reply) == "This is a demo answer from quiz-perfect."
    reply = await ask(session, servers.urls["plain"], QUESTIONS[0].prompt)
    assert text(reply) == "canned plain"
    assert reply["choices"][0]["logprobs"] is None


# -------------------------------------------------------------------- logprobs


def mean_probability(data: dict[str, Any]) -> float:
    entries = data["choices"][0]["logprobs"]["content"]
    return sum(math.exp(e["logprob"]) for e in entries) / len(entries)


async def test_logprobs_shape_and_confidence(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    sample = QUESTIONS[:200]
    replies = await ask_all(
        session, servers.urls["quiz-half"], [p.prompt for p in sample], logprobs=True
    )
    by_rightness: dict[bool, list[float]] = {True: [], False: []}
    for problem, reply in zip(sample, replies, strict=True):
        entries = reply["choices"][0]["logprobs"]["content"]
        assert "".join(e["token"] for e in entries) == text(reply)
        assert len(entries) == reply["usage"]["completion_tokens"] == len(text(reply).split())
        for entry in entries:
            assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
            assert entry["bytes"] is None
            assert entry["top_logprobs"] == []
            assert math.log(0.01) - 1e-9 <= entry["logprob"] <= math.log(0.99) + 1e-9
        right = quiz.final_answer(problem, text(reply)) == problem.correct
        by_rightness[right].append(mean_probability(reply))
    assert all(0.85 - 1e-9 <= c <= 0.95 + 1e-9 for c in by_rightness[True])
    assert all(0.55 - 1e-9 <= c <= 0.65 + 1e-9 for c in by_rightness[False])
    for confidences, centre in ((by_rightness[True], 0.9), (by_rightness[False], 0.6)):
        assert len(confidences) > 50
        assert abs(sum(confidences) / len(confidences) - centre) < 0.015
        assert len({round(c, 6) for c in confidences}) > 10  # jittered, not constant
    # Reproducible, like the answers.
    again = await ask(session, servers.urls["quiz-half"], sample[0].prompt, logprobs=True)
    assert again["choices"][0]["logprobs"] == replies[0]["choices"][0]["logprobs"]


async def test_logprobs_for_canned_answers_truncation_and_streams(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    base = servers.urls["plain"]
    reply = await ask(session, base, "hello there", logprobs=True)
    assert 0.65 - 1e-9 <= mean_probability(reply) <= 0.75 + 1e-9  # its confidence_correct
    assert (await ask(session, base, "hello", logprobs=False))["choices"][0]["logprobs"] is None
    cut = await ask(
        session, servers.urls["quiz-70"], QUESTIONS[2].prompt, logprobs=True, max_tokens=1
    )
    assert len(cut["choices"][0]["logprobs"]["content"]) == 1
    body = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "stream": True}
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        events = (await resp.text()).split("\n\n")
    chunks = [json.loads(e.removeprefix("data: ")) for e in events if e and "[DONE]" not in e]
    assert chunks
    # Streamed with logprobs: each content chunk carries those of its piece.
    assert chunks[0]["choices"][0]["logprobs"] is None  # the role chunk
    assert chunks[-1]["choices"][0]["logprobs"] is None  # the finish_reason chunk
    assert all(len(c["choices"][0]["logprobs"]["content"]) == 1 for c in chunks[1:-1])
    async with session.post(
        f"{base}/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "logprobs": "yes"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "logprobs"


# ----------------------------------------------------------- judge, aggregator


def judge_prompt(problem: quiz.Problem, answers: Sequence[str], styles: Sequence[int]) -> str:
    candidates = [
        quiz.render(problem, answer, style) for answer, style in zip(answers, styles, strict=True)
    ]
    return prompts.candidates_prompt(prompts.JUDGE_INSTRUCTION, problem.prompt, candidates)


async def test_perfect_judge_picks_the_first_right_candidate(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    sample = QUESTIONS[:200]
    cases = []
    for i, problem in enumerate(sample):
        wrong = problem.distractors
        answers = [wrong[0], wrong[1], problem.correct, wrong[2], problem.correct]
        # Rotate, so the right candidate is at every position.
        shift = i % 5
        answers = answers[shift:] + answers[:shift]
        styles = [(i + k) % quiz.STYLE_COUNT for k in range(5)]
        cases.append((judge_prompt(problem, answers, styles), answers.index(problem.correct) + 1))
    replies = await ask_all(
        session, servers.urls["quiz-perfect"], [c[0] for c in cases], logprobs=True
    )
    formats = set()
    for (_, expected), reply in zip(cases, replies, strict=True):
        assert judge_pick(text(reply)) == expected
        assert mean_probability(reply) >= 0.85 - 1e-9
        formats.add(re.sub(r"\d+", "#", text(reply)))
    assert formats == {"#", "Candidate #", '{"best": #}', "The best is Candidate #."}


async def test_judge_accuracy_and_wrong_picks(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    sample = QUESTIONS[:400]
    prompts_and_right = []
    for i, problem in enumerate(sample):
        answers = [problem.distractors[0], problem.correct, problem.distractors[1]]
        prompts_and_right.append((judge_prompt(problem, answers, [i, i + 1, i + 2]), 2))
    replies = await ask_all(session, servers.urls["quiz-70"], [p for p, _ in prompts_and_right])
    picks = [judge_pick(text(r)) for r in replies]
    assert abs(picks.count(2) / len(picks) - 0.7) < 0.06
    assert set(picks) == {1, 2, 3}
    never = await ask_all(session, servers.urls["quiz-never"], [p for p, _ in prompts_and_right])
    assert 2 not in {judge_pick(text(r)) for r in never}


async def test_judge_without_right_candidate_picks_any(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    contents = [
        judge_prompt(p, list(p.distractors), [i, i, i]) for i, p in enumerate(QUESTIONS[:60])
    ]
    replies = await ask_all(session, servers.urls["quiz-perfect"], contents, logprobs=True)
    assert {judge_pick(text(r)) for r in replies} == {1, 2, 3}
    assert all(mean_probability(r) <= 0.65 + 1e-9 for r in replies)


async def test_aggregator_answers_the_embedded_question(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    sample = QUESTIONS[:100]
    contents = [
        prompts.candidates_prompt(
            prompts.AGGREGATOR_INSTRUCTION,
            p.prompt,
            [quiz.render(p, d, i) for d in p.distractors],
        )
        for i, p in enumerate(sample)
    ]
    replies = await ask_all(session, servers.urls["quiz-perfect"], contents)
    assert all(
        quiz.final_answer(p, text(r)) == p.correct for p, r in zip(sample, replies, strict=True)
    )
    # Not a judge: the reply is an answer, not a candidate number.
    assert not any(text(r).startswith("Candidate") for r in replies)


# --------------------------------------------------------------- configuration


def test_parse_quiz_settings_and_defaults() -> None:
    raw = [
        {
            "name": "q",
            "port": 0,
            "quiz_accuracy": 0.75,
            "confidence_correct": 0.8,
            "confidence_wrong": 0.3,
        },
        {"name": "q-off", "port": 0, "quiz_accuracy": None},
        {"name": "q-int", "port": 0, "quiz_accuracy": 1},
    ]
    full, off, whole = parse_demo_models(raw)
    assert full == DemoModel(
        "q", 0, quiz_accuracy=0.75, confidence_correct=0.8, confidence_wrong=0.3
    )
    assert off == DemoModel("q-off", 0)
    assert (off.quiz_accuracy, off.confidence_correct, off.confidence_wrong) == (None, 0.9, 0.6)
    assert whole.quiz_accuracy == 1.0


OK = {"name": "demo-a", "port": 0}


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ([{**OK, "quiz_accuracy": 1.2}], "demo.models[0].quiz_accuracy", "between 0 and 1"),
        ([{**OK, "quiz_accuracy": -0.1}], "demo.models[0].quiz_accuracy", "between 0 and 1"),
        ([{**OK, "quiz_accuracy": "70%"}], "demo.models[0].quiz_accuracy", "must be a number"),
        ([{**OK, "quiz_accuracy": True}], "demo.models[0].quiz_accuracy", "must be a number"),
        (
            [OK, {"name": "b", "port": 0, "confidence_correct": 1.0}],
            "demo.models[1].confidence_correct",
            "strictly between 0 and 1",
        ),
        ([{**OK, "confidence_wrong": 0}], "demo.models[0].confidence_wrong", "strictly between"),
        ([{**OK, "confidence_wrong": None}], "demo.models[0].confidence_wrong", "got null"),
        ([{**OK, "quiz_acuracy": 0.5}], "demo.models[0].quiz_acuracy", "'quiz_accuracy'"),
    ],
)
def test_quiz_settings_errors_name_the_key(raw: object, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_demo_models(raw)
    assert caught.value.key == key
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"quiz_accuracy": 2.0}, {"confidence_correct": 0.0}, {"confidence_wrong": 1.5}],
)
def test_demo_model_rejects_invalid_quiz_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DemoModel("demo-a", 0, **kwargs)
