"""Padding-free micro-batches (``train.remove_padding``): padding share, FLOPs and CPU time, padded vs packed
(docs/packing.md prints this script's output).

    .venv/bin/python benchmarks/packing.py [--model DIR] [--steps 3] [--repeats 5] [--paper-only]

1. **The CPU rehearsal, measured.** The rehearsal's tiny model (configs/warmstart/rehearsal.yaml, built unless
   ``--model``) samples the rehearsal's steps (configs/paper/rehearsal.yaml: 4 DAPO-Math-17k prompts with the
   paper template × 8 responses of ≤ 32 tokens, T = 1) from its 64-prompt subset; the micro-batches are the
   trainer's: π_old's pass over each rank's own rows (micro-batches of 8 = one prompt's group) and the update's
   over the ``batch_order: release`` partition of the step's rows over 2 ranks. For each we count the real tokens
   and the padded layout's positions (``rollout.packing.padding_share``), and time forward + backward (the loss
   ``Σ logp + Σ H``: the trainer's forward, the method's loss is the same in both) of every micro-batch, padded
   and packed, with sdpa and eager attention, float32 and bf16 (the rehearsal's compute dtype), one thread (each
   rehearsal rank runs with OMP_NUM_THREADS=1), the variants interleaved in each repeat; medians over repeats.
2. **Paper scale, arithmetic from assumptions** (no GPU, no release statistics offline; every assumption is
   printed): Qwen2.5-Math-7B (Hub config.json), 512 prompts × 8 responses over 8 ranks, micro-batches of 8, the
   same π_old (grouped) and update (release partition, our ``release_order``) micro-batches; prompt lengths from
   the DAPO-Math-17k prompts' characters (measured) at an assumed 3.5 characters per token plus 30 template
   tokens; response lengths log-normal with an assumed mean and coefficient of variation (half of the log-variance
   shared by a prompt's group), cut at 3,072 tokens. Forward FLOPs per micro-batch (the update costs 4 forwards
   with gradient checkpointing, π_old 1; the ratios are the same): linear layers 2·(layer matmul parameters) per
   position, LM head 2·h·V per kept logit, attention 4·h per (query, key) pair and layer — padded sdpa: B·S²
   pairs (an explicit mask: no causal skipping), packed sdpa/eager: N² (a dense block-diagonal mask),
   flash-attention 2 (padded: unpadded inside transformers; packed: varlen): Σ L(L+1)/2.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
PAPER_STEPS = 5
CHARS_PER_TOKEN, TEMPLATE_TOKENS = 3.5, 30  # assumptions (Qwen2.5's byte-level BPE on English LaTeX; chat template)
RESPONSE_SCENARIOS = [(500, 0.5), (500, 1.0), (1000, 0.5), (1000, 1.0), (1500, 0.5), (1500, 1.0)]  # (mean, CV)
MAX_RESPONSE = 3072


# ---------------------------------------------------------------------------------------------- paper scale
class Qwen7B:
    """Qwen/Qwen2.5-Math-7B config.json: hidden 3584, 28 layers, 4 KV heads of 128, intermediate 18944, V 152064."""

    h, layers, kv, inter, vocab = 3584, 28, 4 * 128, 18944, 152064
    linear = 2 * layers * (2 * h * h + 2 * h * kv + 3 * h * inter)  # forward FLOPs per position, decoder layers
    head = 2 * h * vocab  # per kept logit
    pair = 4 * h * layers  # per (query, key) pair: QKᵀ and the weighted sum of V, every layer


def forward_flops(prompts: np.ndarray, responses: np.ndarray, micro: list[np.ndarray]) -> dict[str, float]:
    """Forward FLOPs of the micro-batches (row indices) by layout and attention: padded/packed × sdpa/flash."""
    m = Qwen7B
    keys = ("padded_sdpa", "padded_flash", "packed_sdpa", "packed_flash", "real", "positions", "logits", "kept")
    out = dict.fromkeys(keys, 0.0)
    for rows in micro:
        p, r = prompts[rows], responses[rows]
        b, s, n = len(rows), int(p.max() + max(r.max(), 1)), int((p + r).sum())
        causal = float(((p + r) * (p + r + 1) / 2).sum())
        padded_lin, packed_lin = b * s * m.linear + b * (max(r.max(), 1) + 1) * m.head, n * m.linear + r.sum() * m.head
        out["padded_sdpa"] += padded_lin + b * s * s * m.pair
        out["padded_flash"] += padded_lin + causal * m.pair
        out["packed_sdpa"] += packed_lin + n * n * m.pair
        out["packed_flash"] += packed_lin + causal * m.pair
        out["real"] += n
        out["positions"] += b * s
        out["logits"] += b * (max(r.max(), 1) + 1)  # the padded forward's kept logits (logits_to_keep = T + 1)
        out["kept"] += r.sum()
    return out


def paper_step(rng: np.random.Generator, prompt_pool: np.ndarray, mean: float, cv: float) -> dict[str, float]:
    """One simulated step of the recipe: (π_old FLOPs by variant, update FLOPs by variant, shares)."""
    from steer_bench.train.batching import release_order

    n_prompts, n, world, micro = 512, 8, 8, 8
    prompts = np.repeat(rng.choice(prompt_pool, n_prompts), n)
    sigma2 = math.log(1 + cv * cv)
    mu = math.log(mean) - sigma2 / 2
    shared = np.repeat(rng.normal(0, math.sqrt(sigma2 / 2), n_prompts), n)
    responses = np.minimum(np.exp(mu + shared + rng.normal(0, math.sqrt(sigma2 / 2), n_prompts * n)), MAX_RESPONSE)
    responses = responses.round().astype(int)
    rows = np.arange(n_prompts * n)
    old_micro = [rows[i : i + micro] for i in range(0, len(rows), micro)]  # each rank's own rows: one group each
    order = np.array(release_order((prompts + responses).tolist(), world))
    update_micro = [order[i : i + micro] for i in range(0, len(order), micro)]  # shares of 512, cut in order
    return {"old": forward_flops(prompts, responses, old_micro),
            "update": forward_flops(prompts, responses, update_micro),
            "truncated": float((responses >= MAX_RESPONSE).mean())}  # fmt: skip


def paper_table(data_dir: Path) -> None:
    raw = pd.read_parquet(data_dir / "DAPO-Math-17k.parquet")
    chars = np.array([len(m[0]["content"]) for m in raw["prompt"]])
    pool = np.minimum((chars / CHARS_PER_TOKEN).round().astype(int) + TEMPLATE_TOKENS, 1024)  # longer ones dropped
    print(f"DAPO-Math-17k prompts: {len(chars)}, characters median {np.median(chars):.0f}, p90 "
          f"{np.percentile(chars, 90):.0f}; assumed {CHARS_PER_TOKEN} characters per token + {TEMPLATE_TOKENS} "
          f"template tokens: prompt tokens median {np.median(pool):.0f}, mean {pool.mean():.0f}")  # fmt: skip
    print("\n| response mean, CV (assumed) | truncated at 3,072 | padding share, π_old | padding share, update | "
          "update+π_old FLOPs saved, sdpa | saved, flash-attn 2 | packed sdpa vs padded flash-attn 2 | "
          "logits, packed / padded (update) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for mean, cv in RESPONSE_SCENARIOS:
        print(scenario_row(mean, cv, [paper_step(rng, pool, mean, cv) for _ in range(PAPER_STEPS)]))


def scenario_row(mean: float, cv: float, steps: list[dict]) -> str:
    def total(key: str) -> float:  # π_old: 1 forward; update: forward + backward + recompute
        return sum(s["old"][key] + 4 * s["update"][key] for s in steps)

    def ratio(phase: str, num: str, den: str) -> float:
        return sum(s[phase][num] for s in steps) / sum(s[phase][den] for s in steps)

    saved = {a: 1 - total(f"packed_{a}") / total(f"padded_{a}") for a in ("sdpa", "flash")}
    trunc = statistics.mean(s["truncated"] for s in steps)
    return (f"| {mean}, {cv} | {100 * trunc:.1f}% | {100 * (1 - ratio('old', 'real', 'positions')):.0f}% | "
            f"{100 * (1 - ratio('update', 'real', 'positions')):.0f}% | {100 * saved['sdpa']:.0f}% | "
            f"{100 * saved['flash']:.0f}% | {total('packed_sdpa') / total('padded_flash'):.2f}× | "
            f"{ratio('update', 'kept', 'logits'):.2f} |")  # fmt: skip


# ---------------------------------------------------------------------------------------------- the rehearsal
def rehearsal_batches(model_dir: Path, tmp: Path, steps: int) -> list[tuple]:
    """(padded batch of a step's 32 rows, π_old micro-batches, update micro-batches) for ``steps`` steps."""
    from steer_bench.data.prepare import prepare_dataset
    from steer_bench.experiment import load_experiment
    from steer_bench.rollout import HFEngine, SamplingParams
    from steer_bench.rollout.model import fit_prompts, load_policy
    from steer_bench.train.batching import release_order
    from steer_bench.train.setup import prompt_order

    exp = load_experiment(REPO / "configs" / "paper" / "rehearsal.yaml")
    cfg = exp.train_config(0)
    data = tmp / "dapo.parquet"
    prepare_dataset("dapo_math_17k", data, template=exp.data.template, limit=exp.data.limits["dapo_math_17k"],
                    check_golds=False)  # fmt: skip
    policy = load_policy(cfg.model.model_copy(update={"path": str(model_dir)}))
    _, prompts, _ = fit_prompts(policy.tokenizer, pd.read_parquet(data), max_len=cfg.max_prompt_len,
                                source="dapo", on_long=cfg.on_long_prompt)  # fmt: skip
    engine = HFEngine(policy.model, policy.tokenizer)
    world, n, micro = 2, cfg.rollout.n, cfg.micro_batch_size
    out = []
    for step in range(1, steps + 1):
        idx = prompt_order(len(prompts), 0, step, cfg.prompts_per_step)
        params = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, n=n, seed=step)
        batch = engine.generate([prompts[i] for i in idx], params).padded(policy.tokenizer.pad_token_id)
        rows = torch.arange(len(batch.input_ids))
        lengths = batch.attention_mask.sum(-1).tolist()
        order = torch.tensor(release_order(lengths, world))
        out.append((batch, list(rows.split(micro)), list(order.split(micro))))
    return out


