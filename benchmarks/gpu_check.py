"""What a CPU cannot settle about the paper path's memory, measured on one GPU with torch alone (no vLLM, no Hub):

(a) the logits and the chunked entropy's backward at the recipe's shape (8 × 3073 response positions × 152064
    vocabulary, hidden 3584: Qwen2.5-Math-7B), with bf16 logits (the trainer's path: FSDP2's bf16 policy, no
    autocast) and with float32 logits (what Accelerate's autocast wrapper handed the loss before);
(b) FSDP2 gradient accumulation over 4 micro-batches of a 1B-parameter stack with the trainer's sharding code
    (``steer_bench.sharding``, bf16 policy), reduce-scattering every micro-batch (the trainer) or with gradient
    sync off on the first 3 (what ``accelerator.no_sync`` did under Accelerate's FSDP2): the unsharded gradient
    bytes left alive after a micro-batch's backward;
(c) an AdamW state round trip through torch.distributed.checkpoint on a CUDA mesh (the trainer's checkpoint calls),
    compared bit for bit with an uninterrupted run.

Each is printed beside the number docs/scaling.md plans (benchmarks/memory_plan.py). On one H100 it needs well under
5 minutes and ~45 GB::

    python benchmarks/gpu_check.py                      # CUDA, the recipe's shapes
    python benchmarks/gpu_check.py --device cpu --small # the same code at toy shapes (tests/system/test_gpu_path.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steer_bench.algos.entropy import logprobs_and_entropy
from steer_bench.sharding import mixed_precision_policy, reshard, shard_blocks

GB = 1e9
PLAN_LOGITS_7B_GB = 15.2  # docs/scaling.md: bf16 logits + their gradient, micro-batch 8, 3073 positions


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def peak(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def logits_memory(device: torch.device, batch: int, positions: int, vocab: int, hidden: int) -> dict[str, float]:
    """(a): peak bytes above the inputs for logits → log-probs and entropy → backward, bf16 vs float32 logits."""
    out: dict[str, float] = {}
    gen = torch.Generator(device=device).manual_seed(0)
    for mode in ("bf16", "fp32"):
        h = (torch.randn(batch, positions, hidden, device=device, generator=gen) * 0.02).bfloat16().requires_grad_()
        w = (torch.randn(vocab, hidden, device=device, generator=gen) * 0.02).bfloat16().requires_grad_()
        labels = torch.randint(vocab, (batch, positions), device=device, generator=gen)
        reset_peak(device)
        base = allocated(device)
        t0 = time.perf_counter()
        logits = h @ w.T
        if mode == "fp32":
            logits = logits.float()  # accelerate's convert_outputs_to_fp32 under autocast
        logp, ent = logprobs_and_entropy(logits, labels, temperature=1.0)
        (logp.mean() + 1e-3 * ent.mean()).backward()
        out[f"{mode}_peak_gb"] = (peak(device) - base) / GB
        out[f"{mode}_seconds"] = time.perf_counter() - t0
        out[f"{mode}_logits_gb"] = logits.numel() * logits.element_size() / GB
        del h, w, labels, logits, logp, ent
    return out


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


class Stack(nn.Module):
    _no_split_modules = ["Block"]  # what steer_bench.sharding.shard_blocks wraps, as in a transformers model

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def unsharded_grad_bytes(model: nn.Module) -> int:
    """Bytes of gradient FSDP2 holds outside the sharded ``.grad`` (its unsharded accumulators; internals, read
    only here to measure them)."""
    from torch.distributed.fsdp import FSDPModule

    total = 0
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        group = module._get_fsdp_state()._fsdp_param_group
        for p in group.fsdp_params if group is not None else []:
            for g in (getattr(p, "unsharded_accumulated_grad", None), getattr(p._unsharded_param, "grad", None)):
                total += 0 if g is None else g.numel() * g.element_size()
    return total


def build(device: torch.device, width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    model = Stack(width, depth)
    mesh = torch.distributed.device_mesh.init_device_mesh(device.type, (1,))
    return shard_blocks(model, mesh, mixed_precision_policy("bf16"))


def accumulation_memory(device: torch.device, width: int, depth: int, tokens: int) -> dict[str, float]:
    """(b): unsharded gradient bytes after each of 4 micro-batches, with sync on every one (ours) or off on the
    first 3 (Accelerate's no_sync under FSDP2)."""
    out: dict[str, float] = {}
    x = torch.randn(4, tokens, width, device=device)
    for mode in ("sync_every_micro_batch", "no_sync_first_3"):
        model = build(device, width, depth)
        params = sum(p.numel() for p in model.parameters())
        out["params"] = float(params)
        held = []
        for j in range(4):
            if mode == "no_sync_first_3":
                model.set_requires_gradient_sync(j == 3)
            model(x[j]).float().pow(2).mean().backward()
            reshard(model)
            held.append(unsharded_grad_bytes(model) / GB)
        out[f"{mode}_unsharded_gb"] = max(held)
        out[f"{mode}_unsharded_gb_per_micro"] = held  # type: ignore[assignment]
        del model
    # what the unsharded gradient costs per GPU at the recipe's 7.62 B parameters, by its measured bytes per parameter
    out["no_sync_projected_7b_gb"] = out["no_sync_first_3_unsharded_gb"] * GB / out["params"] * 7.62e9 / GB
    return out


def optimizer_round_trip(device: torch.device, width: int, depth: int) -> dict[str, float | bool]:
    """(c): AdamW state saved and restored through DCP on this device's mesh, then one more step: bit for bit equal
    to a run that never stopped."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    x = torch.randn(3, 64, width, device=device)

    def step(model: nn.Module, opt: torch.optim.Optimizer, i: int) -> None:
        opt.zero_grad(set_to_none=True)
        model(x[i]).float().pow(2).mean().backward()
        opt.step()

    whole = build(device, width, depth)
    opt = torch.optim.AdamW(whole.parameters(), lr=1e-3)
    cut = build(device, width, depth)
    opt2 = torch.optim.AdamW(cut.parameters(), lr=1e-3)
    for i in range(2):
        step(whole, opt, i)
        step(cut, opt2, i)
    with tempfile.TemporaryDirectory() as tmp:
        reshard(cut)
        msd, osd = get_state_dict(cut, opt2)
        dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=tmp)
        again = build(device, width, depth)
        opt3 = torch.optim.AdamW(again.parameters(), lr=1e-3)
        msd, osd = get_state_dict(again, opt3)
        state = {"model": msd, "optimizer": osd}
        dcp.load(state, checkpoint_id=tmp)
        set_state_dict(again, opt3, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    step(whole, opt, 2)
    step(again, opt3, 2)
    reshard(whole)
    reshard(again)
    equal = all(
        torch.equal(p.to_local(), q.to_local()) for p, q in zip(whole.parameters(), again.parameters(), strict=True)
    )
    on_device = all(v.to_local().device.type == device.type for st in opt3.state.values() for v in st.values()
                    if isinstance(v, torch.Tensor) and v.dim() > 0)  # fmt: skip
    return {"parameters_equal_after_resume": equal, "optimizer_state_on_device": on_device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="toy shapes (a CPU check of the script itself)")
    ap.add_argument("--out", help="also write the results here (JSON)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    small = {"batch": 2, "positions": 33, "vocab": 512, "hidden": 64}
    shapes = small if args.small else {"batch": 8, "positions": 3073, "vocab": 152064, "hidden": 3584}
    stack = {"width": 64, "depth": 4} if args.small else {"width": 4096, "depth": 60}  # 1.007 B parameters
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__}  # fmt: skip
    t0 = time.perf_counter()
    results["logits"] = logits_memory(device, **shapes)
    results["accumulation"] = accumulation_memory(device, stack["width"], stack["depth"], 16 if args.small else 2048)
    results["optimizer"] = optimizer_round_trip(device, stack["width"], max(2, stack["depth"] // 6))  # 3 copies
    results["seconds"] = time.perf_counter() - t0
    a, b = results["logits"], results["accumulation"]
    print(json.dumps(results, indent=1))
    print(f"\n(a) logits + entropy backward peak: bf16 {a['bf16_peak_gb']:.1f} GB (plan {PLAN_LOGITS_7B_GB} GB at the "
          f"recipe's shape), float32 logits {a['fp32_peak_gb']:.1f} GB")  # fmt: skip
    print(f"(b) unsharded gradient after a micro-batch: {b['sync_every_micro_batch_unsharded_gb']:.2f} GB with sync "
          f"(plan 0), {b['no_sync_first_3_unsharded_gb']:.2f} GB without (at 7.62 B parameters: "
          f"{b['no_sync_projected_7b_gb']:.1f} GB per GPU; the review's 15.2 GB in bf16)")  # fmt: skip
    print(f"(c) DCP round trip on {device.type}: {results['optimizer']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
