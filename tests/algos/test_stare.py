"""STARE: surprisal selection within each advantage sign, the weights and the entropy gate, worked by hand."""

from __future__ import annotations

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.interventions.stare import Stare, top_surprisal
from steer_bench.algos.surrogates import clipped_surrogate
from steer_bench.config.method import load_method


def _batch(old_entropy: float) -> TokenBatch:
    # row 0: A > 0, surprisals 0.1, 2.0, 1.0, (pad); row 1: A < 0, surprisals 3.0, 0.5, (pad), (pad)
    logp = torch.tensor([[-0.1, -2.0, -1.0, -9.0], [-3.0, -0.5, -9.0, -9.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, 1.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    ent = torch.full((2, 4), old_entropy)
    return TokenBatch(logp, logp.detach(), adv, mask, ent, ent)


def _stare(variant: str, target: float = 0.3) -> Stare:
    return Stare(variant=variant, top_frac=0.5, weight_pos=1.1, weight_neg=0.9, target_entropy=target,
                 gate_scope="micro")  # fmt: skip


def test_top_surprisal_rounds_up_and_ignores_padding() -> None:
    s = torch.tensor([[0.1, 2.0, 1.0, 99.0]])
    cand = torch.tensor([[True, True, True, False]])
    assert top_surprisal(s, cand, 0.5).tolist() == [[False, True, True, False]]  # ⌈0.5·3⌉ = 2
    assert top_surprisal(s, cand, 0.01).tolist() == [[False, True, False, False]]  # at least 1
    assert not top_surprisal(s, torch.zeros_like(cand), 0.5).any()


def test_weights_when_the_gate_is_on() -> None:
    b = _batch(old_entropy=0.1)
    surr = clipped_surrogate(b.log_probs, b.old_log_probs, b.advantages, clip_low=0.2, clip_high=0.28, clip_c=10.0)
    for variant, row1 in (("O1", [1.0, 1.0]), ("C2", [0.9, 1.0])):  # C2: the top-1 of the A<0 tokens (s = 3.0)
        loss, metrics = _stare(variant).token_loss(surr, b, None)
        omega = loss.detach() / surr.loss.detach().where(b.mask, torch.ones(()))
        torch.testing.assert_close(omega[0, :3], torch.tensor([1.0, 1.1, 1.1]))  # the top-2 surprisals of A > 0
        torch.testing.assert_close(omega[1, :2], torch.tensor(row1))
        assert metrics["stare/gate_on"] == 1.0
        torch.testing.assert_close(metrics["stare/frac_pos_selected"], torch.tensor(2 / 5))


def test_gate_off_at_or_above_the_target_is_grpo() -> None:
    b = _batch(old_entropy=0.3)  # H̄ = H_tgt: off (strictly below turns it on)
    grpo, stare = load_method("grpo", ["loss.clip_high=0.28"]).resolve(), load_method("stare_c2").resolve()
    lg, _ = grpo.loss(b)
    ls, metrics = stare.loss(b, stats=stare.step_stats(b.old_entropy, b.mask))
    assert metrics["stare/gate_on"] == 0.0
    assert ls.item() == lg.item()


def test_step_gate_uses_every_valid_token_of_every_rank() -> None:
    ent = torch.tensor([[0.2, 0.2, 0.2, 50.0], [0.8, 0.8, 50.0, 50.0]])  # padding's 50 must not count
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    stare = Stare(variant="O1", top_frac=0.1, weight_pos=1.1, weight_neg=0.9, target_entropy=0.3, gate_scope="step")
    assert abs(stare.step_stats(ent, mask, lambda x, op: x) - (0.6 + 1.6) / 5) < 1e-7  # float32 0.2, float64 sums
    # two ranks: the other holds 3 valid tokens of entropy 1.0 → (2.2 + 3) / (5 + 3)
    other = torch.tensor([3.0, 3.0], dtype=torch.float64)
    assert abs(stare.step_stats(ent, mask, lambda x, op: x + other) - 5.2 / 8) < 1e-7


def test_the_presets_gate_on_the_step_without_a_mini_batch_pass() -> None:
    """The release's gate (stare_ray_trainer.py): π_old's entropy over the step batch, known before the update;
    the trainer runs its extra no-grad forward per mini-batch only when ``needs.mini_batch_stats``."""
    for preset in ("stare", "stare_c2"):
        needs = load_method(preset).resolve().needs
        assert needs.step_stats
        assert not needs.mini_batch_stats
    with pytest.raises(ValueError, match="gate_scope must be one of"):
        _stare_scope("mini")


def _stare_scope(scope: str) -> Stare:
    return Stare(variant="O1", top_frac=0.1, weight_pos=1.1, weight_neg=0.9, target_entropy=0.3, gate_scope=scope)
