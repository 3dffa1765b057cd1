"""Batch composition and loss scaling (issue 11 items 4-5): the release's length-balanced partition over ranks
(same rows, balanced token counts, deterministic, exchanged across two real gloo ranks), and the release's
per-micro-batch loss scaling against the global token count (differ on unequal micro-batches, agree on equal)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torch.multiprocessing as mp
from gloo import GlooAccelerator, gloo_group, run_ranks

from steer_bench.algos import Method, TokenBatch, Totals
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.interventions.ppo import PPO
from steer_bench.rollout.batch import PaddedRollout
from steer_bench.train.batching import (
    balanced_partitions,
    loss_factor,
    loss_totals,
    order_for_update,
    release_order,
)

CLIP = {"clip_low": 0.2, "clip_high": 0.28, "clip_c": 10.0, "agg": "token-mean"}
PPO_METHOD = Method(name="ppo", advantage=Grpo(norm_by_std=True, eps=1e-6), intervention=PPO(), **CLIP)


def _spread(lengths: list[int], parts: list[list[int]]) -> int:
    sums = [sum(lengths[i] for i in p) for p in parts]
    return max(sums) - min(sums)


def test_hand_example() -> None:
    assert balanced_partitions([10, 1, 9, 2], 2) == [[0, 1], [2, 3]]  # sums 11 and 11
    assert balanced_partitions([5, 5, 5], 1) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="cannot cut 5 rows into 2"):
        balanced_partitions([1] * 5, 2)


@pytest.mark.parametrize("seed", range(20))
def test_partition_keeps_every_row_once_in_equal_ascending_parts_with_bounded_spread(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.choice([2, 4, 8])
    lengths = [rng.randint(50, 4096) for _ in range(k * rng.randint(1, 12))]
    parts = balanced_partitions(lengths, k)
    assert sorted(i for p in parts for i in p) == list(range(len(lengths)))  # the same rows, each once
    assert {len(p) for p in parts} == {len(lengths) // k}
    assert all(p == sorted(p) for p in parts)
    ordered = sorted(lengths)
    bound = max(ordered[i + k - 1] - ordered[i] for i in range(0, len(ordered), k))  # see the docstring
    assert _spread(lengths, parts) <= bound


def test_release_order_balances_what_grouped_leaves_unbalanced() -> None:
    # 2 ranks, 2 prompts each, n = 2: rank 0's prompts are long, rank 1's short (rank-major = grouped order).
    lengths = [100, 101, 102, 103, 10, 11, 12, 13]
    grouped = [list(range(4)), list(range(4, 8))]
    order = release_order(lengths, 2)
    release = [order[:4], order[4:]]
    assert _spread(lengths, grouped) == 406 - 46
    assert _spread(lengths, release) <= 2
    assert all(len({i // 2 for i in part}) >= 3 for part in release)  # each share mixes prompts
    assert release_order(lengths, 1) == list(range(8))  # one process: verl's order is the grouped one


def test_order_is_a_pure_function_of_the_lengths() -> None:
    lengths = [random.Random(3).randint(1, 999) for _ in range(64)]
    torch.manual_seed(0)
    random.seed(0)
    first = release_order(lengths, 8)
    torch.manual_seed(1)
    random.seed(1)
    assert release_order(list(lengths), 8) == first  # no global RNG draw: a resumed step replays it


class _OneRank:
    num_processes, process_index = 1, 0


def test_grouped_and_single_process_keep_the_batch() -> None:
    ids = torch.ones(4, 6, dtype=torch.long)
    batch = PaddedRollout(ids, ids.clone(), ids.clone(), torch.ones(4, 3), None)
    old, adv = (torch.zeros(4, 3), torch.ones(4, 3)), torch.full((4, 3), 2.0)
    for mode in ("grouped", "release"):
        b, o, a = order_for_update(mode, batch, old, adv, _OneRank(), 0)
        assert b is batch
        assert o is old
        assert a is adv
    with pytest.raises(ValueError, match="batch_order"):
        order_for_update("shuffled", batch, old, adv, _OneRank(), 0)


# ---------------------------------------------------------------------------------------------- two gloo ranks
def _rank_batch(rank: int) -> tuple[PaddedRollout, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Rank 0: 4 rows, prompt 3 / response 5 columns, long responses; rank 1: prompt 2 / response 2, short.
    Token ids encode (rank, row, position) so that a row can be recognised after the exchange."""
    p, t, resp_lens = ((3, 5, [5, 5, 4, 5]), (2, 2, [1, 2, 1, 2]))[rank]
    b = len(resp_lens)
    att = torch.zeros(b, p + t, dtype=torch.long)
    att[:, 1:p] = 1  # one left-pad column in every prompt
    for i, n in enumerate(resp_lens):
        att[i, p : p + n] = 1
    ids = (1000 * rank + 100 * torch.arange(b)[:, None] + torch.arange(p + t)[None] + 1) * att
    resp = att[:, p:].float()
    row_id = (10 * rank + torch.arange(b, dtype=torch.float))[:, None] * resp  # per-token tensors carry the row id
    batch = PaddedRollout(ids, att, (att.cumsum(-1) - 1).clamp(min=0), resp, row_id.clone())
    return batch, (row_id.clone(), row_id + 0.5 * resp), row_id * 2


def _rows(batch: PaddedRollout) -> list[tuple[int, ...]]:
    return [tuple(r[m.bool()].tolist()) for r, m in zip(batch.input_ids, batch.attention_mask, strict=True)]


