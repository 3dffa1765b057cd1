"""The MLflow store failing (down from the start, or locked by another process mid-run): training (and evaluation)
finishes with its files complete, the condition is in ``train.done`` (``eval.done``) and a warning, and the report
re-mirrors the run and its evaluation into MLflow from the files afterwards (so curves and accuracies from MLflow
equal those from the files)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trainrun import experiment_yaml

from steer_bench.cli import main as cli
from steer_bench.config.method import load_method
from steer_bench.experiment import load_experiment
from steer_bench.files import read_json, read_jsonl
from steer_bench.report import build_report, collect
from steer_bench.tracking import Tracker, metric_history, search_runs
from steer_bench.train import train

pytestmark = pytest.mark.slow  # real training runs against a locked or absent store
STEPS = 4
LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(300)
"""


def _experiment(tmp: Path, model_dir: Path, data: dict[str, Path]) -> Path:
    path = experiment_yaml(tmp, model_dir, data, name="store", steps=STEPS, track=True)
    exp = yaml.safe_load(path.read_text())  # evaluation: greedy, 24 new tokens, the tiny model's last checkpoint
    greedy = {"name": "greedy", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 24, "default_k": 1, "seed": 0,
              "chat_template": True, "grader": "math_verify"}  # fmt: skip
    exp["eval"] = {"engine": "hf", "checkpoint": "last", "workers": 1, "protocol": greedy}
    path.write_text(yaml.safe_dump(exp))
    return path


def _check_rebuilt(config: Path, uri: str) -> None:
    """The report re-mirrors the run (and its evaluation, if any); MLflow's curves and accuracies then equal the
    files' and train.done (eval.done) is clean again."""
    exp = load_experiment(config)
    build_report(exp, uri=uri)
    done = read_json(exp.run_dir("grpo", 0) / "train.done")
    assert "tracking_error" not in done
    entropy = metric_history(done["mlflow_run_id"], "rollout/entropy_mean", uri=uri)
    assert [s for s, _ in entropy] == list(range(1, STEPS + 1))
    from_mlflow, from_files = collect.from_mlflow(exp, uri), collect.from_files(exp)
    assert from_mlflow.curves == from_files.curves
    assert from_mlflow.acc == from_files.acc


def test_a_store_locked_mid_run(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    config = _experiment(tmp_path, model_dir, data)
    exp = load_experiment(config)
    db = mlflow_uri.removeprefix("sqlite:///")
    real_log, locker = Tracker.log_metrics, []

    def lock_at_step_2(self: Tracker, metrics: dict, step: int) -> None:
        if step == 2 and not locker:  # another process takes an exclusive lock on the store and keeps it
            locker.append(subprocess.Popen([sys.executable, "-c", LOCKER, db], stdout=subprocess.PIPE, text=True))
            assert locker[0].stdout.readline().strip() == "locked"
        real_log(self, metrics, step)

    monkeypatch.setattr(Tracker, "log_metrics", lock_at_step_2)
    try:
        with caplog.at_level(logging.WARNING):
            train(exp.train_config(0), load_method("grpo"), exp.run_dir("grpo", 0))
    finally:
        for p in locker:
            p.kill()
            p.wait()
    run = exp.run_dir("grpo", 0)
    done = read_json(run / "train.done")
    assert "locked" in done["tracking_error"]
    assert any("MLflow store" in r.message and "re-mirrors" in r.message for r in caplog.records)
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, STEPS + 1))  # the record
    assert [s for s, _ in metric_history(done["mlflow_run_id"], "rollout/entropy_mean", uri=mlflow_uri)] == [1]
    monkeypatch.setattr(Tracker, "log_metrics", real_log)
    _check_rebuilt(config, mlflow_uri)


def test_a_store_down_from_the_start(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = _experiment(tmp_path, model_dir, data)
    exp = load_experiment(config)
    train(exp.train_config(0), load_method("grpo"), exp.run_dir("grpo", 0))
    done = read_json(exp.run_dir("grpo", 0) / "train.done")
    assert done["mlflow_run_id"] is None
    assert "Connection" in done["tracking_error"] or "refused" in done["tracking_error"]
    assert cli(["eval", "--config", str(config), "--method", "grpo", "--seed", "0"]) == 0  # its evaluation too
    evaluated = read_json(exp.eval_dir("grpo", 0) / "eval.done")
    assert "Connection" in evaluated["tracking_error"] or "refused" in evaluated["tracking_error"]
    uri = f"sqlite:///{tmp_path / 'later.db'}"  # the store is back (here: a new one)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _check_rebuilt(config, uri)
    (train_run,) = search_runs("store", filter_string="tags.kind = 'train'", uri=uri)
    (eval_run,) = search_runs("store", filter_string="tags.kind = 'eval'", uri=uri)
    evaluated = read_json(exp.eval_dir("grpo", 0) / "eval.done")
    assert "tracking_error" not in evaluated
    assert evaluated["mlflow_run_id"] == eval_run.info.run_id
    assert eval_run.info.status == "FINISHED"
    assert eval_run.data.tags["train_run_id"] == train_run.info.run_id  # nested under the re-mirrored training run
    assert eval_run.data.metrics["eval/synth_test/acc"] == evaluated["acc"]["synth_test"]
    assert train_run.data.metrics["eval/avg/acc"] == evaluated["avg_acc"]  # and copied into it
