"""The one registry of the objective's parts, and the one check of a part's hyperparameters.

Every piece of a method is a part: a frozen, keyword-only dataclass subclassing :class:`Part`, whose ``role``
(the roles of :data:`ROLES`) and ``name`` place it in the registry, whose init fields are its hyperparameters
(no defaults: the values live in ``configs/methods/*.yaml``), which declares what it needs from the batch
(``needs_*``) and the metrics it logs (``metrics``, key → meaning and reduction). A preset section maps onto one
part by :func:`build` (``role``, ``name``, params); a part outside the library is named ``"package.module:Class"``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

# role → how messages name it
ROLES: dict[str, str] = {
    "advantage": "advantage estimator",
    "surrogate": "surrogate",
    "intervention": "policy loss",
    "correction": "rollout correction",
    "regulariser": "regulariser",
    "controller": "entropy controller",
}
# The library's own parts register when these modules are imported (a fixed list, not a package scan).
_BUILTIN = (
    "steer_bench.algos.advantages",
    "steer_bench.algos.surrogates",
    "steer_bench.algos.interventions",
    "steer_bench.algos.rollout_correction",
    "steer_bench.algos.regularisers",
    "steer_bench.algos.entropy_control",
    "steer_bench.algos.entropic",
)


@dataclass(frozen=True)
class Metric:
    """A metric key's meaning and how its per-call values combine over the micro-batches of a mini-batch.

    ``mean`` is weighted by each call's valid tokens (exact for fractions and token means, approximate for
    quantiles); ``sum`` / ``min`` / ``max`` as named. Across ranks the trainer then averages (``_max`` /
    ``_min`` keys: max / min)."""

    meaning: str
    reduce: Literal["mean", "sum", "min", "max"] = "mean"


@dataclass(frozen=True, kw_only=True)
class Part:
    """One piece of a method; subclasses set ``role`` (their base does), ``name``, ``metrics`` and ``needs_*``."""

    role: ClassVar[str]
    name: ClassVar[str]
    metrics: ClassVar[Mapping[str, Metric]] = {}
    needs_entropy: ClassVar[bool] = False  # the current policy's entropy in every loss call
    needs_old_entropy: ClassVar[bool] = False  # π_old's entropy

    @classmethod
    def check_declaration(cls) -> None:
        """Raise TypeError if the class declares itself wrongly (checked on registration and on import by path)."""


REGISTRY: dict[str, dict[str, type[Part]]] = {role: {} for role in ROLES}

P = TypeVar("P", bound=type[Part])


def register(cls: P) -> P:
    """Class decorator: file ``cls`` under its role and name (TypeError on a second class of the same name)."""
    cls.check_declaration()
    table = REGISTRY[cls.role]
    other = table.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"two {ROLES[cls.role]}s named {cls.name!r}: {other.__module__} and {cls.__module__}")
    table[cls.name] = cls
    return cls


def registered(role: str) -> dict[str, type[Part]]:
    """The library's parts of ``role`` by name (every built-in module imported)."""
    for module in _BUILTIN:
        importlib.import_module(module)
    return REGISTRY[role]


def lookup(role: str, name: str) -> type[Part]:
    """The part class of ``role`` named ``name`` (or ``"package.module:Class"``); ValueError listing the valid."""
    what = ROLES[role]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{what} {name!r} cannot be imported: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, Part) and cls.role == role):
            raise ValueError(f"{what} {name!r} is not a {what} (a Part of role {role!r})")
        cls.check_declaration()
        return cls
    table = registered(role)
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def hyperparameters(cls: type[Part]) -> tuple[str, ...]:
    """A part's hyperparameters: its init fields, in order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def required(cls: type[Part]) -> tuple[str, ...]:
    """A part's hyperparameters without a default."""
    no_default = dataclasses.MISSING
    fields = dataclasses.fields(cls)
    return tuple(f.name for f in fields if f.init and f.default is no_default and f.default_factory is no_default)


def check_params(what: str, params: Mapping[str, Any], valid: Sequence[str], needed: Sequence[str]) -> None:
    """ValueError naming ``what`` (e.g. "surrogate 'gspo'"), the unknown and missing keys of ``params`` and the
    valid ones."""
    unknown, missing = sorted(set(params) - set(valid)), [p for p in needed if p not in params]
    if unknown or missing:
        parts = [f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else ""]
        raise ValueError(
            f"{what}: {' and '.join(p for p in parts if p)} parameter(s); "
            f"its parameters are: {', '.join(valid) if valid else '(none)'}"
        )


def build(role: str, name: str, params: Mapping[str, Any]) -> Part:
    """The part ``name`` of ``role`` with ``params``: ValueError naming the part, its unknown and missing
    hyperparameters and the valid ones; the part's own checks of the values run in its ``__post_init__``."""
    cls = lookup(role, name)
    check_params(f"{ROLES[role]} {name!r}", params, hyperparameters(cls), required(cls))
    return cls(**params)
