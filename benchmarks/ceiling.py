"""How close the miniature's compute runs to this CPU's matmul ceiling, and the floor its steps put under the
pipeline's wall time (run by hand; numbers in docs/benchmarks.md).

    .venv/bin/python benchmarks/ceiling.py [--results results/miniature] [--compile] [--out ceiling.json]

Needs a finished miniature (``snakemake --cores 2``): its warm start, data and every run's ``metrics.jsonl``.

1. **GEMM ceiling**: float32 ``a @ b`` GFLOPS at the model's linear-layer shapes (tokens × 128 → 128 / 512 and
   512 → 128), 1 and 2 threads: what torch's CPU matmul reaches here, hence what any trainer built on it can.
2. **Warm-start SFT step** (the warm start's batch draw, its length buckets, AdamW), 1 and 2 threads, in
   interleaved rounds: seconds per step and achieved GFLOPS = 6·P·(padded tokens)/s, P the parameters inside
   matmuls (every linear layer, the tied LM head included). ``--compile`` adds ``torch.compile(dynamic=True)``:
   its first step (the compile) and its steady step.
3. **Rollout** (the hf engine, 8 prompts × 8, ≤ 64 new tokens, 1 thread, as a miniature train job): seconds per
   call, the share of it in matmuls (``torch.profiler``), and the decode work spent on rows that have already
   finished (``generate`` keeps them in the batch to the longest one).
4. **The floor**: the warm start's SFT steps × the 2-thread step, plus the sum of ``time/step`` over every run,
   halved for 2 cores: the trainer's steps alone, with no start-up, validation, checkpoints, tree testbed or
   evaluation, against the 8-minute target of the default pipeline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steer_bench.config import load_model
from steer_bench.data.synthetic import make_synthetic
from steer_bench.files import read_json, read_jsonl
from steer_bench.rollout import SamplingParams, make_engine
from steer_bench.warmstart.build import (
    WarmstartConfig,
    batch_backward,
    build_model,
    length_buckets,
    prompt_ids,
    sft_tensors,
)

TARGET_S = 480.0  # issue 14, item 2: the default pipeline in ≤ 8 minutes


def gemm_gflops(threads: int, shapes: list[tuple[int, int, int]], repeats: int = 200) -> dict[str, float]:
    torch.set_num_threads(threads)
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(5):
            a @ b
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        out[f"{m}x{k}x{n}"] = 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9
    return out


def matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def sft_steps(warm: Path, settings: list[tuple[int, bool]], repeats: int, steps: int) -> dict[str, dict]:
    """Median seconds per SFT step on the warm start's own data and batch draw, for each (threads, compiled)
    setting, in interleaved blocks of ``steps`` steps (``repeats`` rounds, so that machine noise hits all alike)."""
    cfg = load_model(WarmstartConfig, warm / "warmstart.yaml")
    pool = make_synthetic("train", cfg.task.n_train, seed=cfg.task.seed, levels=cfg.task.levels)
    tokenizer = AutoTokenizer.from_pretrained(warm)
    input_ids, labels = sft_tensors(tokenizer, pool)
    last = (labels != -100).cumsum(1).argmax(1)
    gen = torch.Generator().manual_seed(cfg.seed)
    runs = {}
    for threads, compiled in settings:
        model = build_model(tokenizer, cfg.model, seed=cfg.seed)  # fresh weights: the speed does not depend on them
        model.train()
        run = torch.compile(model, dynamic=True) if compiled else model
        runs[(threads, compiled)] = (model, run, torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr), [], [])
    for r in range(repeats + 1):  # round 0: warm-up (and the compile), not timed
        for (threads, _), (_model, run, opt, times, padded) in runs.items():
            torch.set_num_threads(threads)
            for _ in range(steps if r else 1):
                idx = torch.randint(len(input_ids), (cfg.sft.batch_size,), generator=gen)
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                batch_backward(run, (input_ids, labels, last), idx, buckets=cfg.sft.length_buckets)
                opt.step()
                times.append(time.perf_counter() - t0)
                padded.append(sum(len(p) * w for p, w in length_buckets(idx, last, cfg.sft.length_buckets)))
    out = {}
    for (threads, compiled), (model, _, _, times, padded) in runs.items():
        step, tokens = statistics.median(times[1:]), statistics.mean(padded[1:])
        out[f"{threads}_threads{'_compiled' if compiled else ''}"] = {
            "step_s": step,
            "first_step_s": times[0],
            "padded_tokens": tokens,
            "gflops": 6 * matmul_params(model) * tokens / step / 1e9,
        }
    return out


def rollout(warm: Path, data: Path, calls: int) -> dict[str, float]:
    torch.set_num_threads(1)
    tokenizer, model = AutoTokenizer.from_pretrained(warm), AutoModelForCausalLM.from_pretrained(warm)
    prompts = prompt_ids(tokenizer, pd.read_parquet(data).iloc[: 8 * (calls + 1)])
    engine = make_engine("hf", model, tokenizer)

    def call(k: int):
        params = SamplingParams(n=8, temperature=1.0, top_p=1.0, max_new_tokens=64, seed=k)
        return engine.generate(prompts[8 * k : 8 * k + 8], params)

    call(calls)  # warm-up
    times, live = [], []
    for k in range(calls):
        t0 = time.perf_counter()
        batch = call(k)
        times.append(time.perf_counter() - t0)
        lengths = [len(r) for r in batch.response_ids]
        live.append(statistics.mean(lengths) / max(lengths))  # share of decode rows still unfinished
    with torch.profiler.profile() as prof:
        call(0)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return {"call_s": statistics.median(times), "matmul_share": gemm / total, "live_row_share": statistics.mean(live)}


def floor(results: Path, sft_step_s: float) -> dict[str, float]:
    sft_steps = read_json(results / "warmstart" / "warmstart.json")["sft_steps"]
    runs = sorted(results.glob("runs/*/*/metrics.jsonl"))
    rl_core_s = sum(row["time/step"] for path in runs for row in read_jsonl(path))
    sft_s = sft_steps * sft_step_s
    return {"sft_steps": sft_steps, "sft_s": sft_s, "runs": len(runs), "rl_core_s": rl_core_s,
            "floor_s": sft_s + rl_core_s / 2, "target_s": TARGET_S}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/miniature"))
    parser.add_argument("--steps", type=int, default=5, help="SFT steps per setting and round")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved rounds of the SFT settings")
    parser.add_argument("--calls", type=int, default=6, help="timed rollout calls")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the SFT step")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    warm, data = args.results / "warmstart", args.results / "data" / "synth_train.parquet"
    shapes = [(1536, 128, 128), (1536, 128, 512), (1536, 512, 128), (64, 128, 512)]
    report: dict[str, object] = {"gemm_gflops": {t: gemm_gflops(t, shapes) for t in (1, 2)}}
    settings = [(1, False), (2, False)] + ([(2, True)] if args.compile else [])
    report["sft"] = sft_steps(warm, settings, args.repeats, args.steps)
    report["rollout_1_thread"] = rollout(warm, data, args.calls)
    report["floor"] = floor(args.results, report["sft"]["2_threads"]["step_s"])  # type: ignore[index]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
