"""Token entropy from logits, the STEER Ω estimator, Cui et al.'s covariance, and entropy-change quadrants.

``entropy`` is always the full next-token distribution's entropy H = −Σ_v π_v log π_v (never −log p of the
sampled token). :func:`logprobs_and_entropy` computes the sampled tokens' log-probs and H from (B, T, V)
logits in row chunks, with a hand-written backward, so that no (B, T, V) float tensor is created besides
the gradient itself: the forward keeps only chunk-sized temporaries and saves just the logits it was given.
"""

from __future__ import annotations

import torch
from torch import Tensor

from steer_bench.algos.stats import masked_mean

# Ω variants: the current release, the other stored release version (labelled by its commit), our p·Ω, and the
# importance-ratio factor of the paper's Theorem 1 (r·A instead of A/π_old; STEER adds the clipping indicator).
OMEGA_FORMS = ("paper", "release_bfc8d2e", "first_order", "theorem")

# Elements per chunk of rows (a few chunk-sized temporaries live at once: 64 MiB each in float32).
CHUNK_ELEMENTS = 2**24


def _row_views(x: Tensor) -> list[Tensor]:
    """(B, T, V) -> 2-D row views (R, V) covering the B·T rows in order, never copying."""
    if x.stride(0) == x.size(1) * x.stride(1):
        return [x.flatten(0, 1)]
    return list(x.unbind(0))  # e.g. a slice of the sequence axis: one view per sequence


def _chunks(x: Tensor, chunk_rows: int):
    """Yield (row offset, chunk view) over the B·T rows of x (B, T, V)."""
    offset = 0
    for view in _row_views(x):
        for start in range(0, view.size(0), chunk_rows):
            chunk = view[start : start + chunk_rows]
            yield offset + start, chunk
        offset += view.size(0)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # bf16/fp16 logits are upcast one chunk at a time


class _LogpEntropy(torch.autograd.Function):
    """(logits (B,T,V), labels (B,T)) -> (log π(label) (B,T), H (B,T)), temperature-scaled, chunked.

    Backward, with z = logits/τ, p = softmax(z):  ∂H/∂z = −p ⊙ (log p + H),  ∂log p_y/∂z = e_y − p.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, temperature: float, chunk_rows: int):  # type: ignore[override]
        rows = logits.shape[0] * logits.shape[1]
        dtype = _compute_dtype(logits.dtype)
        flat_labels = labels.reshape(-1)
        logp = torch.empty(rows, dtype=dtype, device=logits.device)
        ent = torch.empty(rows, dtype=dtype, device=logits.device)
        for start, chunk in _chunks(logits, chunk_rows):
            end = start + chunk.size(0)
            log_p = torch.log_softmax(chunk.to(dtype) / temperature, dim=-1)
            # −Σ p log p sums non-negative terms; logsumexp(z) − Σ p z would cancel in float32.
            ent[start:end] = -(log_p.exp() * log_p).sum(-1)
            logp[start:end] = log_p.gather(-1, flat_labels[start:end, None]).squeeze(-1)
        ctx.save_for_backward(logits, labels, ent)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return logp.view(labels.shape), ent.view(labels.shape)

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, grad_ent: Tensor | None):  # type: ignore[override]
        logits, labels, ent = ctx.saved_tensors
        dtype = _compute_dtype(logits.dtype)
        rows = ent.numel()
        g_logp = torch.zeros(rows, dtype=dtype, device=logits.device) if grad_logp is None else grad_logp.reshape(-1)
        g_ent = torch.zeros(rows, dtype=dtype, device=logits.device) if grad_ent is None else grad_ent.reshape(-1)
        flat_labels = labels.reshape(-1)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # the gradient itself
        grad_rows = grad.view(rows, -1)
        for start, chunk in _chunks(logits, ctx.chunk_rows):
            end = start + chunk.size(0)
            z = chunk.to(dtype) / ctx.temperature
            log_p = torch.log_softmax(z, dim=-1)
            p = log_p.exp()
            gz = (log_p + ent[start:end, None]).mul_(p).mul_(-g_ent[start:end, None])
            gz.sub_(p.mul_(g_logp[start:end, None]))
            gz.scatter_add_(-1, flat_labels[start:end, None], g_logp[start:end, None].to(dtype))
            grad_rows[start:end] = gz.div_(ctx.temperature)
        return grad, None, None, None


def _chunk_rows(vocab: int, chunk_rows: int | None) -> int:
    return chunk_rows if chunk_rows is not None else max(1, CHUNK_ELEMENTS // max(vocab, 1))


def logprobs_and_entropy(
    logits: Tensor, labels: Tensor, *, temperature: float, chunk_rows: int | None = None
) -> tuple[Tensor, Tensor]:
    """Log-probs of ``labels`` and full-distribution entropy from temperature-scaled logits.

    logits (B, T, V) (any float dtype, may be a non-contiguous slice), labels (B, T) int64 ->
    (logp (B, T), entropy (B, T)) in float32 (float64 for float64 logits), differentiable in the logits.
    z = logits/τ (as verl scales before log-softmax), log p = log_softmax(z), logp = log p_y, H = −Σ p log p.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        shapes = f"{tuple(logits.shape)}, {tuple(labels.shape)}"
        raise ValueError(f"logits must be (B, T, V) and labels (B, T); got {shapes}")
    rows = _chunk_rows(logits.shape[-1], chunk_rows)
    return _LogpEntropy.apply(logits, labels.long(), float(temperature), rows)


