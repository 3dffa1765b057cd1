"""Fixtures of the fault-injection suite: the tiny model and small prepared synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import tiny_model_dir

from steer_bench.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faults-data")
    out = {}
    for name, n in (("synth_train", 200), ("synth_test", 16)):
        out[name] = d / f"{name}.parquet"
        prepare_dataset(name, out[name], limit=n, levels=[1], check_golds=False)
    return out
