"""One rank of the tensor-parallel rollout rehearsal; run under torchrun (gloo, CPU, 4 ranks) by
tests/system/test_distributed.py.

The ranks build the production ``VLLMEngine`` with ``tensor_parallel_size=2``: two engines of two ranks each
(``external_launcher``). Every rank syncs the same perturbed weights (the tiny model's, × 1.05), then asks for its
own prompts with its own seed (rank r: ``2 + r % 2`` prompts, seed 1000·r, so the two ranks of an engine ask for
different numbers of rows) and, like validation, for one request that every rank asks alike. It writes
``rank<r>.json``: its prompts, rollout (tokens, prompt index, log-probs), the shared request's samples and the
probe gap after the sync.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from steer_bench.config.run import VllmConfig
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.vllm import VLLMEngine

SCALE = 1.05  # the perturbation every rank syncs (the test applies it to its reference engine too)


def rank_prompts(rank: int) -> tuple[list[list[int]], SamplingParams]:
    prompts = [[5 + rank, 6, 7], [9, 10 + rank, 11, 12], [3, 4 + rank]][: 2 + rank % 2]
    return prompts, SamplingParams(max_new_tokens=8, n=2, seed=1000 * rank)


SHARED = ([[1, 2, 3]], SamplingParams(max_new_tokens=8, n=2, seed=7))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tok, model = AutoTokenizer.from_pretrained(args.model), AutoModelForCausalLM.from_pretrained(args.model)
    knobs = VllmConfig(tensor_parallel_size=2, cpu_kvcache_gb=0.0625, sync_tol=1e-5)
    engine = VLLMEngine(model, tok, knobs, model_path=str(args.model), seed=0, max_model_len=128)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(SCALE)
    engine.sync_weights(model)
    out = engine.generate(*rank_prompts(rank))
    shared = engine.generate(*SHARED)
    record = {"rollout": out.response_ids, "prompt_index": out.prompt_index, "logprobs": out.response_logprobs,
              "shared": shared.response_ids, "sync_gap": engine.last_sync_gap}  # fmt: skip
    (args.out / f"rank{rank}.json").write_text(json.dumps(record))
    engine.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
