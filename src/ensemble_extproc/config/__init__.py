"""Configuration: one YAML file, compiled once into frozen, typed settings."""

from ..errors import ConfigError
from .load import compile_config, load_config
from .model import Address, Config, Endpoint, EnsembleSettings, Listeners

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "Endpoint",
    "EnsembleSettings",
    "Listeners",
    "compile_config",
    "load_config",
]
