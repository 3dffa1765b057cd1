"""EntroPIC: one controller update and the token weighting by hand (masks, padding, ratio, accumulation share), an
exact resume after a crash (the integral lives in the checkpoint) and the same α on two gloo ranks."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from gloo import GlooAccelerator, gloo_group, run_ranks

from steer_bench.algos import TokenBatch, Totals
from steer_bench.algos.entropic import EntroPIC, EntroPICTerm
from steer_bench.config.method import load_method
from steer_bench.errors import SteerBenchError
from steer_bench.files import read_json, read_jsonl

CTRL = EntroPIC(target=0.5, kp=1.0, ki=0.1, alpha_min=-0.3, alpha_max=0.3)


def test_controller_steps_by_hand() -> None:
    alpha, i = CTRL.step(None, 0.7)  # e = 0.2: α = 1·0.2 + 0.1·0 = 0.2; I = 0.2
    assert (alpha, i) == pytest.approx((0.2, 0.2), abs=1e-15)
    alpha, i = CTRL.step(0.2, 0.9)  # e = 0.4: α = 0.4 + 0.1·0.2 = 0.42 → clipped to 0.3; I = 0.6
    assert (alpha, i) == pytest.approx((0.3, 0.6), abs=1e-15)
    alpha, i = CTRL.step(0.6, 0.1)  # e = −0.4: α = −0.4 + 0.06 = −0.34 → −0.3; I = 0.2
    assert (alpha, i) == pytest.approx((-0.3, 0.2), abs=1e-15)
    alpha, i = CTRL.step(0.2, 0.45)  # e = −0.05: α = −0.05 + 0.02 = −0.03 (inside the clip); I = 0.15
    assert (alpha, i) == pytest.approx((-0.03, 0.15), abs=1e-15)


@pytest.mark.parametrize("kw", [{"alpha_min": 0.1}, {"alpha_max": -0.1}, {"high_prob": 1.0}, {"ki": -0.01}])
def test_bad_settings(kw: dict) -> None:
    base = {"target": 0.1, "kp": 1.0, "ki": 0.01, "alpha_min": -1.0, "alpha_max": 1.0}
    part, params = (EntroPICTerm, {"coef": 0.0} | kw) if "high_prob" in kw else (EntroPIC, base | kw)  # the term's
    with pytest.raises(ValueError, match="entropic"):
        part(**params)


def test_preset_is_the_release_script() -> None:
    m = load_method("entropic")
    assert m.loss.entropic == {"target": 0.1, "kp": 1.0, "ki": 0.01, "alpha_min": -1.0, "alpha_max": 1.0,
                               "high_prob": 0.95}  # fmt: skip
    assert (m.advantage.estimator, m.loss.agg, m.loss.entropy_coef) == ("grpo", "token-mean", 0.0)
    assert m.resolve().has_controller


def _batch(adv_scale: float = 1.0) -> tuple[TokenBatch, torch.Tensor]:
    """Row 0 (A = +1): π = 0.99, 0.5, 0.97 (ratio 1.1), padding with π = 0.999; row 1 (A = −2): π = 0.96, 0.2,
    two padding tokens. High-probability valid tokens: (0, 0), (0, 2), (1, 0)."""
    p = torch.tensor([[0.99, 0.5, 0.97, 0.999], [0.96, 0.2, 0.999, 0.999]])
    logp = p.log().requires_grad_(True)
    old = p.log().clone()
    old[0, 2] -= math.log(1.1)  # r = 1.1 there
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 5.0], [-2.0, -2.0, 7.0, 7.0]]) * adv_scale  # padding values must not count
    return TokenBatch(logp, old, adv, mask), logp


def test_the_term_by_hand() -> None:
    entropic, grpo = load_method("entropic").resolve(), load_method("grpo").resolve()
    b, logp = _batch()
    loss, metrics = entropic.loss(b, entropy_coef=0.5)
    (g,) = torch.autograd.grad(loss, logp)
    b2, logp2 = _batch()
    loss_g, _ = grpo.loss(b2)
    (g_g,) = torch.autograd.grad(loss_g, logp2)
    # α · mean over the 3 high tokens of −r·|A| = 0.5 · −(1·1 + 1.1·1 + 1·2)/3
    torch.testing.assert_close(loss - loss_g, torch.tensor(0.5 * -(1.0 + 1.1 + 2.0) / 3))
    assert metrics["loss/entropic_adjust"].item() == pytest.approx(0.5 * -4.1 / 3, rel=1e-6)
    assert metrics["loss/entropic_alpha"].item() == 0.5
    assert metrics["loss/entropic_high_frac"].item() == pytest.approx(3 / 5)  # of the 5 valid tokens
    # d/dlogp of −α·r·|A|/3 = −α·r·|A|/3 on the high tokens only (not on padding, not on π = 0.5, 0.2)
    want = torch.zeros(2, 4)
    want[0, 0], want[0, 2], want[1, 0] = -0.5 / 3, -0.5 * 1.1 / 3, -0.5 * 2 / 3
    torch.testing.assert_close(g - g_g, want)
    # a call in a mini-batch of 10 valid tokens carries its share 5/10 of the term
    b3, _ = _batch()
    loss_t, _ = entropic.loss(b3, Totals(batch_tokens=10), entropy_coef=0.5)
    b4, _ = _batch()
    loss_gt, _ = grpo.loss(b4, Totals(batch_tokens=10))
    torch.testing.assert_close(loss_t - loss_gt, torch.tensor(0.5 * 0.5 * -4.1 / 3))


def test_zero_advantage_or_alpha_gives_no_term() -> None:
    m = load_method("entropic").resolve()
    b, logp = _batch(adv_scale=0.0)
    loss, metrics = m.loss(b, entropy_coef=0.7)
    (g,) = torch.autograd.grad(loss, logp)
    assert loss.item() == 0.0
    assert metrics["loss/entropic_adjust"].item() == 0.0
    assert torch.count_nonzero(g) == 0
    b, _ = _batch()
    loss_none, metrics = m.loss(b)  # no α given (dry run): 0, GRPO itself
    b2, _ = _batch()
    torch.testing.assert_close(loss_none, load_method("grpo").resolve().loss(b2)[0])
    assert metrics["loss/entropic_alpha"].item() == 0.0


def test_no_high_probability_token_adds_nothing() -> None:
    m = load_method("entropic").resolve()
    logp = torch.full((1, 3), math.log(0.5), requires_grad=True)
    b = TokenBatch(logp, logp.detach(), torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool))
    _, metrics = m.loss(b, entropy_coef=1.0)
    assert metrics["loss/entropic_adjust"].item() == 0.0


def test_one_controller_at_a_time_and_token_mean_only() -> None:
    with pytest.raises(SteerBenchError, match="at most one"):
        load_method("entropic", ["loss.entropy_schedule={kind: constant, coef_init: 0.0, coef_final: 0.0}"])
    with pytest.raises(SteerBenchError, match="token-mean"):
        load_method("entropic", ["loss.agg=seq-mean-token-mean"])


# ---------------------------------------------------------------------------------------------- two gloo ranks
def _worker(rank: int, port: int, queue: mp.Queue) -> None:
    from steer_bench.train.loop import entropy_coef

    with gloo_group(rank, port):
        method = load_method("entropic").resolve()
        run = SimpleNamespace(method=method, state=SimpleNamespace(entropy_coef=None), accelerator=GlooAccelerator(),
                              cfg=SimpleNamespace(steps=3))  # fmt: skip
        # rank 0: 3 valid tokens of entropy 0.4 (+ padding 9.0); rank 1: 1 valid token of 0.0 → mean 0.3 over 4
        ent = torch.tensor([[0.4, 0.4, 0.4, 9.0]]) if rank == 0 else torch.tensor([[0.0, 9.0, 9.0, 9.0]])
        mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]]) if rank == 0 else torch.tensor([[1.0, 0.0, 0.0, 0.0]])
        alphas = []
        for number in (1, 2):
            step = SimpleNamespace(number=number, old_entropy=ent, batch=SimpleNamespace(response_mask=mask))
            alphas.append(entropy_coef(run, step))
        queue.put((rank, alphas, run.state.entropy_coef))


@pytest.mark.slow
def test_alpha_and_integral_equal_on_two_gloo_ranks() -> None:
    (_, a0, i0), (_, a1, i1) = run_ranks(_worker)
    assert a0 == a1
    assert i0 == i1
    # H = 1.2/4 = 0.3 over all ranks' valid tokens (each rank alone: 0.4 and 0.0); e = 0.2 each step
    # (the entropies are float32: 0.4 to 1e-7)
    assert a0 == pytest.approx([0.2, 0.2 + 0.01 * 0.2], rel=1e-6)
    assert i0 == pytest.approx(0.4, rel=1e-6)


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_continues_the_integral_exactly(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 steps straight vs 2 steps, a crash in step 3, and a resume: the same α, integral and metrics."""
    from trainrun import deterministic, make_cfg, train_until_crash

    from steer_bench.train import train

    # K_p 0: α is the integral's alone, so it would restart at 0 if the state were lost
    preset = load_method("entropic", ["loss.entropic.kp=0.0", "loss.entropic.ki=0.001"])
    cfg = make_cfg(model_dir, data, steps=3)
    train(cfg, preset, tmp_path / "straight")

    train_until_crash(cfg, preset, tmp_path / "resumed", monkeypatch, step=3)
    saved = read_json(tmp_path / "resumed" / "checkpoints" / "last" / "state.json")["entropy_coef"]
    train(cfg, preset, tmp_path / "resumed")

    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    alphas = [r["loss/entropic_alpha"] for r in straight]
    assert alphas[0] == 0.0
    assert alphas[2] != 0.0
    assert alphas[2] == pytest.approx(0.001 * saved, rel=1e-6)  # step 3 used the checkpointed I_2
    assert deterministic(resumed) == deterministic(straight)
    last = [tmp_path / n / "checkpoints" / "last" / "state.json" for n in ("straight", "resumed")]
    final = [read_json(p)["entropy_coef"] for p in last]
    assert final[0] == final[1]
