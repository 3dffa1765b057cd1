"""The experiment config: what `snakemake` runs (one YAML = one study: data, model, methods × seeds, eval).

It composes the per-run :class:`~steer_bench.config.run.TrainConfig` (the ``train:`` section, completed
with the model path, the training data, the method and the seed) and fixes the on-disk layout that the
Snakefile and every subcommand share::

    results/<name>/data/<dataset>.parquet            prepared datasets
    results/<name>/warmstart/                        tiny model (when ``warmstart`` is set)
    results/<name>/runs/<method>/seed<k>/            one training run (train.done marks completion)
    results/<name>/eval/<row>/<benchmark>/           evaluation of a run or an eval-only model
    results/<name>/eval/<method>/seed<k>/<view>/     another checkpoint of a run (eval.selection_views)
    results/<name>/report/                           tables and figures

``load_experiment`` validates everything up front — unknown methods, benchmarks, keys, bad seeds — so a
broken config fails before any job starts, with a message naming the key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from steer_bench.config import StrictModel, apply_overrides, deep_merge, read_yaml, validate
from steer_bench.config.run import TrainConfig
from steer_bench.errors import SelectionOverlapError, SteerBenchError

if TYPE_CHECKING:
    from steer_bench.config.method import MethodConfig
from steer_bench.evaluation.schema import EvalSection


class DataSection(StrictModel):
    dir: str | None = None
    """Local folder of verl-format parquet files (the STEER release); None = env STEER_BENCH_SHARED_DATA or the Hub."""
    train: str
    """Registry name of the training set (dapo_math_17k, synth_train)."""
    validation: str | None = None
    """Registry name of the held-out set checked during training (the paper: aime24)."""
    benchmarks: list[str] = Field(min_length=1)
    selection: str | None = None
    """Registry name of a second held-out set, disjoint from every benchmark, on which the trainer also validates
    and keeps ``checkpoints/best_disjoint`` (e.g. a held-out slice of a training set, or a benchmark that is not
    reported). Refused when it is a benchmark or shares a problem with one (normalized problem text;
    :class:`~steer_bench.errors.SelectionOverlapError`). None: off."""
    selection_limit: int | None = Field(None, ge=1)
    """First N problems of the prepared selection set used for selection (None: all of it)."""
    selection_holdout: int | None = Field(None, ge=1)
    """Instead of ``selection``: hold out N problems of the training set (a fixed-seed subset, the same in every
    run, never trained on: :mod:`steer_bench.data.holdout`) as the disjoint selection set; checked against the
    benchmarks like ``selection``. None: off."""

    @model_validator(mode="after")
    def _one_selection_set(self) -> DataSection:
        if self.selection and self.selection_holdout:
            raise ValueError("data.selection and data.selection_holdout: set one disjoint selection set")
        return self

    def disjoint_selection(self) -> str | None:
        """What selects ``checkpoints/best_disjoint``, in words with Markdown code names (None: nothing)."""
        if self.selection_holdout:
            return f"{self.selection_holdout} held-out problems of `{self.train}`"
        return f"`{self.selection}`" if self.selection else None

    template: str = "paper"
    templates: dict[str, str] = {}
    """Per-dataset template overrides."""
    limits: dict[str, int] = {}
    """Per-dataset cap on problems (a seeded subset; for the synthetic task: how many to generate)."""
    synthetic_levels: list[int] = [1, 2]
    """Difficulty levels of the synthetic task (synth_train / synth_test), as in the warm start."""


class EvalOnlyRow(StrictModel):
    name: str
    """Row label in the tables (e.g. base, steer_release)."""
    model: str
    """HF folder or Hub id; the word ``warmstart`` means this experiment's tiny model."""


class ResourcesSection(StrictModel):
    """Per-rule Snakemake resources (the SLURM executor maps them to sbatch flags; locally a job asking for GPUs gets
    that many free devices, see steer_bench.launch)."""

    train_gpus: int = Field(0, ge=0)
    """GPUs per node of a training run."""
    train_nodes: int = Field(1, ge=1)
    """Nodes of a training run (SLURM): one launcher per node, each running the accelerate_config's processes."""
    eval_gpus: int = Field(0, ge=0)
    train_mem_mb: int = Field(4000, ge=1)
    eval_mem_mb: int = Field(4000, ge=1)
    train_minutes: int = Field(60, ge=1)
    eval_minutes: int = Field(60, ge=1)


