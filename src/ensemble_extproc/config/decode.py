"""Decode YAML data into declared ``msgspec`` Structs; errors name the key path and the fix.

A config section is declared once, as a frozen Struct whose fields carry their type,
default and constraints (``msgspec.Meta``: ranges, patterns, a ``title`` and a
``description``). msgspec checks the data; this module only turns its messages into
``ConfigError``: YAML key paths (``ensemble.retries.attempts``, ``profiles.p.models``),
YAML words (``a number``, ``a list of strings``), the allowed keys of a mapping, and the
field's description as the fix.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec.structs import force_setattr

from ..errors import ConfigError

T = TypeVar("T")
_AT = re.compile(r"(?P<message>.*?)(?: - at `(?P<in_key>key` in `)?\$(?P<path>[^`]*)`)?", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_FIELD = re.compile(r"Object (contains unknown|missing required) field `(.*)`", re.S)


def decode(raw: object, kind: type[T], key: str = "") -> T:
    """``raw`` (YAML data) as ``kind``, or ConfigError naming the key under ``key``."""
    _check_finite(raw, key)
    try:
        return msgspec.convert(raw, kind, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _error(exc, raw, kind, key) from None


@functools.cache
def fields(cls: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    """``msgspec.structs.fields``, which resolves the annotations anew on every call."""
    return msgspec.structs.fields(cls)


def check_fields(struct: msgspec.Struct) -> None:
    """For ``__post_init__`` of Structs that code builds by hand: check every field as the
    YAML path would, and store lists as tuples (keys are named ``Class.field``)."""
    cls = type(struct)
    for info in fields(cls):
        value = getattr(struct, info.name)
        checked = decode(value, info.type, f"{cls.__name__}.{info.name}")
        if isinstance(checked, msgspec.Struct) and checked is not value:
            problem = f"must be a {type(checked).__name__}, got {type(value).__name__}"
            raise ConfigError(f"{cls.__name__}.{info.name}", problem)
        force_setattr(struct, info.name, checked)


def _dec_hook(kind: type, value: object) -> object:
    # Custom types (e.g. Address) are written as strings and parse themselves.
    parse = getattr(kind, "from_text", None)
    if parse is None:
        raise NotImplementedError
    if not isinstance(value, str):
        raise ValueError(f"must be {kind.__doc__}, got {_yaml(value)}")
    return parse(value)


def _check_finite(raw: object, key: str) -> None:
    """YAML's .nan passes every range check and .inf overflows every duration."""
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(key, f"must be a finite number, got {raw}")
    if isinstance(raw, Mapping):
        for name, value in raw.items():
            _check_finite(value, _join(key, name))
    elif isinstance(raw, list | tuple):
        for index, value in enumerate(raw):
            _check_finite(value, f"{key}[{index}]")


def _error(exc: msgspec.ValidationError, raw: Any, kind: Any, key: str) -> ConfigError:
    match = _AT.fullmatch(str(exc))
    assert match is not None  # the pattern matches any text
    required = True
    for name, index in _SEGMENT.findall(match["path"] or ""):
        if index == "...":  # a mapping's value: find which key, and decode that one alone
            for item_key, item in raw.items():
                try:
                    decode(item, _shape(kind, dict)[1], _join(key, item_key))
                except ConfigError as error:
                    return error
        elif index:
            kind, raw, key = _shape(kind, list)[0], raw[int(index)], f"{key}[{index}]"
        else:
            info = _field(kind, name)
            kind, key, required = info.type, _join(key, name), info.required
            raw = raw.get(name) if isinstance(raw, Mapping) else None
    if match["in_key"]:
        bad = next(k for k in raw if not isinstance(k, str))
        return ConfigError(key, f"keys must be strings, got {bad!r}")
    cause = exc.__cause__
    if isinstance(cause, ConfigError):  # from a __post_init__: its key is Class.field...
        return ConfigError(_join(key, cause.key.partition(".")[2]), cause.problem, cause.fix)
    explained = _explain(match["message"], kind, raw, key)
    if raw is None and not required:
        fix = _fix(explained.fix, "leave it out for the default")
        return ConfigError(explained.key, explained.problem, fix)
    return explained


def _explain(message: str, kind: Any, value: object, key: str) -> ConfigError:
    named = _FIELD.fullmatch(message)
    if named:
        declared = {f.encode_name: f for f in fields(_shape(kind, msgspec.Struct)[0])}
        which, name = named.groups()
        if which == "missing required":
            return ConfigError(_join(key, name), "is required", _doc(declared[name].type))
        allowed = "allowed keys here: " + ", ".join(declared)
        return ConfigError(
            _join(key, name), "unknown key", _fix(_close(name, [*declared]), allowed)
        )
    options = _options(kind)
    base, meta = next(((b, m) for b, m in options if _accepts(b, value)), (None, options[0][1]))
    about = meta.get("description", "")
    choices = [v for b, _ in options if get_origin(b) is Literal for v in get_args(b)]
    named_choices = [str(v) for v in choices if isinstance(v, str)]
    one_of = "one of: " + ", ".join(named_choices) if named_choices else ""
    if isinstance(value, str) and get_origin(base) is Literal:
        problem = f"unknown {meta.get('title', 'value')} {value!r}"
        return ConfigError(key, problem, _fix(_close(value, named_choices), one_of, about))
    if base is None or message.startswith("Invalid enum value"):
        return ConfigError(
            key, f"must be {_describe(kind)}, got {_yaml(value)}", _fix(one_of, about)
        )
    if message.startswith("Expected `"):
        return ConfigError(key, _violation(meta, value), about)
    return ConfigError(key, message, about)


