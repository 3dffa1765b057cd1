"""One rank of the multi-rank weight-sync rehearsal; run under torchrun (gloo, CPU) by
tests/system/test_distributed.py.

Each rank: loads the tiny model, optionally shards it with FSDP2 (``fully_shard`` per decoder layer and at the
root, over a 1-D CPU mesh: Accelerate does not engage FSDP on CPU, so this is the direct call), builds its own
vLLM engine (``external_launcher`` inside the 2-rank world), takes one AdamW step so the trainer's weights leave
the engine's behind, syncs with the production ``VLLMEngine.sync_weights`` and writes ``rank<r>.json``: the probe
gap before and after the sync, the sync's memory meter, a checksum of the full weights, what the engine samples
(with one request seed on both ranks, and with per-rank seeds), and the self-check's error for a lossy sync.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from steer_bench.config.run import VllmConfig
from steer_bench.errors import SteerBenchError
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.vllm import VLLMEngine
from steer_bench.rollout.weights import full_weights


def sharded_resume(model: torch.nn.Module, tok: object, opt: torch.optim.Optimizer, ckpt: Path, rank: int) -> dict:
    """Save through the production ``save_checkpoint`` (every rank its own optimizer shard), rebuild the sharded
    model from the checkpoint's HF folder, restore with ``load_trainer_state`` and compare this rank's shards."""
    from accelerate import Accelerator
    from torch.distributed.fsdp import fully_shard

    from steer_bench.train.checkpoint import TrainState, load_trainer_state, save_checkpoint
    from steer_bench.train.update import Learner

    acc = Accelerator(cpu=True)  # MULTI_CPU: the checkpoint gathers the fully_shard shards itself
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    # the HF folder in bf16, as under mixed_precision bf16: the float32 masters must come back from DCP, not from it
    save_checkpoint(
        ckpt, Learner(model, opt, sched, acc), tok, TrainState(step=1), dtype=torch.bfloat16, resumable=True
    )
    hf = safetensors.torch.load_file(str(ckpt / "model.safetensors"))
    again = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    mesh = next(p for p in model.parameters()).device_mesh
    for layer in again.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(again, mesh=mesh)
    opt2 = torch.optim.AdamW(again.parameters(), lr=1e-2)
    state = load_trainer_state(ckpt, acc, again, opt2, torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0))
    pairs = list(zip(model.parameters(), again.parameters(), strict=True))
    saved, restored = opt.state_dict()["state"], opt2.state_dict()["state"]
    local = {i: {k: v.to_local() if hasattr(v, "to_local") else v for k, v in st.items()} for i, st in saved.items()}
    same = saved.keys() == restored.keys() and all(
        torch.equal(local[i][k], v.to_local() if hasattr(v, "to_local") else v)
        for i, st in restored.items()
        for k, v in st.items()
    )
    return {
        "step": state.step,
        "world_size": state.world_size,
        "weights_equal": all(torch.equal(p.to_local(), q.to_local()) for p, q in pairs),
        "optimizer_equal": same,
        "states": len(saved),
        "hf_dtypes": sorted({str(t.dtype) for t in hf.values()}),
        "hf_config_dtype": json.loads((ckpt / "config.json").read_text())["dtype"],
        "exp_avg_shard_sum": float(sum(st["exp_avg"].double().sum() for st in local.values())),
    }


def failing_sync(engine: VLLMEngine, model: torch.nn.Module, rank: int) -> dict:
    """vLLM's reload raises on rank 1 after 3 tensors: every rank must fail at once with an error naming rank 1 (not
    block in the next all-gather of the weights until the collective timeout)."""
    real = engine.llm.collective_rpc

    def failing(method: str, kwargs: dict) -> object:
        for _ in zip(range(3), kwargs["weights_iterator"], strict=False):
            pass
        raise RuntimeError("injected: vLLM's reload failed")

    if rank == 1:
        engine.llm.collective_rpc = failing
    t0 = time.perf_counter()
    try:
        engine.sync_weights(model)
        error = None
    except SteerBenchError as e:
        error = str(e)
    engine.llm.collective_rpc = real
    return {"failing_error": error, "failing_seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shard", choices=["fsdp2", "none"], required=True)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    if args.shard == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)  # on the sharded parameters, before any forward
    sharded = [n for n, t in model.state_dict().items() if type(t).__name__ == "DTensor"]
    knobs = VllmConfig(cpu_kvcache_gb=0.25, sync_tol=1e-5)
    engine = VLLMEngine(model, tok, knobs, model_path=args.model, seed=rank, max_model_len=128)
    start_gap = engine.probe_gap(model)[0]
    ids = torch.tensor([engine.probe_ids])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    stale_gap = engine.probe_gap(model)[0]
    result: dict = {"rank": rank, "world": world, "sharded_entries": len(sharded), "start_gap": start_gap,
                    "stale_gap": stale_gap}  # fmt: skip
    engine.sync_weights(model)
    result |= {"sync_gap": engine.last_sync_gap, "sync_stats": engine.last_sync_stats}
    # the self-check's forward gathered the root (embeddings, LM head): given back before the rollout
    result["sharded_after_sync"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
    result["checksum"] = sum(float(t.double().abs().sum()) for _, t in full_weights(model))
    result["tensor_bytes"] = {n: t.numel() * t.element_size() for n, t in full_weights(model)}
    prompt = tok.apply_chat_template([{"role": "user", "content": "3+4"}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)  # fmt: skip
    for key, seed in (("samples_same_seed", 100), ("samples_rank_seed", 200 + rank)):
        result[key] = engine.generate([prompt], SamplingParams(max_new_tokens=16, n=4, seed=seed)).response_ids
    # A transfer that loses one tensor (the final norm's update) must be caught by the self-check on every rank.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)
    real = engine.llm.collective_rpc

    def lossy(method: str, kwargs: dict) -> object:
        weights = ((n, t) for n, t in kwargs["weights_iterator"] if n != "model.norm.weight")
        return real(method, kwargs={"weights_iterator": weights})

    engine.llm.collective_rpc = lossy
    try:
        engine.sync_weights(model)
        result["lossy_error"] = None
    except SteerBenchError as e:
        result["lossy_error"] = str(e)
    engine.llm.collective_rpc = real
    result["resume"] = (
        sharded_resume(model, tok, opt, Path(args.out) / "ckpt", rank) if args.shard == "fsdp2" else None
    )
    result |= failing_sync(engine, model, rank)
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(result))
    engine.close()
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # vLLM's atexit hooks can hang on a torn-down process group


if __name__ == "__main__":
    main()
