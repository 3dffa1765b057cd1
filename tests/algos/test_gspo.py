"""GSPO (surrogate ``gspo``): the sequence ratio and its clip, worked by hand, with padding."""

from __future__ import annotations

import math

import torch

from steer_bench.algos.surrogates import GSPO

gspo = GSPO()

# float32 exp/log of numbers of order 1: a few ulps
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _row() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    old = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    logp = (old + torch.tensor([[0.2, -0.1, 0.05, 9.0]])).requires_grad_(True)  # the last token is padding
    mask = torch.tensor([[True, True, True, False]])
    return logp, old, torch.tensor([[1.0, 1.0, 1.0, 0.0]]), mask


def test_value_and_gradient_inside_the_clip() -> None:
    logp, old, adv, mask = _row()
    s = gspo(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, clip_c=None)
    want = math.exp((0.2 - 0.1 + 0.05) / 3)  # geometric mean over the 3 valid tokens; padding's 9.0 ignored
    torch.testing.assert_close(s.ratio[0, :3], torch.full((3,), want), **TOL)
    torch.testing.assert_close(s.loss[0, :3], torch.full((3,), -want), **TOL)
    (g,) = torch.autograd.grad(s.loss[mask].sum(), logp)
    torch.testing.assert_close(g[0, :3], torch.full((3,), -want), **TOL)  # s_i · ∇log π_t per token
    assert g[0, 3] == 0
    assert not s.clipped.any()


def test_the_paper_clip_binds_for_the_whole_sequence() -> None:
    logp, old, adv, mask = _row()
    s = gspo(logp, old, adv, mask, clip_low=3e-4, clip_high=4e-4, clip_c=None)
    assert s.clipped[mask].all()
    assert s.clipped_high[mask].all()
    torch.testing.assert_close(s.loss[mask], torch.full((3,), -(1 + 4e-4)), **TOL)
    (g,) = torch.autograd.grad(s.loss[mask].sum(), logp)
    assert (g == 0).all()  # the clipped branch is a constant


def test_negative_advantage_uses_the_low_clip() -> None:
    logp, old, _, mask = _row()
    with torch.no_grad():
        logp -= 1.0  # s = e^{0.05 - 1} < 1 - 3e-4
    s = gspo(logp, old, -torch.ones(1, 4), mask, clip_low=3e-4, clip_high=4e-4, clip_c=None)
    assert s.clipped_low[mask].all()
    torch.testing.assert_close(s.loss[mask], torch.full((3,), 1 - 3e-4), **TOL)
