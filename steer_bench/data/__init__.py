"""Datasets: the registry, prompt templates, preparation into the normalised schema, the synthetic task."""

from steer_bench.data.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, check_frame, load_prepared

__all__ = ["OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "check_frame", "load_prepared"]
