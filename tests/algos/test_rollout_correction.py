"""Rollout importance correction (TIS token / sequence, masking): the weights and metrics, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.rollout_correction import RolloutCorrection
from steer_bench.config.method import load_method

TOL = {"rtol": 1e-6, "atol": 1e-7}  # float32
OLD = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
ROLLOUT = torch.tensor([[-2.0, -0.5, -1.0], [-2.1, -2.0, 5.0]])  # row 1's last token is padding
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_token_truncation() -> None:
    w, m = RolloutCorrection(level="token", mode="truncate", low=None, high=2.0).weights(OLD, ROLLOUT, MASK)
    want = torch.tensor([[2.0, math.exp(-0.5), 1.0], [math.exp(0.1), 1.0, 0.0]])  # e^1 capped at 2
    torch.testing.assert_close(w, want, **TOL)
    torch.testing.assert_close(m["rollout_corr/ratio_max"], torch.tensor(math.e), **TOL)
    torch.testing.assert_close(m["rollout_corr/frac_corrected"], torch.tensor(1 / 5))
    torch.testing.assert_close(m["rollout_corr/kl"], torch.tensor((-1.0 + 0.5 - 0.1) / 5), **TOL)


def test_sequence_level_is_the_product_over_valid_tokens() -> None:
    tis = RolloutCorrection(level="sequence", mode="truncate", low=None, high=1.2)
    w, _ = tis.weights(OLD, ROLLOUT, MASK)
    # row 0: e^{1 − 0.5 + 0} = e^0.5 → 1.2; row 1: e^{0.1} (padding's −5 ignored)
    torch.testing.assert_close(w, torch.tensor([[1.2] * 3, [math.exp(0.1)] * 2 + [0.0]]), **TOL)


def test_masking_keeps_the_ratio_inside_the_band() -> None:
    """TRL's *_mask: w = ρ·1[low ≤ ρ ≤ high] (the ratio kept, not a 0/1 filter); padding 0."""
    tok = RolloutCorrection(level="token", mode="mask", low=0.7, high=2.0)
    w, m = tok.weights(OLD, ROLLOUT, MASK)
    # ρ = [[e^1 > 2: 0, e^-0.5 < 0.7: 0, 1], [e^0.1, 1, padding]]
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0, 1.0], [math.exp(0.1), 1.0, 0.0]]), **TOL)
    torch.testing.assert_close(m["rollout_corr/frac_corrected"], torch.tensor(2 / 5))
    torch.testing.assert_close(m["rollout_corr/weight_mean"], torch.tensor((2 + math.exp(0.1)) / 5), **TOL)
    # sequence level: ρ_0 = e^{1 − 0.5 + 0} = e^0.5, ρ_1 = e^0.1 (the padding's −5 not in the product)
    seq = RolloutCorrection(level="sequence", mode="mask", low=None, high=1.5)
    e1 = math.exp(0.1)
    torch.testing.assert_close(seq.weights(OLD, ROLLOUT, MASK)[0], torch.tensor([[0.0] * 3, [e1, e1, 0.0]]), **TOL)
    wide = RolloutCorrection(level="sequence", mode="mask", low=None, high=3.0)
    e5 = math.exp(0.5)
    torch.testing.assert_close(wide.weights(OLD, ROLLOUT, MASK)[0], torch.tensor([[e5] * 3, [e1, e1, 0.0]]), **TOL)


def test_reject_is_the_plain_filter() -> None:
    """The 0/1 option: the same band as ``mask``, weight 1 inside."""
    tok = RolloutCorrection(level="token", mode="reject", low=0.7, high=2.0)
    w, m = tok.weights(OLD, ROLLOUT, MASK)
    assert w.tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    torch.testing.assert_close(m["rollout_corr/frac_corrected"], torch.tensor(2 / 5))
    seq = RolloutCorrection(level="sequence", mode="reject", low=None, high=1.5)
    assert seq.weights(OLD, ROLLOUT, MASK)[0].tolist() == [[0.0] * 3, [1.0, 1.0, 0.0]]


def test_grpo_seq_mask_preset_weights_the_loss_by_the_kept_ratio() -> None:
    """The preset end to end, on-policy (r = 1, L = −A): token-mean of −A·ρ_i·1[ρ_i ≤ 3] over the valid tokens."""
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
    rollout = torch.tensor([[-1.2, -1.0, -1.1], [-2.0, -3.5, 7.0]])  # ρ_0 = e^0.3 kept, ρ_1 = e^1.5 > 3 masked
    mask = torch.tensor([[True, True, True], [True, True, False]])  # counting the padding would give ρ_1 = e^-5.5
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    logp = old.clone().requires_grad_(True)
    m = load_method("grpo_seq_mask").resolve()
    loss, metrics = m.loss(TokenBatch(logp, old, adv, mask, None, None, None, rollout))
    rho = math.exp(0.3)
    assert loss.item() == pytest.approx(-3 * rho / 5, rel=1e-6)  # the 0/1 filter gave −3/5
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, torch.tensor([[-rho / 5] * 3, [0.0, 0.0, 0.0]]), **TOL)
    torch.testing.assert_close(metrics["rollout_corr/weight_mean"], torch.tensor(3 * rho / 5), **TOL)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"level": "seq"}, "level"),
        ({"mode": "clip"}, "mode"),
        ({"low": 0.5}, "no lower bound"),
        ({"high": 0.0}, "> 0"),
    ],
)
def test_bad_settings(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutCorrection(**({"level": "token", "mode": "truncate", "low": None, "high": 2.0} | kw))
