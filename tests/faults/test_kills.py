"""Real processes killed (SIGKILL) or starved of disk at the worst moments of training: the previous checkpoint
survives, the run resumes from it, and its metrics (timings aside) equal those of an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainrun import deterministic, experiment_yaml
from transformers import AutoModelForCausalLM

from steer_bench.files import read_json, read_jsonl

INJECT = Path(__file__).with_name("inject.py")
STEPS = 4  # checkpoints at steps 2 and 4


def _train(config: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["train", "--config", str(config), "--method", "grpo", "--seed", "0", "--out", str(out)]
    cmd = [sys.executable, str(INJECT), fault, "--", *args] if fault else [sys.executable, "-m", "steer_bench", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def config(model_dir: Path, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return experiment_yaml(tmp_path_factory.mktemp("kills"), model_dir, data, name="kills", steps=STEPS)


@pytest.fixture(scope="module")
def reference(config: Path) -> list[dict[str, float]]:
    out = config.parent / "reference"
    assert _train(config, out).returncode == 0
    return deterministic(read_jsonl(out / "metrics.jsonl"))


def _assert_intact_at_step_2(run: Path) -> None:
    last = run / "checkpoints" / "last"
    assert read_json(last / "state.json")["step"] == 2
    model = AutoModelForCausalLM.from_pretrained(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (run / "train.done").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "kill-at-replace:last:2",  # step 4's save: the new copy is complete, the old one not yet moved aside
        "kill-at-replace:last:3",  # between the two renames: 'last' is gone, '.last.old' holds step 2
    ],
    ids=["new-copy-written", "between-renames"],
)
def test_sigkill_during_a_checkpoint_write(config: Path, reference: list, tmp_path: Path, fault: str) -> None:
    run = tmp_path / "run"
    killed = _train(config, run, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    if fault.endswith(":3"):  # the next start must put the complete step-2 copy back itself
        assert not (run / "checkpoints" / "last").exists()
        assert read_json(run / "checkpoints" / ".last.old" / "state.json")["step"] == 2
    else:
        _assert_intact_at_step_2(run)
    resumed = _train(config, run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "after step 2" in resumed.stderr  # resumed from the surviving checkpoint, not from scratch
    assert deterministic(read_jsonl(run / "metrics.jsonl")) == reference
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last"]  # no temporaries left


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_write(config: Path, reference: list, tmp_path: Path) -> None:
    run = tmp_path / "run"
    full = _train(config, run, "fsize-after-save:65536")  # the weights file (~370 kB) no longer fits
    assert full.returncode == 2, full.stderr[-2000:]
    assert "cannot write the checkpoint of step 4" in full.stderr  # EFBIG in torch or safetensors
    assert "checkpoints/last" in full.stderr
    assert "previous checkpoint" in full.stderr
    _assert_intact_at_step_2(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last"]
    resumed = _train(config, run)  # space is back
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert deterministic(read_jsonl(run / "metrics.jsonl")) == reference
