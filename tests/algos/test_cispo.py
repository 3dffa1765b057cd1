"""CISPO (surrogate ``cispo``): the clipped stop-gradient weight on REINFORCE, worked by hand."""

from __future__ import annotations

import math

import torch

from steer_bench.algos.surrogates import CISPO

cispo = CISPO()

TOL = {"rtol": 1e-6, "atol": 1e-6}  # float32, values of order 1


def test_weight_is_clipped_above_only_and_carries_no_gradient() -> None:
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0]])
    logp = (old + torch.tensor([[0.5, -2.0, 0.1, 0.0]])).requires_grad_(True)
    adv = torch.tensor([[2.0, 2.0, -1.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    s = cispo(logp, old, adv, mask, clip_low=None, clip_high=0.2, clip_c=None)
    w = torch.tensor([1.2, math.exp(-2.0), math.exp(0.1), 1.0])  # e^0.5 > 1.2 is clipped; no lower bound
    torch.testing.assert_close(s.loss[0], -w * adv[0] * logp.detach()[0], **TOL)
    (g,) = torch.autograd.grad((s.loss * mask).sum(), logp)
    torch.testing.assert_close(g[0], -w * adv[0] * mask[0], **TOL)  # −w·A: the clipped token keeps a gradient
    assert s.clipped[0].tolist() == [True, False, False, False]
    assert s.clipped_high[0].tolist() == [True, False, False, False]


def test_lower_bound_when_given() -> None:
    old = torch.zeros(1, 2)
    logp = torch.tensor([[-2.0, 0.0]], requires_grad=True)
    s = cispo(logp, old, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), clip_low=0.5, clip_high=4.0,
              clip_c=None)  # fmt: skip
    (g,) = torch.autograd.grad(s.loss.sum(), logp)
    torch.testing.assert_close(g, torch.tensor([[-0.5, -1.0]]), **TOL)
