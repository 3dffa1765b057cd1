"""A held-out slice of a training set: the problems a run never trains on, for checkpoint selection.

The slice is a fixed-seed subset (``HOLDOUT_SEED``), independent of the run's seed, so every method and seed of an
experiment holds out the same problems and trains on the same rest (paired comparisons stay paired). Rows keep
their dataset order on both sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from steer_bench.errors import SteerBenchError

HOLDOUT_SEED = 20240925  # fixed: the slice must not move with the run's seed


def split_holdout(df: pd.DataFrame, n: int, *, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, ``n`` held-out rows) of ``df``; refuses to hold out all of it."""
    if not 1 <= n < len(df):
        raise SteerBenchError(
            f"{source}: cannot hold out {n} of {len(df)} training problems for selection "
            "(validation.selection_holdout must leave at least one to train on)"
        )
    held = np.zeros(len(df), dtype=bool)
    held[np.random.default_rng(HOLDOUT_SEED).choice(len(df), size=n, replace=False)] = True
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)
