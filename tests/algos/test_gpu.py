"""The objective library on a CUDA device: same numbers as on the CPU, and the entropy pass's peak memory.

Imports only torch and yaml (the presets are read as plain YAML), so it runs on a bare GPU box.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from steer_bench.algos import (
    ADVANTAGES,
    INTERVENTIONS,
    Intervention,
    Method,
    TokenBatch,
    build,
    compute_advantages,
    entropy_bonus,
    logprobs_and_entropy,
)
from steer_bench.algos.advantages import Grpo

POLICY_LOSSES = [n for n, c in INTERVENTIONS.items() if c.__module__.startswith("steer_bench.algos.interventions.")]

MakeBatch = Callable[..., dict[str, torch.Tensor]]  # the make_batch fixture (conftest.py)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
METHODS = Path(__file__).resolve().parents[2] / "configs" / "methods"


def _presets() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(METHODS.glob("*.yaml"))]


def _method(name: str) -> Method:
    """The intervention ``name`` with the settings of the first preset that uses it, and an entropy bonus."""
    m = next(m for m in _presets() if m["loss"]["name"] == name)
    shared = {k: m["loss"][k] for k in ("clip_low", "clip_high", "clip_c", "agg")}
    intervention = build("intervention", name, m["loss"].get("params", {}))
    assert isinstance(intervention, Intervention)
    grpo = Grpo(norm_by_std=True, eps=1e-6)
    return Method(name=name, advantage=grpo, intervention=intervention, regularisers=entropy_bonus(0.01), **shared)


LENGTHS = [9, 3, 0, 7, 9, 5]


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_policy_losses_match_the_cpu(name: str, make_batch: MakeBatch) -> None:
    out = {}
    for device in ("cpu", "cuda"):
        x = make_batch(0, LENGTHS, 9, device=device)
        logp = x["logp"].clone().requires_grad_(True)
        ent = x["entropy"].clone().requires_grad_(True)
        batch = TokenBatch(
            logp, x["old"], x["adv"], x["mask"], ent, x["entropy"], torch.Generator().manual_seed(1)
        )  # fmt: skip
        loss, metrics = _method(name).loss(batch)
        loss.backward()
        out[device] = (loss.item(), logp.grad.cpu(), {k: float(v) for k, v in metrics.items()})
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], abs=1e-6)
    assert torch.allclose(out["cuda"][1], out["cpu"][1], atol=1e-6)
    assert out["cuda"][2] == pytest.approx(out["cpu"][2], abs=1e-5)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_advantages_match_the_cpu(name: str, make_batch: MakeBatch) -> None:
    m = next(m for m in _presets() if m["advantage"]["estimator"] == name)
    scores, groups = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([4, 4, 4, 2, 2, 9])
    res = [
        compute_advantages(
            name,
            scores.to(d),
            groups.to(d),
            make_batch(0, LENGTHS, 9, device=d)["mask"],
            entropy=make_batch(0, LENGTHS, 9, device=d)["entropy"],
            **m["advantage"].get("params", {}),
        ).cpu()
        for d in ("cpu", "cuda")
    ]
    assert torch.allclose(res[0], res[1], atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_entropy_matches_float64_and_peak_memory_is_the_gradient(dtype: torch.dtype) -> None:
    b, t, v = 2, 1024, 32768
    base = torch.randn(b, t + 1, v, device="cuda", dtype=dtype) * 2
    logits = base[:, 1:].detach().requires_grad_(True)  # a non-contiguous slice, as in a trainer
    labels = torch.randint(0, v, (b, t), device="cuda")
    ref = (logits.detach().double() / 0.8).log_softmax(-1)
    ref_ent = -(ref.exp() * ref).sum(-1)
    ref_logp = ref.gather(-1, labels[..., None]).squeeze(-1)
    del ref
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    logp, ent = logprobs_and_entropy(logits, labels, temperature=0.8, chunk_rows=256)
    (logp.sum() + ent.sum()).backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    grad_bytes = logits.numel() * logits.element_size()
    chunk_bytes = 256 * v * 4  # one float32 chunk of rows
    assert peak <= grad_bytes + 8 * chunk_bytes, (peak, grad_bytes, chunk_bytes)
    assert (ent.double() - ref_ent).abs().max() < 2e-5
    assert (logp.double() - ref_logp).abs().max() < 1e-4
