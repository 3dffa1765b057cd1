"""Evaluate one model on a set of benchmarks: sample, grade, score, write the files, log MLflow.

Per benchmark ``b`` the job's folder gets (each written atomically, samples first, the summary last)::

    <out>/<b>/samples.jsonl   one line per sample: problem_id, sample, gold, response, response_len,
                              truncated, pred (the voted answer), strict_pred, correct, math_verify, strict,
                              status (ok | timeout | error), error
    <out>/<b>/summary.json    benchmark, row, method, seed, model, protocol, engine, versions, k, n_problems,
                              metrics {acc, avg_at_<k>, pass_at_<j>, maj_at_<j>, ...}, samples_sha256 (of
                              samples.jsonl: a summary names the exact samples it scored), complete: true
    <out>/eval.done           per-benchmark acc and the MLflow run ids, once every benchmark is complete

A benchmark counts as done when its summary is complete and was made for the same request (model, protocol,
engine, problems): re-running skips it unless ``redo="all"`` (--force). A finished summary for another request is
an error (``redo="all"`` overwrites it) unless ``redo="stale"`` (the pipeline's folders: a changed config is
re-evaluated);
one for other weights at the same path (a retrained run) is always re-evaluated.
Truncated responses are graded as they are (as verl's validation does) and counted in ``truncation_rate``;
grading timeouts are verdicts (wrong), counted in ``timeouts`` and reported. Anything that fails mid-way
leaves no summary for that benchmark and no ``eval.done``.

MLflow: one run per call that has something to do (experiment ``job.experiment``, tags ``kind=eval``, row,
method, seed, model, protocol, checkpoint), metrics ``eval/<b>/<key>`` at step 0 (skipped benchmarks are
logged from their summaries, so the run is complete on its own) and ``eval/avg/<key>`` at the end; for a
trained run, the same metrics go into its training run too, at the evaluated checkpoint's step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from steer_bench import files
from steer_bench.data import load_prepared
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation import engines
from steer_bench.evaluation.metrics import combined_se
from steer_bench.evaluation.protocol import Protocol
from steer_bench.evaluation.schema import EvalSection
from steer_bench.evaluation.scoring import finite, problem_counts, sample_rows, score
from steer_bench.grading import Grader
from steer_bench.rollout.model import render_prompt, resolve_model
from steer_bench.tracking import PARENT_RUN_TAG, Tracker, env_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalJob:
    """What is evaluated, under which row of the tables, and where its files go."""

    model: str
    """HF folder or Hub id."""
    row: str
    out_dir: Path
    benchmarks: dict[str, Path]
    """Benchmark name -> prepared parquet."""
    experiment: str
    """MLflow experiment."""
    method: str = ""
    seed: int | None = None
    checkpoint: str = ""
    """The selection asked for (best | last); "" for a model not trained here."""
    checkpoint_used: str = ""
    """The checkpoint evaluated: ``best`` falls back to ``last`` when the run kept no best checkpoint."""
    checkpoint_step: int | None = None
    train_run_id: str | None = None

    @property
    def run_name(self) -> str:
        return f"eval-{self.row}" + ("" if self.seed is None else f"-seed{self.seed}")

    def tags(self, protocol: str, engine: str) -> dict[str, Any]:
        """The MLflow run's tags (``protocol``: its name)."""
        return {
            "kind": "eval",
            "row": self.row,
            "method": self.method,
            "seed": "" if self.seed is None else self.seed,
            "model": self.model,
            "protocol": protocol,
            "checkpoint": self.checkpoint,
            "checkpoint_used": self.checkpoint_used,
            "checkpoint_step": "" if self.checkpoint_step is None else self.checkpoint_step,
            "engine": engine,
            "benchmarks": ",".join(self.benchmarks),
        } | ({"train_run_id": self.train_run_id, PARENT_RUN_TAG: self.train_run_id} if self.train_run_id else {})


