"""Masked statistics over (B, T) token tensors and the reduction rules for loss metrics across micro-batches.

Every metric a loss returns is computed over the tokens of one call (one micro-batch). The trainer combines
the calls of a mini-batch with :func:`reduce_metrics`: each key uses its declared rule (sum, min, max), every
other key is a token-weighted mean (weight = the call's ``loss/n_tokens``), which is exact for
fractions and means over tokens and approximate for quantiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Σ(x·M) / ΣM over all elements; 0 when the mask is empty (a 0-d tensor)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_quantile(x: Tensor, mask: Tensor, q: float | Sequence[float]) -> Tensor:
    """Quantile(s) of the valid entries of ``x``, linear interpolation as ``torch.quantile``.

    Sort-based, so it has no size limit (``torch.quantile`` refuses inputs over 2**24 elements).
    Returns a 0-d tensor for a float ``q``, shape (len(q),) for a sequence; zeros when no entry is valid.
    """
    qs = torch.as_tensor(q, dtype=torch.float64, device=x.device)
    values = x[mask.bool()].detach().to(torch.float64).sort().values
    if values.numel() == 0:
        return torch.zeros_like(qs, dtype=x.dtype)
    pos = qs * (values.numel() - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    out = values[lo] + (values[hi] - values[lo]) * (pos - lo)
    return out.to(x.dtype)


def reduce_metrics(calls: Sequence[Mapping[str, float | Tensor]], rules: Mapping[str, str]) -> dict[str, float]:
    """Combine the metrics of several loss calls (micro-batches) into one dict of floats.

    ``rules``: key -> sum | min | max | mean (the declared :class:`~steer_bench.algos.base.Metric` reductions);
    a key without a rule, or ``mean``, is the mean weighted by each call's ``loss/n_tokens``.
    """
    weights = [float(c["loss/n_tokens"]) for c in calls]
    keys = dict.fromkeys(k for c in calls for k in c)
    out: dict[str, float] = {}
    for key in keys:
        pairs = [(float(c[key]), w) for c, w in zip(calls, weights, strict=True) if key in c]
        rule = rules.get(key, "mean")
        values = [v for v, _ in pairs]
        if rule == "sum":
            out[key] = sum(values)
        elif rule == "min":
            out[key] = min(values)
        elif rule == "max":
            out[key] = max(values)
        else:
            weight = sum(w for _, w in pairs)
            out[key] = sum(v * w for v, w in pairs) / weight if weight > 0 else sum(values) / len(values)
    return out
