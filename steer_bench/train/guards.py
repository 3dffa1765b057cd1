"""Non-finite guards for the trainer: a NaN or inf is stopped where it first appears, with a named error,
before it reaches a checkpoint or turns into a crash somewhere else (e.g. ``torch.multinomial`` inside
``generate``: "probability tensor contains either inf, nan or element < 0")."""

from __future__ import annotations

from typing import Any

import torch

from steer_bench.errors import NonFiniteError


def check_weights(model: Any, accelerator: Any, *, where: str) -> None:
    """Raise on every rank if any rank holds a non-finite parameter (FSDP2: each rank checks its shard).

    One pass over the parameters and one scalar all-reduce: cheap beside the optimizer step it follows.
    """
    params = [(n, p.to_local() if hasattr(p, "to_local") else p) for n, p in model.named_parameters()]
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in params])
    bad = (~finite).sum().reshape(1).to(accelerator.device, torch.float64)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item():
        local = [n for (n, _), ok in zip(params, finite.tolist(), strict=True) if not ok]
        raise NonFiniteError(
            f"the weights are not finite {where} ({int(bad.item())} tensor(s) over all ranks"
            + (f"; here: {', '.join(local[:3])}{' …' if len(local) > 3 else ''})" if local else ")")
        )


def check_token_values(values: dict[str, torch.Tensor], mask: torch.Tensor, *, where: str) -> None:
    """Raise if any response token (``mask`` (B, T)) has a non-finite value in one of ``values`` (B, T)."""
    for name, v in values.items():
        bad = ~torch.isfinite(v) & mask.bool()
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            first = f"first: row {row}, position {col}"
            raise NonFiniteError(f"{name} is not finite {where} on {int(bad.sum())} response token(s) ({first})")
