"""Padding-free micro-batches (``train.remove_padding``, steer_bench/rollout/packing.py) compute what the padded
layout computes: per-token log-probs and entropies, the loss, the gradient, and whole training runs, to float32
rounding, on rows of very different lengths (empty responses, a row filling the model's context, left-padded
prompts of several lengths), plain and sharded with FSDP2.

Tolerance. The packed and the padded forward evaluate the same per-token formula on the same weights; they differ
only in the order of floating-point sums (matrix products over another number of rows, attention over another
number of masked keys, which contribute exactly 0). Each of the forward's sequential reductions of length ≤ n
(per layer: q/k/v, scores and their weighted sum, o, gate/up, down; then the LM head) adds a relative rounding
error of about √n·u (u = 2⁻²⁴, float32's unit roundoff; a random walk of n roundings), so the two evaluations
differ by ≲ R·√n·u relative, R the number of reductions: :func:`rounding_bound`. Per-token values: that bound times
their scale (the largest |log p|), losses: times the largest |A| too; gradients (the backward has two products per
forward one, and carries the forward's error): 3× it, relative to each parameter's gradient norm. For the tiny
model (2 layers, n = 128): 8.8e-6 relative, 1.3e-4 absolute on |log p| ≤ 15; measured (AMD EPYC): ≤ 2.9e-6 on the
log-probs and entropies (1.5 ulp of 15) and 5.6e-7 relative on the gradients. The negative controls show that a
packing that lets attention cross sequences misses by ≥ 1e-2 (measured ~10).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import chat_prompt_ids, load_tiny
from trainrun import deterministic, make_cfg

from steer_bench.config.method import load_method
from steer_bench.files import read_json, read_jsonl
from steer_bench.rollout import PaddedRollout, RolloutBatch
from steer_bench.rollout.packing import pack_rows, padding_share, score_packed
from steer_bench.train.update import (
    MemoryAudit,
    UpdateRows,
    accumulate_gradients,
    forward,
    forward_rows,
    micro_batches,
)

U = torch.finfo(torch.float32).eps / 2  # float32's unit roundoff, 2^-24


def rounding_bound(config: Any, seq_len: int) -> float:
    """Relative difference of two float32 evaluations of the model's forward that differ in summation order only."""
    reductions = 6 * config.num_hidden_layers + 1
    n = max(config.hidden_size, config.intermediate_size, seq_len)
    return reductions * math.sqrt(n) * U


# ---------------------------------------------------------------------------------------------- layout
def test_pack_rows_by_hand() -> None:
    """3 rows (prompts of 2, 3 and 1 tokens; responses of 2, 0 and 3): the packed row, its positions, the kept
    logits (each response token's predecessor) and their labels, written out."""
    rb = RolloutBatch([0, 1, 2], [[11, 12], [21, 22, 23], [31]], [[13, 14], [], [32, 33, 34]], [True] * 3)
    batch = rb.padded(pad_token_id=0)
    packed = pack_rows(batch, torch.arange(3))
    assert packed.input_ids.tolist() == [[11, 12, 13, 14, 21, 22, 23, 31, 32, 33, 34]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3]]
    assert packed.keep.tolist() == [1, 2, 7, 8, 9]  # 12→13, 13→14 | (no response) | 31→32, 32→33, 33→34
    assert packed.labels.tolist() == [[13, 14, 32, 33, 34]]
    sub = pack_rows(batch, torch.tensor([2, 0]))  # any rows, in the given order
    assert sub.input_ids.tolist() == [[31, 32, 33, 34, 11, 12, 13, 14]]
    assert sub.keep.tolist() == [0, 1, 2, 5, 6]
    empty = pack_rows(batch, torch.tensor([1]))  # no response token: one kept position, masked out
    assert (empty.keep.tolist(), empty.labels.tolist(), empty.response_mask.any().item()) == ([2], [[23]], False)
    no_prompt = RolloutBatch([0, 1], [[], [5]], [[6], [7]], [True] * 2).padded(0)
    with pytest.raises(ValueError, match="a row with a response has an empty prompt"):
        pack_rows(no_prompt, torch.arange(2))


