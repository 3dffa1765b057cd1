"""Validation during training: sample the held-out set, grade, avg@n and pass@n (selects the best checkpoint).

The grader is ``validation.grader`` (default: the training reward's); the agreement between math-verify and the
strict matcher is logged with every validation. Only steps >= ``validation.select_after`` can be the best
(the release saves checkpoints from step 80 on and picks the best of those)."""

from __future__ import annotations

from typing import Any

import numpy as np

from steer_bench.config.run import TrainConfig
from steer_bench.grading import Grader, summarize_verdicts
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.model import fit_prompts


def load_validation(cfg: TrainConfig, tokenizer: Any) -> tuple[list[list[int]], list[str]] | None:
    """(prompt ids, golds) of the held-out set; over-long prompts follow ``on_long_prompt``."""
    if not cfg.validation.every_n_steps:
        return None
    from steer_bench.data import load_prepared

    df = load_prepared(cfg.validation.data)
    df = df.head(cfg.validation.limit) if cfg.validation.limit else df
    src = str(cfg.validation.data)
    df, ids, _ = fit_prompts(tokenizer, df, max_len=cfg.max_prompt_len, source=src, on_long=cfg.on_long_prompt)
    return ids, df["answer"].tolist()


def selectable(cfg: TrainConfig, step: int) -> bool:
    """Whether a validation at ``step`` may become the best checkpoint (``validation.select_after``)."""
    return step >= cfg.validation.select_after


def validate(
    engine: Any, tokenizer: Any, val: tuple[list[list[int]], list[str]], cfg: TrainConfig, grader: Grader, seed: int
) -> dict[str, float]:
    """Sample ``validation.n`` responses per held-out problem; avg@n (= ``val/avg_at_k``) and pass@n."""
    from steer_bench.evaluation.metrics import pass_at_k

    v = cfg.validation
    prompts, golds = val
    params = SamplingParams(
        max_new_tokens=v.max_new_tokens or cfg.rollout.max_new_tokens,
        temperature=v.temperature,
        top_p=v.top_p,
        n=v.n,
        seed=seed,
    )
    out = engine.generate(prompts, params)
    texts = tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
    verdicts = grader.grade(texts, [golds[p] for p in out.prompt_index], primary=v.grader or cfg.reward.grader)
    correct = np.array([v_.correct for v_ in verdicts], dtype=float).reshape(len(prompts), v.n)
    g = summarize_verdicts(verdicts)
    return {
        "val/avg_at_k": float(correct.mean()),
        "val/pass_at_k": float(np.mean([pass_at_k(v.n, int(c), v.n) for c in correct.sum(1)])),
        "val/truncation_rate": float(np.mean(out.truncated)),
        "val/grader_agreement": float(g["agreement"]),  # math-verify vs the strict matcher, over finished items
        "val/math_verify_avg_at_k": float(g["math_verify_accuracy"]),
        "val/strict_avg_at_k": float(g["strict_accuracy"]),
    }
