"""Demo model definitions and the validation of their YAML configuration.

A demo model is a canned, OpenAI-compatible backend: it is what the gateway talks
to when no real LLM is configured, and what the test suite uses as model endpoints.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from ..errors import ConfigError

__all__ = ["DEFAULT_ANSWER", "MAX_LATENCY_MS", "DemoModel", "parse_demo_models"]

DEFAULT_ANSWER: Final = "This is a demo answer from {model}."
# Ten minutes: anything longer is almost certainly a unit mistake (seconds vs ms).
MAX_LATENCY_MS: Final = 600_000.0

# Names end up in URLs, log lines and the x-demo-model header, so keep them plain
# (and brace-free, so a name can never smuggle in a {prompt} placeholder).
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_ALLOWED_KEYS: Final = (
    "name",
    "port",
    "latency_ms",
    "answers",
    "failure_rate",
    "failure_status",
    "seed",
    "quiz_accuracy",
    "confidence_correct",
    "confidence_wrong",
)
_REQUIRED_KEYS: Final = ("name", "port")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DemoModel:
    """One demo backend: a name, a loopback port and its canned behaviour.

    ``answers`` may contain ``{model}`` and ``{prompt}`` (the last user message);
    they are substituted literally, never through ``str.format``.

    Quiz mode (``quiz_accuracy`` set): a last user message that contains a quiz question
    (``demo.quiz``) is answered correctly with probability ``quiz_accuracy``, else with
    one of its three distractors; judge prompts about a quiz question pick the correct
    candidate with that probability. Draws depend only on ``seed`` and the prompt, so
    models with different seeds are independent voters (and equal seeds agree).

    ``confidence_correct``/``confidence_wrong``: the mean token probability reported
    under ``"logprobs": true`` for a right (or any non-quiz) and a wrong answer.
    """

    name: str
    port: int  # 0 = pick a free port
    latency_ms: float = 0
    answers: tuple[str, ...] = (DEFAULT_ANSWER,)
    failure_rate: float = 0.0
    failure_status: int = 500
    seed: int = 0
    quiz_accuracy: float | None = None
    confidence_correct: float = 0.9
    confidence_wrong: float = 0.6

    def __post_init__(self) -> None:
        # Same checks as the YAML path, so hand-built models cannot be invalid either.
        _check_name(self.name, "DemoModel.name")
        _check_port(self.port, "DemoModel.port")
        _check_latency(self.latency_ms, "DemoModel.latency_ms")
        _check_answers(self.answers, "DemoModel.answers")
        _check_failure_rate(self.failure_rate, "DemoModel.failure_rate")
        _check_failure_status(self.failure_status, "DemoModel.failure_status")
        _check_seed(self.seed, "DemoModel.seed")
        _check_quiz_accuracy(self.quiz_accuracy, "DemoModel.quiz_accuracy")
        _check_confidence(self.confidence_correct, "DemoModel.confidence_correct")
        _check_confidence(self.confidence_wrong, "DemoModel.confidence_wrong")


def parse_demo_models(raw: object, key: str = "demo.models") -> tuple[DemoModel, ...]:
    """Validate a YAML-loaded list of mappings into demo models.

    Raises ConfigError naming the exact key path (e.g. ``demo.models[1].latency_ms``).
    """
    if not isinstance(raw, list):
        raise ConfigError(
            key,
            f"must be a list of model mappings, got {_type_name(raw)}",
            "write one '- name: ...' item per demo model",
        )
    models = tuple(_parse_one(item, f"{key}[{index}]") for index, item in enumerate(raw))
    _check_unique(models, key)
    return models


def _parse_one(raw: object, path: str) -> DemoModel:
    entry = _check_mapping(raw, path)
    return DemoModel(
        name=_check_name(entry["name"], f"{path}.name"),
        port=_check_port(entry["port"], f"{path}.port"),
        latency_ms=_optional(entry, "latency_ms", path, _check_latency, 0.0),
        answers=_optional(entry, "answers", path, _check_answers, (DEFAULT_ANSWER,)),
        failure_rate=_optional(entry, "failure_rate", path, _check_failure_rate, 0.0),
        failure_status=_optional(entry, "failure_status", path, _check_failure_status, 500),
        seed=_optional(entry, "seed", path, _check_seed, 0),
        quiz_accuracy=_optional(entry, "quiz_accuracy", path, _check_quiz_accuracy, None),
        confidence_correct=_optional(entry, "confidence_correct", path, _check_confidence, 0.9),
        confidence_wrong=_optional(entry, "confidence_wrong", path, _check_confidence, 0.6),
    )


def _optional(
    entry: Mapping[str, object],
    name: str,
    path: str,
    check: Callable[[object, str], _T],
    default: _T,
) -> _T:
    return check(entry[name], f"{path}.{name}") if name in entry else default


def _check_mapping(raw: object, path: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        raise ConfigError(
            path,
            f"must be a mapping with at least 'name' and 'port', got {_type_name(raw)}",
            "example: {name: demo-a, port: 0}",
        )
    for entry_key in raw:
        if not isinstance(entry_key, str):
            raise ConfigError(path, f"keys must be strings, got {entry_key!r}")
        if entry_key not in _ALLOWED_KEYS:
            raise ConfigError(f"{path}.{entry_key}", "unknown key", _allowed_keys_fix(entry_key))
    for required in _REQUIRED_KEYS:
        if required not in raw:
            raise ConfigError(f"{path}.{required}", "is required", _required_fix(required))
    return raw


def _allowed_keys_fix(unknown: str) -> str:
    allowed = f"allowed keys: {', '.join(_ALLOWED_KEYS)}"
    close = difflib.get_close_matches(unknown, _ALLOWED_KEYS, n=1)
    return f"did you mean '{close[0]}'? {allowed}" if close else allowed


def _required_fix(required: str) -> str:
    if required == "port":
        return "set a TCP port, or 0 to pick a free port"
    return "set a model name such as 'demo-a'"


def _check_name(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {_type_name(value)}")
    if not _NAME_RE.fullmatch(value):
        raise ConfigError(
            key,
            f"invalid model name {value!r}",
            "use 1-128 characters from letters, digits and . _ : / @ -, "
            "starting with a letter or digit",
        )
    return value


def _check_port(value: object, key: str) -> int:
    port = _check_int(value, key)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range", "use 1-65535, or 0 for a free port")
    return port


def _check_latency(value: object, key: str) -> float:
    latency = _check_number(value, key)
    if latency < 0:
        raise ConfigError(key, f"must not be negative, got {latency:g}", "use 0 for no latency")
    if latency > MAX_LATENCY_MS:
        raise ConfigError(
            key,
            f"{latency:g} ms is too long",
            f"the unit is milliseconds; use at most {MAX_LATENCY_MS:g}",
        )
    return latency


def _check_answers(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(
            key,
            f"must be a list of strings, got {_type_name(value)}",
            "write one '- ...' item per answer",
        )
    if not value:
        raise ConfigError(key, "must contain at least one answer", "remove the key for the default")
    for index, answer in enumerate(value):
        if not isinstance(answer, str):
            raise ConfigError(f"{key}[{index}]", f"must be a string, got {_type_name(answer)}")
        if not answer.strip():
            raise ConfigError(f"{key}[{index}]", "must not be empty or blank")
    return tuple(value)


def _check_failure_rate(value: object, key: str) -> float:
    rate = _check_number(value, key)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(
            key, f"must be between 0 and 1, got {rate:g}", "0 never fails, 1 always fails"
        )
    return rate


def _check_failure_status(value: object, key: str) -> int:
    status = _check_int(value, key)
    if not 400 <= status <= 599:
        raise ConfigError(
            key, f"must be an HTTP error status (400-599), got {status}", "e.g. 500, 503 or 429"
        )
    return status


def _check_seed(value: object, key: str) -> int:
    return _check_int(value, key)


def _check_quiz_accuracy(value: object, key: str) -> float | None:
    if value is None:
        return None  # explicit null: quiz mode off, as when the key is absent
    accuracy = _check_number(value, key)
    if not 0.0 <= accuracy <= 1.0:
        raise ConfigError(
            key,
            f"must be between 0 and 1, got {accuracy:g}",
            "the share of quiz questions answered correctly, e.g. 0.7",
        )
    return accuracy


def _check_confidence(value: object, key: str) -> float:
    confidence = _check_number(value, key)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(
            key,
            f"must be strictly between 0 and 1, got {confidence:g}",
            "a mean token probability, e.g. 0.9 for a right answer and 0.6 for a wrong one",
        )
    return confidence


def _check_int(value: object, key: str) -> int:
    # bool is an int subclass, but 'port: true' is a mistake, not port 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {_type_name(value)}")
    return value


def _check_number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}")
    return float(value)


def _check_unique(models: tuple[DemoModel, ...], key: str) -> None:
    names: dict[str, int] = {}
    ports: dict[int, int] = {}
    for index, model in enumerate(models):
        if model.name in names:
            raise ConfigError(
                f"{key}[{index}].name",
                f"duplicate name {model.name!r} (also {key}[{names[model.name]}].name)",
                "give every demo model its own name",
            )
        names[model.name] = index
        if model.port == 0:
            continue  # every port 0 gets its own free port
        if model.port in ports:
            raise ConfigError(
                f"{key}[{index}].port",
                f"duplicate port {model.port} (also {key}[{ports[model.port]}].port)",
                "give every demo model its own port, or 0 to pick a free one",
            )
        ports[model.port] = index


def _type_name(value: object) -> str:
    # Speak YAML, not Python: that is what the user wrote.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
