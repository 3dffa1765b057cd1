"""The probe set: the policy's entropy on fixed held-out prompts, measured every few steps (``probe:``).

A step's rollout entropy mixes the policy with the prompts that step happens to draw; on the CPU miniature the
draw alone swings it by more than training moves it. The probe removes the draw: the first ``probe.limit``
problems of a held-out set, sampled with the same seed at step 0 (the starting policy) and every
``probe.every_n_steps`` steps, so its curve moves only when the policy does.

Metrics of one measurement (``probe/*``, in ``metrics.jsonl`` and MLflow at that step):

- ``entropy``: token-mean full-vocabulary entropy (nats, not the sampled token's surprisal) of softmax(logits/τ),
  τ = ``probe.temperature`` or else ``rollout.temperature`` (the probe's sampling temperature), along its
  own ``probe.n`` samples per prompt, from a teacher-forced forward of the trainer's model (the same number
  whatever the rollout engine); ``avg_at_k`` the share of samples the reward's grader scores correct (truncated
  ones as the reward does); ``response_len`` the mean response length (tokens).
- Where the task defines a **strategy fork** (the synthetic task, :mod:`steer_bench.data.synthetic`: the first
  token at which the problem's correct worked solution and its :func:`~steer_bench.data.synthetic.
  left_to_right` one part), for the samples that reach that token still on the shared prefix:
  ``entropy_fork`` (mean entropy at the fork token), ``fork_correct`` (share that then take the correct
  solution's token), ``entropy_rest`` (every other token of every sample) and ``fork_mass_share`` (the share
  of all the samples' entropy that sits on fork tokens). Problems without a fork (both solutions equal) and
  other datasets give only the first three metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steer_bench.config.run import TrainConfig
from steer_bench.data import load_prepared, synthetic
from steer_bench.errors import SteerBenchError
from steer_bench.grading import Grader
from steer_bench.grading.release import reward_correct
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.batch import RolloutBatch, score_responses
from steer_bench.rollout.model import fit_prompts


@dataclass(frozen=True)
class ProbeSet:
    prompts: list[list[int]]
    golds: list[str]
    forks: list[tuple[list[int], int] | None]
    """Per prompt: (the correct solution's token ids, index of its fork token), or None without a fork."""


def load_probe_set(cfg: TrainConfig, tokenizer: Any) -> ProbeSet | None:
    """The probe prompts (the first ``probe.limit`` problems of ``probe.data`` or ``validation.data``), or None
    when the probe is off."""
    p = cfg.probe
    if not p.every_n_steps:
        return None
    source = p.data or cfg.validation.data
    if not source:
        raise SteerBenchError("probe.every_n_steps > 0 needs probe.data or validation.data")
    df = load_prepared(source).head(p.limit)
    df, prompts, _ = fit_prompts(tokenizer, df, max_len=cfg.max_prompt_len, source=source, on_long="error")
    return ProbeSet(prompts, df["answer"].tolist(), [_fork(tokenizer, row) for _, row in df.iterrows()])


def _fork(tokenizer: Any, row: Any) -> tuple[list[int], int] | None:
    if row.get("source") != synthetic.SOURCE or not isinstance(row.get("solution"), str):
        return None
    right = tokenizer(row["solution"], add_special_tokens=False)["input_ids"]
    wrong = tokenizer(synthetic.left_to_right(row["problem"]), add_special_tokens=False)["input_ids"]
    k = next((i for i, (a, b) in enumerate(zip(right, wrong, strict=False)) if a != b), None)
    return None if k is None else (right, k)


@torch.no_grad()
def measure(run: Any, probe: ProbeSet, grader: Grader) -> dict[str, float]:
    """One measurement on the run's current policy (every rank computes it: the forward may be sharded)."""
    cfg, tokenizer = run.cfg, run.tokenizer
    model = run.accelerator.unwrap_model(run.model)
    run.engine.sync_weights(model)
    p = cfg.probe
    temperature = p.temperature or cfg.rollout.temperature
    params = SamplingParams(
        max_new_tokens=p.max_new_tokens or cfg.rollout.max_new_tokens, temperature=temperature, n=p.n, seed=p.seed
    )
    out = run.engine.generate(probe.prompts, params)
    texts = tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
    verdicts = grader.grade(texts, [probe.golds[i] for i in out.prompt_index])
    r = cfg.reward
    correct = reward_correct(verdicts, out.truncated, grader=r.grader, rule=r.truncated)
    was_training = model.training
    model.eval()
    entropy = _entropies(model, out, tokenizer.pad_token_id, temperature, cfg.micro_batch_size)
    model.train(was_training)
    return {"probe/avg_at_k": sum(correct) / len(correct)} | summarize(out, entropy, probe.forks)


def _entropies(model: Any, out: RolloutBatch, pad: int, temperature: float, chunk: int) -> list[list[float]]:
    """Per sample, the entropy at each of its response tokens (a teacher-forced forward, ``chunk`` rows each)."""
    device = next(model.parameters()).device
    rows: list[list[float]] = []
    for start in range(0, len(out), chunk):
        part = _rows(out, range(start, min(start + chunk, len(out))))
        batch = part.padded(pad).to(device)
        _, entropy = score_responses(model, batch, temperature=temperature)
        rows += [entropy[i, : len(ids)].float().cpu().tolist() for i, ids in enumerate(part.response_ids)]
    return rows


def _rows(out: RolloutBatch, idx: range) -> RolloutBatch:
    return RolloutBatch(
        prompt_index=[out.prompt_index[i] for i in idx],
        prompt_ids=[out.prompt_ids[i] for i in idx],
        response_ids=[out.response_ids[i] for i in idx],
        finished=[out.finished[i] for i in idx],
    )


def summarize(
    out: RolloutBatch, entropy: list[list[float]], forks: list[tuple[list[int], int] | None]
) -> dict[str, float]:
    """The entropy metrics of the module docstring from per-token entropies of the samples."""
    total = sum(sum(h) for h in entropy)
    n_tokens = sum(len(h) for h in entropy)
    metrics = {"probe/entropy": total / max(n_tokens, 1), "probe/response_len": n_tokens / len(entropy)}
    at_fork, on_right = [], []
    for prompt, ids, h in zip(out.prompt_index, out.response_ids, entropy, strict=True):
        fork = forks[prompt]
        if fork is None:
            continue
        right, k = fork
        if len(ids) > k and ids[:k] == right[:k]:
            at_fork.append(h[k])
            on_right.append(ids[k] == right[k])
    if at_fork:
        mass = sum(at_fork)
        metrics |= {
            "probe/entropy_fork": mass / len(at_fork),
            "probe/entropy_rest": (total - mass) / max(n_tokens - len(at_fork), 1),
            "probe/fork_mass_share": mass / total if total > 0 else 0.0,
            "probe/fork_correct": sum(on_right) / len(on_right),
        }
    return metrics