def test_padding_share_counts_the_padded_layouts_columns() -> None:
    rb = RolloutBatch([0, 1, 2], [[11, 12], [21, 22, 23], [31]], [[13, 14], [], [32, 33, 34]], [True] * 3)
    batch = rb.padded(pad_token_id=0)  # P = 3, T = 3: 18 positions, 11 real tokens
    assert padding_share(batch, [torch.arange(3)]) == (11, 18)
    assert padding_share(batch, [torch.tensor([0, 1]), torch.tensor([2])]) == (11, 2 * 5 + 1 * 4)  # columns dropped


# ---------------------------------------------------------------------------------------------- equality
@pytest.fixture(scope="module")
def ragged(model_dir: Path) -> tuple[Any, PaddedRollout]:
    """(tokenizer, batch): 8 rows, prompts of 4 lengths (left-padded), responses of 0 to the context's end."""
    model, tok = load_tiny(model_dir)
    context = model.config.max_position_embeddings
    prompts = chat_prompt_ids(tok, ["3+4", "12*7 times a few more words", "19-5", "8*8 is how much, exactly?"])
    prompts = [prompts[i % 4] for i in range(8)]
    lengths = [0, 1, 37, context - len(prompts[3]), 5, 0, 60, 13]  # row 3 fills the context
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(0, len(tok), (n,), generator=g).tolist() for n in lengths]
    return tok, RolloutBatch(list(range(8)), prompts, responses, [True] * 8).padded(tok.pad_token_id)


def _update_rows(batch: PaddedRollout, logp: torch.Tensor) -> UpdateRows:
    """π_old 0.3 nats off the current policy at random (ratios away from 1: both clip sides active) and A ∈ ±1."""
    g = torch.Generator().manual_seed(1)
    mask = batch.response_mask
    old = (logp + 0.3 * torch.randn(logp.shape, generator=g)) * mask
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0])[:, None] * mask
    return UpdateRows(batch, (old, torch.rand(logp.shape, generator=g) * mask), adv)


def _shard(model: Any) -> Any:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


@pytest.mark.parametrize(("name", "shard"), [("grpo", "ddp"), ("steer", "ddp"), ("steer", "fsdp2")])
def test_packed_equals_padded_to_rounding(
    name: str, shard: str, ragged: tuple[Any, PaddedRollout], model_dir: Path, data: dict[str, Path]
) -> None:
    """The trainer's own functions, packed vs padded, on 2 micro-batches of 4 ragged rows: π_old's pass
    (log-probs and entropies), each micro-batch's loss and metrics, and the accumulated gradient."""
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    _, batch = ragged
    model = load_tiny(model_dir)[0]
    context, bound = model.config.max_position_embeddings, rounding_bound(model.config, batch.input_ids.shape[1])
    model = _shard(model) if shard == "fsdp2" else model
    method, accelerator, rows = load_method(name).resolve(), Accelerator(cpu=True), torch.arange(8)
    update_rows = None
    results = {}
    for packed in (False, True):
        cfg = make_cfg(model_dir, data, remove_padding=packed, shard=shard, rollout__n=8, mini_batch_prompts=1,
                       prompts_per_step=1)  # fmt: skip
        model.eval()
        with torch.no_grad():
            logp, entropy = forward_rows(model, batch, rows, cfg)
        update_rows = update_rows or _update_rows(batch, logp)  # the same π_old and advantages for both
        model.train()
        model.zero_grad(set_to_none=True)
        with MemoryAudit(model, sharded=shard == "fsdp2") as audit:
            calls = accumulate_gradients(model, accelerator, update_rows, rows, cfg, loss=method.loss, audit=audit)
        grads = [p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad for p in model.parameters()]
        results[packed] = (logp, entropy, calls, grads)
    (logp, entropy, calls, grads), (logp_p, entropy_p, calls_p, grads_p) = results[False], results[True]

    mask = batch.response_mask
    assert batch.attention_mask[3].sum() == context  # a row fills the context; rows 0 and 5 have no response
    assert not mask[0].any()
    assert not mask[5].any()
    scale = float(logp.abs().max())
    torch.testing.assert_close(logp_p, logp, rtol=0, atol=bound * scale)
    torch.testing.assert_close(entropy_p, entropy, rtol=0, atol=bound * scale)
    assert torch.equal(logp_p == 0, mask == 0)  # 0 exactly off the responses
    assert torch.equal(entropy_p == 0, mask == 0)
    assert len(calls) == len(calls_p) == 2
    adv_max = float(update_rows.adv.abs().max())
    for c, c_p in zip(calls, calls_p, strict=True):  # loss, clip fractions, STEER's λ statistics
        assert c.keys() == c_p.keys()
        for k in c:
            assert float(c_p[k]) == pytest.approx(float(c[k]), abs=bound * scale * adv_max), k
    assert all(float(c["loss/clipfrac_high"]) > 0 and float(c["loss/clipfrac_low"]) > 0 for c in calls)
    for g, g_p in zip(grads, grads_p, strict=True):
        assert float((g_p - g).norm()) <= 3 * bound * float(g.norm())
    assert all(float(g.norm()) > 0 for g in grads)