def entropy_from_logits(logits: Tensor, *, temperature: float = 1.0, chunk_rows: int | None = None) -> Tensor:
    """Token entropy H (B, T) of softmax(logits/τ) from logits (B, T, V); chunked, differentiable."""
    labels = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
    return logprobs_and_entropy(logits, labels, temperature=temperature, chunk_rows=chunk_rows)[1]


def omega(advantages: Tensor, old_log_probs: Tensor, log_probs: Tensor, entropy: Tensor, *, form: str) -> Tensor:
    """STEER's per-token entropy-change estimate Ω (B, T), no gradient.

    paper (the released code):  Ω = (A / π_old) · p(1 − p) · (ln p + H)        (release commit b31df71)
    release_bfc8d2e:             Ω = (A / π_old) · p(1 − p)² · (ln p + H)       (release commit bfc8d2e)
    first_order:                 p · Ω_paper
    theorem:                     Ω = (A · r) · p(1 − p) · (ln p + H),  r = exp(clamp(log p − log π_old, −20, 20))
    with p = exp(log_probs) clamped to [1e-8, 1 − 1e-8] (current policy), π_old = exp(old_log_probs) clamped
    to [1e-8, 1], H the old policy's entropy. Non-finite values become 0 (as released).
    ``theorem`` is the factor of the paper's Theorem 1 (the importance ratio times A, as the clipped surrogate's
    gradient carries it) without its clipping indicator: :class:`~steer_bench.algos.interventions.steer.Steer`
    multiplies by the indicator, which needs the surrogate's clip state (our ablation, docs/methods.md §M22).

    The first-order entropy change of one SGD step of size η on a token's surrogate −A·π/π_old that moves
    only the sampled logit (the paper's Assumption 1) is ΔH ≈ −(η/L)·p·Ω_paper = −(η/L)·Ω_first_order: the
    sampled logit moves by (η/L)·A·p(1−p)/π_old and ∂H/∂z_y = −p(ln p + H). The released Ω lacks the factor p.
    """
    if form not in OMEGA_FORMS:
        raise ValueError(f"omega form must be one of {OMEGA_FORMS}, got {form!r}")
    with torch.no_grad():
        p = log_probs.detach().exp().clamp(1e-8, 1 - 1e-8)
        if form == "theorem":  # r as the surrogate computes it (surrogate.clipped_surrogate)
            ratio = (log_probs.detach() - old_log_probs.detach()).clamp(-20.0, 20.0).exp()
            out = advantages.detach() * ratio * p * (1 - p) * (p.log() + entropy.detach())
            return torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        old_p = old_log_probs.detach().exp().clamp(1e-8, 1.0)
        out = advantages.detach() / old_p * p * (1 - p) * (p.log() + entropy.detach())
        if form == "first_order":
            out = out * p
        elif form == "release_bfc8d2e":  # the other stored release version squares (1 − p)
            out = out * (1 - p)
        return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def covariance(advantages: Tensor, log_probs: Tensor, response_mask: Tensor) -> Tensor:
    """Cui et al. (2025) per-token covariance Cov_t = (A_t − Ā)(log π_t − mean log π) over valid tokens.

    Means are over all valid tokens of the input (as verl's clip_cov / kl_cov per call). (B, T), 0 on
    padding, no gradient.
    """
    with torch.no_grad():
        adv, logp = advantages.detach(), log_probs.detach()
        cov = (adv - masked_mean(adv, response_mask)) * (logp - masked_mean(logp, response_mask))
        return cov * response_mask.to(cov.dtype)


# Quadrant labels: the sign of A × the sign of (ln p + H). The entropy-change direction is that of −Ω.
QUADRANTS: dict[int, str] = {
    1: "pos_high",  # A > 0, p > e^{-H} (a likely token pushed up): entropy falls
    2: "pos_low",  # A > 0, p < e^{-H} (an unlikely token pushed up): entropy rises
    3: "neg_high",  # A < 0, likely token pushed down: entropy rises
    4: "neg_low",  # A < 0, unlikely token pushed down: entropy falls
}


def quadrant(advantages: Tensor, log_probs: Tensor, entropy: Tensor, response_mask: Tensor) -> Tensor:
    """Quadrant label (B, T) int64 in {0, 1, 2, 3, 4} (see :data:`QUADRANTS`); 0 = padding, A = 0 or ln p + H = 0."""
    with torch.no_grad():
        a = advantages.detach().sign()
        s = (log_probs.detach() + entropy.detach()).sign()
        label = torch.zeros(advantages.shape, dtype=torch.long, device=advantages.device)
        label[(a > 0) & (s > 0)] = 1
        label[(a > 0) & (s < 0)] = 2
        label[(a < 0) & (s > 0)] = 3
        label[(a < 0) & (s < 0)] = 4
        return label * response_mask.bool()
