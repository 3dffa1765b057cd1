"""Entropy-dynamics analysis (the paper's Ω, its quadrants and the covariance estimate, measured for real).

- :class:`EntropyProbe` (``probe``): the trainer's hook; measures every token's entropy change across one optimizer
  step and writes ``<run>/analysis/step_<step>.parquet`` beside per-step ``analysis/...`` metrics.
- ``steer-bench analyze`` (``analyze``): estimator-accuracy and quadrant tables, figures and ``analysis.md``
  (included by ``steer-bench report``) from one or many runs.
- ``stats``: the statistics both use; ``figures``: the PNGs.
"""

from __future__ import annotations

from steer_bench.analysis.probe import EntropyProbe

__all__ = ["EntropyProbe"]
