"""Configuration: one YAML file, compiled once into frozen, typed settings."""

from ..errors import ConfigError
from .load import compile_config, load_config
from .model import Address, Config, Endpoint, EnsembleSettings

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "Endpoint",
    "EnsembleSettings",
    "compile_config",
    "load_config",
]
