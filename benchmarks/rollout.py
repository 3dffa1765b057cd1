"""Rollout engines, measured: generation throughput (hf vs vLLM), weight-sync cost, and the trainer's
forward/backward speed before and after a colocated vLLM engine starts in the process.

    .venv/bin/python benchmarks/rollout.py --model results/warmstart/default [--engines hf vllm] [--json out.json]

Without ``--model`` it builds the smoke model (configs/warmstart/smoke.yaml) in a temporary folder. Each timing
is the median of ``--repeats`` runs after one warm-up. Run it by hand on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steer_bench.config import load_model
from steer_bench.config.run import VllmConfig
from steer_bench.data.synthetic import make_synthetic
from steer_bench.rollout import SamplingParams, logprob_gap, make_engine, score_responses
from steer_bench.warmstart import WarmstartConfig, prompt_ids, warmstart

REPO = Path(__file__).resolve().parents[1]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (vLLM's first log-prob call pays a one-off cost of seconds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_time(model, batch, repeats: int) -> float:
    """One fwd+bwd+AdamW step of the policy-gradient shape the trainer runs (logp · mask summed)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step() -> None:
        logp, _ = score_responses(model, batch, temperature=1.0)
        opt.zero_grad()
        (-(logp * batch.response_mask).sum() / batch.response_mask.sum()).backward()
        opt.step()

    model.train()
    out = median_time(step, repeats)
    model.eval()
    return out


def bench_engine(kind: str, model, tok, prompts: list[list[int]], args: argparse.Namespace) -> dict[str, float]:
    params = SamplingParams(max_new_tokens=args.max_new_tokens, n=args.n, temperature=1.0, seed=0)
    t0 = time.perf_counter()
    engine = make_engine(kind, model, tok, **({"vllm": VllmConfig(cpu_kvcache_gb=1)} if kind == "vllm" else {}))
    start = time.perf_counter() - t0
    batch = engine.generate(prompts, params)
    tokens = sum(len(r) for r in batch.response_ids)
    row = {"engine_start_s": start, "generate_s": median_time(lambda: engine.generate(prompts, params), args.repeats)}
    row["tokens_per_s"] = tokens / row["generate_s"]
    padded = batch.padded(tok.pad_token_id)
    with torch.no_grad():
        logp, _ = score_responses(model, padded, temperature=1.0)
    row["logprob_gap_mean"] = logprob_gap(padded.response_logprobs, logp, padded.response_mask).item()
    row["logprob_gap_max"] = (padded.response_logprobs - logp).abs().max().item()
    if kind == "vllm":
        for mode in ("tensors", "disk"):
            engine.sync_mode = mode
            row[f"sync_{mode}_s"] = median_time(lambda: engine.sync_weights(model), args.repeats)
        row["probe_check_s"] = median_time(lambda: engine.probe_gap(model)[0], args.repeats)
    # With the vllm engine alive in this process: does it slow the trainer (vLLM binds CPU threads)?
    row["train_step_s"] = train_step_time(model, padded, args.repeats)
    row["tokens"] = tokens
    engine.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="HF model folder (default: build the smoke model)")
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = Path(tmp) / "smoke"
            warmstart(load_model(WarmstartConfig, REPO / "configs/warmstart/smoke.yaml"), path)
        model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        df = make_synthetic("test", args.prompts, seed=1, levels=[1, 2])
        prompts = prompt_ids(tok, df)
        results = {
            "model": str(args.model or "smoke"),
            "params": sum(p.numel() for p in model.parameters()),
            "shape": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens},
            "torch_threads": torch.get_num_threads(),
        }
        for kind in args.engines:  # hf first: its train-step time is the baseline before vLLM starts
            results[kind] = bench_engine(kind, model, tok, prompts, args)
            print(kind, json.dumps({k: round(v, 5) for k, v in results[kind].items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
