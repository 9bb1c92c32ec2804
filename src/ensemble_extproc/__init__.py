"""ensemble-extproc: an Envoy external processor with an internal ensemble upstream."""

__version__ = "0.1.0"
