"""Demo model definitions and the validation of their YAML configuration.

A demo model is a canned, OpenAI-compatible backend: it is what the gateway talks
to when no real LLM is configured, and what the test suite uses as model endpoints.
It can also pace its stream, answer with a tool call and misbehave on purpose (``fault``),
so that clients can be tested against slow, broken and half-open backends.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeGuard, TypeVar, get_args

from ..errors import ConfigError

__all__ = [
    "DEFAULT_ANSWER",
    "FAULT_KINDS",
    "MAX_LATENCY_MS",
    "MAX_RETRY_AFTER_S",
    "DemoModel",
    "DemoToolCall",
    "FaultKind",
    "parse_demo_models",
]

DEFAULT_ANSWER: Final = "This is a demo answer from {model}."
# Ten minutes: anything longer is almost certainly a unit mistake (seconds vs ms).
MAX_LATENCY_MS: Final = 600_000.0
# An hour: a longer Retry-After is almost certainly milliseconds written as seconds.
MAX_RETRY_AFTER_S: Final = 3600.0

# How a demo model misbehaves on purpose (DemoModel.fault); see demo.faults.
FaultKind = Literal[
    "status_500",
    "rate_limit",
    "malformed_json",
    "reset",
    "hang",
    "drip",
    "stream_stop",
    "no_done",
    "malformed_sse",
    "echo_headers",
]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

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
    "token_delay_ms",
    "tool_call",
    "fault",
    "fault_retry_after_s",
    "fault_drip_ms",
)
_REQUIRED_KEYS: Final = ("name", "port")
_TOOL_CALL_KEYS: Final = ("name", "arguments")
# OpenAI's rule for function names.
_FUNCTION_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DemoToolCall:
    """The function call a demo model answers with when the request offers tools.

    ``arguments`` is a JSON object (string keys; strings, numbers, booleans, null, lists
    and objects); it is copied on construction and sent as compact JSON in its own order.
    """

    name: str
    arguments: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_function_name(self.name, "DemoToolCall.name")
        object.__setattr__(
            self, "arguments", _check_arguments(self.arguments, "DemoToolCall.arguments")
        )

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: a compact JSON string, keys in order."""
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))


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

    ``latency_ms`` is the time to the first chunk of a stream; ``token_delay_ms`` the time
    between its content chunks. A non-streamed answer waits as long as its stream would.

    ``tool_call``: answer with this function call whenever the request offers ``tools``
    (and ``tool_choice`` is not ``"none"``), whichever tool it names.

    ``fault``: misbehave on every request that a seeded failure (``failure_rate``) spared;
    see ``demo.faults`` for the kinds. ``fault_retry_after_s`` is the Retry-After of
    ``rate_limit``, ``fault_drip_ms`` the pause between the bytes of ``drip``.
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
    token_delay_ms: float = 0
    tool_call: DemoToolCall | None = None
    fault: FaultKind | None = None
    fault_retry_after_s: float = 1
    fault_drip_ms: float = 200

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
        _check_delay(self.token_delay_ms, "DemoModel.token_delay_ms")
        if self.tool_call is not None and not isinstance(self.tool_call, DemoToolCall):
            raise ConfigError(
                "DemoModel.tool_call",
                f"must be a DemoToolCall or None, got {type(self.tool_call).__name__}",
            )
        _check_fault(self.fault, "DemoModel.fault")
        _check_retry_after(self.fault_retry_after_s, "DemoModel.fault_retry_after_s")
        _check_delay(self.fault_drip_ms, "DemoModel.fault_drip_ms")


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
        token_delay_ms=_optional(entry, "token_delay_ms", path, _check_delay, 0.0),
        tool_call=_optional(entry, "tool_call", path, _check_tool_call, None),
        fault=_optional(entry, "fault", path, _check_fault, None),
        fault_retry_after_s=_optional(entry, "fault_retry_after_s", path, _check_retry_after, 1.0),
        fault_drip_ms=_optional(entry, "fault_drip_ms", path, _check_delay, 200.0),
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
    return _check_milliseconds(value, key, "use 0 for no latency")


