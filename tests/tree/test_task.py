"""The tree task and the tabular policy: exact dynamic programmes against brute-force enumeration of every leaf."""

from __future__ import annotations

import itertools

import pytest
import torch

from steer_bench.config import validate
from steer_bench.errors import SteerBenchError
from steer_bench.tree.policy import TabularPolicy
from steer_bench.tree.task import TreeTask, TreeTaskConfig, make_task, pass_at_k

CASES = [
    {"state": "prev", "share": 1, "verifier": {"kind": "mod", "modulus": 3}},
    {"state": "prefix", "share": 2, "verifier": {"kind": "targets", "targets": 2, "radius": 1}},
    {"state": "prev", "share": 3, "verifier": {"kind": "targets", "targets": 3, "radius": 0}},
]


def small_task(case: dict, seed: int = 1) -> TreeTask:
    cfg = validate(TreeTaskConfig, {"problems": 5, "depth": 4, "branching": 3, **case}, source="test")
    return make_task(cfg, seed)


def all_leaves(task: TreeTask) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(task.K), repeat=task.D)))


def naive_correct(task: TreeTask, problem: int, leaf: tuple[int, ...], seed: int) -> bool:
    """The verifier's definition, re-derived from the seed the way make_task draws it."""
    gen = torch.Generator().manual_seed(seed)
    v = task.cfg.verifier
    if v.kind == "mod":
        offsets = torch.randint(0, v.modulus, (task.P, 1), generator=gen)
        return (sum(leaf) + int(offsets[problem])) % v.modulus == 0
    targets = torch.randint(0, task.K, (task.P, v.targets, task.D), generator=gen)
    return any(sum(a != int(b) for a, b in zip(leaf, tgt, strict=True)) <= v.radius for tgt in targets[problem])


@pytest.mark.parametrize("case", CASES)
def test_verifier_automaton_matches_its_definition(case: dict) -> None:
    task = small_task(case)
    leaves = all_leaves(task)
    for p in range(task.P):
        scores = task.score(torch.full((len(leaves),), p), leaves)
        expected = [naive_correct(task, p, tuple(leaf.tolist()), seed=1) for leaf in leaves]
        assert scores.tolist() == [float(e) for e in expected]


@pytest.mark.parametrize("case", CASES)
def test_state_ids_give_one_row_per_state(case: dict) -> None:
    """Every (table, depth, previous token | prefix) maps to its own row, and the rows cover the table."""
    task = small_task(case)
    leaves = all_leaves(task)
    seen: dict[tuple, int] = {}
    for p in range(task.P):
        ids = task.state_ids(torch.full((len(leaves),), p), leaves)
        for leaf, row in zip(leaves.tolist(), ids.tolist(), strict=True):
            for t in range(task.D):
                context = leaf[t - 1 : t] if task.cfg.state == "prev" else leaf[:t]
                key = (p // task.cfg.share, t, tuple(context))
                assert seen.setdefault(key, row[t]) == row[t]
    assert sorted(seen.values()) == list(range(task.num_states))


@pytest.mark.parametrize("case", CASES)
def test_exact_accuracy_and_entropy_equal_leaf_enumeration(case: dict) -> None:
    task = small_task(case)
    policy = TabularPolicy(task, init_std=1.5, seed=2)
    probs = policy.probs()
    entropy = -(probs * probs.log()).sum(-1)
    occ, acc = task.occupancy(probs)
    expected_entropy = task.expected_entropy(occ, entropy)
    leaves = all_leaves(task)
    for p in range(task.P):
        problems = torch.full((len(leaves),), p)
        rows = task.state_ids(problems, leaves)
        leaf_prob = probs[rows, leaves].prod(-1)
        assert leaf_prob.sum().item() == pytest.approx(1.0)
        assert acc[p].item() == pytest.approx((leaf_prob * task.score(problems, leaves)).sum().item(), abs=1e-12)
        token_mean_entropy = entropy[rows].mean(-1)
        assert expected_entropy[p].item() == pytest.approx((leaf_prob * token_mean_entropy).sum().item(), abs=1e-12)
        for t, o in enumerate(occ):
            visits = torch.zeros(task.num_states, dtype=torch.float64).index_add_(0, rows[:, t], leaf_prob)
            level = task.level_probs(visits)[t][p]
            assert torch.allclose(o[p], level, atol=1e-12)


def test_tabular_logits_are_the_table_rows_of_the_sampled_states() -> None:
    task = small_task(CASES[0])
    policy = TabularPolicy(task, init_std=1.0, seed=0)
    problems = torch.tensor([0, 4, 2])
    responses = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 1], [1, 0, 0, 2]])
    logits = policy(problems, responses)
    assert logits.shape == (3, 4, task.K)
    rows = task.state_ids(problems, responses)
    for b, t in itertools.product(range(3), range(4)):
        assert torch.equal(logits[b, t], policy.table[rows[b, t]])


def test_sampling_matches_the_exact_law() -> None:
    """Sampled accuracy of 20k responses lies within 4 standard errors of the exact expected accuracy."""
    task = small_task(CASES[1])
    policy = TabularPolicy(task, init_std=1.0, seed=3)
    problems = torch.arange(task.P).repeat_interleave(4000)
    responses = policy.sample(problems, torch.Generator().manual_seed(0))
    sampled = task.score(problems, responses).view(task.P, -1).mean(-1)
    _, acc = task.occupancy(policy.probs())
    stderr = (acc * (1 - acc) / 4000).sqrt()
    assert ((sampled - acc).abs() < 4 * stderr + 1e-9).all()


def test_same_seed_same_task_and_init() -> None:
    a, b = small_task(CASES[1], seed=7), small_task(CASES[1], seed=7)
    assert torch.equal(a.delta, b.delta)
    assert not torch.equal(a.delta, small_task(CASES[1], seed=8).delta)
    assert torch.equal(TabularPolicy(a, init_std=1.0, seed=7).table, TabularPolicy(b, init_std=1.0, seed=7).table)


def test_pass_at_k_is_one_minus_miss_probability() -> None:
    acc = torch.tensor([0.0, 0.5, 1.0])
    assert pass_at_k(acc, 3).tolist() == pytest.approx([0.0, 0.875, 1.0])


def test_oversized_verifier_is_rejected_with_the_culprit() -> None:
    data = {"problems": 2, "depth": 3, "branching": 3, "state": "prev", "share": 1}
    with pytest.raises(SteerBenchError, match="automaton states"):
        validate(TreeTaskConfig, {**data, "verifier": {"kind": "targets", "targets": 9, "radius": 2}}, source="x.yaml")
    with pytest.raises(SteerBenchError, match=r"verifier\.mod\.modulus"):
        validate(TreeTaskConfig, {**data, "verifier": {"kind": "mod", "modulus": 1}}, source="x.yaml")
