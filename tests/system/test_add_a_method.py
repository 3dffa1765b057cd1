"""Adding a method is one new file plus one preset: the test-only :mod:`tests.methods.mean_surprisal`, named by a
preset in a temporary folder, trains on 2 CPU ranks with its mini-batch statistic identical on both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from steer_bench.algos import TokenBatch, build
from steer_bench.config.method import load_method
from tests.system.test_distributed import _env, _experiment, _free_port

PRESET = {
    "name": "mean_surprisal", "label": "MeanSurprisal (test)", "description": "a test-only method", "ablation": True,
    "advantage": {"estimator": "grpo", "params": {"norm_by_std": True, "eps": 1.0e-6}},
    "loss": {"name": "tests.methods.mean_surprisal:MeanSurprisal", "clip_low": 0.2, "clip_high": 0.28, "clip_c": 10.0,
             "agg": "token-mean", "entropy_coef": 0.0, "params": {"alpha": 0.5}},
}  # fmt: skip


def _preset(tmp: Path) -> Path:
    path = tmp / "mean_surprisal.yaml"
    path.write_text(yaml.safe_dump(PRESET))
    return path


def test_the_preset_resolves_and_the_loss_is_as_worked_by_hand(tmp_path: Path) -> None:
    m = load_method(_preset(tmp_path)).resolve()
    assert m.needs.mini_batch_stats
    # On-policy (r = 1, no clip binds): L = −A; −log π_old = [2, 1, 7 (padding)] → m = 1.5 over the valid tokens.
    old = torch.tensor([[-2.0, -1.0, -7.0]])
    logp = old.clone().requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    batch = TokenBatch(logp, old, adv, torch.tensor([[True, True, False]]))
    stats = m.mini_batch_stats(batch)
    assert stats == (1.5, 1.5)
    loss, metrics = m.loss(batch, stats=stats)
    w = [1 / (1 + 0.5 * 2 / 1.5), 1 / (1 + 0.5 * 1 / 1.5)]
    assert loss.item() == pytest.approx((-1 * w[0] + 1 * w[1]) / 2)
    assert float(metrics["mean_surprisal/stat_sum_max"]) == 1.5
    with pytest.raises(ValueError, match=r"missing \['alpha'\]"):
        build("intervention", "tests.methods.mean_surprisal:MeanSurprisal", {})


@pytest.mark.slow
def test_a_one_file_method_trains_on_two_ranks_with_identical_mini_batch_statistics(
    model_dir: Path, tmp_path: Path
) -> None:
    config = _experiment(tmp_path, model_dir, steps=2, rollout={"engine": "hf", "n": 4, "max_new_tokens": 20},
                         validation={"every_n_steps": 0})  # fmt: skip
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "steer_bench", "train", "--config", str(config),
        "--method", str(_preset(tmp_path)), "--seed", "0", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # Σ over the step's calls of the statistic: the same on both ranks, though each rank's own rows differ.
        assert r["mean_surprisal/stat_sum_max"] == r["mean_surprisal/stat_sum_min"]
        assert r["mean_surprisal/local_sum_max"] != r["mean_surprisal/local_sum_min"]
    first, second = json.loads((out / "train.done").read_text())["param_checksums"]
    assert first == second
