"""Token entropy and log-probs from logits: against a float64 brute force, gradients, and memory (no extra
(B, T, V) tensor in the forward, exactly one — the gradient — in forward + backward)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from steer_bench.algos import entropy_from_logits, logprobs_and_entropy


def brute_force(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logp = (logits.double() / temperature).log_softmax(-1)
    return logp.gather(-1, labels[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_matches_float64_brute_force_on_a_large_vocabulary(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 32, 50_000, generator=g) * 4
    labels = torch.randint(0, 50_000, (2, 32), generator=g)
    logp, ent = logprobs_and_entropy(logits, labels, temperature=temperature, chunk_rows=7)  # ragged last chunk
    ref_logp, ref_ent = brute_force(logits, labels, temperature)
    assert logp.dtype == torch.float32
    assert ent.shape == (2, 32)
    # float32 logits: log-softmax rounding (|log p| up to ~40 here) bounds the agreement; measured max relative
    # error 5e-6 (absolute 2e-5 at H ≈ 4 nats). Realistic logit scales (std 1-2) give < 1e-5 absolute.
    assert ((ent.double() - ref_ent).abs() / ref_ent).max() < 1e-5
    assert (logp.double() - ref_logp).abs().max() < 1e-4
    # Chunking itself adds nothing: the same as one unchunked float32 log-softmax ...
    one_shot = (logits / temperature).log_softmax(-1)
    assert torch.allclose(ent, -(one_shot.exp() * one_shot).sum(-1), atol=2e-6)
    assert torch.allclose(entropy_from_logits(logits, temperature=temperature), ent)
    # ... and with float64 logits the chunked computation is the brute force.
    logp64, ent64 = logprobs_and_entropy(logits.double(), labels, temperature=temperature, chunk_rows=7)
    assert (ent64 - ref_ent).abs().max() < 1e-10
    assert (logp64 - ref_logp).abs().max() < 1e-10


def test_realistic_float32_logits_agree_to_1e_5() -> None:
    logits = torch.randn(2, 32, 50_000, generator=torch.Generator().manual_seed(1)) * 2
    ent = entropy_from_logits(logits, chunk_rows=16)
    assert (ent.double() - brute_force(logits, torch.zeros(2, 32, dtype=torch.long), 1.0)[1]).abs().max() < 1e-5


def test_peaked_and_uniform_rows() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0], [-1e4, 3.0, -1e4, 3.0]]])
    ent = entropy_from_logits(logits)
    assert ent[0].tolist() == pytest.approx(
        [torch.log(torch.tensor(4.0)).item(), 0.0, torch.log(torch.tensor(2.0)).item()], abs=1e-6
    )


def test_gradients_match_autograd_in_float64() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 5, 7, generator=g, dtype=torch.float64) * 2
    logits = base[:, 1:-1].detach().requires_grad_(True)  # float64: computed in float64
    labels = torch.randint(0, 7, (2, 3), generator=g)
    fn = lambda z: logprobs_and_entropy(z, labels, temperature=0.7, chunk_rows=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,))


def test_non_contiguous_slice_and_bf16_logits() -> None:
    g = torch.Generator().manual_seed(2)
    full = torch.randn(3, 9, 40, generator=g).requires_grad_(True)
    sliced = full[:, 2:-1]  # the response positions of a (B, T_total, V) output: not viewable as rows
    labels = torch.randint(0, 40, (3, 6), generator=g)
    logp, ent = logprobs_and_entropy(sliced, labels, temperature=0.9, chunk_rows=4)
    (logp.sum() + 0.5 * ent.sum()).backward()
    ours = full.grad.clone()
    full.grad = None
    ref_logp, ref_ent = brute_force(full[:, 2:-1], labels, 0.9)
    (ref_logp.sum() + 0.5 * ref_ent.sum()).backward()
    assert torch.allclose(ours, full.grad, atol=1e-6)
    assert ours[:, :2].abs().sum() == 0
    half = sliced.detach().to(torch.bfloat16)
    _h_logp, h_ent = logprobs_and_entropy(half, labels, temperature=0.9)
    _b_logp, b_ent = brute_force(half.float(), labels, 0.9)
    assert h_ent.dtype == torch.float32
    assert (h_ent.double() - b_ent).abs().max() < 1e-5


def _allocations(fn) -> list[int]:
    """Bytes allocated by each op while ``fn`` runs (CPU profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0]


def test_no_extra_btv_tensor_beyond_the_gradient() -> None:
    b, t, v = 2, 64, 2048
    logits = torch.randn(b, t + 1, v)[:, 1:].requires_grad_(True)
    labels = torch.randint(0, v, (b, t))
    btv = b * t * v * 4

    def ours_forward() -> None:
        with torch.no_grad():
            logprobs_and_entropy(logits, labels, temperature=0.7, chunk_rows=32)

    def ours_backward() -> None:
        logp, ent = logprobs_and_entropy(logits, labels, temperature=0.7, chunk_rows=32)
        (logp.sum() + ent.sum()).backward()

    def naive_backward() -> None:
        logp = (logits / 0.7).log_softmax(-1)
        (logp.gather(-1, labels[..., None]).sum() - (logp.exp() * logp).sum()).backward()

    forward = _allocations(ours_forward)
    assert max(forward) == btv // 4  # chunk temporaries: 32 of the 128 rows
    assert [n for n in _allocations(ours_backward) if n >= btv] == [btv]  # the gradient, nothing else
    assert len([n for n in _allocations(naive_backward) if n >= btv]) >= 4  # the profiler does see them
