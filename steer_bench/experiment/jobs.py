"""What to evaluate: a trained run's checkpoint, an experiment's eval-only row, or any model (standalone).

Checkpoint selection of a trained run (``eval.checkpoint``): ``best`` evaluates ``checkpoints/best`` (the best
validation score, step in ``train.done``); a run trained without validation keeps no best checkpoint, and then
``last`` is evaluated and recorded as ``checkpoint_used`` (the ``checkpoint`` tag keeps the rule asked for, so
the report still finds the row). ``last`` evaluates ``checkpoints/last``.

Selection views (``eval.selection_views``, :func:`view_jobs`): the other checkpoints of the same run — ``best``,
``last`` and ``best_disjoint`` (selected on ``data.selection``), whichever is not the main view — each into
``eval/<method>/seed<k>/<view>/``, tagged ``checkpoint=<view>`` (so the main table never reads them). A view
whose checkpoint the run did not keep (no validation) falls back to ``last`` as the main view does.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from steer_bench import files
from steer_bench.data.prepare import prepare_dataset
from steer_bench.data.registry import SHARED_DATA_ENV, get_spec
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation.runner import EvalJob
from steer_bench.experiment import ExperimentConfig

log = logging.getLogger(__name__)


def _benchmark_files(exp: ExperimentConfig) -> dict[str, Path]:
    return {b: exp.data_path(b) for b in exp.data.benchmarks}


def trained_run_job(
    exp: ExperimentConfig, method: str, seed: int, *, experiment: str | None = None, view: str | None = None
) -> EvalJob:
    """The job for ``method``/``seed`` of ``exp``: its finished run's configured checkpoint, or the ``view``
    checkpoint (best | last | best_disjoint) into its view folder."""
    if method not in exp.methods or seed not in exp.seeds:
        raise SteerBenchError(
            f"experiment {exp.name!r} has no run {method}/seed{seed}; methods {exp.methods}, seeds {exp.seeds}"
        )
    run_dir = exp.run_dir(method, seed)
    done_path = run_dir / "train.done"
    if not done_path.is_file():
        raise SteerBenchError(f"{method}/seed{seed} is not trained yet: {done_path} not found")
    done = files.read_json(done_path)
    want = used = view or exp.eval.checkpoint
    if want != "last" and not (run_dir / "checkpoints" / want).is_dir():
        used = "last"
        log.warning("%s: no %s checkpoint (validation was off); evaluating the last one", run_dir, want)
    folder = run_dir / "checkpoints" / used
    if not folder.is_dir():
        raise SteerBenchError(f"{method}/seed{seed}: checkpoint folder {folder} not found")
    state = folder / "state.json"
    step = (
        files.read_json(state).get("step")
        if state.is_file()
        else done.get(f"{used}_step" if used != "last" else "steps")
    )
    main = view is None or view == exp.eval.checkpoint
    return EvalJob(
        model=str(folder),
        row=method,
        out_dir=exp.view_eval_dir(method, seed, want),
        benchmarks=_benchmark_files(exp),
        experiment=experiment or exp.name,
        method=method,
        seed=seed,
        checkpoint=want,
        checkpoint_used=used,
        checkpoint_step=step,
        train_run_id=done.get("mlflow_run_id") if main else None,  # views: not copied into it
    )


def view_jobs(exp: ExperimentConfig, method: str, seed: int, *, experiment: str | None = None) -> list[EvalJob]:
    """The selection views' jobs of one trained run (``eval.selection_views``; empty when off)."""
    return [trained_run_job(exp, method, seed, experiment=experiment, view=v) for v in exp.selection_views()]


def eval_only_job(exp: ExperimentConfig, row: str, *, experiment: str | None = None) -> EvalJob:
    """The job for eval-only row ``row`` (``model: warmstart`` = the experiment's tiny model)."""
    rows = {r.name: r for r in exp.eval_only}
    if row not in rows:
        raise SteerBenchError(f"experiment {exp.name!r} has no eval-only row {row!r}; rows: {list(rows)}")
    model = rows[row].model
    if model == "warmstart":
        if not exp.warmstart:
            raise SteerBenchError(f"eval-only row {row!r} asks for the warm start, but {exp.name!r} has none")
        model = str(exp.warmstart_dir())
    return EvalJob(
        model=model,
        row=row,
        out_dir=exp.eval_dir(row, None),
        benchmarks=_benchmark_files(exp),
        experiment=experiment or exp.name,
    )


def default_row(model: str) -> str:
    """A row label from a model: a folder's name, a Hub id with '/' as '__'."""
    name = Path(model).name if Path(model).is_dir() else model.replace("/", "__")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "model"


def standalone_job(
    model: str,
    benchmarks: list[str],
    out: Path,
    *,
    experiment: str,
    row: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    workers: int = 2,
) -> EvalJob:
    """A job for any model. Each benchmark is a registry name, prepared into ``out/data/<name>.parquet`` (a
    seeded subset of ``limit`` problems) unless already there from the same source and limit, or
    ``name=path.parquet`` for a file prepared elsewhere."""
    files = {}
    for item in benchmarks:
        name, _, path = item.partition("=")
        if path:
            files[name] = Path(path)
            continue
        files[name] = out / "data" / f"{name}.parquet"
        _prepare_if_needed(name, files[name], data_dir=data_dir, limit=limit, workers=workers)
    return EvalJob(model=model, row=row or default_row(model), out_dir=out, benchmarks=files, experiment=experiment)


def _prepare_if_needed(
    name: str, path: Path, *, data_dir: str | os.PathLike[str] | None, limit: int | None, workers: int
) -> None:
    spec = get_spec(name)  # an unknown benchmark fails here, naming the valid ones
    data_dir = data_dir if data_dir is not None else os.environ.get(SHARED_DATA_ENV) or None
    if spec.synthetic_split:
        origin = "synthetic"
    elif data_dir is not None:
        origin = str(Path(data_dir) / (spec.local_file or ""))
    else:
        origin = spec.hub.repo if spec.hub else ""
    stats_path = path.with_name(path.stem + ".prepare.json")
    if path.is_file() and stats_path.is_file():
        stats = files.read_json(stats_path)
        if stats.get("limit") == limit and stats.get("origin") == origin:
            return
    prepare_dataset(name, path, data_dir=data_dir, limit=limit, workers=workers)
