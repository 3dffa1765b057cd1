"""The rollout's entropy metrics against a hand computation: ``rollout/entropy_*`` is the full-vocabulary entropy
of softmax(logits/τ) at the sampling temperature, ``rollout/surprisal_mean`` the sampled token's −log p, both
token means over valid response tokens (padding excluded), from the trainer's own scoring pass."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from steer_bench.grading import Verdict
from steer_bench.rollout.batch import RolloutBatch, score_responses
from steer_bench.train.stepstats import Step, rollout_metrics

TAU = 0.7  # ≠ 1, so a pass that forgot to divide by τ would give other numbers
V = 4
# Row 0 predicts 3 response tokens, row 1 one (then 2 padded positions); the last position (T) predicts nothing.
LOGITS = np.array(
    [
        [[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.5, 0.0], [1.0, 3.0, -2.0, 0.5], [9.0, 9.0, 9.0, 9.0]],
        [[-0.5, 1.5, 0.0, 2.5], [50.0, -50.0, 0.0, 0.0], [0.0, 40.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]],
    ]
)
RESPONSES = [[2, 1, 3], [1]]


class FixedLogits(torch.nn.Module):
    """Returns LOGITS as the last T + 1 positions whatever the input (the scoring pass keeps only those)."""

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int, **_: Any) -> SimpleNamespace:
        assert logits_to_keep == LOGITS.shape[1]
        return SimpleNamespace(logits=torch.tensor(LOGITS, dtype=torch.float32))


def _by_hand() -> tuple[list[float], list[float]]:
    """Per valid token, (entropy, surprisal) of softmax(z/τ) in float64."""
    entropy, surprisal = [], []
    for row, response in enumerate(RESPONSES):
        for t, y in enumerate(response):
            z = LOGITS[row, t] / TAU
            logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
            entropy.append(float(-(np.exp(logp) * logp).sum()))
            surprisal.append(float(-logp[y]))
    return entropy, surprisal


def test_entropy_and_surprisal_match_a_hand_computation() -> None:
    rollout = RolloutBatch(prompt_index=[0, 1], prompt_ids=[[1, 2], [3]], response_ids=RESPONSES, finished=[True] * 2)
    batch = rollout.padded(pad_token_id=0)
    assert batch.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    old_logp, old_entropy = score_responses(FixedLogits(), batch, temperature=TAU)

    verdicts = [Verdict(correct=c, math_verify=c, strict=c, pred="1", status="ok") for c in (True, False)]
    adv = torch.tensor([[0.5] * 3, [-0.5] * 3]) * batch.response_mask
    step = Step(
        number=1,
        prompts=[0, 1],
        rollout=rollout,
        texts=["", ""],
        verdicts=verdicts,
        scores=torch.tensor([1.0, 0.0]),
        batch=batch,
        old_logp=old_logp,
        old_entropy=old_entropy,
        group_ids=torch.tensor([0, 0]),
        adv=adv,
        times={},
    )
    assert step.rollout.truncated == [False, False]
    m = rollout_metrics(step)

    entropy, surprisal = _by_hand()
    # The uniform row by hand, whatever τ: H = −log p_y = ln 4.
    assert math.isclose(entropy[0], math.log(4))
    assert math.isclose(surprisal[0], math.log(4))
    # float32 log-softmax of O(1)–O(70) logits: relative error a few ulp (~1e-7); 1e-5 absolute is ample.
    tol = 1e-5
    assert math.isclose(m["rollout/entropy_mean"], np.mean(entropy), abs_tol=tol)
    assert math.isclose(m["rollout/surprisal_mean"], np.mean(surprisal), abs_tol=tol)
    for q in (10, 50, 90):
        assert math.isclose(m[f"rollout/entropy_p{q}"], np.quantile(entropy, q / 100), abs_tol=tol)
    assert math.isclose(m["rollout/entropy_adv_pos"], np.mean(entropy[:3]), abs_tol=tol)
    assert math.isclose(m["rollout/entropy_adv_neg"], entropy[3], abs_tol=tol)
    # The two are different quantities here (mean surprisal ≠ mean entropy on this batch).
    assert abs(np.mean(entropy) - np.mean(surprisal)) > 0.1
    # Not τ = 1: the same logits unscaled give a different entropy.
    _, at_one = score_responses(FixedLogits(), batch, temperature=1.0)
    assert abs(float((at_one * batch.response_mask).sum() / 4) - np.mean(entropy)) > 0.05
