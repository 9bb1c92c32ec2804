"""The ``demo.models`` section: canned, OpenAI-compatible backends (served by ``demo``).

A demo model is what the gateway talks to when no real LLM is configured, and what the
test suite uses as model endpoints. It can also pace its stream, answer with a tool call
and misbehave on purpose (``fault``), so that clients can be tested against slow, broken
and half-open backends. Declared here, in config, so that reading a config never imports
the demo server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from ..continuation import Style
from ..cost.model import Price
from ..errors import ConfigError
from ..section import Count, Section
from .decode import check_fields, decode

DEFAULT_ANSWER: Final = "This is a demo answer from {model}."
# The owned_by of a demo backend in model lists: started by this project, not a real model.
DEMO_OWNER: Final = "ensemble-extproc-demo"
# Ten minutes: anything longer is almost certainly a unit mistake (seconds vs ms).
MAX_LATENCY_MS: Final = 600_000
# An hour: a longer Retry-After is almost certainly milliseconds written as seconds.
MAX_RETRY_AFTER_S: Final = 3600

# How a demo model misbehaves on purpose (DemoModel.fault); see demo.faults.
FaultKind = Literal[
    "status_500",
    "rate_limit",
    "malformed_json",
    "reset",
    "hang",
    "drip",
    "stream_stop",
    "stream_error",
    "no_done",
    "malformed_sse",
    "echo_headers",
]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

Milliseconds = Annotated[float, Meta(ge=0, le=MAX_LATENCY_MS)]
Probability = Annotated[float, Meta(gt=0, lt=1)]
Share = Annotated[float, Meta(ge=0, le=1)]


class DemoToolCall(Section, frozen=True):
    """The function call a demo model answers with when the request offers tools.

    ``arguments`` is a JSON object (string keys; strings, numbers, booleans, null, lists
    and objects); it is copied on construction and sent as compact JSON in its own order.
    """

    # OpenAI's rule for function names.
    name: Annotated[
        str,
        Meta(
            pattern="^[A-Za-z0-9_-]{1,64}$", title="function name", description="e.g. get_weather"
        ),
    ]
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        force_setattr(self, "arguments", _json_copy(self.arguments, "DemoToolCall.arguments"))

    def __hash__(self) -> int:
        return hash((self.name, self.arguments_json))

    @property
    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: a compact JSON string, keys in order."""
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))


class DemoModel(Section, frozen=True):
    """One demo backend: a name, a loopback port and its canned behaviour.

    ``answers`` may contain ``{model}`` and ``{prompt}`` (the last user message);
    they are substituted literally, never through ``str.format``.

    Quiz mode (``quiz_accuracy`` set): a last user message that contains a quiz question
    (``demo.quiz``) is answered correctly with probability ``quiz_accuracy``, else with
    one of its three distractors; judge prompts about a quiz question pick the correct
    candidate with that probability. Draws depend only on ``seed`` and the prompt, so
    models with different seeds are independent voters (and equal seeds agree).

    ``fault``: misbehave on every request that a seeded failure (``failure_rate``) spared;
    see ``demo.faults`` for the kinds.
    """

    # Names end up in URLs, log lines and the x-demo-model header, so keep them plain
    # (and brace-free, so a name can never smuggle in a {prompt} placeholder).
    name: Annotated[
        str,
        Meta(
            pattern="^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$",
            title="model name",
            description="1-128 letters, digits and . _ : / @ -, starting with a letter or digit",
        ),
    ]
    port: Annotated[int, Meta(ge=0, le=65535, description="a TCP port; 0 picks a free one")]
    latency_ms: Annotated[
        Milliseconds, Meta(description="time to the first chunk; the unit is milliseconds")
    ] = 0.0
    answers: Annotated[
        tuple[Annotated[str, Meta(pattern=r"\S")], ...],
        Meta(min_length=1, description="canned answers; {model} and {prompt} are filled in"),
    ] = (DEFAULT_ANSWER,)
    failure_rate: Annotated[Share, Meta(description="0 never fails, 1 always fails")] = 0.0
    failure_status: Annotated[
        int, Meta(ge=400, le=599, description="the HTTP error status of a failure, e.g. 503")
    ] = 500
    seed: int = 0
    quiz_accuracy: Annotated[
        Share | None, Meta(description="the share of quiz questions answered right, e.g. 0.7")
    ] = None
    # The mean token probability reported under "logprobs": true for a right (or any
    # non-quiz) and a wrong answer.
    confidence_correct: Probability = 0.9
    confidence_wrong: Probability = 0.6
    token_delay_ms: Annotated[
        Milliseconds, Meta(description="between the chunks of a stream; the unit is milliseconds")
    ] = 0.0
    tool_call: Annotated[
        DemoToolCall | None, Meta(description="answer with this call when the request offers tools")
    ] = None
    fault: Annotated[
        FaultKind | Literal["none"] | None,
        Meta(title="fault kind", description="null or 'none' for no fault"),
    ] = None
    fault_retry_after_s: Annotated[
        float,
        Meta(
            ge=0, le=MAX_RETRY_AFTER_S, description="rate_limit's Retry-After; the unit is seconds"
        ),
    ] = 1.0
    fault_drip_ms: Annotated[
        Milliseconds, Meta(description="drip's pause between bytes; the unit is milliseconds")
    ] = 200.0
    fault_after_pieces: Annotated[
        Count | None,
        Meta(
            description="stream_stop and stream_error: break after this many pieces of the "
            "answer (null: about half)"
        ),
    ] = None
    # Reported like a real model's (models[].price): `run` shows what ensembles cost.
    price: Price | None = None
    # How it continues a partial answer (models[].continuation); null: it answers anew.
    continuation: Style | None = None

    def __post_init__(self) -> None:
        # Hand-built models are checked as the YAML path checks them.
        check_fields(self)
        if self.fault == "none":
            force_setattr(self, "fault", None)


def parse_demo_models(raw: object, key: str = "demo.models") -> tuple[DemoModel, ...]:
    """Validate a YAML-loaded list of mappings into demo models.

    Raises ConfigError naming the exact key path (e.g. ``demo.models[1].latency_ms``).
    """
    models = decode(raw, tuple[DemoModel, ...], key)
    check_unique(models, key)
    return models


def check_unique(models: tuple[DemoModel, ...], key: str) -> None:
    seen: dict[str, dict[object, int]] = {"name": {}, "port": {}}
    for index, model in enumerate(models):
        for field, fix in (
            ("name", "give every demo model its own name"),
            ("port", "give every demo model its own port, or 0 to pick a free one"),
        ):
            value, earlier = getattr(model, field), seen[field]
            if value in earlier:
                raise ConfigError(
                    f"{key}[{index}].{field}",
                    f"duplicate {field} {value!r} (also {key}[{earlier[value]}].{field})",
                    fix,
                )
            if value != 0:  # every port 0 gets its own free port
                earlier[value] = index


def _json_copy(value: object, key: str) -> Any:
    """A copy of a JSON value, or ConfigError naming the offending key path."""
    if value is None or isinstance(value, str | bool | int | float):
        return value  # non-finite numbers never get here (see decode)
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{key}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        for item_key in value:
            if not isinstance(item_key, str):
                raise ConfigError(key, f"keys must be strings, got {item_key!r}")
        return {k: _json_copy(item, f"{key}.{k}") for k, item in value.items()}
    raise ConfigError(
        key,
        f"must be a JSON value, got {type(value).__name__}",
        "use strings, numbers, booleans, null, lists and mappings (quote dates)",
    )
