"""Benchmark evaluation under an explicit protocol (``steer-bench eval``; the CLI is :mod:`steer_bench.commands.eval`).

- :mod:`.protocol` — sampling and grading settings as config (``configs/protocols/*.yaml``)
- :mod:`.engines` — the model's context and the vLLM / HF sampler
- :mod:`.runner` — sample, grade, write summaries, log MLflow
- :mod:`.scoring` — per-sample rows and a benchmark's metrics (avg@k, pass@k, maj@k, grader agreement, ...)
- :mod:`.jobs` — what to evaluate: a trained run's checkpoint, an eval-only row, any model
"""
