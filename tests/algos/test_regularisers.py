"""Regularisers, the loss terms with a coefficient: the entropy bonus and EntroPIC's confident-token term by hand,
their registry role, and which regulariser each controller drives in :meth:`Method.loss`."""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos import Method, TokenBatch, Totals, build, lookup, metric_table
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.entropic import EntroPIC, EntroPICTerm
from steer_bench.algos.entropy_control import AdaptiveEntropy, EntropySchedule
from steer_bench.algos.interventions.ppo import PPO
from steer_bench.algos.regularisers import EntropyBonus, entropy_bonus

MASK = torch.tensor([[True, True, True], [True, True, False]])  # (1, 2) is padding


def _entropy_batch() -> tuple[TokenBatch, torch.Tensor]:
    entropy = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.8, 9.0]], requires_grad=True)  # 9.0 on the padding token
    zeros = torch.zeros(2, 3)
    return TokenBatch(zeros, zeros, zeros, MASK, entropy), entropy


def test_entropy_bonus_by_hand() -> None:
    b, entropy = _entropy_batch()
    # token-mean over the 5 valid tokens: (0.2 + 0.4 + 0.6 + 1.0 + 0.8) / 5 = 0.6; term = −0.1 · 0.6 = −0.06
    term, metrics = EntropyBonus(coef=0.1).term(b, 0.1, agg="token-mean", totals=Totals())
    assert term is not None
    assert term.item() == pytest.approx(-0.06)
    assert metrics["loss/entropy_bonus"].item() == pytest.approx(0.06)
    assert not metrics["loss/entropy_bonus"].requires_grad
    (g,) = torch.autograd.grad(term, entropy)
    torch.testing.assert_close(g, torch.tensor([[-0.02, -0.02, -0.02], [-0.02, -0.02, 0.0]]))  # −β/5; 0 on padding
    # the coefficient given wins over the field (a controller's value); seq-mean-token-mean: rows 0.4 and 0.9
    term, _ = EntropyBonus(coef=0.1).term(b, 0.2, agg="seq-mean-token-mean", totals=Totals())
    assert term is not None
    assert term.item() == pytest.approx(-0.2 * (0.4 + 0.9) / 2)
    # in a mini-batch of 10 valid tokens this call's part is 3.0 / 10
    term, _ = EntropyBonus(coef=0.1).term(b, 0.1, agg="token-mean", totals=Totals(batch_tokens=10))
    assert term is not None
    assert term.item() == pytest.approx(-0.1 * 3.0 / 10)
    assert EntropyBonus(coef=0.1).term(b, 0.0, agg="token-mean", totals=Totals()) == (None, {})  # β = 0: nothing
    assert entropy_bonus(0.0) == ()
    assert entropy_bonus(0.01) == (EntropyBonus(coef=0.01),)


def _confident_batch() -> tuple[TokenBatch, torch.Tensor]:
    """π = 0.99, 0.5, 0.96 (ratio 1.2) | 0.97, 0.2, padding 0.999; A = +1 | −2 (padding 5). With p_high = 0.95
    the term weights (0, 0), (0, 2) and (1, 0): 3 of the 5 valid tokens."""
    p = torch.tensor([[0.99, 0.5, 0.96], [0.97, 0.2, 0.999]])
    logp = p.log().requires_grad_(True)
    old = p.log().clone()
    old[0, 2] -= math.log(1.2)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 5.0]])
    return TokenBatch(logp, old, adv, MASK), logp


