"""Per-GPU memory, disk and time plan of the paper configs (docs/scaling.md prints this script's output).

Arithmetic, no GPU: every memory term names the code that allocates it; the recipe's numbers (micro-batch,
lengths, engine share, tensor parallelism, methods, seeds) are read from the paper configs themselves; the
architectures are the models' Hub config.json values; the cards are nvidia-smi's totals; the speeds are datasheets.
Nothing here was measured on a GPU: `benchmarks/gpu_check.py` measures the terms a GPU must settle, and
`steer-bench preflight` a real launch.

    python benchmarks/memory_plan.py            # markdown tables
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steer_bench.algos.entropy import CHUNK_ELEMENTS  # noqa: E402
from steer_bench.config import read_yaml  # noqa: E402
from steer_bench.config.run import TrainConfig  # noqa: E402
from steer_bench.experiment import ExperimentConfig, load_experiment  # noqa: E402
from steer_bench.train.batching import release_order  # noqa: E402

GB = 1e9
MIB = 2**20
# nvidia-smi's totals (what vLLM's gpu_memory_utilization multiplies): H100 80GB HBM3 81559 MiB (read on this
# workplace's device machine); A100 80GB the same class; H20 96 GB taken as 96 GiB (nominal, not read).
CARDS = {"80 GB (A100/H100)": 81559 * MIB / GB, "96 GB (H20)": 96 * 1024 * MIB / GB}
HEADROOM = 0.10  # the plan must leave 10% of the card free (fragmentation, what the estimates miss)
CUDA_OVERHEAD = 3.0  # GB: CUDA context, NCCL buffers (a rule of thumb, not measured)
ENGINE_ASLEEP = 1.5  # GB: what a sleeping vLLM engine keeps (its buffers, NCCL groups; eager: no CUDA graphs)
ENGINE_PROFILE = 1.5  # GB of the engine's budget for its activations at max_num_batched_tokens (estimate)


@dataclass(frozen=True)
class Arch:
    """A model's shape (Hub config.json) and the paper config that trains it."""

    name: str
    config: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        attn = self.hidden * self.hidden * 2 + self.hidden * kv * 2 + self.hidden + 2 * kv  # q, o, k, v + biases
        return attn + 3 * self.hidden * self.inter + 2 * self.hidden  # mlp + two norms

    @property
    def root_params(self) -> int:  # what fully_shard(model) owns: embeddings, LM head (untied), final norm
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    def kv_bytes_per_token(self, tp: int) -> int:  # bf16 K and V, every layer, on one card of a TP engine
        return 2 * self.layers * max(1, self.kv_heads // tp) * self.head_dim * 2


MODELS = [
    Arch("Qwen2.5-Math-1.5B", "table12_1p5b", 1536, 28, 12, 2, 8960, 151936, True),
    Arch("Qwen2.5-Math-7B", "table3_7b", 3584, 28, 28, 4, 18944, 152064, False),
    Arch("Qwen2.5-14B", "table4_14b", 5120, 48, 40, 8, 13824, 152064, False),
    Arch("Qwen2.5-Math-1.5B, 1 GPU", "one_gpu_1p5b", 1536, 28, 12, 2, 8960, 151936, True),
]


def recipe(m: Arch) -> tuple[ExperimentConfig, TrainConfig]:
    exp = load_experiment(REPO / "configs" / "paper" / f"{m.config}.yaml")
    return exp, exp.train_config(exp.seeds[0])


def ranks(m: Arch) -> int:
    """The launch's processes (its accelerate config's num_processes): the GPUs a run spans."""
    exp, _ = recipe(m)
    return int(read_yaml(REPO / exp.accelerate_config)["num_processes"]) if exp.accelerate_config else 1


def memory(m: Arch) -> dict[str, tuple[float, str]]:
    """GB per GPU of each term, with the code that allocates it."""
    _, cfg = recipe(m)
    w, p, h = ranks(m), m.params, m.hidden
    micro, vllm = cfg.micro_batch_size, cfg.rollout.vllm
    t_resp, seq = cfg.rollout.max_new_tokens, cfg.max_prompt_len + cfg.rollout.max_new_tokens
    tokens = micro * seq  # worst case: every sequence of a micro-batch at the full prompt + response length
    return {
        "master": (4 * p / w / GB, "sharding.shard_blocks: fp32 parameters, sharded over the ranks"),
        "grads": (4 * p / w / GB, "FSDP2 reduce-scatter into the sharded .grad (reduce_dtype fp32)"),
        "adam": (8 * p / w / GB, "setup.make_optimizer: AdamW's two fp32 moments on the shards"),
        "gathered": (
            (2 * 2 * 2 * m.layer_params + 2 * m.root_params) / GB,
            "FSDP2 all-gather, bf16: the running block + the prefetched one; the root (embeddings, LM head) "
            "for the whole forward and backward",
        ),
        "ckpt": (tokens * h * 2 * m.layers / GB, "gradient checkpointing: every block's bf16 input"),
        "head_grad": (
            2 * m.vocab * h / GB,
            "the LM head's bf16 gradient, unsharded from the first backward op to the root's reduce-scatter",
        ),
        "logits": (
            (2 * 2 * micro * (t_resp + 1) * m.vocab + 3 * 4 * CHUNK_ELEMENTS) / GB,
            "batch.score_responses (logits_to_keep = T + 1), bf16, + entropy._LogpEntropy's bf16 gradient "
            "and its fp32 chunk temporaries",
        ),
        "layer": (
            (tokens * (4 * m.inter + 8 * h) * 2 + (2 + 4) * m.layer_params) / GB,
            "one block recomputed (MLP and attention intermediates) + its unsharded bf16 gradient and fp32 copy "
            "for the reduce-scatter",
        ),
        "packed_mask": (
            (tokens**2 * 1 + tokens**2 * 2) / GB
            if cfg.remove_padding and cfg.model.attn_implementation != "flash_attention_2"
            else 0.0,
            "rollout.packing (remove_padding) under sdpa: the packed row's (N, N) bool mask, and the bf16 copy the "
            "kernel makes of it while a layer runs (none with flash_attention_2's varlen kernel)",
        ),
        "engine": (
            vllm.gpu_memory_utilization * CARD_80 if vllm.gpu_memory_utilization else 0.0,
            f"vllm.LLM(gpu_memory_utilization={vllm.gpu_memory_utilization}): its weight slice (bf16 / TP "
            f"{vllm.tensor_parallel_size}), KV cache, activations",
        ),
        "engine_weights": (2 * p / vllm.tensor_parallel_size / GB, "the engine's bf16 weight slice"),
    }


CARD_80 = CARDS["80 GB (A100/H100)"]


def phases(m: Arch, card: float) -> dict[str, float]:
    """GB per GPU in the update and rollout phases (sleep mode: the engine sleeps through the update)."""
    q = {k: v for k, (v, _) in memory(m).items()}
    _, cfg = recipe(m)
    engine = cfg.rollout.vllm.gpu_memory_utilization * card
    resident = q["master"] + q["adam"]  # update.policy_update frees the gradients after the last step
    common = resident + q["grads"] + q["gathered"] + q["ckpt"] + q["head_grad"] + q["packed_mask"]
    update = common + max(q["logits"], q["layer"]) + ENGINE_ASLEEP + CUDA_OVERHEAD
    rollout = resident + engine + CUDA_OVERHEAD
    kv = engine - q["engine_weights"] - ENGINE_PROFILE
    seq_bytes = m.kv_bytes_per_token(cfg.rollout.vllm.tensor_parallel_size) * (
        cfg.max_prompt_len + cfg.rollout.max_new_tokens
    )
    return {"update": update, "rollout": rollout, "engine": engine, "kv": kv, "kv_seqs": max(kv, 0) * GB / seq_bytes}


# ---------------------------------------------------------------------------------------------- disk
def disk(m: Arch) -> dict[str, float]:
    """GB of a run's checkpoints (train/checkpoint.py): the HF folder in bf16 (2N), DCP's fp32 masters and AdamW's
    moments (12N) for ``last``; ``best`` is the HF folder only; a save of ``last`` writes a complete second copy
    before the swap (files.atomic_dir)."""
    p = m.params
    last, best = 14 * p / GB, 2 * p / GB
    return {"last": last, "best": best, "steady": last + best, "peak": 2 * last + best}


# ---------------------------------------------------------------------------------------------- time
# Datasheet peaks: dense bf16 tensor TFLOPS and HBM TB/s (NVIDIA A100 80GB SXM, H100 SXM, H20 product briefs).
GPUS = {"A100 80GB": (312, 2.04), "H100 SXM 80GB": (989, 3.35), "H20 96GB": (148, 4.0)}
PROMPT_MEAN, RESPONSE_MEDIAN, RESPONSE_SIGMA = 250, 800, 0.6  # assumptions, see response_lengths
MFU, DECODE_EFF, DECODE_BATCH = 0.35, 0.5, 128


def response_lengths(count: int, max_len: int, seed: int = 0) -> np.ndarray:
    """An assumed response-length distribution (not the release's, which is not public): log-normal with median
    RESPONSE_MEDIAN and σ RESPONSE_SIGMA, cut at ``max_len`` (mean ≈ 950 tokens: Qwen2.5-Math-7B responses start
    near 600 and grow under RL)."""
    rng = np.random.default_rng(seed)
    return np.minimum(rng.lognormal(np.log(RESPONSE_MEDIAN), RESPONSE_SIGMA, count).round(), max_len).astype(int)


def padding_factor(cfg: TrainConfig, world: int) -> float:
    """Tokens the update computes / real tokens: 1 with ``remove_padding`` (packed rows), else each micro-batch is
    padded to its longest row (model.select_rows), rows in the config's batch order (release: balanced parts in
    row order)."""
    if cfg.remove_padding:
        return 1.0
    rows = cfg.prompts_per_step * cfg.rollout.n
    lengths = response_lengths(rows, cfg.rollout.max_new_tokens) + PROMPT_MEAN
    order = release_order(lengths.tolist(), world) if cfg.batch_order == "release" else list(range(rows))
    per_rank = np.array(lengths)[order].reshape(world, -1)
    padded = sum(
        part[i : i + cfg.micro_batch_size].max() * len(part[i : i + cfg.micro_batch_size])
        for part in per_rank
        for i in range(0, len(part), cfg.micro_batch_size)
    )
    return float(padded / lengths.sum())


def step_time(m: Arch, tflops: float, tbs: float) -> dict[str, float]:
    """Seconds per RL step: rollout (memory-bound decoding), the update (10N FLOPs per computed token: 2N π_old pass,
    6N forward and backward (Kaplan et al. 2020), 2N checkpointing's recompute, on padded micro-batches), and the
    validation's share (AIME24 at n = 32 every ``validation.every_n_steps``)."""
    _, cfg = recipe(m)
    tp = cfg.rollout.vllm.tensor_parallel_size
    lengths = response_lengths(cfg.prompts_per_step * cfg.rollout.n, cfg.rollout.max_new_tokens)
    mean_resp = float(lengths.mean())
    tokens = len(lengths) * (PROMPT_MEAN + mean_resp)
    world = ranks(m)
    update = 10 * m.params * tokens * padding_factor(cfg, world) / (world * tflops * 1e12 * MFU)
    kv_read = DECODE_BATCH * (PROMPT_MEAN + mean_resp / 2) * m.kv_bytes_per_token(tp)
    per_decode = (2 * m.params / tp + kv_read) / (tbs * 1e12 * DECODE_EFF)
    engines = world // tp

    def decode(sequences: int) -> float:  # waves of DECODE_BATCH sequences per engine, + the longest one's tail
        waves = sequences / engines / DECODE_BATCH
        return waves * mean_resp * per_decode + (cfg.rollout.max_new_tokens - mean_resp) * per_decode

    val = 30 * cfg.validation.n / cfg.validation.every_n_steps if cfg.validation.every_n_steps else 0
    return {"rollout": decode(len(lengths)), "update": update, "validation": decode(int(val)) if val else 0.0}


def main() -> None:
    print("Memory per GPU (GB = 1e9 B), worst case: every sequence of a micro-batch at the full length.\n")
    header = " | ".join(m.name for m in MODELS)
    print(f"| term | {header} | allocated by |")
    print("|---|" + "---:|" * len(MODELS) + "---|")
    terms = memory(MODELS[0])
    for key, (_, where) in terms.items():
        values = " | ".join(f"{memory(m)[key][0]:.1f}" for m in MODELS)
        print(f"| {key} | {values} | {where} |")
    print()
    print(f"Per phase, against the card less {HEADROOM:.0%} headroom (update = master + grads + AdamW + gathered + "
          f"ckpt + head_grad + max(logits, layer) + {ENGINE_ASLEEP} asleep engine + {CUDA_OVERHEAD} CUDA; rollout = "
          f"master + AdamW + engine + {CUDA_OVERHEAD} CUDA):\n")  # fmt: skip
    print("| model | card | micro | util | update peak | rollout | limit (90%) | KV cache | max-length seqs / engine "
          "| fits? |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for m in MODELS:
        _, cfg = recipe(m)
        for card, gb in CARDS.items():
            ph = phases(m, gb)
            limit = (1 - HEADROOM) * gb
            ok = ph["update"] <= limit and ph["rollout"] <= limit and ph["kv"] > 0
            print(f"| {m.name} | {card} | {cfg.micro_batch_size} | {cfg.rollout.vllm.gpu_memory_utilization} | "
                  f"{ph['update']:.1f} | {ph['rollout']:.1f} | {limit:.1f} | {ph['kv']:.1f} | {ph['kv_seqs']:.0f} | "
                  f"{'yes' if ok else 'no'} |")  # fmt: skip
    print()
    print("Disk per run (GB): `last` = bf16 HF folder + DCP (fp32 masters, AdamW), `best` = bf16 HF folder; the "
          "peak is while `last` is rewritten (a whole second copy before the swap).\n")  # fmt: skip
    print("| model | last | best | steady | peak | runs (config) | table, steady | table, after deleting `last` |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m in MODELS:
        exp, _ = recipe(m)
        d, runs = disk(m), len(exp.methods) * len(exp.seeds)
        table, kept = runs * d["steady"] / 1e3, runs * d["best"] / 1e3
        print(f"| {m.name} | {d['last']:.1f} | {d['best']:.1f} | {d['steady']:.1f} | {d['peak']:.1f} | "
              f"{runs} ({m.config}) | {table:.2f} TB | {kept:.2f} TB |")  # fmt: skip
    print()
    print(f"Time per step and node-hours (each config's GPUs; mean prompt {PROMPT_MEAN}; responses log-normal, median "
          f"{RESPONSE_MEDIAN}, σ {RESPONSE_SIGMA}, cut at the recipe's maximum (an assumption); update at "
          f"{MFU:.0%} MFU on padded micro-batches; decoding at {DECODE_EFF:.0%} of HBM bandwidth, "
          f"{DECODE_BATCH} sequences per engine):\n")  # fmt: skip
    print("| model | GPU | padding × | rollout | update | validation / step | step | 200 steps | runs | "
          "table, node-hours |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in MODELS:
        exp, cfg = recipe(m)
        pad = padding_factor(cfg, ranks(m))
        runs = len(exp.methods) * len(exp.seeds)
        for gpu, (tflops, tbs) in GPUS.items():
            t = step_time(m, tflops, tbs)
            step = t["rollout"] + t["update"] + t["validation"]
            print(f"| {m.name} | {gpu} | {pad:.2f} | {t['rollout']:.0f} s | {t['update']:.0f} s | "
                  f"{t['validation']:.0f} s | {step / 60:.1f} min | {cfg.steps * step / 3600:.0f} h | {runs} | "
                  f"{runs * cfg.steps * step / 3600:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
