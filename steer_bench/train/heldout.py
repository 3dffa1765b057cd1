"""Validation during training: sample the held-out set, grade, avg@n and pass@n (selects the best checkpoint).

The grader is ``validation.grader`` (default: the training reward's); the agreement between math-verify and the
strict matcher is logged with every validation. Only steps >= ``validation.select_after`` can be the best
(the release saves checkpoints from step 80 on and picks the best of those).

With ``validation.selection_data`` (an experiment's ``data.selection``, disjoint from every reported benchmark) or
``validation.selection_holdout`` (a held-out slice of the training set) the same validation also runs on that set,
logged as ``sel/*``; the best by ``validation.selection_metric`` is kept as ``checkpoints/best_disjoint`` (the
report's "Checkpoint selection" view without self-grading)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from steer_bench.config.run import TrainConfig
from steer_bench.data import load_prepared
from steer_bench.data.holdout import split_holdout
from steer_bench.evaluation.metrics import pass_at_k
from steer_bench.grading import Grader, summarize_verdicts
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.model import fit_prompts

HeldOut = tuple[list[list[int]], list[str]]
"""(prompt ids, golds) of a held-out set."""


def hold_out(cfg: TrainConfig, problems: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(the problems to train on, the held-out selection slice or None): ``validation.selection_holdout``
    problems of the training set are never trained on and select ``checkpoints/best_disjoint``."""
    n = cfg.validation.selection_holdout
    return (problems, None) if n is None else split_holdout(problems, n, source=str(cfg.data.train))


def load_validation(
    cfg: TrainConfig, tokenizer: Any, *, selection: bool = False, held: pd.DataFrame | None = None
) -> HeldOut | None:
    """(prompt ids, golds) of the held-out set (``selection``: of the disjoint selection set — ``held``, the
    training set's held-out slice, or ``validation.selection_data`` — None when not configured); over-long prompts
    follow ``on_long_prompt``."""
    v = cfg.validation
    if selection and held is not None:
        df, src = held, f"{cfg.data.train} (held-out slice)"
    else:
        path, limit = (v.selection_data, v.selection_limit) if selection else (v.data, v.limit)
        if not v.every_n_steps or not path:
            return None
        df = load_prepared(path)
        df = df.head(limit) if limit else df
        src = str(path)
    df, ids, _ = fit_prompts(tokenizer, df, max_len=cfg.max_prompt_len, source=src, on_long=cfg.on_long_prompt)
    return ids, df["answer"].tolist()


def selectable(cfg: TrainConfig, step: int) -> bool:
    """Whether a validation at ``step`` may become the best checkpoint (``validation.select_after``)."""
    return step >= cfg.validation.select_after


def validate(
    engine: Any,
    tokenizer: Any,
    val: HeldOut,
    cfg: TrainConfig,
    grader: Grader,
    seed: int,
    *,
    prefix: str = "val/",
) -> dict[str, float]:
    """Sample ``validation.n`` responses per held-out problem; avg@n (= ``val/avg_at_k``) and pass@n (keys under
    ``prefix``: ``sel/`` for the disjoint selection set)."""
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
        f"{prefix}avg_at_k": float(correct.mean()),
        f"{prefix}pass_at_k": float(np.mean([pass_at_k(v.n, int(c), v.n) for c in correct.sum(1)])),
        f"{prefix}truncation_rate": float(np.mean(out.truncated)),
        f"{prefix}grader_agreement": float(g["agreement"]),  # math-verify vs the strict matcher, over finished items
        f"{prefix}math_verify_avg_at_k": float(g["math_verify_accuracy"]),
        f"{prefix}strict_avg_at_k": float(g["strict_accuracy"]),
    }
