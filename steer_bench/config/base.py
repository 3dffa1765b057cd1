"""Typed configuration: YAML files validated into frozen pydantic models with strict keys.

Every config section subclasses :class:`StrictModel` (unknown keys are errors). :func:`load_model`
reads YAML, applies ``key.sub=value`` overrides and turns pydantic's errors into a
:class:`SteerBenchError` that names the file, the key and the valid alternatives.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from steer_bench.errors import SteerBenchError

M = TypeVar("M", bound=BaseModel)
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are rejected, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SteerBenchError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SteerBenchError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SteerBenchError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-5"`` -> (["train", "lr"], 1e-5); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise SteerBenchError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    # YAML 1.1 reads "3e-5" (no dot) as a string; researchers write learning rates that way.
    if isinstance(parsed, str) and _FLOAT_RE.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.strip().split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted ``key=value`` overrides applied (creating sections as needed)."""
    out = _deep_copy(data)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise SteerBenchError(f"override {text!r}: {k!r} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values in ``update`` win, nested mappings merge."""
    out = _deep_copy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = _deep_copy(v)
    return out


def _deep_copy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


def validate(model: type[M], data: dict[str, Any], *, source: str) -> M:
    """Validate ``data`` into ``model``; on failure raise one error listing every bad key with valid names."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid config"]
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                valid = _valid_keys(model, err["loc"][:-1])
                hint = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                lines.append(f"  - unknown key {loc!r}{suggestion}; valid keys here: {', '.join(sorted(valid))}")
            else:
                lines.append(f"  - {loc or '<root>'}: {err['msg']}")
        raise SteerBenchError("\n".join(lines)) from None


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``; best effort through Optional/list annotations."""
    current: Any = model
    keyed = False  # the previous field was a list/dict of models: this part is an index or a key
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if keyed or fields is None or part not in fields:
            if keyed or isinstance(part, int):
                keyed = False
                continue
            return []
        annotation = fields[part].annotation
        keyed = getattr(annotation, "__origin__", None) in (list, dict)
        current = _model_of(annotation)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def load_model(model: type[M], path: str | os.PathLike[str], overrides: list[str] | None = None) -> M:
    """Read a YAML file, apply overrides, validate into ``model``."""
    return validate(model, apply_overrides(read_yaml(path), overrides), source=str(path))


def dump_yaml(model: BaseModel) -> str:
    """The resolved config as YAML (written next to every run's outputs)."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