def time_rehearsal(model_dir: Path, batches: list[tuple], repeats: int) -> None:
    from transformers import AutoModelForCausalLM

    from steer_bench.rollout.packing import padding_share
    from steer_bench.train.update import forward

    for phase, k in (("π_old (grouped)", 1), ("update (release order, 2 ranks)", 2)):
        real = sum(padding_share(b[0], b[k])[0] for b in batches)
        positions = sum(padding_share(b[0], b[k])[1] for b in batches)
        print(f"rehearsal {phase}: {real} real tokens, {positions} padded positions: padding share "
              f"{100 * (1 - real / positions):.1f}%")  # fmt: skip
    variants = [(attn, dtype, packed) for attn in ("sdpa", "eager") for dtype in ("float32", "bfloat16")
                for packed in (False, True)]  # fmt: skip
    models = {(a, d): AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=a, dtype=getattr(torch, d))
              for a in ("sdpa", "eager") for d in ("float32", "bfloat16")}  # fmt: skip
    seconds: dict[tuple, list[float]] = {v: [] for v in variants}
    for r in range(repeats):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:  # rotated: noise hits all alike
            model = models[v[:2]]
            t0 = time.perf_counter()
            for batch, _, update_micro in batches:
                for rows in update_micro:
                    logp, entropy = forward(model, batch, rows, 1.0, packed=v[2])
                    (logp.sum() + entropy.sum()).backward()
            seconds[v].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        print(f"  repeat {r + 1}: " + ", ".join(f"{'/'.join(map(str, v))} {seconds[v][-1]:.1f} s" for v in variants),
              flush=True)  # fmt: skip
    print("\n| attention | dtype | padded (s) | packed (s) | packed / padded |")
    print("|---|---|---:|---:|---:|")
    for attn, dtype, packed in variants:
        if packed:
            pad, pk = (statistics.median(seconds[(attn, dtype, p)]) for p in (False, True))
            print(f"| {attn} | {dtype} | {pad:.3f} | {pk:.3f} | {pk / pad:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paper-only", action="store_true")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("STEER_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")  # fmt: skip
    print(f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}\n")
    paper_table(data_dir)
    if args.paper_only:
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from steer_bench.config import load_model
            from steer_bench.warmstart import WarmstartConfig, warmstart

            model = Path(tmp) / "model"
            warmstart(load_model(WarmstartConfig, REPO / "configs" / "warmstart" / "rehearsal.yaml"), model)
        print(f"\nCPU rehearsal: {args.steps} steps, {args.repeats} interleaved repeats, 1 thread")
        time_rehearsal(model, rehearsal_batches(model, Path(tmp), args.steps), args.repeats)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
