"""The token-level interventions, one file each (found by :func:`steer_bench.algos.base.discover`)."""