class ExperimentConfig(StrictModel):
    name: str
    results_dir: str = "results"
    data: DataSection
    warmstart: str | None = None
    """Warm-start config (configs/warmstart/*.yaml) for the tiny model; None = use model_path."""
    model_path: str | None = None
    """HF folder or Hub id of the policy to train (paper: Qwen/Qwen2.5-Math-7B)."""
    methods: list[str] = Field(min_length=1)
    method_overrides: dict[str, list[str]] = {}
    """Per-method dotted overrides of the preset, e.g. {steer: ["loss.params.weight_min=0.7"]}."""
    controls: list[str] = []
    """Methods that are matched controls, not rows of the paper (e.g. a baseline at STEER's ε_high 0.28): the
    report marks their rows "(control)"."""
    seeds: list[int] = Field(min_length=1)
    train: dict[str, Any]
    """The TrainConfig fields shared by every run (model.path, data.train and seed are filled in)."""
    eval: EvalSection = EvalSection()
    eval_only: list[EvalOnlyRow] = []
    tree: str | None = None
    """Reasoning-tree testbed config (configs/tree/*.yaml) run by the pipeline; None = skip."""
    reference: str | None = None
    """Paper table whose numbers are printed beside ours (see steer_bench.report)."""
    resources: ResourcesSection = ResourcesSection()
    preflight: bool = False
    """Run ``steer-bench preflight`` as the first job: every train job waits for it to pass (steer_bench.preflight)."""
    accelerate_config: str | None = None
    """configs/accelerate/*.yaml: train jobs run under `accelerate launch` with it (multi-GPU); None = one process."""

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
        return seeds

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods listed twice: {methods}")
        return methods

    # ---- layout -------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.results_dir) / self.name

    def data_path(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}.parquet"

    def warmstart_dir(self) -> Path:
        return self.root / "warmstart"

    def policy_path(self) -> str:
        """The model every run starts from: the warm-started tiny model or ``model_path``."""
        if self.warmstart:
            return str(self.warmstart_dir())
        assert self.model_path is not None  # checked by load_experiment
        return self.model_path

    def tracking_db(self) -> Path:
        """The experiment's MLflow store when MLFLOW_TRACKING_URI is unset (train, eval and report agree on it)."""
        return self.root / "mlflow.db"

    def run_dir(self, method: str, seed: int) -> Path:
        return self.root / "runs" / method / f"seed{seed}"

    def eval_dir(self, row: str, seed: int | None) -> Path:
        """The evaluation of a trained run (row = method, with its seed) or of an eval-only row (seed None)."""
        base = self.root / "eval" / row
        return base if seed is None else base / f"seed{seed}"

    def datasets(self) -> list[str]:
        d = self.data
        names = [d.train, *([d.validation] if d.validation else []), *([d.selection] if d.selection else [])]
        return list(dict.fromkeys([*names, *d.benchmarks]))

    def selection_views(self) -> list[str]:
        """The checkpoint-selection views evaluated besides the main one (``eval.selection_views``), in the
        order best (on the validation set), last, best_disjoint; empty when off."""
        if not self.eval.selection_views:
            return []
        views = ["best", "last", *(["best_disjoint"] if self.data.disjoint_selection() else [])]
        return [v for v in views if v != self.eval.checkpoint]

    def view_eval_dir(self, method: str, seed: int, view: str) -> Path:
        """The evaluation of a trained run's ``view`` checkpoint; the main view is :meth:`eval_dir`."""
        return self.eval_dir(method, seed) if view == self.eval.checkpoint else self.eval_dir(method, seed) / view

    # ---- per-run configs ------------------------------------------------------------------------------
    def method(self, name: str, overrides: list[str] | None = None) -> MethodConfig:
        """The preset ``name`` with this experiment's ``method_overrides`` for it, then ``overrides``."""
        from steer_bench.config.method import load_method  # lazy: imports torch (the Snakefile parses this module)

        return load_method(name, [*self.method_overrides.get(name, []), *(overrides or [])])

    def train_config(self, seed: int, overrides: list[str] | None = None) -> TrainConfig:
        base: dict[str, Any] = {
            "experiment": self.name,
            "model": {"path": self.policy_path()},
            "data": {"train": str(self.data_path(self.data.train))},
            "seed": seed,
            "tracking_db": str(self.tracking_db()),
        }
        if self.data.validation:
            base["validation"] = {"data": str(self.data_path(self.data.validation))}
        if self.data.selection:
            base.setdefault("validation", {})["selection_data"] = str(self.data_path(self.data.selection))
            if self.data.selection_limit:
                base["validation"]["selection_limit"] = self.data.selection_limit
        if self.data.selection_holdout:
            base.setdefault("validation", {})["selection_holdout"] = self.data.selection_holdout
        merged = apply_overrides(deep_merge(base, self.train), overrides)
        return validate(TrainConfig, merged, source=f"experiment {self.name!r}, section 'train'")


