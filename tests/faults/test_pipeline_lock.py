"""Two `snakemake` invocations on one results folder: the second refuses at once (Snakemake's lock or its
incomplete-output marker, named in its error), the first finishes, and nothing is corrupted (a third invocation
finds nothing to do)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steer_bench.files import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[2]
TARGET = "results/smoke/runs/grpo/seed0/train.done"


def _snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(REPO / "configs" / "smoke.yaml"), "--cores", "1", *args]  # fmt: skip


@pytest.mark.slow
def test_a_second_invocation_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(_snakemake(tmp_path, TARGET), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())):
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the first invocation never took its lock"
        time.sleep(0.2)
    second = subprocess.run(_snakemake(tmp_path, TARGET), env=env, capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first invocation ended before the second started: the test proves nothing"
    assert second.returncode != 0
    # Refused either by the lock or, when it looks while a job of the first is writing, by that job's
    # incomplete-output marker (Snakemake checks those first): both name the folder in use, neither touches it.
    assert "cannot be locked" in second.stderr or "Incomplete files" in second.stderr, second.stderr[-3000:]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    run = tmp_path / "results" / "smoke" / "runs" / "grpo" / "seed0"
    done = read_json(run / "train.done")
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, done["steps"] + 1))
    again = subprocess.run(_snakemake(tmp_path, TARGET), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
