"""MLflow helpers against a real sqlite store."""

from __future__ import annotations

import time

import pytest

from steer_bench.tracking import Tracker, env_info, flatten, metric_history, sanitize_key, search_runs


def test_sanitize_and_flatten() -> None:
    assert sanitize_key("eval/aime24/avg@32") == "eval/aime24/avg_at_32"
    assert sanitize_key("a:b") == "a_b"
    assert flatten({"train": {"lr": 1e-6, "eps": [0.2, 0.28]}, "name": "x"}) == {
        "train.lr": "1e-06",
        "train.eps": "[0.2, 0.28]",
        "name": "x",
    }


@pytest.mark.slow
def test_log_resume_and_history(mlflow_uri: str) -> None:
    t = Tracker("exp", run_name="grpo-s0", tags={"method": "grpo", "seed": 0})
    t.log_params({"train": {"lr": 1e-6}})
    t.log_metrics({"train/entropy": 0.5, "eval/x/avg@32": 0.25, "bad": float("nan")}, step=1)
    t.log_metrics({"train/entropy": 0.4}, step=2)
    run_id = t.run_id
    # A restarted job re-attaches to the same run and re-logs step 2 (after resuming from a step-1 checkpoint).
    time.sleep(0.01)
    t2 = Tracker("exp", run_id=run_id)
    t2.log_params({"train": {"lr": 1e-6}})  # immutable params: re-logging is a no-op, not an error
    t2.log_metrics({"train/entropy": 0.45}, step=2)
    t2.finish()
    assert metric_history(run_id, "train/entropy") == [(1, 0.5), (2, 0.45)]
    assert metric_history(run_id, "eval/x/avg@32") == [(1, 0.25)]
    runs = search_runs("exp")
    assert len(runs) == 1
    assert runs[0].data.tags["method"] == "grpo"
    assert runs[0].data.params["train.lr"] == "1e-06"
    assert "bad" not in runs[0].data.metrics
    assert runs[0].info.status == "FINISHED"
    store_dir = mlflow_uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert runs[0].info.artifact_uri.startswith(store_dir + "/mlartifacts")


@pytest.mark.slow
def test_disabled_tracker_is_noop(mlflow_uri: str) -> None:
    t = Tracker("exp", enabled=False)
    t.log_metrics({"a": 1.0}, step=0)
    t.finish()
    assert search_runs("exp") == []


def test_env_info_has_versions() -> None:
    info = env_info()
    assert info["torch"].startswith("2.13.0")
    assert "git_commit" in info