def _violation(meta: Mapping[str, Any], value: object) -> str:
    """What a value of the right type breaks, e.g. ``must be between 0 and 1, got 1.5``."""
    low, high = meta.get("gt", meta.get("ge")), meta.get("lt", meta.get("le"))
    if isinstance(value, int | float) and (low is not None or high is not None):
        if low is not None and high is not None:
            if "ge" in meta and "le" in meta:
                bound = f"between {low:g} and {high:g}"
            elif "gt" in meta and "lt" in meta:
                bound = f"strictly between {low:g} and {high:g}"
            else:
                left, right = ("(", "]") if "gt" in meta else ("[", ")")
                bound = f"in {left}{low:g}, {high:g}{right}"
        elif low is not None:
            bound = f"> {low:g}" if "gt" in meta else f">= {low:g}"
        else:
            bound = f"< {high:g}" if "lt" in meta else f"<= {high:g}"
        return f"must be {bound}, got {value:g}"
    if meta.get("pattern") == r"\S":
        return "must not be empty or blank"
    if "pattern" in meta:
        return f"invalid {meta.get('title', 'value')} {value!r}"
    return "must not be empty"  # the one length constraint declared: min_length=1


def _fix(*parts: str) -> str:
    text = ""
    for part in filter(None, parts):
        text += (" " if text.endswith("?") else "; ") + part if text else part
    return text


def _close(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def _join(key: str, name: object) -> str:
    name = str(name) or "''"  # an empty YAML key
    return f"{key}.{name}" if key else name


def _doc(kind: Any) -> str:
    return str(_options(kind)[0][1].get("description", ""))


_META = ("gt", "ge", "lt", "le", "pattern", "min_length", "title", "description")


def _options(kind: Any, outer: Mapping[str, Any] | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """The alternatives of a type (unions flattened), each with its ``Meta`` merged."""
    meta = dict(outer or {})
    while get_origin(kind) is Annotated:
        kind, *extras = get_args(kind)
        for extra in extras:
            if isinstance(extra, msgspec.Meta):
                meta.update({n: getattr(extra, n) for n in _META if getattr(extra, n) is not None})
    if get_origin(kind) in (Union, types.UnionType):
        return [option for member in get_args(kind) for option in _options(member, meta)]
    return [(kind, meta)]


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def _shape(kind: Any, shape: type) -> tuple[Any, ...]:
    """Of a union, the Struct, or a dict's (key, value) types, or a sequence's item type."""
    for base, _ in _options(kind):
        origin = get_origin(base)
        if shape is msgspec.Struct and _is_struct(base):
            return (base,)
        if (shape is dict and origin is dict) or (shape is list and origin in _SEQUENCES):
            return get_args(base)
    raise AssertionError(f"no {shape.__name__} in {kind}")


def _field(kind: Any, name: str) -> msgspec.structs.FieldInfo:
    struct = _shape(kind, msgspec.Struct)[0]
    return next(f for f in fields(struct) if f.encode_name == name)


_SEQUENCES = (list, tuple, set, frozenset)


def _accepts(base: Any, value: object) -> bool:
    """Whether ``value`` has the YAML type of ``base`` (whatever its constraints)."""
    origin = get_origin(base)
    if origin is Literal:
        return any(type(v) is type(value) for v in get_args(base))
    if isinstance(value, bool) or value is None:
        return base is type(value)
    if isinstance(value, int | float):
        return base is float or (base is int and isinstance(value, int))
    if isinstance(value, str):
        return base is str or hasattr(base, "from_text")
    if isinstance(value, list | tuple):
        return origin in _SEQUENCES
    return isinstance(value, Mapping) and (origin is dict or _is_struct(base))


def _describe(kind: Any) -> str:
    """A type in YAML words: ``a number``, ``a list of strings``, ``a mapping or false``."""
    words: list[str] = []
    for base, _ in _options(kind):
        origin = get_origin(base)
        if origin is Literal:
            said = ["a string" if isinstance(v, str) else _yaml(v) for v in get_args(base)]
        elif origin in _SEQUENCES:
            said = ["a list of " + _describe(get_args(base)[0]).split(" ", 1)[-1] + "s"]
        elif origin is dict or _is_struct(base):
            said = ["a mapping"]
        else:
            said = [_WORDS.get(base) or f"a string ({base.__doc__})"]
        words += [word for word in said if word not in words]
    return " or ".join(dict.fromkeys(words))


_WORDS: dict[Any, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
    Any: "any value",
}


def _yaml(value: object) -> str:
    """A value as YAML calls it: ``null``, ``true``, ``a string ('30s')``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"
