"""Shared fixtures: offline environment, a temporary MLflow store, the shared parquet data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("STEER_BENCH_SHARED_DATA")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    for c in candidates:
        if c.is_dir():
            return c
    raise RuntimeError(f"shared data folder not found (tried {candidates}); set STEER_BENCH_SHARED_DATA")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The official STEER release's parquet files (../shared/data); read-only."""
    return _shared_data_dir()


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store per test, set through the environment like the CLI expects."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
