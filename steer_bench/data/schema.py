"""The normalised dataset schema every prepared parquet follows, and its validating loader.

One row per unique problem. Required columns:

- ``problem_id`` (str): stable and unique within the dataset, ``<dataset>/<id>``. Derived from the source's own
  index where it has a unique one (``aime24/0007``), else from a content hash (see ``registry.py`` per dataset).
- ``dataset`` (str): the registry name (``aime24``, ``synth_train``, ...).
- ``source`` (str): the original ``data_source`` (or the Hub id).
- ``problem`` (str): the raw problem text, no instruction.
- ``prompt`` (list of ``{"role", "content"}``): the rendered prompt template; the chat template is NOT applied.
- ``answer`` (str): the gold answer.

Optional: ``level`` (int) and ``solution`` (str), filled by the synthetic task.
"""

from __future__ import annotations

import os

import pandas as pd

from steer_bench.errors import SteerBenchError
from steer_bench.inputs import read_parquet

REQUIRED_COLUMNS = ("problem_id", "dataset", "source", "problem", "prompt", "answer")
OPTIONAL_COLUMNS = ("level", "solution")


def check_frame(df: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """Raise a :class:`SteerBenchError` naming ``source`` if ``df`` breaks the schema; return it otherwise."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        need = list(REQUIRED_COLUMNS)
        raise SteerBenchError(f"{source}: missing column(s) {missing}; a prepared dataset needs {need}")
    dup = df["problem_id"][df["problem_id"].duplicated()]
    if len(dup):
        raise SteerBenchError(f"{source}: duplicate problem_id(s) {dup.head(5).tolist()}")
    for col in ("problem_id", "problem", "answer"):
        bad = df["problem_id"][~df[col].map(lambda v: isinstance(v, str) and v.strip() != "")]
        if len(bad):
            raise SteerBenchError(f"{source}: empty or non-string {col!r} in row(s) {bad.head(5).tolist()}")
    bad = df["problem_id"][~df["prompt"].map(is_messages)]
    if len(bad):
        rows = bad.head(5).tolist()
        raise SteerBenchError(f"{source}: 'prompt' must be a non-empty list of {{role, content}} in row(s) {rows}")
    return df


def is_messages(value: object) -> bool:
    if value is None or isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) == 0:
        return False
    return all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def load_prepared(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a prepared parquet and validate it; ``prompt`` comes back as a list of plain dicts per row."""
    df = read_parquet(path, what="prepared dataset")
    if "prompt" in df.columns:
        # pyarrow returns numpy arrays of dicts; callers (chat templates) expect lists.
        df["prompt"] = df["prompt"].map(lambda v: [dict(m) for m in v] if v is not None else v)
    return check_frame(df, source=str(path))
