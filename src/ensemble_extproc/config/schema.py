"""The config file's JSON Schema, generated from its declaration (``config.model``).

Committed as ``config/schema.json`` (``make schema`` regenerates it; a test fails when it
is stale), so that editors validate the YAML with a modeline::

    # yaml-language-server: $schema=<path or URL of config/schema.json>
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import NODEFAULT

from ..section import Section
from .model import ConfigFile

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    generated = msgspec.json.schema(ConfigFile, schema_hook=_custom)
    definitions = generated["$defs"]
    _factory_defaults(definitions)
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


def _factory_defaults(definitions: dict[str, Any], cls: type[msgspec.Struct] = Section) -> None:
    """Defaults made by a factory (msgspec leaves them out), written as YAML would."""
    for sub in cls.__subclasses__():
        properties = definitions.get(sub.__name__, {}).get("properties", {})
        for field in msgspec.structs.fields(sub):
            factory = field.default_factory
            if field.encode_name in properties and factory not in (NODEFAULT, list, dict):
                default = msgspec.to_builtins(factory(), enc_hook=str)
                properties[field.encode_name]["default"] = default
        _factory_defaults(definitions, sub)
