"""The shared dual-clip surrogate and the aggregation modes, by hand; exact gradient accumulation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from steer_bench.algos import Method, TokenBatch, Totals, aggregate, clipped_surrogate, entropy_bonus
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.interventions.ppo import PPO

GRPO = Grpo(norm_by_std=True, eps=1e-6)  # the loss never reads the estimator

MakeBatch = Callable[..., dict[str, torch.Tensor]]  # the make_batch fixture (conftest.py)

# Six tokens (A, r) covering every branch, with ε_low 0.2, ε_high 0.28, c = 3:
#   A=+1 r=1.5: L1=-1.5, L2=-1.28 -> -1.28 (clipped high)   A=+1 r=0.5: -0.5 (not clipped)
#   A=-1 r=0.5: L1=0.5, L2=0.8 -> 0.8 (clipped low)         A=-1 r=4: max(4, 1.28)=4 -> min(3, 4)=3 (dual clip)
#   A=-1 r=1.5: max(1.5, 1.28)=1.5 < 3 (not clipped)        A=0  r=2: 0
ADV = torch.tensor([[1.0, 1.0, -1.0], [-1.0, -1.0, 0.0]])
RATIO = torch.tensor([[1.5, 0.5, 0.5], [4.0, 1.5, 2.0]])
EXPECTED = [[-1.28, -0.5, 0.8], [3.0, 1.5, 0.0]]
EXPECTED_GRAD = [[0.0, -0.5, 0.0], [0.0, 1.5, 0.0]]  # dL/dlogp = -A·r where no clip binds


def _logp() -> torch.Tensor:
    return RATIO.log().clone().requires_grad_(True)


def test_dual_clip_surrogate_by_hand() -> None:
    logp = _logp()
    s = clipped_surrogate(logp, torch.zeros(2, 3), ADV, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    assert s.loss.tolist() == pytest.approx([pytest.approx(r, abs=1e-6) for r in EXPECTED])
    s.loss.sum().backward()
    assert logp.grad.tolist() == pytest.approx([pytest.approx(r, abs=1e-6) for r in EXPECTED_GRAD])
    assert s.clipped_high.tolist() == [[True, False, False], [False, False, False]]
    assert s.clipped_low.tolist() == [[False, False, True], [False, False, False]]
    assert s.clipped_dual.tolist() == [[False, False, False], [True, False, False]]
    assert s.clipped.tolist() == [[True, False, True], [False, False, False]]  # verl's L2 > L1


def test_policy_loss_metrics_by_hand() -> None:
    mask = torch.ones(2, 3)
    ppo = Method(name="ppo", advantage=GRPO, intervention=PPO(), clip_low=0.2, clip_high=0.28, clip_c=3.0,
                 agg="token-mean")  # fmt: skip
    loss, m = ppo.loss(TokenBatch(_logp(), torch.zeros(2, 3), ADV, mask))
    assert loss.item() == pytest.approx(sum(map(sum, EXPECTED)) / 6, abs=1e-6)
    assert float(m["loss/clipfrac_high"]) == pytest.approx(1 / 6)
    assert float(m["loss/clipfrac_low"]) == pytest.approx(1 / 6)
    assert float(m["loss/clipfrac_dual"]) == pytest.approx(1 / 6)
    assert float(m["loss/clipfrac"]) == pytest.approx(2 / 6)
    assert float(m["loss/ratio_max"]) == pytest.approx(4.0)
    assert float(m["loss/approx_kl"]) == pytest.approx(-float(RATIO.log().mean()), abs=1e-6)
    assert float(m["loss/n_tokens"]) == 6


def test_extreme_clipping_and_disabled_clips() -> None:
    logp = _logp()
    s = clipped_surrogate(logp, torch.zeros(2, 3), ADV, clip_low=0.99, clip_high=5.0, clip_c=10.0)
    assert s.loss.tolist() == pytest.approx([pytest.approx(r, abs=1e-6) for r in [[-1.5, -0.5, 0.5], [4.0, 1.5, 0]]])
    plain = clipped_surrogate(logp, torch.zeros(2, 3), ADV, clip_low=None, clip_high=None, clip_c=None)
    assert torch.allclose(plain.loss, -ADV * RATIO)  # kl_cov's unclipped L = -A·r
    assert not plain.clipped.any()
    assert not plain.clipped_dual.any()
    no_dual = clipped_surrogate(logp, torch.zeros(2, 3), ADV, clip_low=0.2, clip_high=0.28, clip_c=None)
    assert no_dual.loss[1, 0].item() == pytest.approx(4.0)  # clip_cov: no dual clip, r = 4 with A < 0 stays 4


def test_ratio_is_clamped_and_dual_clip_constant_checked() -> None:
    s = clipped_surrogate(
        torch.tensor([[50.0]]), torch.zeros(1, 1), torch.tensor([[-1.0]]), clip_low=0.2, clip_high=0.2, clip_c=None
    )
    assert float(s.ratio) == pytest.approx(math.exp(20.0))
    with pytest.raises(ValueError, match="clip_c must be > 1"):
        clipped_surrogate(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), clip_low=0.2, clip_high=0.2, clip_c=1.0
        )


LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
AGG_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # the third response is empty


def test_aggregation_modes_by_hand() -> None:
    assert float(aggregate(LOSS_MAT, AGG_MASK, agg="token-mean")) == pytest.approx((1 + 2 + 4) / 3)
    assert float(aggregate(LOSS_MAT, AGG_MASK, agg="seq-mean-token-mean")) == pytest.approx((1.5 + 4) / 2)
    assert float(aggregate(LOSS_MAT, AGG_MASK, agg="seq-mean-token-sum-norm", max_response_len=4)) == pytest.approx(
        7 / (2 * 4)
    )
    assert float(aggregate(LOSS_MAT, AGG_MASK, agg="seq-mean-token-sum-norm")) == pytest.approx(7 / (2 * 3))
    assert float(aggregate(LOSS_MAT, AGG_MASK, agg="token-mean", batch_tokens=10)) == pytest.approx(0.7)
    assert float(aggregate(LOSS_MAT, torch.zeros(3, 3), agg="token-mean")) == 0.0  # no NaN on an empty batch
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'"):
        aggregate(LOSS_MAT, AGG_MASK, agg="mean")


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_micro_batch_accumulation_is_exact(agg: str, entropy_coef: float, make_batch: MakeBatch) -> None:
    x = make_batch(0, [6, 1, 0, 4, 6, 3, 2, 5], 6)
    ppo = Method(name="ppo", advantage=GRPO, intervention=PPO(), clip_low=0.2, clip_high=0.28, clip_c=3.0, agg=agg,
                 regularisers=entropy_bonus(entropy_coef))  # fmt: skip

    def run(splits: list[slice], totals: dict[str, int]) -> tuple[float, torch.Tensor, torch.Tensor]:
        logp = x["logp"].clone().requires_grad_(True)
        ent = x["entropy"].clone().requires_grad_(True)
        total = 0.0
        for sl in splits:
            batch = TokenBatch(logp[sl], x["old"][sl], x["adv"][sl], x["mask"][sl], ent[sl])
            loss, _ = ppo.loss(batch, Totals(**totals, max_response_len=10))
            loss.backward()
            total += loss.item()
        return total, logp.grad, torch.zeros_like(ent) if ent.grad is None else ent.grad

    full = run([slice(0, 8)], {})
    totals = {"batch_tokens": int(x["mask"].sum()), "batch_seqs": int((x["mask"].sum(-1) > 0).sum())}
    for splits in ([slice(0, 3), slice(3, 8)], [slice(0, 1), slice(1, 2), slice(2, 5), slice(5, 8)]):
        micro = run(splits, totals)
        assert micro[0] == pytest.approx(full[0], abs=1e-6)
        assert torch.allclose(micro[1], full[1], atol=1e-7)
        assert torch.allclose(micro[2], full[2], atol=1e-7)
    # Without the totals each micro-batch normalises by itself: not the mini-batch loss.
    naive = run([slice(0, 3), slice(3, 8)], {})
    assert naive[0] != pytest.approx(full[0], abs=1e-4)
