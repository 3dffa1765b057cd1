"""The trainer learns: GRPO through `steer-bench train` drives a reward that must be learnable to near 1.

The reward is swapped for one a policy can always earn whatever it knows of arithmetic — 1 iff the response's
first character is ``1`` — so a reward that stays flat can only be a trainer that does not learn (wrong sign,
a gradient that never reaches the weights, an optimizer step lost). Everything else is the real pipeline: the
CLI, the tiny warm-started model (whose responses start by copying the first operand, so about half of them
start with ``1`` at step 0: level-1 operands 1 and 10–19), hf rollouts, GRPO's advantages and loss, AdamW; a
truncated response scores 0, as the reward's rule says. Measured on the 2-core AMD EPYC, seeds 0–3 of this
setting: the mean reward of the first 5 steps 0.38–0.63, of the last 5 0.98–1.00, ≥ 0.95 from step 16–21 on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from trainrun import experiment_yaml

from steer_bench.cli import main
from steer_bench.grading import Grader, Verdict

STEPS = 30
WINDOW = 5  # steps averaged at each end of the curve


def first_char_is_one(self: Grader, responses: Sequence[str], golds: Sequence[str], **_: object) -> list[Verdict]:
    return [Verdict(r.startswith("1"), None, False, None, "ok") for r in responses]


@pytest.mark.slow
def test_grpo_drives_a_learnable_reward_to_one(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Grader, "grade", first_char_is_one)
    config = experiment_yaml(
        tmp_path, model_dir, data, name="learn", steps=STEPS, prompts_per_step=8, mini_batch_prompts=4,
        micro_batch_size=16, rollout={"n": 8, "max_new_tokens": 24}, optim={"lr": 1e-3, "weight_decay": 0.0},
        save_every=STEPS, log_rollouts_every=0, reward={"workers": 1},
    )  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--method", "grpo", "--seed", "0", "--out", str(out)]) == 0
    reward = [json.loads(line)["rollout/reward_mean"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(reward[:WINDOW]) / WINDOW, sum(reward[-WINDOW:]) / WINDOW
    # Start: the warm start's share of finished responses starting with "1" (about 0.5). End: the rule learned;
    # 0.95 leaves room for sampling noise (at a 2% miss rate, 5 steps × 64 responses average below 0.95 with
    # probability < 1e-3).
    assert first < 0.8, reward
    assert last >= 0.95, reward
