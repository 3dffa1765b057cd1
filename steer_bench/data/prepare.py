"""``steer-bench prepare``: one registry dataset -> one normalised parquet (schema: ``schema.py``).

Steps: read (local verl parquet, Hub, or the synthetic generator) -> recover the raw problem by stripping the
release's instruction -> check rows (empty problem, missing gold, one prompt with two golds) -> de-duplicate
identical prompts (the release repeats AIME/AMC problems 32x) -> assign ids -> check that every gold parses
and grades correct against itself with math-verify -> optional seeded subset -> render the prompt template ->
write the parquet and a ``<name>.prepare.json`` with the counts, atomically.

Bad rows raise a :class:`SteerBenchError` naming the dataset and the row ids, unless ``on_bad_row="skip"``,
which drops them and counts them in the stats.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steer_bench.data.registry import SHARED_DATA_ENV, DatasetSpec, HubSource, get_spec
from steer_bench.data.schema import check_frame, is_messages
from steer_bench.data.synthetic import make_synthetic
from steer_bench.data.templates import FORMATS, TEMPLATES, render, split_instruction
from steer_bench.errors import SteerBenchError
from steer_bench.files import atomic_path, write_json
from steer_bench.grading import Grader  # math-verify itself is imported by the grading workers, not here
from steer_bench.inputs import read_parquet

log = logging.getLogger(__name__)
BAD_ROW_POLICIES = ("error", "skip")
DEFAULT_SYNTH_LEVELS = (1, 2, 3)


# ------------------------------------------------------------------------------------------------- reading


def _cell(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _answer_text(value: Any, after: str | None = None) -> str | None:
    """A gold answer as a string: a one-element list unwrapped (longer ones joined with ", "), integral floats
    written as integers, surrounding ``$`` stripped, only the text after ``after`` kept."""
    if isinstance(value, list | tuple | np.ndarray):
        if len(value) != 1:
            return None if len(value) == 0 else ", ".join(str(v) for v in value)
        value = value[0]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if after is not None:
        text = text.rsplit(after, 1)[-1]
    return text.strip().strip("$").strip()


def _from_verl(df: pd.DataFrame, name: str, origin: str) -> pd.DataFrame:
    """Raw rows (index, source, content, problem=None, answer) from a verl-format frame."""
    missing = [c for c in ("prompt", "reward_model") if c not in df.columns]
    if missing:
        raise SteerBenchError(
            f"{name}: {origin} lacks column(s) {missing} (the prompt and the answer 'reward_model.ground_truth'); "
            f"columns present: {list(df.columns)}"
        )
    _check_cells(df["prompt"], is_messages, "'prompt' must be a list of {role, content} messages", origin)
    _check_cells(df["reward_model"], lambda r: isinstance(r, dict), "'reward_model' must be a struct", origin)
    answers = df["reward_model"].map(lambda r: _cell(r, "ground_truth"))
    if answers.isna().all():
        raise SteerBenchError(f"{name}: {origin} has no answer field 'reward_model.ground_truth' in any row")

    def user_content(messages: Any) -> str | None:
        users = [m["content"] for m in (messages if messages is not None else []) if m.get("role") == "user"]
        return users[-1] if users else None

    extra = df["extra_info"] if "extra_info" in df.columns else pd.Series([None] * len(df), index=df.index)
    return pd.DataFrame(
        {
            "index": extra.map(lambda e: _cell(e, "index")).tolist(),
            "source": (df["data_source"] if "data_source" in df.columns else pd.Series([origin] * len(df))).tolist(),
            "content": df["prompt"].map(user_content).tolist(),
            "problem": [None] * len(df),
            "answer": answers.map(_answer_text).tolist(),
        }
    )


def _check_cells(column: pd.Series, ok: Any, rule: str, origin: str) -> None:
    """Wrong column types (e.g. a string prompt, an int answer struct) are named, not a TypeError later."""
    bad = [i for i, v in enumerate(column) if v is not None and not ok(v)]
    if bad:
        example = column.iloc[bad[0]]
        raise SteerBenchError(
            f"{origin}: {rule}; {len(bad)} row(s) are not, e.g. row {bad[0]}: {type(example).__name__} {example!r:.80}"
        )


def _from_columns(df: pd.DataFrame, name: str, hub: HubSource) -> pd.DataFrame:
    """Raw rows from a plain-column Hub dataset, through the registry's column mapping."""
    wanted = {"problem": hub.problem, "answer": hub.answer} | ({"id": hub.id} if hub.id else {})
    missing = {k: c for k, c in wanted.items() if c not in df.columns}
    if missing:
        raise SteerBenchError(
            f"{name}: Hub dataset {hub.repo} lacks the mapped column(s) {missing}; columns present: {list(df.columns)}"
        )
    return pd.DataFrame(
        {
            "index": df[hub.id].tolist() if hub.id else [None] * len(df),
            "source": [hub.repo] * len(df),
            "content": [None] * len(df),
            "problem": df[hub.problem].map(lambda p: None if p is None else str(p)).tolist(),
            "answer": df[hub.answer].map(lambda a: _answer_text(a, hub.answer_after)).tolist(),
        }
    )


