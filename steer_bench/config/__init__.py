"""Typed configuration: the YAML machinery (``base``), a method preset (``method``), one training run (``run``)."""

from steer_bench.config.base import (
    StrictModel,
    apply_overrides,
    deep_merge,
    dump_yaml,
    load_model,
    parse_override,
    read_yaml,
    validate,
)

__all__ = [
    "StrictModel",
    "apply_overrides",
    "deep_merge",
    "dump_yaml",
    "load_model",
    "parse_override",
    "read_yaml",
    "validate",
]
