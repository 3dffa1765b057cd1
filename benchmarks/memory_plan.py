"""Per-GPU memory plan and step-time estimate of the paper recipe (docs/scaling.md prints this script's output).

Arithmetic only (no GPU needed): the architectures are the models' Hub config.json values, the recipe is
configs/paper/_recipe_7b.yaml (+ table12/table4 overrides), the hardware figures are the vendors' datasheets.
Every number is an estimate from the stated formulas; nothing here was measured on a GPU.

    python benchmarks/memory_plan.py            # markdown tables
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Arch:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    tied: bool
    micro: int  # recipe micro-batch (sequences per GPU)
    util: float  # recipe gpu_memory_utilization per engine (of each card it spans)
    tp: int  # recipe rollout tensor_parallel_size: one engine per group of tp ranks

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        attn = self.hidden * self.hidden * 2 + self.hidden * kv * 2 + self.hidden + 2 * kv  # q, o, k, v + biases
        return attn + 3 * self.hidden * self.inter + 2 * self.hidden  # mlp + two norms

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embed_params * (1 if self.tied else 2) + self.hidden

    @property
    def kv_bytes_per_token(self) -> int:  # bf16 K and V, every layer, on one card of the engine
        # vLLM splits the KV heads over the tp cards, replicating them where there are fewer heads than cards
        return 2 * self.layers * max(1, self.kv_heads // self.tp) * self.head_dim * 2


# Hub config.json of Qwen/Qwen2.5-Math-1.5B, Qwen/Qwen2.5-Math-7B, Qwen/Qwen2.5-14B; micro-batch, utilisation and
# rollout tensor parallelism from configs/paper/table12_1p5b.yaml, _recipe_7b.yaml, table4_14b.yaml.
MODELS = [
    Arch("Qwen2.5-Math-1.5B", 1536, 28, 12, 2, 8960, 151936, True, 8, 0.6, 4),
    Arch("Qwen2.5-Math-7B", 3584, 28, 28, 4, 18944, 152064, False, 8, 0.6, 4),
    Arch("Qwen2.5-14B", 5120, 48, 40, 8, 13824, 152064, False, 8, 0.55, 4),
]
RANKS, SEQ, PROMPTS, N, UPDATES = 8, 4096, 512, 8, 16  # 8 GPUs, 1024 + 3072 tokens, 512 × 8 rollouts, 16 updates
CARDS = {"80 GB (A100/H100)": 80, "96 GB (H20/H100 NVL-class)": 96}
CUDA_OVERHEAD = 3.0  # GB: CUDA context, NCCL buffers, allocator fragmentation (a rule of thumb, not measured)


def plan(m: Arch) -> dict[str, float]:
    """GB per GPU for each component (see docs/scaling.md for the formulas)."""
    p = m.params
    tokens = m.micro * SEQ  # worst case: every sequence of a micro-batch at the full 4096 tokens
    act_ckpt = tokens * m.hidden * 2 * m.layers  # bf16 layer inputs saved by gradient checkpointing
    act_layer = tokens * (4 * m.inter + 8 * m.hidden) * 2  # one layer recomputed: mlp + attention intermediates
    logits = 2 * tokens * m.vocab * 2  # bf16 logits + their gradient (the chunked entropy adds chunk temporaries)
    unsharded = 2 * (2 * m.layer_params) + 2 * m.embed_params * (1 if m.tied else 2)  # bf16: 2 layers + root
    return {
        "params": p / 1e9,
        "master": 4 * p / RANKS / GB,
        "grads": 4 * p / RANKS / GB,
        "adam": 8 * p / RANKS / GB,
        "gathered": unsharded / GB,
        "activations": (act_ckpt + act_layer) / GB,
        "logits": logits / GB,
        "engine_weights": 2 * p / m.tp / GB,  # this card's tensor-parallel slice
        "kv_per_token_kib": m.kv_bytes_per_token / 1024,
    }


def main() -> None:
    print("| model | params | fp32 master /8 | grads /8 | AdamW /8 | gathered bf16 (2 layers + embeddings) | "
          "activations (ckpt, micro × 4096) | logits + grad | engine bf16 weights / TP | "
          "KV / token / card |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in MODELS:
        q = plan(m)
        print(f"| {m.name} | {q['params']:.2f} B | {q['master']:.1f} | {q['grads']:.1f} | {q['adam']:.1f} | "
              f"{q['gathered']:.1f} | {q['activations']:.1f} | {q['logits']:.1f} | {q['engine_weights']:.1f} | "
              f"{q['kv_per_token_kib']:.0f} KiB |")  # fmt: skip
    print()
    print("| model | card | trainer resident (rollout) | trainer peak (update) | engine budget (util × card) | "
          "KV cache | max-length sequences in KV | fits (sleep mode)? | fits without sleep mode? |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for m in MODELS:
        q = plan(m)
        resident = q["master"] + q["grads"] + q["adam"]
        peak = resident + q["gathered"] + q["activations"] + q["logits"]
        for card, gb in CARDS.items():
            engine = m.util * gb
            kv = engine - q["engine_weights"] - 1.5  # 1.5 GB: vLLM activation profile + CUDA graphs (estimate)
            seqs = max(kv, 0) * GB / (m.kv_bytes_per_token * SEQ)
            rollout_ok = resident + engine + CUDA_OVERHEAD <= gb and kv > 0
            update_ok = peak + CUDA_OVERHEAD <= gb  # sleep mode: the engine holds nothing during the update
            awake_ok = peak + engine + CUDA_OVERHEAD <= gb  # without sleep mode both coexist
            verdict = "yes" if rollout_ok and update_ok else ("no: engine" if not rollout_ok else "no: update")
            print(f"| {m.name} | {card} | {resident:.1f} | {peak:.1f} | {engine:.1f} | {max(kv, 0):.1f} | "
                  f"{seqs:.0f} | {verdict} | {'yes' if awake_ok else 'no'} |")  # fmt: skip
    print()
    print(
        f"Step-time estimate (8 GPUs; mean prompt {PROMPT_MEAN} + response {RESPONSE_MEAN} tokens; "
        f"training at {MFU:.0%} MFU; decoding at {DECODE_EFF:.0%} of HBM bandwidth, batch ≤ {DECODE_BATCH} "
        "mean-length sequences, fewer where the KV cache holds fewer):"
    )
    print()
    print("| model | GPU | decode batch | rollout | old log-probs + 16 updates | step | 200 steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for m in MODELS:
        for gpu, (tflops, tbs, mem) in GPUS.items():
            kv = m.util * mem - plan(m)["engine_weights"] - 1.5
            batch = int(min(DECODE_BATCH, max(kv, 0) * GB / (m.kv_bytes_per_token * (PROMPT_MEAN + RESPONSE_MEAN))))
            if batch < 1:
                print(f"| {m.name} | {gpu} | — (no KV cache at util {m.util}) | | | | |")
                continue
            roll, train = step_time(m, tflops, tbs, batch)
            total = roll + train
            print(f"| {m.name} | {gpu} | {batch} | {roll:.0f} s | {train:.0f} s | {total / 60:.1f} min | "
                  f"{200 * total / 3600:.0f} h |")  # fmt: skip


# Datasheet peaks: dense bf16 tensor TFLOPS and HBM TB/s (NVIDIA A100 80GB SXM, H100 SXM, H20 product briefs).
GPUS = {"A100 80GB": (312, 2.04, 80), "H100 SXM 80GB": (989, 3.35, 80), "H20 96GB": (148, 4.0, 96)}
PROMPT_MEAN, RESPONSE_MEAN = 250, 1000  # assumptions (DAPO prompts are short; responses grow during RL)
MFU, DECODE_EFF, DECODE_BATCH = 0.35, 0.5, 128


def step_time(m: Arch, tflops: float, tbs: float, batch: int) -> tuple[float, float]:
    """(rollout s, training s) per RL step. Training FLOPs per token: 2N (old log-probs) + 6N (forward and
    backward) + 2N (gradient checkpointing's recompute) = 10N (Kaplan et al. 2020's 6N rule plus the passes this
    recipe adds). Decoding is memory-bound: each step of a DECODE_BATCH-sequence batch reads, on each of the
    engine's tp cards, its slice of the bf16 weights and of the batch's KV cache once; an engine serves its tp
    ranks' prompts. The tensor-parallel all-reduces (two per layer, batch × hidden bf16 values) are left out:
    optimistic where the cards are not linked by NVLink."""
    tokens = PROMPTS * N * (PROMPT_MEAN + RESPONSE_MEAN)
    train = 10 * m.params * tokens / (RANKS * tflops * 1e12 * MFU)
    kv_read = batch * (PROMPT_MEAN + RESPONSE_MEAN / 2) * m.kv_bytes_per_token
    per_step = (2 * m.params / m.tp + kv_read) / (tbs * 1e12 * DECODE_EFF)
    waves = PROMPTS * N / (RANKS / m.tp) / batch
    rollout = waves * RESPONSE_MEAN * per_step + (3072 - RESPONSE_MEAN) * per_step  # + the longest response's tail
    return rollout, train


if __name__ == "__main__":
    main()
