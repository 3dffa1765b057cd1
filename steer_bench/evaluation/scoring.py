"""Per-sample rows and the metrics of one benchmark from its samples and their verdicts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from steer_bench.evaluation.metrics import benchmark_metrics, correct_counts
from steer_bench.evaluation.protocol import pass_ks
from steer_bench.grading import strict_for, summarize_verdicts


def sample_rows(
    problems: pd.DataFrame, batch: Any, texts: list[str], verdicts: list[Any], *, grader: str = "math_verify"
) -> list[dict[str, Any]]:
    """One row per sample (batch row i·k + j = sample j of problem i), in batch order. ``strict_pred`` is the
    extraction of ``grader``'s strict matcher (the release's box for a release grader), as ``strict`` is."""
    rows: list[dict[str, Any]] = []
    seen: dict[int, int] = {}  # samples so far per problem
    for i, text, v, ids, finished in zip(
        batch.prompt_index, texts, verdicts, batch.response_ids, batch.finished, strict=True
    ):
        gold = problems["answer"].iat[i]
        seen[i] = seen.get(i, -1) + 1
        rows.append(
            {
                "problem_id": problems["problem_id"].iat[i],
                "sample": seen[i],
                "gold": gold,
                "response": text,
                "response_len": len(ids),
                "truncated": not finished,
                "pred": v.pred,
                "strict_pred": strict_for(grader, text, gold)[1],
                "correct": v.correct,
                "math_verify": v.math_verify,
                "strict": v.strict,
                "status": v.status,
                "error": v.error,
            }
        )
    return rows


def score(
    rows: list[dict[str, Any]], verdicts: list[Any], k: int, *, benchmark: str, problem_ids: Iterable[str]
) -> dict[str, float]:
    """avg@k (= ``acc``), pass@j and maj@j for j in :func:`pass_ks`, each with its standard error over
    problems (``acc_se``, ``pass_at_<j>_se``, ...: :func:`steer_bench.evaluation.metrics.benchmark_metrics`), and the
    grading/length statistics. Every one of the benchmark's ``problem_ids`` must have exactly k rows
    (:class:`~steer_bench.evaluation.metrics.SampleCountError` otherwise)."""
    df = pd.DataFrame(rows)
    cols = df[["problem_id", "correct", "pred"]]
    m = benchmark_metrics(cols, pass_ks(k), k=k, benchmark=benchmark, problem_ids=problem_ids)
    g = summarize_verdicts(verdicts)
    counts = ("n_problems", "n_samples")  # in the summary itself (n_problems, k)
    return {
        "acc": m["accuracy"],
        "acc_se": m["accuracy_se"],
        **{key: v for key, v in m.items() if key not in counts},
        "truncation_rate": float(df["truncated"].mean()),
        "response_len_mean": float(df["response_len"].mean()),
        "grader_agreement": g["agreement"],
        "math_verify_acc": g["math_verify_accuracy"],
        "strict_acc": g["strict_accuracy"],
        "timeouts": g["n_timeout"],
        "grading_errors": g["n_error"],
    }


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: an undefined metric (e.g. agreement with nothing graded) is written as null."""
    return {k: (v if isinstance(v, int) or math.isfinite(v) else None) for k, v in metrics.items()}


def problem_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Correct samples per problem (``{problem_id: c}``, of k each): what avg@k, pass@k and their errors use."""
    return correct_counts(pd.DataFrame(rows)[["problem_id", "correct"]])
