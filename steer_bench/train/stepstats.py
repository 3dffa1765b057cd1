"""One step's data (:class:`Step`) and its rollout statistics: rewards, accuracy, lengths, truncation, entropy
(quantiles, by advantage sign), grader health and the rollout-engine/trainer log-prob gap; the sample rollouts'
file. Pure functions of one step's tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from steer_bench import files
from steer_bench.algos.stats import masked_mean, masked_quantile
from steer_bench.grading import Verdict, summarize_verdicts
from steer_bench.rollout.batch import PaddedRollout, RolloutBatch


@dataclass
class Step:
    """One step's data on this rank, filled phase by phase."""

    number: int
    prompts: list[int]  # indices of this rank's prompts
    rollout: RolloutBatch
    texts: list[str]
    verdicts: list[Verdict]
    scores: torch.Tensor  # (B,)
    batch: PaddedRollout
    old_logp: torch.Tensor  # (B, T) π_old
    old_entropy: torch.Tensor  # (B, T)
    group_ids: torch.Tensor  # (B,)
    adv: torch.Tensor  # (B, T)
    times: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)


def rollout_metrics(step: Step) -> dict[str, float]:
    """Metrics of one step's rollout batch (B sequences, T response tokens).

    ``old_logp``/``old_entropy`` (B, T) are π_old's (the distribution the rollout sampled from, at the sampling
    temperature τ: softmax(logits/τ), :func:`steer_bench.rollout.batch.score_responses`, or the engine's processed
    distribution with ``train.old_logprobs: rollout``). ``rollout/entropy_*`` are its full-vocabulary entropy
    H = −Σ_v p_v log p_v (nats) over valid response tokens (mean token-weighted, p10/p50/p90 quantiles over tokens);
    ``rollout/surprisal_mean`` the sampled token's surprisal −log p_y, token-mean with the same mask (its expectation
    over the sampling is the entropy). ``_adv_pos``/``_adv_neg`` restrict the entropy mean to tokens of responses
    with A > 0 / A < 0. ``rollout/all_equal_groups`` is the
    fraction of prompts whose responses all got the same score (zero GRPO signal). ``rollout/logprob_gap`` is
    the mean |logπ_engine − logπ_trainer| over response tokens (only when the engine returns log-probs).
    """
    batch, scores, adv, old_logp, old_entropy = step.batch, step.scores, step.adv, step.old_logp, step.old_entropy
    truncated = step.rollout.truncated
    mask = batch.response_mask
    lengths = mask.sum(-1)
    q10, q50, q90 = masked_quantile(old_entropy, mask, [0.1, 0.5, 0.9]).tolist()
    seq_adv = (adv * mask).sum(-1) / lengths.clamp(min=1)
    pos, neg = mask * (seq_adv > 0)[:, None], mask * (seq_adv < 0)[:, None]
    g = summarize_verdicts(step.verdicts)
    out = {
        "rollout/reward_mean": float(scores.mean()),
        "rollout/accuracy": float(g["accuracy"]),
        "rollout/response_len_mean": float(lengths.mean()),
        "rollout/response_len_max": float(lengths.max()),
        "rollout/truncation_rate": sum(truncated) / len(truncated),
        "rollout/all_equal_groups": _all_equal_fraction(scores, step.group_ids),
        "rollout/entropy_mean": float(masked_mean(old_entropy, mask)),
        "rollout/entropy_p10": q10,
        "rollout/entropy_p50": q50,
        "rollout/entropy_p90": q90,
        "rollout/entropy_adv_pos": float(masked_mean(old_entropy, pos)) if pos.any() else float("nan"),
        "rollout/entropy_adv_neg": float(masked_mean(old_entropy, neg)) if neg.any() else float("nan"),
        "rollout/surprisal_mean": float(masked_mean(-old_logp, mask)),
        "rollout/adv_abs_mean": float(masked_mean(adv.abs(), mask)),
        "grading/timeouts": float(g["n_timeout"]),
        "grading/errors": float(g["n_error"]),
        "grading/agreement": float(g["agreement"]),
        "grading/strict_accuracy": float(g["strict_accuracy"]),
    }
    if batch.response_logprobs is not None:
        out["rollout/logprob_gap"] = float(masked_mean((batch.response_logprobs - old_logp).abs(), mask))
    return out


def _all_equal_fraction(scores: torch.Tensor, group_ids: torch.Tensor) -> float:
    groups = group_ids.unique()
    same = [bool((scores[group_ids == g] == scores[group_ids == g][0]).all()) for g in groups]
    return sum(same) / len(same)


def dump_rollouts(path: Path, problems: pd.DataFrame, step: Step) -> None:
    """The step's sample rollouts, one JSONL row per response: its problem, text, verdict, score, length and mean
    π_old token entropy."""
    idx, rollout, mask = step.prompts, step.rollout, step.batch.response_mask
    ent = ((step.old_entropy * mask).sum(-1) / mask.sum(-1).clamp(min=1)).tolist()
    rows = [
        {
            "problem_id": problems["problem_id"].iloc[idx[p]],
            "sample": i,
            "response": text,
            "answer": problems["answer"].iloc[idx[p]],
            "pred": v.pred,
            "correct": v.correct,
            "status": v.status,
            "score": float(s),
            "length": len(r),
            "truncated": t,
            "entropy_mean": e,
        }
        for i, (p, text, v, s, r, t, e) in enumerate(
            zip(
                rollout.prompt_index,
                step.texts,
                step.verdicts,
                step.scores,
                rollout.response_ids,
                rollout.truncated,
                ent,
                strict=True,
            )
        )
    ]
    files.write_jsonl(path, rows)
