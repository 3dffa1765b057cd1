"""Validation during training: sample the held-out set, grade, avg@n and pass@n (selects the best checkpoint)."""

from __future__ import annotations

from typing import Any

import numpy as np

from steer_bench.grading import Grader
from steer_bench.policy import prompt_token_ids
from steer_bench.rollout import SamplingParams
from steer_bench.runconfig import TrainConfig


def load_validation(cfg: TrainConfig, tokenizer: Any) -> tuple[list[list[int]], list[str]] | None:
    if not cfg.validation.every_n_steps:
        return None
    from steer_bench.data import load_prepared

    df = load_prepared(cfg.validation.data)
    df = df.head(cfg.validation.limit) if cfg.validation.limit else df
    return prompt_token_ids(tokenizer, df, max_len=cfg.max_prompt_len, source=cfg.validation.data), df[
        "answer"
    ].tolist()


def validate(
    engine: Any, tokenizer: Any, val: tuple[list[list[int]], list[str]], cfg: TrainConfig, grader: Grader, seed: int
) -> dict[str, float]:
    """Sample ``validation.n`` responses per held-out problem; avg@n (= ``val/avg_at_k``) and pass@n."""
    from steer_bench.metrics import pass_at_k

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
    verdicts = grader.grade(texts, [golds[p] for p in out.prompt_index])
    correct = np.array([v_.correct for v_ in verdicts], dtype=float).reshape(len(prompts), v.n)
    return {
        "val/avg_at_k": float(correct.mean()),
        "val/pass_at_k": float(np.mean([pass_at_k(v.n, int(c), v.n) for c in correct.sum(1)])),
        "val/truncation_rate": float(np.mean(out.truncated)),
    }
