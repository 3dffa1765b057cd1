"""CE-GPPO (surrogate ``ce_gppo``): bounded gradients outside the clip, worked by hand (β1 = 0.75, β2 = 1)."""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.surrogates import CEGPPO
from steer_bench.config.method import load_method

TOL = {"rtol": 1e-6, "atol": 1e-6}  # float32, values of order 1


def test_the_three_cases_and_the_dual_clip() -> None:
    old = torch.zeros(1, 5)
    #                 A<0 below clip   A>0 above clip   inside     A<0 far above (dual clip)  padding
    log_r = torch.tensor([[math.log(0.5), math.log(1.5), 0.1, math.log(4.0), 0.0]])
    logp = (old + log_r).requires_grad_(True)
    adv = torch.tensor([[-1.0, 2.0, 1.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    s = CEGPPO(beta_low=0.75, beta_high=1.0)(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    r = math.exp(0.1)
    want = torch.tensor([0.75 * 0.8 * 1.0, -1.0 * 1.28 * 2.0, -r, 3.0, 0.0])
    torch.testing.assert_close(s.loss[0], want, **TOL)
    (g,) = torch.autograd.grad((s.loss * mask).sum(), logp)
    # d/dlog π: β·(1 ∓ ε)·(−A) on the clipped tokens (bounded, not zero), −r·A inside, 0 under the dual clip
    torch.testing.assert_close(g[0], torch.tensor([0.6, -2.56, -r, 0.0, 0.0]), **TOL)
    assert s.clipped_low[0].tolist() == [True, False, False, False, False]
    assert s.clipped_high[0].tolist() == [False, True, False, False, False]
    assert s.clipped_dual[0].tolist() == [False, False, False, True, False]


def test_beta_zero_recovers_ppo_gradients() -> None:
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(0.5), math.log(1.5)]], requires_grad=True)
    adv = torch.tensor([[-1.0, 1.0]])
    s = CEGPPO(beta_low=0.0, beta_high=0.0)(logp, old, adv, torch.ones(1, 2, dtype=torch.bool), clip_low=0.2,
                                            clip_high=0.2, clip_c=None)  # fmt: skip
    (g,) = torch.autograd.grad(s.loss.sum(), logp)
    assert (g == 0).all()  # PPO: clipped tokens get no gradient


def test_the_preset_dual_clip_is_the_release_scripts_c_10() -> None:
    """A < 0 at r = 5 (inside 1 − ε_low, between 3 and 10): c = 10 keeps −r·A = 5 and its gradient; the loss
    signature's c = 3 would cap it at 3 with no gradient. Token-mean over the one valid token (the other pads)."""
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(5.0), 2.0]], requires_grad=True)
    adv = torch.tensor([[-1.0, -1.0]])
    mask = torch.tensor([[True, False]])
    m = load_method("ce_gppo").resolve()
    assert m.clip_c == 10.0
    loss, metrics = m.loss(TokenBatch(logp, old, adv, mask))
    assert loss.item() == pytest.approx(5.0, rel=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(g, torch.tensor([[5.0, 0.0]]), **TOL)  # −A·r on the valid token
    assert metrics["loss/clipfrac_dual"].item() == 0.0
    s3 = CEGPPO(beta_low=0.75, beta_high=1.0)(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    assert s3.loss[0, 0].item() == pytest.approx(3.0)  # c = 3: min(−A·c, −r·A) = 3, the dual clip binds
    assert bool(s3.clipped_dual[0, 0])
