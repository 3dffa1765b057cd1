"""The study layer: the experiment config Snakemake runs (``config``) and the evaluation jobs it implies (``jobs``)."""

from steer_bench.experiment.config import NESTED, ExperimentConfig, load_experiment, split_overrides

__all__ = ["NESTED", "ExperimentConfig", "load_experiment", "split_overrides"]