def test_attention_across_sequences_would_be_caught(ragged: tuple[Any, PaddedRollout], model_dir: Path) -> None:
    """Negative controls: the same packed row with positions that do not restart (one long sequence), or scored with
    a KV cache (which hides the restarts from transformers' detection), lets tokens attend to the previous
    sequences: the log-probs then miss the padded ones by far more than the tolerance."""
    _, batch = ragged
    model = load_tiny(model_dir)[0].eval()
    rows = torch.arange(8)
    with torch.no_grad():
        want, _ = forward(model, batch, rows, 1.0)
        packed = pack_rows(batch, rows)
        flat = type(packed)(packed.input_ids, torch.arange(packed.input_ids.shape[1])[None], packed.keep,
                            packed.labels, packed.response_mask)  # fmt: skip
        leaked, _ = score_packed(model, flat, temperature=1.0)
        cached = model(input_ids=packed.input_ids, position_ids=packed.position_ids, logits_to_keep=packed.keep)
    assert float((leaked - want).abs().max()) > 1e-2
    logp_cached = torch.log_softmax(cached.logits[0], -1).gather(-1, packed.labels[0, :, None])[:, 0]
    assert float((logp_cached - want[batch.response_mask.bool()]).abs().max()) > 1e-2


def test_micro_batches_of_empty_responses_keep_a_gradient_path(
    ragged: tuple[Any, PaddedRollout], model_dir: Path
) -> None:
    """A micro-batch without a response token (rows 0 and 5) still runs a forward and a backward that reaches every
    parameter with a zero gradient, as the padded layout does (FSDP2 needs the same collectives on every rank)."""
    _, batch = ragged
    model = load_tiny(model_dir)[0]
    logp, entropy = forward(model, batch, torch.tensor([0, 5]), 1.0, packed=True)
    assert logp.shape == entropy.shape == (2, batch.response_mask.shape[1])
    assert not logp.any()
    (logp.sum() + entropy.sum()).backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    assert micro_batches(torch.arange(8), 4)[1].tolist() == [4, 5, 6, 7]


# ---------------------------------------------------------------------------------------------- the trainer
@pytest.mark.slow
def test_training_with_packing_matches_padded(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    """Two steps of the trainer (4 prompts × 4 responses, 2 optimizer steps per rollout, the entropy probe on),
    padded vs packed: the same metrics and parameters to rounding. The method is STEER's loss with W-REINFORCE's
    advantage (−1 on a wrong answer): the tiny model solves a few percent, so group-normalised advantages are
    mostly 0 in two steps, and this one gives every token a gradient. Rounding differences of ~1e-6 relative in
    the gradient move AdamW's steps, hence step 2's values, by about as much; ratios of small numbers (STEER's |Ω|)
    amplify it: measured ≤ 1.6e-5 relative (the engine-vs-trainer gaps, rounding noise themselves, by 1e-8
    absolute); bound 1e-4 relative, 1e-6 absolute."""
    from steer_bench.train import train

    steer = load_method("steer")
    method = steer.model_copy(update={"advantage": load_method("w_reinforce").advantage})
    runs = []
    for packed in (False, True):
        out = tmp_path / f"packed_{packed}"
        cfg = make_cfg(model_dir, data, remove_padding=packed, analysis={"every_n_steps": 1, "max_tokens": 64},
                       save_every=2, log_rollouts_every=0)  # fmt: skip
        train(cfg, method, out)
        rows = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in read_jsonl(out / "metrics.jsonl")]
        runs.append((deterministic(rows), read_json(out / "train.done")))
    (want, done), (got, done_p) = runs
    assert [r["step"] for r in got] == [1, 2]
    assert all(r["train/grad_norm"] > 0 and r["steer/lambda_min"] < 1 for r in want)  # the weights moved
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert g == pytest.approx(w, rel=1e-4, abs=1e-6)
    assert done_p["param_checksums"] == pytest.approx(done["param_checksums"], rel=1e-6)
