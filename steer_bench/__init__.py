"""steer-bench: reproduce STEER and compare entropy interventions in RLVR."""

__version__ = "0.1.0"
