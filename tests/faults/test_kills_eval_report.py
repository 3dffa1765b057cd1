"""SIGKILL during an evaluation and during the report (real processes): no partial summary, no half-written
table, no temporaries left behind, and the re-run completes without mixing the samples of two runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainrun import experiment_yaml

from steer_bench.config.method import load_method
from steer_bench.experiment import load_experiment
from steer_bench.files import read_json, read_jsonl
from steer_bench.train import train

INJECT = Path(__file__).with_name("inject.py")


def _run(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(INJECT), fault, "--", *args] if fault else [sys.executable, "-m", "steer_bench", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _eval_args(model_dir: Path, data: dict[str, Path], out: Path) -> list[str]:
    test = data["synth_test"]
    return ["eval", "--model", str(model_dir), "--benchmarks", f"first={test}", f"second={test}", "--engine", "hf",
            "--protocol", "greedy", "--set", "protocol.max_new_tokens=24", "--workers", "1", "--out", str(out),
            "--no-track"]  # fmt: skip


def _consistent(out: Path, benchmark: str) -> dict:
    """The summary scores exactly the samples beside it (hash), one line per problem and sample."""
    summary = read_json(out / benchmark / "summary.json")
    samples = out / benchmark / "samples.jsonl"
    assert summary["complete"]
    assert summary["samples_sha256"] == hashlib.sha256(samples.read_bytes()).hexdigest()
    assert len(read_jsonl(samples)) == summary["n_samples"] == summary["n_problems"] * summary["k"]
    assert not list((out / benchmark).glob(".*.tmp"))
    return summary


@pytest.mark.slow
def test_sigkill_during_evaluation(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval"
    killed = _run(_eval_args(model_dir, data, out), "kill-at-grade:2")  # while grading the second benchmark
    assert killed.returncode == -9, killed.stderr[-2000:]
    first = _consistent(out, "first")
    assert not (out / "second" / "summary.json").exists()
    assert not (out / "eval.done").exists()
    done = _run(_eval_args(model_dir, data, out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_json(out / "first" / "summary.json") == first  # kept, not re-evaluated
    _consistent(out, "second")
    assert read_json(out / "eval.done")["acc"].keys() == {"first", "second"}


@pytest.mark.slow
def test_sigkill_between_samples_and_summary_never_pairs_old_and_new(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    assert _run(_eval_args(model_dir, data, out)).returncode == 0
    # --force re-evaluates; killed right before its first summary moves into place (new samples are written).
    killed = _run([*_eval_args(model_dir, data, out), "--force"], "kill-at-replace:summary.json:1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "first" / "summary.json").exists()  # the old summary went before the new samples came
    assert _run(_eval_args(model_dir, data, out)).returncode == 0
    _consistent(out, "first")
    _consistent(out, "second")


@pytest.mark.slow
def test_sigkill_during_the_report(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    config = experiment_yaml(tmp_path, model_dir, data, name="report", steps=2)
    exp = load_experiment(config)
    train(exp.train_config(0), load_method("grpo"), exp.run_dir("grpo", 0))
    args = ["report", "--config", str(config), "--source", "files"]
    assert _run(args).returncode == 0
    report = exp.root / "report"
    complete = {p.name: p.read_bytes() for p in report.glob("*.*") if p.is_file()}
    for p in report.glob("main_table.*"):
        p.unlink()
    (report / "report.md").unlink()
    killed = _run(args, "kill-at-replace:main_table.tex:1")  # .md written; .tex complete in its temporary
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (report / "main_table.md").read_bytes() == complete["main_table.md"]  # whole, or absent
    assert not (report / "main_table.tex").exists()
    assert not (report / "report.md").exists()
    assert list(report.glob(".main_table.tex.*.tmp"))  # what the kill left
    assert _run(args).returncode == 0
    assert {p.name: p.read_bytes() for p in report.glob("*.*") if p.is_file()}.keys() == complete.keys()
    assert (report / "main_table.tex").read_bytes() == complete["main_table.tex"]
    assert not list(report.glob(".*.tmp"))
