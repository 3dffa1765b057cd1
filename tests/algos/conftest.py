"""A random (B, T) batch of response-token tensors with ragged lengths, shared by the algos tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

Batch = dict[str, torch.Tensor]


def random_batch(seed: int, lengths: Sequence[int], t: int, *, noise: float = 0.3, device: str = "cpu") -> Batch:
    """logp, old (log-probs, some very unlikely tokens), adv (one per row), mask, entropy, old_entropy; (B, T)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).float()
    old = torch.rand(b, t, generator=g).clamp(1e-3, 1).log() * 3
    x = {
        "logp": old + noise * torch.randn(b, t, generator=g),
        "old": old,
        "adv": torch.randn(b, 1, generator=g).expand(b, t) * mask,
        "mask": mask,
        "entropy": torch.rand(b, t, generator=g) * 2,
        "old_entropy": torch.rand(b, t, generator=g) * 2,
    }
    return {k: v.to(device) for k, v in x.items()}


@pytest.fixture
def make_batch() -> Callable[..., Batch]:
    return random_batch