def _worker(rank: int, port: int, queue: mp.Queue) -> None:
    with gloo_group(rank, port):
        batch, old, adv = _rank_batch(rank)
        out = [order_for_update("release", batch, old, adv, GlooAccelerator(), pad_id=0) for _ in range(2)]
        (b, (lp, ent), a), again = out
        ids_match = torch.equal(b.input_ids, again[0].input_ids)
        resp_row = [float(lp[i][b.response_mask[i].bool()][0]) for i in range(len(lp))]  # the row id
        queue.put((rank, _rows(batch), _rows(b), int(b.attention_mask.sum()), resp_row, ids_match,
                   bool(torch.equal(a, 2 * lp)), bool(torch.equal(ent - lp, 0.5 * b.response_mask)),
                   bool(torch.equal(b.response_logprobs, lp))))  # fmt: skip


@pytest.mark.slow
def test_release_order_exchanges_rows_across_two_gloo_ranks() -> None:
    results = run_ranks(_worker)
    before = Counter(r for res in results for r in res[1])
    after = Counter(r for res in results for r in res[2])
    assert after == before  # the same multiset of rows (real tokens compared, padding ignored)
    tokens = [res[3] for res in results]
    grouped = [sum(len(r) for r in res[1]) for res in results]
    assert abs(tokens[0] - tokens[1]) < abs(grouped[0] - grouped[1])  # balanced: 27 vs 10 tokens before
    for _rank, _, rows, _, row_ids, same, adv_ok, ent_ok, lp_ok in results:
        assert same  # deterministic
        assert (adv_ok, ent_ok, lp_ok) == (True, True, True)  # per-token tensors travelled with their rows
        for r, rid in zip(rows, row_ids, strict=True):
            assert r[0] == 1000 * (int(rid) // 10) + 100 * (int(rid) % 10) + 2  # the row id matches its tokens
    assert {len(res[2]) for res in results} == {4}


# ---------------------------------------------------------------------------------------------- loss scale
def _accumulated_grad(mode: str, lengths_per_rank: list[list[int]], micro: int) -> torch.Tensor:
    """d(loss)/d(logp) over W simulated ranks and their micro-batches, as the trainer accumulates it and DDP
    then averages it over ranks."""
    world = len(lengths_per_rank)
    t = max(max(r) for r in lengths_per_rank)
    g = torch.Generator().manual_seed(0)
    grads = []
    all_mask = [(torch.arange(t)[None] < torch.tensor(r)[:, None]).double() for r in lengths_per_rank]
    totals = {"batch_tokens": int(sum(m.sum() for m in all_mask)), "batch_seqs": sum(len(r) for r in lengths_per_rank)}
    for mask in all_mask:
        b = mask.shape[0]
        old = torch.rand(b, t, generator=g, dtype=torch.float64).clamp(1e-3, 1).log()
        logp = (old + 0.1 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_()
        adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t)
        n_micro = b // micro
        for j in range(n_micro):
            rows = slice(j * micro, (j + 1) * micro)
            batch = TokenBatch(logp[rows], old[rows], adv[rows], mask[rows])
            loss, _ = PPO_METHOD.loss(batch, Totals(**loss_totals(mode, totals)))
            (loss * loss_factor(mode, n_micro, world)).backward()
        grads.append(logp.grad)
    return torch.cat(grads) / world  # DDP's mean over ranks (each rank's rows are its own)


# float64 throughout: the two scalings of the same sum agree to rounding (~1e-16 relative per term).
TOL = {"rtol": 1e-12, "atol": 1e-15}


def test_release_and_global_scaling_agree_on_equal_micro_batches() -> None:
    equal = [[3, 5, 4, 4], [2, 6, 8, 0]]  # every micro-batch of 2 rows has 8 valid tokens
    assert torch.allclose(_accumulated_grad("release", equal, 2), _accumulated_grad("global_tokens", equal, 2), **TOL)


def test_release_and_global_scaling_differ_on_unequal_micro_batches() -> None:
    unequal = [[1, 1, 8, 8], [8, 8, 8, 8]]
    release, ours = _accumulated_grad("release", unequal, 2), _accumulated_grad("global_tokens", unequal, 2)
    assert not torch.allclose(release, ours, rtol=1e-3)
    # Ours weighs every token by 1/N_tok = 1/50; the release a token of the 2-token micro-batch (rank 0, rows
    # 0-1) by 1/(W·M·2) = 1/8 and one of a 16-token micro-batch by 1/(W·M·16) = 1/64: the gradients' ratio.
    live = ours != 0  # tokens whose ratio is not clipped (and not padding)
    ratio = torch.where(live, release / torch.where(live, ours, 1.0), torch.nan)
    assert torch.allclose(ratio[:2][live[:2]], torch.tensor(50 / 8, dtype=torch.float64), **TOL)
    assert torch.allclose(ratio[2:][live[2:]], torch.tensor(50 / 64, dtype=torch.float64), **TOL)


def test_loss_scale_options() -> None:
    assert loss_totals("global_tokens", {"batch_tokens": 7}) == {"batch_tokens": 7}
    assert loss_totals("release", {"batch_tokens": 7, "max_response_len": 9}) == {}
    with pytest.raises(ValueError, match="loss_scale"):
        loss_factor("mean", 2, 1)