def read_raw(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None) -> tuple[pd.DataFrame, str]:
    """(raw rows, where they came from): the local file when ``data_dir`` is given, else the Hub."""
    if data_dir is not None:
        if spec.local_file is None:
            raise SteerBenchError(f"{spec.name}: no local file registered; prepare it from the Hub (no --data-dir)")
        path = Path(data_dir) / spec.local_file
        return _from_verl(read_parquet(path, what=f"{spec.name} source file"), spec.name, str(path)), str(path)
    if spec.hub is None:
        raise SteerBenchError(f"{spec.name}: no Hub source registered; pass --data-dir")
    import datasets  # heavy; only on this path

    hub = spec.hub
    df = datasets.load_dataset(hub.repo, hub.config, split=hub.split).to_pandas()
    if hub.layout == "verl":
        return _from_verl(df, spec.name, hub.repo), hub.repo
    return _from_columns(df, spec.name, hub), hub.repo


# ---------------------------------------------------------------------------------------------- normalising


def _label(name: str, index: Any, row: int) -> str:
    if index is None or (isinstance(index, float) and np.isnan(index)):
        return f"{name}#row{row}"
    return f"{name}/{index:04d}" if isinstance(index, int | np.integer) else f"{name}/{index}"


def _split(content: str, spec: DatasetSpec) -> tuple[str, str, int] | None:
    """(problem, format, variant): the dataset's own format first, then any other instruction format."""
    others = [f for f in FORMATS if f not in (spec.paper_format, "bare")]
    for fmt in [spec.paper_format, *others]:
        found = split_instruction(content, fmt)
        if found is not None:
            return found[0], fmt, found[1]
    return None


def check_rows(raw: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Add ``label``, ``problem``, ``fmt``, ``variant``, ``key``; return (rows, {reason: [labels of bad rows]})."""
    raw = raw.reset_index(drop=True).copy()
    raw["label"] = [_label(spec.name, ix, i) for i, ix in enumerate(raw["index"])]
    bad: dict[str, list[str]] = {}
    problems, fmts, variants = [], [], []
    for row in raw.itertuples():
        split = (row.problem, spec.paper_format, 0) if row.content is None else _split(row.content, spec)
        if split is None:
            bad.setdefault(f"prompt does not match the {spec.paper_format!r} instruction format", []).append(row.label)
            split = (None, spec.paper_format, 0)
        problems.append(split[0])
        fmts.append(split[1])
        variants.append(split[2])
        if split[0] is not None and not split[0].strip():
            bad.setdefault("empty problem", []).append(row.label)
        if not row.answer:
            bad.setdefault("missing or empty answer", []).append(row.label)
    raw["problem"], raw["fmt"], raw["variant"] = problems, fmts, variants
    raw["key"] = [c if c is not None else p for c, p in zip(raw["content"], raw["problem"], strict=True)]
    golds = raw[raw["answer"].notna()].groupby("key")["answer"].nunique()
    for key in golds[golds > 1].index:
        bad.setdefault("one prompt with different golds", []).extend(raw.loc[raw["key"] == key, "label"])
    return raw, {reason: list(dict.fromkeys(labels)) for reason, labels in bad.items()}  # repeated rows once


def dedup_and_ids(rows: pd.DataFrame, name: str) -> tuple[pd.DataFrame, str]:
    """One row per distinct prompt; ``problem_id`` from the source index when the kept rows' indices are unique
    (a merged duplicate keeps its first index), else from a hash of the problem text."""
    uniq = rows.drop_duplicates("key", keep="first").copy()
    index_ok = uniq["index"].notna().all() and uniq["index"].is_unique
    if index_ok:
        uniq["problem_id"] = uniq["label"]
        if all(isinstance(i, int | np.integer) for i in uniq["index"]):
            uniq = uniq.sort_values("index", kind="stable")
        return uniq, "source index"
    uniq["problem_id"] = [f"{name}/{hashlib.sha256(p.encode()).hexdigest()[:12]}" for p in uniq["problem"]]
    if not uniq["problem_id"].is_unique:
        raise SteerBenchError(f"{name}: two problems with the same text behind different prompts")
    return uniq, "content hash"


def gold_failures(golds: Sequence[str], labels: Sequence[str], *, workers: int) -> dict[str, list[str]]:
    """Golds that math-verify cannot parse, or that do not grade correct against ``\\boxed{gold}``."""
    with Grader(workers=workers, timeout=10.0) as grader:
        verdicts = grader.grade([f"\\boxed{{{g}}}" for g in golds], list(golds))
    bad: dict[str, list[str]] = {}
    for label, v in zip(labels, verdicts, strict=True):
        if v.status != "ok":
            bad.setdefault(f"gold does not grade ({v.status}: {v.error})", []).append(label)
        elif not v.math_verify:
            bad.setdefault("gold is not math-verify-equal to itself", []).append(label)
    return bad


def _raise_or_count(name: str, bad: dict[str, list[str]], policy: str) -> dict[str, int]:
    if not bad:
        return {}
    if policy == "error":
        lines = [
            f"  - {reason}: {len(ids)} row(s): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
            for reason, ids in bad.items()
        ]
        raise SteerBenchError(f"{name}: bad rows (pass --on-bad-row skip to drop them):\n" + "\n".join(lines))
    return {reason: len(ids) for reason, ids in bad.items()}


# ------------------------------------------------------------------------------------------------ preparing


def _subset(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``limit`` problems, kept in dataset order."""
    if limit is None or limit >= len(df):
        return df
    if limit < 1:
        raise SteerBenchError(f"--limit must be >= 1, got {limit}")
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=limit, replace=False))
    return df.iloc[keep]


