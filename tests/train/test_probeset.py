"""The probe set (steer_bench.train.probeset): its metrics worked out by hand, and in the training loop — measured
at step 0 and every N steps, deterministic, and invisible to training (the same parameters with it on or off)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainrun import make_cfg

from steer_bench.config.method import load_method
from steer_bench.data.prepare import prepare_dataset
from steer_bench.files import read_json, read_jsonl
from steer_bench.rollout.batch import RolloutBatch
from steer_bench.train import train
from steer_bench.train.probeset import summarize


def _probe(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k.startswith("probe/")}


def test_summarize_by_hand() -> None:
    # Prompt 0 forks at token 1 of its correct solution [5, 6, 7]; prompt 1 has no fork.
    forks = [([5, 6, 7], 1), None]
    out = RolloutBatch(
        prompt_index=[0, 0, 0, 1],
        prompt_ids=[[1], [1], [1], [2]],
        response_ids=[[5, 6, 9], [5, 8], [4, 6], [3]],
        finished=[True, True, True, True],
    )
    entropy = [[0.1, 0.6, 0.0], [0.1, 0.8], [0.3, 0.2], [0.5]]
    m = summarize(out, entropy, forks)
    total = 0.1 + 0.6 + 0.0 + 0.1 + 0.8 + 0.3 + 0.2 + 0.5  # 2.6 over 8 tokens
    assert m["probe/entropy"] == pytest.approx(total / 8)
    assert m["probe/response_len"] == 2.0
    # Samples 0 and 1 reach token 1 on the shared prefix [5]; sample 2 left it at token 0 (no fork token).
    assert m["probe/entropy_fork"] == pytest.approx((0.6 + 0.8) / 2)
    assert m["probe/fork_correct"] == 0.5  # sample 0 took 6 (the correct token), sample 1 took 8
    assert m["probe/entropy_rest"] == pytest.approx((total - 1.4) / 6)
    assert m["probe/fork_mass_share"] == pytest.approx(1.4 / total)
    none = summarize(out, entropy, [None, None])
    assert "probe/entropy_fork" not in none
    assert none["probe/entropy"] == m["probe/entropy"]


@pytest.mark.slow
def test_probe_in_the_loop(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    forks = tmp_path / "synth_test_forks.parquet"  # precedence problems (level 5): every one has a fork
    prepare_dataset("synth_test", forks, limit=8, levels=[5], check_golds=False)
    probe = {"every_n_steps": 2, "data": str(forks), "limit": 6, "n": 2}
    grpo = load_method("grpo")
    on = train(make_cfg(model_dir, data, steps=4, probe=probe), grpo, tmp_path / "on")
    again = train(make_cfg(model_dir, data, steps=4, probe=probe), grpo, tmp_path / "again")
    off = train(make_cfg(model_dir, data, steps=4), grpo, tmp_path / "off")
    rows = read_jsonl(tmp_path / "on" / "metrics.jsonl")
    probed = {r["step"]: _probe(r) for r in rows if "probe/entropy" in r}
    assert sorted(probed) == [0, 2, 4]  # the starting policy, then every 2 steps
    assert rows[0] == {"step": 0, **_probe(rows[0])}
    for r in probed.values():
        assert {"probe/avg_at_k", "probe/entropy_fork", "probe/fork_correct", "probe/entropy_rest"} <= r.keys()
        assert r["probe/entropy"] > 0
    probed_again = {
        r["step"]: _probe(r) for r in read_jsonl(tmp_path / "again" / "metrics.jsonl") if "probe/entropy" in r
    }
    assert probed_again == probed  # same prompts, same sampling seed, same policy: the same numbers
    # Measuring never touches the trainer's random streams or weights.
    assert on["param_checksums"] == off["param_checksums"]
    assert read_json(tmp_path / "on" / "train.done")["param_checksums"] == again["param_checksums"]
