"""A seeded synthetic arithmetic task for the CPU miniature, in the normalised schema.

Problems are integer expressions over ``+ - *`` (``14*2-9``); the response is a worked solution that performs
one binary operation per step and ends in ``\\boxed{}`` (``14*2=28,28-9=19;\\boxed{19}``, docs/recipe.md §R14).

Design:

- **Levels** (``LEVELS``): number of operands and operand range. Level 1 = 2 operands in 1..20, level 2 = 3,
  level 3 = 4, level 4 = 5 operands. Operators are uniform over ``+ - *``, operands uniform over 1..20.
  Solution length (characters): level 1 at most 21, level 2 at most 34 (both over every problem), level 3
  mean 38 / max 51, level 4 mean 48 / max 68 (over 15,000 sampled problems each).
- **Precedence levels** 5 and 6: 3 and 4 operands in 1..9, only the expressions whose value differs when
  evaluated strictly left to right (``3+4*2``: 11, not 14). Their arithmetic is small (single-digit products,
  a two-digit number ± or × a digit), and each has a *strategy fork* that decides correctness: a warm start
  SFT'd on a mix of correct and :func:`left_to_right` solutions (``steer_bench.warmstart``'s ``wrong_order_fraction``)
  is unsure which step comes first, and only the precedence order earns the reward — the CPU miniature's
  task (docs/miniature.md). Level 5 has 1,296 problems (1,038 train / 258 test), level 6 has 69,984.
- **Branch points**: evaluation follows the usual precedence, but the *order* of steps is free where it does
  not change the value: any ``*`` may be done next, and the leftmost ``+``/``-`` may be done next when its
  right operand is not part of a product. So ``3+4-2*5`` has two correct solutions (``3+4=7,2*5=10,7-10=-3``
  and ``2*5=10,3+4=7,7-10=-3``). ``solution`` picks uniformly among the ready steps (seeded per problem),
  so a warm-started policy keeps real entropy at these branch points for RL to act on; :func:`all_solutions`
  lists every correct order. With these rules no step ever writes ``+-`` (products are positive, and a
  negative number only ever appears as the left operand of ``+``/``-``).
- **Splits**: a problem belongs to ``test`` iff the SHA-256 of its text is ≡ 0 mod 5 (else ``train``), so the
  splits are disjoint for every seed and size. Within a split problems are unique. Small levels are
  enumerated and shuffled; large ones are rejection-sampled in fixed-size batches.
- **Sizes**: ``n`` is split evenly over ``levels``; a level whose split has fewer problems than its share
  gives all it has and the rest goes to the other levels (an error only if all levels together are short).
- **Ids**: ``synth_<split>/L<level>-<sha256[:12]>`` (content hash: the task has no native index).
- The prompt is the bare expression as one user message; ``ALPHABET`` holds every character that problems
  and solutions can contain (for a character-level tokenizer).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from functools import lru_cache
from itertools import product
from typing import NamedTuple

import numpy as np
import pandas as pd

from steer_bench.errors import SteerBenchError


class Level(NamedTuple):
    operands: int
    max_operand: int
    forks_only: bool
    """Only expressions whose left-to-right value differs from their value (see the module docstring)."""


LEVELS: dict[int, Level] = {
    1: Level(2, 20, False),
    2: Level(3, 20, False),
    3: Level(4, 20, False),
    4: Level(5, 20, False),
    5: Level(3, 9, True),
    6: Level(4, 9, True),
}
OPS = "+-*"
SPLITS = ("train", "test")
TEST_MODULUS = 5  # one problem in 5 is a test problem
SOURCE = "synthetic_arith"
ALPHABET = "".join(sorted(set("0123456789" + OPS + "=,;\\boxed{}")))
_ENUMERATE_MAX = 200_000  # levels with at most this many expressions are enumerated exactly
_SAMPLED_CAPACITY = 0.1  # rejection sampling is only asked for up to this fraction of a large level
_BATCH = 4096


def split_of(problem: str) -> str:
    """The split a problem text belongs to (a pure function of the text: the splits never overlap)."""
    return "test" if _digest(problem) % TEST_MODULUS == 0 else "train"


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)


def _parse(problem: str) -> tuple[list[int], list[str]]:
    nums, ops, digits = [], [], ""
    for ch in problem:
        if ch.isdigit():
            digits += ch
        elif ch in OPS and digits:
            nums.append(int(digits))
            ops.append(ch)
            digits = ""
        else:
            raise SteerBenchError(f"synthetic: not an expression of positive integers and {OPS!r}: {problem!r}")
    if not digits:
        raise SteerBenchError(f"synthetic: expression ends without an operand: {problem!r}")
    return [*nums, int(digits)], ops


def _ready(ops: Sequence[str]) -> list[int]:
    """Indices of operations that may be done next without changing the value (see module docstring)."""
    ready = [i for i, op in enumerate(ops) if op == "*"]
    if ops[0] != "*" and (len(ops) == 1 or ops[1] != "*"):
        ready.insert(0, 0)
    return ready


def _apply(a: int, op: str, b: int) -> int:
    return a * b if op == "*" else a + b if op == "+" else a - b


def _walk(nums: list[int], ops: list[str], pick, ready=_ready) -> str:
    steps = []
    while ops:
        i = pick(ready(ops))
        c = _apply(nums[i], ops[i], nums[i + 1])
        steps.append(f"{nums[i]}{ops[i]}{nums[i + 1]}={c}")
        nums = [*nums[:i], c, *nums[i + 2 :]]
        ops = [*ops[:i], *ops[i + 1 :]]
    return ",".join(steps) + ";\\boxed{" + str(nums[0]) + "}"


def solve(problem: str, *, seed: int | None = None) -> str:
    """A worked solution. ``seed=None``: canonical order (leftmost ready step); else a seeded random order."""
    nums, ops = _parse(problem)
    if not ops:
        return "\\boxed{" + str(nums[0]) + "}"
    rng = None if seed is None else random.Random(f"{seed}:{problem}")
    return _walk(nums, ops, (lambda r: r[0]) if rng is None else rng.choice)


def left_to_right(problem: str) -> str:
    """The worked solution of the wrong strategy that ignores precedence: always the leftmost step first
    (``3+4*2`` -> ``3+4=7,7*2=14;\\boxed{14}``). Its steps are correct arithmetic; its answer is wrong wherever
    precedence matters."""
    nums, ops = _parse(problem)
    if not ops:
        return "\\boxed{" + str(nums[0]) + "}"
    return _walk(nums, ops, lambda ready: ready[0], ready=lambda ops: [0])


def arithmetic_table(levels: Sequence[int]) -> list[str]:
    """Every single step ``x∘y=z`` that a correct or a :func:`left_to_right` solution of a problem of ``levels``
    writes (both splits, every admissible order), sorted: the arithmetic the task asks for, as facts. Only for
    levels small enough to enumerate."""
    steps: set[str] = set()
    for level in levels:
        if _size(level) > _ENUMERATE_MAX:
            raise SteerBenchError(f"synthetic: level {level} is too large to list its arithmetic table")
        for problem in (*_pool(level, "train"), *_pool(level, "test")):
            for solution in (*all_solutions(problem), left_to_right(problem)):
                steps.update(solution.split(";")[0].split(","))
    return sorted(steps)


def all_solutions(problem: str) -> list[str]:
    """Every correct worked solution of ``problem`` (one per admissible order of steps), sorted."""
    nums, ops = _parse(problem)
    out: set[str] = set()

    def rec(nums: list[int], ops: list[str], prefix: list[str]) -> None:
        if not ops:
            out.add(",".join(prefix) + ";\\boxed{" + str(nums[0]) + "}")
            return
        for i in _ready(ops):
            c = _apply(nums[i], ops[i], nums[i + 1])
            rec(
                [*nums[:i], c, *nums[i + 2 :]],
                [*ops[:i], *ops[i + 1 :]],
                [*prefix, f"{nums[i]}{ops[i]}{nums[i + 1]}={c}"],
            )

    rec(nums, ops, [])
    return sorted(out)


def evaluate(problem: str) -> int:
    """The value of the expression (usual precedence)."""
    return int(solve(problem).rsplit("{", 1)[1].rstrip("}"))


def _render(nums: Sequence[int], ops: Sequence[int]) -> str:
    return "".join(f"{n}{OPS[o]}" for n, o in zip(nums, ops, strict=False)) + str(nums[-1])


def _size(level: int) -> int:
    n_operands, hi, _ = LEVELS[level]
    return hi**n_operands * len(OPS) ** (n_operands - 1)


def _admissible(problem: str, level: int) -> bool:
    return not LEVELS[level].forks_only or evaluate(problem) != evaluate_left_to_right(problem)


def evaluate_left_to_right(problem: str) -> int:
    """The value of the expression evaluated strictly left to right (the wrong strategy's answer)."""
    nums, ops = _parse(problem)
    value = nums[0]
    for op, b in zip(ops, nums[1:], strict=True):
        value = _apply(value, op, b)
    return value


@lru_cache(maxsize=16)
def _pool(level: int, split: str) -> tuple[str, ...]:
    """Every problem of a small level that belongs to ``split`` (deterministic order)."""
    n_operands, hi, _ = LEVELS[level]
    out = []
    for ops in product(range(len(OPS)), repeat=n_operands - 1):
        for nums in product(range(1, hi + 1), repeat=n_operands):
            p = _render(nums, ops)
            if split_of(p) == split and _admissible(p, level):
                out.append(p)
    return tuple(out)


def _capacity(level: int, split: str) -> int:
    if _size(level) <= _ENUMERATE_MAX:
        return len(_pool(level, split))
    return int(_size(level) * _SAMPLED_CAPACITY)


def _draw(level: int, split: str, k: int, seed: int) -> list[str]:
    """``k`` distinct problems of one level and split, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, SPLITS.index(split), level])
    if _size(level) <= _ENUMERATE_MAX:
        pool = _pool(level, split)
        return [pool[i] for i in rng.permutation(len(pool))[:k]]
    n_operands, hi, _ = LEVELS[level]
    found: dict[str, None] = {}
    while len(found) < k:
        nums = rng.integers(1, hi + 1, size=(_BATCH, n_operands))
        ops = rng.integers(0, len(OPS), size=(_BATCH, n_operands - 1))
        for row_nums, row_ops in zip(nums.tolist(), ops.tolist(), strict=True):
            p = _render(row_nums, row_ops)
            if split_of(p) == split and _admissible(p, level):
                found.setdefault(p)
                if len(found) == k:
                    break
    return list(found)


def _level_counts(n: int, levels: Sequence[int], capacity: dict[int, int]) -> dict[int, int]:
    """Split ``n`` evenly over ``levels``, moving what a too-small level cannot hold to the others."""
    counts = dict.fromkeys(levels, 0)
    remaining, open_levels = n, [lv for lv in levels if capacity[lv] > 0]
    while remaining and open_levels:
        share, extra = divmod(remaining, len(open_levels))
        for i, lv in enumerate(list(open_levels)):
            take = min(share + (i < extra), capacity[lv] - counts[lv])
            counts[lv] += take
            remaining -= take
            if counts[lv] == capacity[lv]:
                open_levels.remove(lv)
    if remaining:
        raise SteerBenchError(
            f"synthetic: asked for {n} problems but levels {list(levels)} hold only {sum(capacity.values())}"
        )
    return counts


def make_synthetic(split: str, n: int, *, seed: int, levels: Sequence[int]) -> pd.DataFrame:
    """``n`` unique problems of ``split`` in the normalised schema plus ``level`` and ``solution``.

    Deterministic in ``(split, n, seed, levels)``; rows are shuffled across levels. The dataset name is
    ``synth_<split>``.
    """
    if split not in SPLITS:
        raise SteerBenchError(f"synthetic: unknown split {split!r}; valid: {list(SPLITS)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if not levels or bad:
        raise SteerBenchError(f"synthetic: unknown level(s) {bad or '[]'}; valid levels: {sorted(LEVELS)}")
    if n < 1:
        raise SteerBenchError(f"synthetic: n must be >= 1, got {n}")
    levels = sorted(set(levels))
    counts = _level_counts(n, levels, {lv: _capacity(lv, split) for lv in levels})
    dataset = f"synth_{split}"
    rows = []
    for lv in levels:
        for p in _draw(lv, split, counts[lv], seed):
            rows.append(
                {
                    "problem_id": f"{dataset}/L{lv}-{hashlib.sha256(p.encode()).hexdigest()[:12]}",
                    "dataset": dataset,
                    "source": SOURCE,
                    "problem": p,
                    "prompt": [{"role": "user", "content": p}],
                    "answer": str(evaluate(p)),
                    "level": lv,
                    "solution": solve(p, seed=seed),
                }
            )
    order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(rows))
    df = pd.DataFrame([rows[i] for i in order])
    if df["problem_id"].duplicated().any():  # 48-bit hash: a collision would be a bug worth hearing about
        raise SteerBenchError(f"synthetic: problem_id collision in {dataset}")
    return df
