"""The training set's held-out selection slice (``data.selection_holdout``): the same rows whatever the run's seed,
disjoint from the training rows, together the whole set in its order; refused when nothing would be left."""

from __future__ import annotations

import pandas as pd
import pytest

from steer_bench.data.holdout import split_holdout
from steer_bench.errors import SteerBenchError


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": [f"t/{i}" for i in range(n)], "problem": [f"p{i}" for i in range(n)]})


def test_holdout_partitions_the_set_and_keeps_order() -> None:
    df = _frame(50)
    rest, held = split_holdout(df, 7, source="t")
    assert len(held) == 7
    assert len(rest) == 43
    ids_rest, ids_held = rest["problem_id"].tolist(), held["problem_id"].tolist()
    assert not set(ids_rest) & set(ids_held)
    assert sorted(ids_rest + ids_held, key=lambda s: int(s[2:])) == df["problem_id"].tolist()
    for ids in (ids_rest, ids_held):  # dataset order on both sides
        assert ids == sorted(ids, key=lambda s: int(s[2:]))
    assert list(rest.index) == list(range(43))  # positional: the trainer indexes rows by position


def test_holdout_is_fixed_across_calls_and_not_a_prefix() -> None:
    a = split_holdout(_frame(50), 7, source="t")[1]["problem_id"].tolist()
    b = split_holdout(_frame(50), 7, source="t")[1]["problem_id"].tolist()
    assert a == b  # no state: every run of an experiment holds out the same problems
    assert a != [f"t/{i}" for i in range(7)]
    assert a != [f"t/{i}" for i in range(43, 50)]


@pytest.mark.parametrize("n", [10, 11])
def test_holdout_that_leaves_nothing_to_train_on_is_refused(n: int) -> None:
    with pytest.raises(SteerBenchError, match=rf"cannot hold out {n} of 10 training problems"):
        split_holdout(_frame(10), n, source="t")
