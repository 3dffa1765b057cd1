"""The library's protocol for every preset, the 2025–26 ones of issue 13 included: finite, zero where masked,
gradient only on valid tokens, padding values irrelevant, zero advantage → zero policy loss; and the existing
presets unchanged by the new options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.config.method import list_methods, load_method
from steer_bench.errors import SteerBenchError

# every preset, the paper's and the 2025–26 ones (their protocol elsewhere uses the old per-function tables)
FIELD = list_methods()


def _batch(make_batch, *, adv_scale: float = 1.0, pad_value: float | None = None, seed: int = 0):
    x = make_batch(seed, [5, 3, 6, 1], 6)
    mask = x["mask"].bool()
    logp, old = x["logp"], x["old"]
    rollout = old + 0.4 * torch.randn(old.shape, generator=torch.Generator().manual_seed(seed + 1))
    if pad_value is not None:  # garbage on padding must not matter
        logp, old, rollout = (torch.where(mask, t, torch.full_like(t, pad_value)) for t in (logp, old, rollout))
    logp = logp.clone().requires_grad_(True)
    entropy = x["entropy"].clone().requires_grad_(True)
    adv = x["adv"] * adv_scale
    gen = torch.Generator().manual_seed(seed)  # clip_cov's random choice: the same in two calls
    return TokenBatch(logp, old, adv, mask, entropy, x["old_entropy"], gen, rollout), logp, entropy


def _run(name: str, batch: TokenBatch, **loss_kw):
    m = load_method(name).resolve()
    loss, metrics = m.loss(batch, stats=m.mini_batch_stats(batch), **loss_kw)
    return m, loss, metrics


@pytest.mark.parametrize("name", FIELD)
def test_finite_and_gradient_only_on_valid_tokens(name: str, make_batch) -> None:
    batch, logp, _entropy = _batch(make_batch)
    m, loss, metrics = _run(name, batch)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert set(metrics) <= set(m.metrics)
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.isfinite(g).all()
    assert (g[~batch.mask] == 0).all()
    assert (g[batch.mask] != 0).any()  # it trains


@pytest.mark.parametrize("name", FIELD)
def test_padding_values_do_not_matter(name: str, make_batch) -> None:
    a, _, _ = _batch(make_batch)
    b, _, _ = _batch(make_batch, pad_value=-30.0)
    la, lb = _run(name, a)[1], _run(name, b)[1]
    # the same float32 operations on the same valid values: equal up to summation order (exactly, here)
    torch.testing.assert_close(la, lb, rtol=0, atol=0)


# KL-Cov's penalty |log π − log π_old| on the top-Cov tokens does not depend on the sign or size of A
@pytest.mark.parametrize("name", [n for n in FIELD if n != "kl_cov"])
def test_zero_advantage_gives_zero_policy_loss_and_gradient(name: str, make_batch) -> None:
    batch, logp, _ = _batch(make_batch, adv_scale=0.0)
    _m, loss, metrics = _run(name, batch)
    assert float(metrics["loss/pg"]) == 0.0
    (g,) = torch.autograd.grad(loss, logp, allow_unused=True)
    assert g is None or (g == 0).all()


@pytest.mark.parametrize("name", ["grpo", "steer", "entropy_loss", "clip_cov"])
def test_existing_presets_ignore_rollout_log_probs_and_keep_the_dual_clip(name: str, make_batch) -> None:
    """The new TokenBatch field and surrogate choice change nothing for the paper presets."""
    batch, _logp, _ = _batch(make_batch)
    m = load_method(name).resolve()
    assert m.surrogate.name == "dual_clip"
    assert m.rollout_correction is None
    assert m.controller is None
    without = dataclasses.replace(batch, rollout_log_probs=None, generator=torch.Generator().manual_seed(0))
    with_rollout = dataclasses.replace(batch, generator=torch.Generator().manual_seed(0))
    la, ma = m.loss(without, stats=m.mini_batch_stats(without))
    lb, mb = m.loss(with_rollout, stats=m.mini_batch_stats(with_rollout))
    assert la.item() == lb.item()
    assert ma.keys() == mb.keys()


def test_rollout_correction_needs_the_engine_log_probs(make_batch) -> None:
    batch, _, _ = _batch(make_batch)
    no_rollout = dataclasses.replace(batch, rollout_log_probs=None)
    with pytest.raises(ValueError, match="rollout_log_probs"):
        load_method("grpo_tis").resolve().loss(no_rollout)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.surrogate.name=nope", "unknown surrogate 'nope'"),
        ("loss.surrogate.params.beta_low=1.0", "unknown \\['beta_low'\\]"),
        ("loss.clip_c=10.0", "no dual clip"),
        ("loss.rollout_correction.level=word", "level must be one of"),
    ],
)
def test_bad_new_options_fail_naming_the_culprit(override: str, message: str) -> None:
    name = {"loss.clip_c=10.0": "gspo", "loss.rollout_correction.level=word": "grpo_tis"}.get(override, "cispo")
    with pytest.raises(SteerBenchError, match=message):
        load_method(name, [override])
