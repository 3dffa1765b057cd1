"""Arms ``$STEER_BENCH_FAULT`` (``tests/faults/inject.py``) in every training rank (torchrun sets ``RANK``) of a job
whose ``PYTHONPATH`` starts with this folder; any other process is left alone."""

import os
import sys

if os.environ.get("STEER_BENCH_FAULT") and "RANK" in os.environ:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from inject import arm

    arm(os.environ.pop("STEER_BENCH_FAULT"))  # once: not again in the rank's children (the grading forkserver)