# Configs the experiment names by file: ``--set <name>.<key>=value`` reaches into them (the method preset of the
# run, the warm-start recipe, the tree study, the evaluation protocol); every other path is into the experiment.
NESTED = ("method", "warmstart", "tree", "protocol")


def split_overrides(overrides: list[str] | None) -> tuple[list[str], dict[str, list[str]]]:
    """(experiment overrides, {nested config: its overrides}) from ``--set`` values (see :data:`NESTED`)."""
    own: list[str] = []
    nested: dict[str, list[str]] = {name: [] for name in NESTED}
    for text in overrides or []:
        head, dot, rest = text.partition(".")
        if dot and head in nested and "=" in rest and "=" not in head:
            nested[head].append(rest)
        else:
            own.append(text)
    return own, nested


def read_with_extends(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an experiment YAML; ``extends: <file>`` (relative to this file) deep-merges it over a base recipe."""
    path = Path(path).resolve()
    if path in _seen:
        raise SteerBenchError(f"{path}: 'extends' cycle through {[str(p) for p in _seen]}")
    data = read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    return deep_merge(read_with_extends(path.parent / base, (*_seen, path)), data)


def load_experiment(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and fully validate an experiment config (methods, presets, benchmarks, the train section)."""
    # lazy: the method presets and the protocol import torch, the dataset registry (steer_bench.data) pandas
    from steer_bench.config.method import list_methods, load_method
    from steer_bench.data.registry import REGISTRY as DATASETS
    from steer_bench.evaluation.protocol import load_protocol

    exp = validate(ExperimentConfig, apply_overrides(read_with_extends(path), overrides), source=str(path))
    if not exp.warmstart and not exp.model_path:
        raise SteerBenchError(f"{path}: set either 'warmstart' (tiny model) or 'model_path'")
    unknown = [d for d in exp.datasets() if d not in DATASETS]
    if unknown:
        raise SteerBenchError(f"{path}: unknown dataset(s) {unknown} in 'data'; known: {sorted(DATASETS)}")
    valid = list_methods()
    for m in exp.methods:
        if m not in valid:
            raise SteerBenchError(f"{path}: unknown method {m!r} in 'methods'; valid: {valid}")
    for m in exp.controls:
        if m not in exp.methods:
            raise SteerBenchError(f"{path}: 'controls' names {m!r}, which is not in 'methods'")
    for m, ov in exp.method_overrides.items():
        if m not in exp.methods:
            raise SteerBenchError(f"{path}: 'method_overrides' names {m!r}, which is not in 'methods'")
        load_method(m, ov)
    exp.train_config(exp.seeds[0])
    check_selection_disjoint(exp, path)
    load_protocol(exp.eval.protocol)  # a broken protocol fails now, not after training
    for ref in (exp.warmstart, exp.tree, exp.accelerate_config):
        if ref and not Path(ref).is_file():
            raise SteerBenchError(f"{path}: config file {ref!r} not found")
    check_launch(exp, path)
    return exp


def normalized_problem_hash(text: str) -> str:
    """SHA-256 of a problem's text, lower-cased with its whitespace collapsed (the overlap check's identity)."""
    return hashlib.sha256(" ".join(str(text).lower().split()).encode()).hexdigest()


def check_selection_disjoint(exp: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """``data.selection`` must share nothing with a reported benchmark: not its name (checked always) and not a
    problem (normalized text hash; checked wherever both prepared parquets exist, i.e. in every job after
    ``prepare``: training, eval and report load the experiment first). Raises :class:`SelectionOverlapError`."""
    sel = exp.data.selection
    if exp.data.selection_holdout:
        check_holdout_disjoint(exp, path)
        return
    if sel is None:
        return
    if sel in exp.data.benchmarks:
        raise SelectionOverlapError(
            f"{path}: data.selection {sel!r} is a reported benchmark (data.benchmarks {exp.data.benchmarks}): "
            "a checkpoint selected on it would be graded on its own selection set; pick a disjoint set"
        )
    sel_file = exp.data_path(sel)
    if not sel_file.is_file():
        return
    from steer_bench.inputs import read_parquet  # lazy: imports pandas

    problems = read_parquet(sel_file, what="prepared selection set")["problem"].tolist()
    if exp.data.selection_limit:
        problems = problems[: exp.data.selection_limit]
    refuse_shared(exp, path, problems, f"data.selection {sel!r}")


def check_holdout_disjoint(exp: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """The training set's held-out slice (``data.selection_holdout``) against the benchmarks, once the training set
    is prepared: the same slice the trainer holds out (after the run's ``data.limit``)."""
    from steer_bench.data.holdout import split_holdout  # lazy, as is read_parquet: they import pandas
    from steer_bench.inputs import read_parquet

    train_file = exp.data_path(exp.data.train)
    if not train_file.is_file():
        return
    cfg = exp.train_config(exp.seeds[0])
    df = read_parquet(train_file, what=f"prepared training set {exp.data.train}")
    df = df.head(cfg.data.limit) if cfg.data.limit else df
    _, held = split_holdout(df, exp.data.selection_holdout or 0, source=str(train_file))
    what = f"data.selection_holdout ({exp.data.disjoint_selection()})"
    refuse_shared(exp, path, held["problem"].tolist(), what)


def refuse_shared(exp: ExperimentConfig, path: str | os.PathLike[str], problems: list[str], what: str) -> None:
    """Raise :class:`SelectionOverlapError` when a selection set's ``problems`` share one with a benchmark."""
    from steer_bench.inputs import read_parquet  # lazy: imports pandas

    mine = {normalized_problem_hash(p) for p in problems}
    for bench in exp.data.benchmarks:
        bench_file = exp.data_path(bench)
        if not bench_file.is_file():
            continue
        bench_problems = read_parquet(bench_file, what=f"prepared benchmark {bench}")["problem"]
        shared = [p for p in bench_problems if normalized_problem_hash(p) in mine]
        if shared:
            raise SelectionOverlapError(
                f"{path}: {what} shares {len(shared)} problem(s) with the reported benchmark "
                f"{bench!r} (same text up to case and whitespace), e.g. {shared[0][:80]!r}: a checkpoint selected "
                "on it would be graded on its own selection set; pick a disjoint set"
            )


def check_launch(exp: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """The launch's world — the accelerate_config's processes (one node) × ``resources.train_nodes`` — against the
    batch and the rollout engines, before anything is submitted. Each vLLM engine spans ``tensor_parallel_size``
    consecutive ranks and must stay inside a node (its collectives assume one machine)."""
    nodes = exp.resources.train_nodes
    if not exp.accelerate_config:
        if nodes > 1:
            raise SteerBenchError(
                f"{path}: resources.train_nodes={nodes} needs an 'accelerate_config' (a node's ranks)"
            )
        return
    launch = read_yaml(exp.accelerate_config)
    if int(launch.get("num_machines", 1)) != 1:
        raise SteerBenchError(
            f"{exp.accelerate_config} ({path}): num_machines must be 1 — an accelerate_config describes one node; "
            "ask for more nodes with resources.train_nodes"
        )
    per_node = int(launch.get("num_processes", 1))
    where = f" of {exp.accelerate_config}" + (f" × {nodes} nodes" if nodes > 1 else "") + f" ({path})"
    config = exp.train_config(exp.seeds[0])
    config.check_world(per_node * nodes, where)
    tp = config.rollout.vllm.tensor_parallel_size
    if nodes > 1 and config.rollout.engine == "vllm" and per_node % tp:
        raise SteerBenchError(
            f"{path}: rollout.vllm.tensor_parallel_size={tp} would span nodes: an engine's ranks must be on one node, "
            f"so it must divide the {per_node} processes per node of {exp.accelerate_config}"
        )
