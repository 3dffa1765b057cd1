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


def float32_entropy_bound(ref_entropy: torch.Tensor, vocab: int) -> torch.Tensor:
    """Per-row bound on |H_float32 − H_exact| from the size of the computation, not from one machine's result.

    H = −Σ p log p in float32 rests on two length-V reductions whose summation order depends on the CPU's
    vector width (AVX2 vs AVX-512 lanes). Under the probabilistic rounding model (Higham & Mary 2019) a
    length-n float32 sum errs by at most λ·√n·u·Σ|terms| (u = 2⁻²⁴), λ = 3 standard deviations. The two sums:
    - the softmax normaliser Σ exp(z − max): its relative error δ shifts every log p by δ, which moves H by
      δ·|1 − H|;
    - the entropy sum itself, of non-negative terms adding up to H.
    So |ΔH| ≤ 3·√V·u·(H + |H − 1|). A real defect (wrong temperature, a misaligned chunk) errs by ≥ 1e-3.
    """
    return 3 * vocab**0.5 * 2.0**-24 * (ref_entropy + (ref_entropy - 1).abs())


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_matches_float64_brute_force_on_a_large_vocabulary(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 32, 50_000, generator=g) * 4
    labels = torch.randint(0, 50_000, (2, 32), generator=g)
    logp, ent = logprobs_and_entropy(logits, labels, temperature=temperature, chunk_rows=7)  # ragged last chunk
    ref_logp, ref_ent = brute_force(logits, labels, temperature)
    assert logp.dtype == torch.float32
    assert ent.shape == (2, 32)
    # float32 logits: the bound of the two length-V reductions (measured here: at most 7% of it, 2e-5 absolute).
    assert ((ent.double() - ref_ent).abs() <= float32_entropy_bound(ref_ent, 50_000)).all()
    # log p = z − logsumexp(z): |z|, |log p| ≤ ~40 here, so a few float32 ulps of 40 plus the normaliser's error.
    assert (logp.double() - ref_logp).abs().max() < 1e-4
    # Chunking itself adds nothing: the same as one unchunked float32 log-softmax ...
    one_shot = (logits / temperature).log_softmax(-1)
    assert torch.allclose(ent, -(one_shot.exp() * one_shot).sum(-1), atol=2e-6)
    assert torch.allclose(entropy_from_logits(logits, temperature=temperature), ent)
    # ... and with float64 logits the chunked computation is the brute force.
    logp64, ent64 = logprobs_and_entropy(logits.double(), labels, temperature=temperature, chunk_rows=7)
    assert (ent64 - ref_ent).abs().max() < 1e-10
    assert (logp64 - ref_logp).abs().max() < 1e-10


def test_realistic_float32_logits_agree_within_the_float32_bound() -> None:
    logits = torch.randn(2, 32, 50_000, generator=torch.Generator().manual_seed(1)) * 2
    ent = entropy_from_logits(logits, chunk_rows=16)
    ref = brute_force(logits, torch.zeros(2, 32, dtype=torch.long), 1.0)[1]
    # H ≈ 8.7 nats: the bound is ≈ 6.6e-4; measured 6e-6 here, 1.2e-5 on an AVX2 EPYC.
    assert ((ent.double() - ref).abs() <= float32_entropy_bound(ref, 50_000)).all()


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
    assert ((h_ent.double() - b_ent).abs() <= float32_entropy_bound(b_ent, 40)).all()


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
