"""The config file's JSON Schema, generated from its declaration (``config.model``).

Committed as ``config/schema.json`` (``make schema`` regenerates it; a test fails when it
is stale), so that editors validate the YAML with a modeline::

    # yaml-language-server: $schema=<path or URL of config/schema.json>
"""

from __future__ import annotations

from typing import Any

import msgspec

from .model import ConfigFile

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    generated = msgspec.json.schema(ConfigFile, schema_hook=_custom)
    definitions = generated["$defs"]
    _factory_defaults(msgspec.inspect.type_info(ConfigFile), definitions, set())
    for definition in definitions.values():  # a section's keys carry their own defaults
        for spec in definition.get("properties", {}).values():
            if "$ref" in spec:
                spec.pop("default", None)
    root = definitions.pop("ConfigFile")
    del root["additionalProperties"]
    # The semantic router's file (an ensemble with endpoint_mappings) may carry sections of
    # its own, which are ignored; any other file may hold only ours.
    seed = {
        "required": ["ensemble"],
        "properties": {"ensemble": {"required": ["endpoint_mappings"]}},
    }
    return {
        "$schema": DIALECT,
        **root,
        "title": "ensemble-extproc config",
        "if": seed,
        "else": {"propertyNames": {"enum": list(root["properties"])}},
        "$defs": definitions,
    }


def _custom(kind: type) -> dict[str, Any]:
    hook = getattr(kind, "json_schema", None)
    if hook is None:
        raise NotImplementedError
    return dict(hook())


def _factory_defaults(info: Any, definitions: dict[str, Any], seen: set[type]) -> None:
    """Defaults made by a factory (msgspec leaves them out), written as YAML would."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        properties = definitions[info.cls.__name__]["properties"]
        for field in info.fields:
            factory = field.default_factory
            if factory is not msgspec.NODEFAULT and factory not in (list, dict, set, bytearray):
                default = msgspec.to_builtins(factory(), enc_hook=str)
                properties[field.encode_name]["default"] = default
            _factory_defaults(field.type, definitions, seen)
    for child in _children(info):
        _factory_defaults(child, definitions, seen)


def _children(info: Any) -> list[Any]:
    if isinstance(info, msgspec.inspect.UnionType):
        return list(info.types)
    if isinstance(info, msgspec.inspect.Metadata):
        return [info.type]
    if isinstance(info, msgspec.inspect.DictType):
        return [info.value_type]
    item = getattr(info, "item_type", None)
    return [item] if item is not None else []
