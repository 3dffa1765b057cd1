"""The ``probe:`` section of a training run: the fixed held-out prompts its entropy is measured on
(:mod:`steer_bench.train.probeset`)."""

from __future__ import annotations

from pydantic import Field

from steer_bench.config.base import StrictModel


class ProbeConfig(StrictModel):
    every_n_steps: int = Field(0, ge=0)
    """0 = off. Else: measure at step 0 (the starting policy) and every N steps."""
    data: str | None = None
    """Prepared parquet of the probe prompts; None = ``validation.data`` (held-out problems)."""
    limit: int = Field(64, ge=1)
    """The first ``limit`` problems of ``data``: the same prompts at every measurement."""
    n: int = Field(4, ge=1)
    """Samples per prompt."""
    seed: int = 0
    """Sampling seed, the same at every measurement: two measurements differ only through the policy."""
    temperature: float | None = Field(None, gt=0)
    """None = ``rollout.temperature``."""
    max_new_tokens: int | None = Field(None, ge=1)
    """None = ``rollout.max_new_tokens``."""