def _check_delay(value: object, key: str) -> float:
    return _check_milliseconds(value, key, "use 0 for no delay")


def _check_milliseconds(value: object, key: str, zero_fix: str) -> float:
    latency = _check_number(value, key)
    if latency < 0:
        raise ConfigError(key, f"must not be negative, got {latency:g}", zero_fix)
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


def _check_tool_call(value: object, key: str) -> DemoToolCall | None:
    if value is None:
        return None  # explicit null: no tool call, as when the key is absent
    if not isinstance(value, Mapping):
        raise ConfigError(
            key,
            f"must be a mapping with 'name' and 'arguments', got {_type_name(value)}",
            "example: {name: get_weather, arguments: {city: Paris}}",
        )
    for entry_key in value:
        if entry_key not in _TOOL_CALL_KEYS:
            raise ConfigError(
                f"{key}.{entry_key}", "unknown key", f"allowed keys: {', '.join(_TOOL_CALL_KEYS)}"
            )
    if "name" not in value:
        raise ConfigError(f"{key}.name", "is required", "the function name, e.g. get_weather")
    return DemoToolCall(
        name=_check_function_name(value["name"], f"{key}.name"),
        arguments=_check_arguments(value.get("arguments", {}), f"{key}.arguments"),
    )


def _check_function_name(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {_type_name(value)}")
    if not _FUNCTION_NAME_RE.fullmatch(value):
        raise ConfigError(
            key,
            f"invalid function name {value!r}",
            "use 1-64 characters from letters, digits, _ and -",
        )
    return value


def _check_arguments(value: object, key: str) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            key,
            f"must be a mapping (a JSON object), got {_type_name(value)}",
            "example: {city: Paris, days: 3}; {} for none",
        )
    return _copy_json_object(value, key)


def _copy_json_object(value: Mapping[object, object], key: str) -> dict[str, object]:
    copy: dict[str, object] = {}
    for item_key, item in value.items():
        if not isinstance(item_key, str):
            raise ConfigError(key, f"keys must be strings, got {item_key!r}")
        copy[item_key] = _copy_json(item, f"{key}.{item_key}")
    return copy


def _copy_json(value: object, key: str) -> object:
    """A copy of a JSON value, or ConfigError naming the offending key path."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return _check_number(value, key)
    if isinstance(value, list | tuple):
        return [_copy_json(item, f"{key}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        return _copy_json_object(value, key)
    raise ConfigError(
        key,
        f"must be a JSON value, got {_type_name(value)}",
        "use strings, numbers, booleans, null, lists and mappings (quote dates)",
    )


def _check_fault(value: object, key: str) -> FaultKind | None:
    if value is None or value == "none":
        return None  # null or 'none': no fault, as when the key is absent
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {_type_name(value)}", _fault_fix(""))
    if not _is_fault(value):
        raise ConfigError(key, f"unknown fault kind {value!r}", _fault_fix(value))
    return value


def _is_fault(value: str) -> TypeGuard[FaultKind]:
    return value in FAULT_KINDS


def _fault_fix(unknown: str) -> str:
    valid = f"valid kinds: {', '.join(FAULT_KINDS)}; null or 'none' for no fault"
    close = difflib.get_close_matches(unknown, FAULT_KINDS, n=1) if unknown else []
    return f"did you mean '{close[0]}'? {valid}" if close else valid


def _check_retry_after(value: object, key: str) -> float:
    seconds = _check_number(value, key)
    if seconds < 0:
        raise ConfigError(key, f"must not be negative, got {seconds:g}", "use 0 to retry at once")
    if seconds > MAX_RETRY_AFTER_S:
        raise ConfigError(
            key,
            f"{seconds:g} s is too long",
            f"the unit is seconds; use at most {MAX_RETRY_AFTER_S:g}",
        )
    return seconds


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
