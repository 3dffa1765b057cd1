"""Training: the RL loop (``loop``: phases; ``setup``; ``update``), its helpers (batching, checkpoints, ranks,
non-finite guards, held-out validation, step statistics) and the CPU miniature's warm start (``warmstart``).

Layout of a run directory (``results/<exp>/runs/<method>/seed<k>/``)::

    config.yaml  method.yaml  env.json       resolved configs, versions, git commit
    metrics.jsonl                            one line per step (the file MLflow mirrors)
    rollouts/step_000010.jsonl               sample rollouts (prompt, response, reward, entropy)
    analysis/step_000010.parquet             the entropy-dynamics probe's token table (when enabled)
    checkpoints/last/  checkpoints/best/     HF model folders; last also holds the trainer state
    train.done                               final summary, written last (Snakemake's target)
"""

from steer_bench.train.loop import train
from steer_bench.train.setup import check_run, make_optimizer, prompt_order
from steer_bench.train.update import forward, policy_update, rollout_logprobs

__all__ = ["check_run", "forward", "make_optimizer", "policy_update", "prompt_order", "rollout_logprobs", "train"]
