"""Gather an experiment's numbers: from MLflow (what ``report`` uses) or from the run files (the artefacts).

Both readers return the same :class:`Results`, so a test can check that MLflow and the files agree.

- Evaluations: one accuracy in [0, 1] per (row, seed, benchmark): the ``eval/<b>/acc`` metric of eval runs
  tagged ``kind=eval``, or ``metrics.acc`` of ``eval/<row>[/seed<k>]/<b>/summary.json``. Eval-only rows have
  seed ``None``. Its standard error (``acc_se``) is read alike, where recorded. Only rows and seeds of the
  experiment config count; when several eval runs hold the same cell,
  the newest finished one wins; trained rows only count runs of the configured checkpoint (``eval.checkpoint``).
- Training curves: (step, value) per (method, seed, metric key), for the keys in ``CURVE_KEYS``: the metric
  histories of the newest ``kind=train`` run per (method, seed), or ``runs/<method>/seed<k>/metrics.jsonl``
  (the last line of a step wins, as MLflow keeps a re-logged step's latest value; non-finite values are skipped,
  as the tracker skips them).
- Per-problem accuracy (``per_problem_accuracy``, for the single-seed paired bootstrap): the fraction of each
  problem's samples graded correct, from ``eval/<row>[/seed<k>]/<b>/samples.jsonl`` of a complete evaluation (the
  files, whichever source the rest came from: MLflow holds no per-problem rows).
- Checkpoint-selection views (``eval.selection_views``): the accuracies of a trained run's other checkpoints
  (``view_acc``), from eval runs tagged ``checkpoint=<view>`` or ``eval/<method>/seed<k>/<view>/<b>/summary.json``;
  the main view's are ``acc``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steer_bench import tracking
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation import runner
from steer_bench.experiment import ExperimentConfig
from steer_bench.files import read_json, read_jsonl, write_json

log = logging.getLogger(__name__)

EvalKey = tuple[str, int | None, str]  # (row, seed or None for an eval-only row, benchmark)
RunKey = tuple[str, int]  # (method, seed)
Curve = list[tuple[int, float]]

# The training metrics the figures draw. The STEER λ fraction has had two names; both are read.
CURVE_KEYS = (
    "rollout/entropy_mean",
    "val/avg_at_k",
    "rollout/response_len_mean",
    "loss/clipfrac_high",
    "loss/clipfrac_low",
    "steer/lambda_mean",
    "steer/lambda_min",
    "steer/frac_lambda_below_099",
    "steer/frac_below_0_99",
    "probe/entropy",
    "probe/entropy_fork",
    "probe/entropy_rest",
    "probe/fork_correct",
    "probe/avg_at_k",
)
_PASS_AT = re.compile(r"pass_at_(\d+)$")


@dataclass
class Results:
    acc: dict[EvalKey, float] = field(default_factory=dict)
    """Headline accuracy in [0, 1] (avg@k with the protocol's k)."""
    acc_se: dict[EvalKey, float] = field(default_factory=dict)
    """Its standard error over problems (``acc_se``), where the evaluation recorded one."""
    pass_at: dict[EvalKey, dict[int, float]] = field(default_factory=dict)
    """Unbiased pass@k in [0, 1] for the k's the evaluation reported (powers of two up to its k)."""
    curves: dict[RunKey, dict[str, Curve]] = field(default_factory=dict)
    eval_info: dict[tuple[str, int | None], dict[str, Any]] = field(default_factory=dict)
    """Per evaluated (row, seed): model, protocol, engine, versions, checkpoint, source (run id or file)."""
    train_info: dict[RunKey, dict[str, Any]] = field(default_factory=dict)
    """Per training run: run id or folder, status, versions."""
    view_acc: dict[tuple[str, str, int, str], float] = field(default_factory=dict)
    """(view, method, seed, benchmark) -> accuracy of a selection view other than the main one (best | last |
    best_disjoint; ``eval.selection_views``)."""
    source: str = ""


def expected_rows(exp: ExperimentConfig) -> dict[str, list[int | None]]:
    """Table rows in display order (eval-only rows first, as the paper puts Base on top) and their seeds."""
    rows: dict[str, list[int | None]] = {r.name: [None] for r in exp.eval_only}
    rows.update({m: list(exp.seeds) for m in exp.methods})
    return rows


# ---------------------------------------------------------------------------------------------- MLflow
def remirror_failed_runs(exp: ExperimentConfig, uri: str) -> list[str]:
    """Re-mirror into MLflow every training run and evaluation whose store failed while it ran (``tracking_error``
    in its ``train.done`` or ``eval.done``) from its files, then clear the mark; returns the folders mirrored.
    Training runs go first: an evaluation is nested under its training run as that run is now."""
    done_runs = _remirror_training(exp, uri)
    for row, seeds in expected_rows(exp).items():
        for seed in seeds:
            folder = exp.eval_dir(row, seed)
            done_file = folder / "eval.done"
            if not done_file.is_file() or not read_json(done_file).get("tracking_error"):
                continue
            train_done = exp.run_dir(row, seed) / "train.done" if seed is not None else None
            train_run = read_json(train_done).get("mlflow_run_id") if train_done and train_done.is_file() else None
            done = runner.remirror(folder, exp.name, uri, train_run_id=train_run)
            _still_failing(folder, uri, done.get("tracking_error"))
            log.info("%s: re-mirrored into MLflow run %s from its summaries", folder, done["mlflow_run_id"])
            done_runs.append(str(folder))
    return done_runs


def _remirror_training(exp: ExperimentConfig, uri: str) -> list[str]:
    done_runs = []
    for method in exp.methods:
        for seed in exp.seeds:
            run_dir = exp.run_dir(method, seed)
            done_file = run_dir / "train.done"
            done = read_json(done_file) if done_file.is_file() else {}
            if not done.get("tracking_error"):
                continue
            tracker = tracking.Tracker(
                exp.name,
                run_name=f"{method}-seed{seed}",
                run_id=done.get("mlflow_run_id"),
                tags=tracking.train_run_tags(method, seed, run_dir),
                uri=uri,
            )
            tracking.mirror_metrics(tracker, read_jsonl(run_dir / "metrics.jsonl"))
            tracking.mirror_metrics(tracker, [{"step": done.get("steps", 0)} | tracking.headline_metrics(done)])
            tracker.finish("FINISHED")
            _still_failing(run_dir, uri, tracker.error)
            done.pop("tracking_error")
            write_json(done_file, done | {"mlflow_run_id": tracker.run_id})
            log.info("%s: re-mirrored into MLflow run %s from metrics.jsonl", run_dir, tracker.run_id)
            done_runs.append(str(run_dir))
    return done_runs


def _still_failing(folder: Path, uri: str, error: str | None) -> None:
    if error:
        raise SteerBenchError(
            f"{folder}: its MLflow mirror is incomplete and the store {uri} still fails ({error}); fix the store, "
            "or build the report from the files: steer-bench report --source files"
        )


def from_mlflow(exp: ExperimentConfig, uri: str) -> Results:
    """Read every eval and train run of the experiment ``exp.name`` from the MLflow store at ``uri``."""
    rows, views = expected_rows(exp), exp.selection_views()
    out = Results(source=f"MLflow {uri}, experiment {exp.name!r}")
    for run in _newest_finished_first(tracking.search_runs(exp.name, filter_string="tags.kind = 'eval'", uri=uri)):
        tags = run.data.tags
        row, seed = tags.get("row", ""), _seed(tags.get("seed", ""))
        if row not in rows or seed not in rows[row]:
            continue
        if seed is not None and tags.get("checkpoint") in views:
            for bench in exp.data.benchmarks:
                value = run.data.metrics.get(tracking.sanitize_key(f"eval/{bench}/acc"))
                if value is not None:
                    out.view_acc.setdefault((tags["checkpoint"], row, seed, bench), value)
            continue
        if seed is not None and tags.get("checkpoint") not in (None, "", exp.eval.checkpoint):
            continue
        found = False
        for bench in exp.data.benchmarks:
            value = run.data.metrics.get(tracking.sanitize_key(f"eval/{bench}/acc"))
            if value is not None and (row, seed, bench) not in out.acc:
                out.acc[(row, seed, bench)] = value
                se = run.data.metrics.get(tracking.sanitize_key(f"eval/{bench}/acc_se"))
                if se is not None:
                    out.acc_se[(row, seed, bench)] = se
                prefix = tracking.sanitize_key(f"eval/{bench}/")
                out.pass_at[(row, seed, bench)] = _pass_at(
                    {k.removeprefix(prefix): v for k, v in run.data.metrics.items() if k.startswith(prefix)}
                )
                found = True
        if found and (row, seed) not in out.eval_info:
            out.eval_info[(row, seed)] = _eval_info_from_run(run) | _protocol_from_files(exp, row, seed)
    for run in _newest_finished_first(tracking.search_runs(exp.name, filter_string="tags.kind = 'train'", uri=uri)):
        method, seed = run.data.tags.get("method", ""), _seed(run.data.tags.get("seed", ""))
        if method not in exp.methods or seed not in exp.seeds or (method, seed) in out.curves:
            continue
        logged = set(run.data.metrics)
        out.curves[(method, seed)] = {
            k: tracking.metric_history(run.info.run_id, k, uri=uri)
            for k in CURVE_KEYS
            if tracking.sanitize_key(k) in logged
        }
        params = run.data.params
        out.train_info[(method, seed)] = {
            "source": f"run {run.info.run_id}",
            "status": run.info.status,
            "versions": {k.removeprefix("env."): v for k, v in params.items() if k.startswith("env.")},
        }
    return out


def _newest_finished_first(runs: list[Any]) -> list[Any]:
    return sorted(runs, key=lambda r: (r.info.status != "FINISHED", -(r.info.start_time or 0)))


def _seed(text: str) -> int | None:
    """The ``seed`` tag: an integer for a trained row, "" for an eval-only row."""
    text = str(text).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        log.warning("ignoring a run with a non-integer seed tag %r", text)
        return -1  # matches no configured seed


def _protocol_from_files(exp: ExperimentConfig, row: str, seed: int | None) -> dict[str, Any]:
    """The full protocol and versions from a summary.json of the same evaluation (MLflow tags hold only names)."""
    for bench in exp.data.benchmarks:
        summary = _read_summary(exp.eval_dir(row, seed) / bench / "summary.json")
        if summary is not None:
            return {k: summary[k] for k in ("protocol", "engine", "versions") if summary.get(k)}
    return {}


def _eval_info_from_run(run: Any) -> dict[str, Any]:
    tags = run.data.tags
    info = {k: tags[k] for k in ("model", "protocol", "checkpoint", "method") if tags.get(k)}
    info["source"] = f"run {run.info.run_id}"
    return info


# ---------------------------------------------------------------------------------------------- files
def from_files(exp: ExperimentConfig) -> Results:
    """Read the same numbers from ``results/<exp>/eval/**/summary.json`` and ``runs/**/metrics.jsonl``."""
    out = Results(source=f"files under {exp.root}")
    for row, seeds in expected_rows(exp).items():
        for seed in seeds:
            for bench in exp.data.benchmarks:
                summary = _read_summary(exp.eval_dir(row, seed) / bench / "summary.json")
                if summary is None:
                    continue
                out.acc[(row, seed, bench)] = float(summary["metrics"]["acc"])
                if summary["metrics"].get("acc_se") is not None:
                    out.acc_se[(row, seed, bench)] = float(summary["metrics"]["acc_se"])
                out.pass_at[(row, seed, bench)] = _pass_at(summary["metrics"])
                out.eval_info.setdefault((row, seed), _eval_info_from_summary(summary, exp.eval_dir(row, seed)))
    for view in exp.selection_views():
        for method in exp.methods:
            for seed in exp.seeds:
                for bench in exp.data.benchmarks:
                    summary = _read_summary(exp.view_eval_dir(method, seed, view) / bench / "summary.json")
                    if summary is not None:
                        out.view_acc[(view, method, seed, bench)] = float(summary["metrics"]["acc"])
    for method in exp.methods:
        for seed in exp.seeds:
            path = exp.run_dir(method, seed) / "metrics.jsonl"
            if path.is_file():
                out.curves[(method, seed)] = curves_from_jsonl(path)
                out.train_info[(method, seed)] = {"source": str(path.parent), "versions": _env_versions(path.parent)}
    return out


def per_problem_accuracy(exp: ExperimentConfig, row: str, seed: int | None, bench: str) -> dict[Any, float] | None:
    """``{problem_id: fraction of its samples correct}`` in file order; None if the evaluation is incomplete."""
    folder = exp.eval_dir(row, seed) / bench
    path = folder / "samples.jsonl"
    if _read_summary(folder / "summary.json") is None or not path.is_file():
        return None
    counts: dict[Any, list[int]] = {}
    for line in read_jsonl(path):
        c = counts.setdefault(line["problem_id"], [0, 0])
        c[0] += bool(line["correct"])
        c[1] += 1
    return {pid: right / total for pid, (right, total) in counts.items()}


def _pass_at(metrics: dict[str, Any]) -> dict[int, float]:
    """``{k: pass@k}`` from an evaluation's metric names (``pass_at_8``; not their ``_se``)."""
    return {int(m[1]): float(v) for key, v in metrics.items() if (m := _PASS_AT.match(key)) and v is not None}


def _read_summary(path: Path) -> dict[str, Any] | None:
    """A complete evaluation's summary; None when absent or unfinished (it then shows as missing)."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("complete") else None


def _eval_info_from_summary(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    info = {k: summary[k] for k in ("model", "protocol", "engine", "versions", "method") if summary.get(k)}
    info["source"] = str(folder)
    return info


def curves_from_jsonl(path: Path) -> dict[str, Curve]:
    """``{key: [(step, value), ...]}`` for ``CURVE_KEYS`` from a metrics.jsonl (a re-logged step keeps its last)."""
    by_step: dict[str, dict[int, float]] = {}
    for line in read_jsonl(path):
        step = int(line["step"])
        for key, value in line.items():
            key = tracking.sanitize_key(key)
            if key in CURVE_KEYS and isinstance(value, int | float) and math.isfinite(value):
                by_step.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in by_step.items()}


def _env_versions(run_dir: Path) -> dict[str, str]:
    path = run_dir / "env.json"
    return {k: str(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