def _normalised(spec: DatasetSpec, raw: pd.DataFrame, stats: dict, opts: dict) -> pd.DataFrame:
    rows, bad = check_rows(raw, spec)
    if not opts["release"]:  # Hub rows: ``paper`` is the release's prompt around the problem, whatever the Hub had
        rows["fmt"], rows["variant"] = spec.paper_format, 0
    stats["skipped"] = _raise_or_count(spec.name, bad, opts["on_bad_row"])
    rows = rows[~rows["label"].isin({label for ids in bad.values() for label in ids})]
    uniq, stats["id_kind"] = dedup_and_ids(rows, spec.name)
    stats["unique_problems"] = len(uniq)
    if opts["check_golds"]:
        bad = gold_failures(uniq["answer"].tolist(), uniq["problem_id"].tolist(), workers=opts["workers"])
        stats["skipped"] |= _raise_or_count(spec.name, bad, opts["on_bad_row"])
        uniq = uniq[~uniq["problem_id"].isin({label for ids in bad.values() for label in ids})]
    uniq = _subset(uniq, opts["limit"], opts["seed"])
    prompts = [render(opts["template"], r.problem, fmt=r.fmt, variant=r.variant) for r in uniq.itertuples()]
    return pd.DataFrame(
        {
            "problem_id": uniq["problem_id"].tolist(),
            "dataset": spec.name,
            "source": uniq["source"].tolist(),
            "problem": uniq["problem"].tolist(),
            "prompt": prompts,
            "answer": uniq["answer"].tolist(),
        }
    )


def prepare_dataset(  # noqa: PLR0913 -- the `prepare` subcommand's options, keyword-only
    name: str,
    out: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    template: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    on_bad_row: str = "error",
    check_golds: bool = True,
    workers: int = 2,
    levels: Sequence[int] = DEFAULT_SYNTH_LEVELS,
) -> dict[str, Any]:
    """Write dataset ``name`` as a normalised parquet at ``out``; return the stats also written beside it.

    ``data_dir`` (or env ``STEER_BENCH_SHARED_DATA``) selects the local release files, else the Hub.
    ``template`` defaults to the registry's. ``limit``/``seed``: a seeded subset (synthetic: the number of
    problems generated and the generator's seed). ``check_golds``: grade every gold against itself first.
    """
    spec = get_spec(name)
    template = template or spec.template
    if template not in TEMPLATES:
        raise SteerBenchError(f"unknown prompt template {template!r}; valid: {list(TEMPLATES)}")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise SteerBenchError(f"on_bad_row must be one of {list(BAD_ROW_POLICIES)}, got {on_bad_row!r}")
    data_dir = data_dir if data_dir is not None else os.environ.get(SHARED_DATA_ENV) or None
    stats: dict[str, Any] = {"dataset": name, "template": template, "limit": limit, "seed": seed}
    if spec.synthetic_split is not None:
        n = spec.default_size if limit is None else limit
        df = make_synthetic(spec.synthetic_split, n, seed=seed, levels=levels)
        df["prompt"] = [render(template, p, fmt=spec.paper_format) for p in df["problem"]]
        stats |= {"origin": "synthetic", "levels": list(levels), "rows_read": len(df), "unique_problems": len(df)}
        stats |= {"skipped": {}, "id_kind": "content hash"}
    else:
        raw, stats["origin"] = read_raw(spec, data_dir)
        stats["rows_read"] = len(raw)
        opts = {
            "on_bad_row": on_bad_row,
            "check_golds": check_golds,
            "workers": workers,
            "limit": limit,
            "seed": seed,
            "template": template,
            "release": data_dir is not None,
        }
        df = _normalised(spec, raw, stats, opts)
    check_frame(df, source=f"{name} (prepared)")
    stats["written"] = len(df)
    out = Path(out)
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
    write_json(out.with_name(out.stem + ".prepare.json"), stats)
    log.info("%s: %d problems from %s -> %s (skipped: %s)", name, len(df), stats["origin"], out, stats["skipped"])
    return stats


# ---------------------------------------------------------------------------------------------------- CLI