def test_entropic_term_by_hand() -> None:
    b, logp = _confident_batch()
    reg = EntroPICTerm(coef=0.0, high_prob=0.95)
    # α · mean over the high tokens of −r·|A| = 0.5 · −(1·1 + 1.2·1 + 1·2) / 3 = −0.7
    term, metrics = reg.term(b, 0.5, agg="token-mean", totals=Totals())
    assert term.item() == pytest.approx(-0.7, rel=1e-6)
    assert metrics["loss/entropic_adjust"].item() == pytest.approx(-0.7, rel=1e-6)
    assert metrics["loss/entropic_high_frac"].item() == pytest.approx(3 / 5)
    (g,) = torch.autograd.grad(term, logp)  # d/dlog π of −α·r·|A|/3 = −α·r·|A|/3 on the high tokens only
    want = torch.tensor([[-0.5 / 3, 0.0, -0.5 * 1.2 / 3], [-0.5 * 2 / 3, 0.0, 0.0]])
    torch.testing.assert_close(g, want)
    b, _ = _confident_batch()  # share 5 / 10 of a mini-batch of 10 valid tokens
    term, _ = reg.term(b, 0.5, agg="token-mean", totals=Totals(batch_tokens=10))
    assert term.item() == pytest.approx(-0.35, rel=1e-6)
    with pytest.raises(ValueError, match="token-mean"):
        reg.check_agg("seq-mean-token-mean")


def test_registry_role() -> None:
    assert lookup("regulariser", "entropy_bonus") is EntropyBonus
    assert lookup("regulariser", "entropic_term") is EntroPICTerm
    with pytest.raises(ValueError, match=r"unknown regulariser 'nope'; valid: entropic_term, entropy_bonus"):
        lookup("regulariser", "nope")
    with pytest.raises(ValueError, match=r"regulariser 'entropy_bonus': missing \['coef'\]"):
        build("regulariser", "entropy_bonus", {})
    table = metric_table()
    assert "| `loss/entropy_bonus` | sum |" in table
    assert "| `loss/entropic_adjust` | sum |" in table


def _method(**kw: object) -> Method:
    return Method(name="m", advantage=Grpo(norm_by_std=True, eps=1e-6), intervention=PPO(), clip_low=0.2,
                  clip_high=0.2, clip_c=10.0, agg="token-mean", **kw)  # type: ignore[arg-type]  # fmt: skip


def test_controllers_drive_their_regulariser() -> None:
    adaptive = AdaptiveEntropy(coef_init=0.1, delta=0.01, target=0.2, coef_min=0.0, coef_max=1.0)
    schedule = EntropySchedule(kind="constant", coef_init=0.1, coef_final=0.1)
    entropic = EntroPIC(target=0.1, kp=1.0, ki=0.01, alpha_min=-1.0, alpha_max=1.0)
    assert (adaptive.drives, schedule.drives, entropic.drives) == ("entropy_bonus", "entropy_bonus", "entropic_term")
    with pytest.raises(ValueError, match="drives regulariser 'entropy_bonus', which the method lacks"):
        _method(controller=schedule)
    with pytest.raises(ValueError, match="appears twice"):
        _method(regularisers=(EntropyBonus(coef=0.1), EntropyBonus(coef=0.2)))
    # the schedule's value replaces the bonus's own coef (0.3); without a value, its β_0 = 0.1
    m = _method(regularisers=(EntropyBonus(coef=0.3),), controller=schedule)
    assert m.needs.entropy_grad
    _, metrics = m.loss(_entropy_batch()[0], entropy_coef=0.05)
    assert metrics["loss/entropy_bonus"].item() == pytest.approx(0.05 * 0.6)
    assert metrics["loss/entropy_coef"].item() == pytest.approx(0.05)
    _, metrics = m.loss(_entropy_batch()[0])
    assert metrics["loss/entropy_bonus"].item() == pytest.approx(0.1 * 0.6)
    # EntroPIC sets its term's α; a bonus beside it keeps its own β
    m = _method(regularisers=(EntroPICTerm(coef=0.0, high_prob=0.95), EntropyBonus(coef=0.1)), controller=entropic)
    b, _ = _confident_batch()
    b = TokenBatch(b.log_probs, b.old_log_probs, b.advantages, MASK, _entropy_batch()[1])
    _, metrics = m.loss(b, entropy_coef=0.5)
    assert metrics["loss/entropic_alpha"].item() == 0.5
    assert metrics["loss/entropic_adjust"].item() == pytest.approx(-0.7, rel=1e-6)
    assert metrics["loss/entropy_bonus"].item() == pytest.approx(0.1 * 0.6)
    assert not _method(regularisers=(EntroPICTerm(coef=0.0, high_prob=0.95),)).needs.entropy
