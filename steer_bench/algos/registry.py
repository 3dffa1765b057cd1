"""Hyperparameter introspection shared by the registries: a registered function's hyperparameters are its
keyword-only parameters (no defaults; the defaults live in configs/methods/*.yaml)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


@functools.cache  # called on every loss call: inspect.signature is slow next to a small loss
def keyword_params(fn: Callable[..., object]) -> tuple[str, ...]:
    """Names of ``fn``'s keyword-only parameters, in order."""
    return tuple(p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY)


def check_params(kind: str, name: str, fn: Callable[..., object], params: Mapping[str, object]) -> None:
    """Raise ValueError naming the unknown or missing hyperparameters of ``fn`` and listing the valid ones."""
    valid = keyword_params(fn)
    unknown = sorted(set(params) - set(valid))
    missing = [p for p in valid if p not in params]
    if unknown or missing:
        parts = [f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else ""]
        raise ValueError(
            f"{kind} {name!r}: {' and '.join(p for p in parts if p)} parameter(s); "
            f"its parameters are: {', '.join(valid) if valid else '(none)'}"
        )


def lookup(kind: str, registry: Mapping[str, T], name: str) -> T:
    """``registry[name]``, or a ValueError naming the unknown ``kind`` and listing the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]