# ------------------------------------------------------------------------------------------------ prompts
def render_prompts(tokenizer: Any, problems: pd.DataFrame, protocol: Protocol) -> list[list[int]]:
    """Prompt token ids, rendered as training renders them (chat template) unless the protocol says not to."""
    if protocol.chat_template:
        return [render_prompt(tokenizer, m) for m in problems["prompt"]]
    return [tokenizer("\n\n".join(x["content"] for x in m))["input_ids"] for m in problems["prompt"]]


def check_lengths(
    prompts: dict[str, list[list[int]]],
    problems: dict[str, pd.DataFrame],
    context: int,
    max_new_tokens: int,
    model: str,
) -> None:
    """Every prompt + max_new_tokens must fit the model's context; one error naming the offenders otherwise."""
    budget = context - max_new_tokens
    lines = []
    for b, ids in prompts.items():
        long = [(pid, len(p)) for pid, p in zip(problems[b]["problem_id"], ids, strict=True) if len(p) > budget]
        if long:
            worst = ", ".join(f"{pid} ({n} tokens)" for pid, n in sorted(long, key=lambda x: -x[1])[:5])
            lines.append(f"  - {b}: {len(long)} of {len(ids)} prompt(s) longer than {budget} tokens, e.g. {worst}")
    if lines:
        raise SteerBenchError(
            f"prompts do not fit the context of {model!r}: prompt + max_new_tokens ({max_new_tokens}) must be "
            f"<= {context} (max_position_embeddings); lower the protocol's max_new_tokens or drop these:\n"
            + "\n".join(lines)
        )


def data_fingerprint(problems: pd.DataFrame) -> str:
    """Identifies the problems (ids, prompts, golds) a summary was computed on."""
    cols = problems[["problem_id", "prompt", "answer"]].to_dict("records")
    return hashlib.sha256(json.dumps(cols, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ state
def _request(job: EvalJob, protocol: Protocol, settings: EvalSection, problems: pd.DataFrame) -> dict[str, Any]:
    """What a summary must match to be reused (besides the weights: see :func:`finished_summary`)."""
    return {
        "model": job.model,
        "protocol": protocol.model_dump(mode="json"),
        "engine": settings.engine,
        "data_fingerprint": data_fingerprint(problems),
    }


def finished_summary(
    path: Path, request: dict[str, Any], fingerprint: str, *, replace_stale: bool = False
) -> dict[str, Any] | None:
    """The complete summary at ``path`` if it answers ``request`` on the same weights; None if it must be
    (re-)computed; an error if it answers another request, unless ``replace_stale``."""
    if not path.is_file():
        return None
    summary = files.read_json(path)
    if not summary.get("complete"):
        return None
    for key, want in request.items():
        if summary.get(key) != want and replace_stale:
            log.warning("%s was made for another %s; re-evaluating", path, key)
            return None
        if summary.get(key) != want:
            raise SteerBenchError(
                f"{path} holds results for another {key} ({summary.get(key)!r}, now {want!r}); "
                "pass --force to overwrite them, or evaluate into another folder"
            )
    if summary.get("model_fingerprint") != fingerprint:
        log.warning("%s: the model's weights changed since this summary; re-evaluating", path)
        return None
    return summary


def _marker_current(path: Path, summaries: dict[str, dict[str, Any]]) -> bool:
    """eval.done exists and reports exactly these summaries' accuracies."""
    if not path.is_file():
        return False
    return files.read_json(path).get("acc") == {b: s["metrics"]["acc"] for b, s in summaries.items()}


# ------------------------------------------------------------------------------------------------ running
EngineOpener = Callable[..., tuple[Any, dict[str, Any]]]
Redo = Literal["none", "stale", "all"]
"""Which finished benchmarks are evaluated again: none, those made for another request, or all (module docstring)."""


def evaluate(
    job: EvalJob,
    settings: EvalSection,
    protocol: Protocol,
    *,
    redo: Redo = "none",
    track: bool = True,
    tracking_uri: str | None = None,
    open_engine: EngineOpener = engines.open_engine,
) -> dict[str, Any]:
    """Evaluate ``job`` (module docstring); returns eval.done's contents plus ``evaluated`` and ``skipped``.

    ``open_engine(kind, model, tokenizer, settings, seed=, max_model_len=) -> (engine, info)`` builds the
    sampler (:func:`steer_bench.evaluation.engines.open_engine`; tests pass a scripted one).
    """
    job = dataclasses.replace(job, model=resolve_model(job.model))  # a GGUF file: its converted HF folder
    engines.check_model(job.model)
    if not job.benchmarks:
        raise SteerBenchError(f"evaluation of {job.model}: no benchmarks given")
    problems = {b: load_prepared(path) for b, path in job.benchmarks.items()}
    fingerprint = engines.model_fingerprint(job.model)
    requests = {b: _request(job, protocol, settings, df) for b, df in problems.items()}
    stale = redo == "stale"  # a summary made for another request is redone, not an error
    summaries = {}
    for b in problems:
        path = job.out_dir / b / "summary.json"
        found = None if redo == "all" else finished_summary(path, requests[b], fingerprint, replace_stale=stale)
        if found is not None:
            summaries[b] = found
    todo = [b for b in problems if b not in summaries]
    if not todo and _marker_current(job.out_dir / "eval.done", summaries):
        log.info("%s: every benchmark is already evaluated (%s); nothing to do", job.out_dir, ", ".join(problems))
        return files.read_json(job.out_dir / "eval.done") | {"evaluated": [], "skipped": list(problems)}
    log.info("%s: evaluating %s; already done: %s", job.model, todo or "nothing", list(summaries) or "nothing")

    tokenizer, prompts = None, {}
    if todo:  # every prompt is checked against the context before anything starts
        tokenizer = engines.load_tokenizer(job.model)
        prompts = {b: render_prompts(tokenizer, problems[b], protocol) for b in todo}
        check_lengths(prompts, problems, engines.context_len(job.model), protocol.max_new_tokens, job.model)

    tags = job.tags(protocol.name, settings.engine)
    tracker = Tracker(job.experiment, run_name=job.run_name, tags=tags, uri=tracking_uri, enabled=track)
    status = "FAILED"
    try:
        tracker.log_params(
            {"protocol": protocol.model_dump(mode="json"), "settings": settings.model_dump(mode="json")}
        )
        for b, s in summaries.items():
            tracker.log_metrics(_prefixed(b, s["metrics"]), step=0)
        if todo:
            context = _Context(job, settings, protocol, problems, prompts, requests, fingerprint, tokenizer)
            summaries |= _run_benchmarks(context, todo, open_engine, tracker)
        summaries = {b: summaries[b] for b in problems}  # the job's order
        done = _finish(job, protocol.name, summaries, tracker, track=track, tracking_uri=tracking_uri)
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return done | {"evaluated": todo, "skipped": [b for b in problems if b not in todo]}


@dataclass
class _Context:
    job: EvalJob
    settings: EvalSection
    protocol: Protocol
    problems: dict[str, pd.DataFrame]
    prompts: dict[str, list[list[int]]]
    requests: dict[str, dict[str, Any]]
    fingerprint: str
    tokenizer: Any


def _run_benchmarks(c: _Context, todo: list[str], open_engine: EngineOpener, tracker: Any) -> dict[str, dict]:
    """Evaluate ``todo`` with one engine and one grading pool; log each benchmark as soon as it is complete."""
    versions = env_info()
    longest = max(len(p) for b in todo for p in c.prompts[b])
    engine, engine_info = open_engine(
        c.settings.engine,
        c.job.model,
        c.tokenizer,
        c.settings,
        seed=c.protocol.seed,
        max_model_len=longest + c.protocol.max_new_tokens,
    )
    # The grading workers start at the first grade(), after the first generation: starting them while torch
    # generates on the same CPU cores slowed both (2 cores: generation 3.7 s -> 17 s, first grading 0.5 -> 11 s).
    grader = Grader(workers=c.settings.workers, timeout=c.settings.timeout_s, primary=c.protocol.grader)
    try:
        done = {}
        for b in todo:
            done[b] = _run_one(c, b, engine, grader, engine_info | {"versions": versions})
            tracker.log_metrics(_prefixed(b, done[b]["metrics"]), step=0)
        return done
    finally:
        grader.close()
        engine.close()


def _run_one(c: _Context, b: str, engine: Any, grader: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Sample, grade and score one benchmark; write samples.jsonl, then summary.json (complete)."""
    problems, params = c.problems[b], c.protocol.sampling(b)
    t0 = time.perf_counter()
    batch = engine.generate(c.prompts[b], params)
    t1 = time.perf_counter()
    texts = c.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
    verdicts = grader.grade(texts, [problems["answer"].iat[i] for i in batch.prompt_index])
    t2 = time.perf_counter()
    rows = sample_rows(problems, batch, texts, verdicts, grader=grader.primary)
    metrics = score(rows, verdicts, params.n, benchmark=b, problem_ids=problems["problem_id"])
    if metrics["timeouts"]:
        log.warning("%s: %d of %d samples timed out in grading (counted wrong)", b, metrics["timeouts"], len(rows))
    engine_info = {k: v for k, v in info.items() if k != "versions"}
    summary = {
        "benchmark": b,
        "row": c.job.row,
        "method": c.job.method,
        "seed": c.job.seed,
        **c.requests[b],
        "model_fingerprint": c.fingerprint,
        "checkpoint": c.job.checkpoint,
        "checkpoint_used": c.job.checkpoint_used,
        "checkpoint_step": c.job.checkpoint_step,
        "engine_options": engine_info,
        "versions": info["versions"],
        "k": params.n,
        "sampling_seed": params.seed,
        "n_problems": len(problems),
        "n_samples": len(rows),
        "data": str(c.job.benchmarks[b]),
        "timeouts": metrics["timeouts"],
        "grading": {"workers": grader.workers, "timeout_s": grader.timeout, "restarts": grader.restarts},
        "time_s": {"generate": round(t1 - t0, 3), "grade": round(t2 - t1, 3)},
        "metrics": finite(metrics),
        "correct_per_problem": problem_counts(rows),
        "complete": True,
    }
    # An earlier summary goes first: a crash between the two writes must leave no summary beside new samples.
    (c.job.out_dir / b / "summary.json").unlink(missing_ok=True)
    files.remove_temporaries(c.job.out_dir / b)  # left by a killed evaluation
    files.write_jsonl(c.job.out_dir / b / "samples.jsonl", rows)
    summary["samples_sha256"] = hashlib.sha256((c.job.out_dir / b / "samples.jsonl").read_bytes()).hexdigest()
    files.write_json(c.job.out_dir / b / "summary.json", summary)
    log.info("%s: acc %.4f (avg@%d over %d problems) in %.1fs", b, metrics["acc"], params.n, len(problems), t2 - t0)
    return summary


def _prefixed(benchmark: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"eval/{benchmark}/{k}": v for k, v in metrics.items() if v is not None}


AVG_KEYS = ("acc", "math_verify_acc", "strict_acc", "grader_agreement", "truncation_rate", "response_len_mean")


def _finish(
    job: EvalJob,
    protocol: str,
    summaries: dict[str, dict[str, Any]],
    tracker: Any,
    *,
    track: bool,
    tracking_uri: str | None,
) -> dict[str, Any]:
    """The averages, the training run's copy of the metrics, and eval.done (last)."""
    per_bench = {b: s["metrics"] for b, s in summaries.items()}
    avg = {}
    for key in AVG_KEYS:
        values = [m[key] for m in per_bench.values() if m.get(key) is not None]
        if len(values) == len(per_bench):
            avg[key] = sum(values) / len(values)
    if "acc" in avg:  # the standard error of the unweighted mean over benchmarks
        avg["acc_se"] = combined_se([m.get("acc_se") for m in per_bench.values()])
    tracker.log_metrics(
        _prefixed("avg", avg) | {f"headline/{k}": v for k, v in avg.items() if k in ("acc", "acc_se")}, step=0
    )
    error = tracker.error
    if job.train_run_id and track and error is None:
        error = _log_into_training_run(job, per_bench, avg, tracking_uri, tracker.run_id)
    done = {
        "row": job.row,
        "method": job.method,
        "seed": job.seed,
        "model": job.model,
        "checkpoint": job.checkpoint,
        "checkpoint_used": job.checkpoint_used,
        "checkpoint_step": job.checkpoint_step,
        "protocol": protocol,
        "acc": {b: m["acc"] for b, m in per_bench.items()},
        "avg_acc": avg.get("acc"),
        "mlflow_run_id": tracker.run_id,
        "train_run_id": job.train_run_id,
        "tracking_s": round(tracker.seconds, 3),
    }
    if error:  # the files are complete; the condition is recorded and was logged as a warning
        done["tracking_error"] = error
    files.write_json(job.out_dir / "eval.done", done)
    return done


def _log_into_training_run(
    job: EvalJob, per_bench: dict[str, dict], avg: dict, uri: str | None, eval_run_id: str | None
) -> str | None:
    """Copy the evaluation's metrics into its training run; returns the MLflow error, if any."""
    metrics = {k: v for b, m in per_bench.items() for k, v in _prefixed(b, m).items()} | _prefixed("avg", avg)
    train = Tracker(job.experiment, run_id=job.train_run_id, uri=uri)
    train.log_metrics(metrics, step=job.checkpoint_step or 0)
    train.set_tags(
        {
            "eval.checkpoint": job.checkpoint,
            "eval.checkpoint_used": job.checkpoint_used,
            "eval_run_id": eval_run_id or "",
        }
    )
    train.finish("FINISHED")
    if train.error:
        return (
            f"logging into training run {job.train_run_id} failed (is MLFLOW_TRACKING_URI its store?): {train.error}"
        )
    return None


def remirror(out_dir: Path, experiment: str, uri: str, *, train_run_id: str | None = None) -> dict[str, Any]:
    """Log a finished evaluation into the MLflow store at ``uri`` from its files (``eval.done`` and each benchmark's
    ``summary.json``): what :func:`evaluate` logged, for a job whose store failed (``tracking_error``). The run is
    re-attached by id, or created when the store never had it (its params then hold only the protocol and engine:
    the files do not keep the other settings); ``train_run_id`` (the training run as it is now, perhaps
    re-mirrored itself) gets the copy. Rewrites ``eval.done``; the mark stays when the store still fails."""
    done = files.read_json(out_dir / "eval.done")
    summaries = {b: files.read_json(out_dir / b / "summary.json") for b in done["acc"]}
    first = next(iter(summaries.values()))
    job = EvalJob(
        model=done["model"],
        row=done["row"],
        out_dir=out_dir,
        benchmarks={b: Path(s["data"]) for b, s in summaries.items()},
        experiment=experiment,
        method=done["method"],
        seed=done["seed"],
        checkpoint=done["checkpoint"],
        checkpoint_used=done["checkpoint_used"],
        checkpoint_step=done["checkpoint_step"],
        train_run_id=train_run_id or done.get("train_run_id"),
    )
    tracker = Tracker(
        experiment,
        run_name=job.run_name,
        run_id=done.get("mlflow_run_id"),
        tags=job.tags(done["protocol"], first["engine"]),
        uri=uri,
    )
    tracker.log_params({"protocol": first["protocol"], "settings": {"engine": first["engine"]}})
    for b, s in summaries.items():
        tracker.log_metrics(_prefixed(b, s["metrics"]), step=0)
    done = _finish(job, done["protocol"], summaries, tracker, track=True, tracking_uri=uri)
    tracker.finish("FINISHED")
    return done
