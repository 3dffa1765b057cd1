"""`steer-bench prepare` on the real release files, the templates, the Hub column mapping, and bad input."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from steer_bench.cli import main
from steer_bench.data import load_prepared
from steer_bench.data.prepare import prepare_dataset, read_raw
from steer_bench.data.registry import REGISTRY, SHARED_DATA_ENV, DatasetSpec, HubSource, get_spec
from steer_bench.data.templates import FORMATS, QWEN_BOXED_SUFFIX, render, split_instruction
from steer_bench.errors import SteerBenchError

EXPECTED = {
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "math500": 500,
    "minerva": 272,
    "olympiadbench": 675,
    "dapo_math_17k": 17_398,
    "gsm8k": 1_319,
}
ANSWER = FORMATS["dapo_answer"][0]


def _prepare(name, tmp_path, shared_data, **kw):
    kw.setdefault("check_golds", False)  # the gold check runs in test_gold_consistency.py
    stats = prepare_dataset(name, tmp_path / f"{name}.parquet", data_dir=shared_data, **kw)
    return load_prepared(tmp_path / f"{name}.parquet"), stats


@pytest.mark.parametrize(("name", "n"), EXPECTED.items())
def test_unique_problem_counts(name, n, tmp_path, shared_data):
    df, stats = _prepare(name, tmp_path, shared_data)
    assert len(df) == stats["unique_problems"] == n
    assert df["problem_id"].is_unique
    assert stats["id_kind"] == "source index"
    assert set(df["dataset"]) == {name}
    assert json.loads((tmp_path / f"{name}.prepare.json").read_text())["written"] == n


@pytest.mark.parametrize("name", [n for n, s in REGISTRY.items() if s.local_file])
def test_paper_template_round_trips_every_release_prompt(name, shared_data):
    """Stripping the instruction and re-rendering ``paper`` gives back every original prompt exactly."""
    spec = get_spec(name)
    raw = pd.read_parquet(shared_data / spec.local_file)
    contents = raw["prompt"].map(lambda p: p[0]["content"])
    for content in contents.drop_duplicates():
        problem, variant = split_instruction(content, spec.paper_format)
        rendered = render("paper", problem, fmt=spec.paper_format, variant=variant)
        assert rendered == [{"role": "user", "content": content}]


def test_prepared_rows_match_the_release(tmp_path, shared_data):
    df, stats = _prepare("aime25", tmp_path, shared_data)
    assert stats["rows_read"] == 960
    raw = pd.read_parquet(shared_data / "aime25.parquet")
    by_index = {e["index"]: (p[0]["content"], r["ground_truth"]) for e, p, r in
                zip(raw["extra_info"], raw["prompt"], raw["reward_model"], strict=True)}  # fmt: skip
    for row in df.itertuples():
        content, gold = by_index[int(row.problem_id.split("/")[1])]
        assert row.prompt == [{"role": "user", "content": content}]
        assert row.answer == gold
        # the raw problem comes from the prompt, not from the corrupted extra_info.raw_problem
        assert content == ANSWER[0] + row.problem + ANSWER[1]
        assert not row.problem.startswith(" by step")
    assert df["problem_id"].tolist()[:2] == ["aime25/0000", "aime25/0001"]


def test_other_templates(tmp_path, shared_data):
    df, _ = _prepare("math500", tmp_path, shared_data, template="qwen_boxed", limit=3)
    assert df["prompt"][0] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": df["problem"][0] + QWEN_BOXED_SUFFIX},
    ]
    df, _ = _prepare("aime24", tmp_path, shared_data, template="dapo_answer", limit=2)
    assert df["prompt"][0][0]["content"] == ANSWER[0] + df["problem"][0] + ANSWER[1]
    with pytest.raises(SteerBenchError, match="unknown prompt template"):
        _prepare("aime24", tmp_path, shared_data, template="fancy")


def test_limit_is_a_seeded_ordered_subset(tmp_path, shared_data):
    full, _ = _prepare("math500", tmp_path, shared_data)
    a, _ = _prepare("math500", tmp_path, shared_data, limit=50, seed=1)
    b, _ = _prepare("math500", tmp_path, shared_data, limit=50, seed=1)
    c, _ = _prepare("math500", tmp_path, shared_data, limit=50, seed=2)
    assert len(a) == 50
    assert a["problem_id"].tolist() == b["problem_id"].tolist() != c["problem_id"].tolist()
    order = {pid: i for i, pid in enumerate(full["problem_id"])}
    assert [order[p] for p in a["problem_id"]] == sorted(order[p] for p in a["problem_id"])


def test_synthetic_through_prepare(tmp_path):
    stats = prepare_dataset("synth_test", tmp_path / "s.parquet", limit=40, seed=3, levels=[1, 2])
    df = load_prepared(tmp_path / "s.parquet")
    assert stats["written"] == len(df) == 40
    assert set(df["level"]) == {1, 2}
    assert (df["prompt"].map(lambda p: p[0]["content"]) == df["problem"]).all()
    assert all(s.endswith("\\boxed{" + a + "}") for s, a in zip(df["solution"], df["answer"], strict=True))


def test_env_var_selects_local_data(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("STEER_BENCH_SHARED_DATA", str(shared_data))
    stats = prepare_dataset("amc23", tmp_path / "a.parquet", check_golds=False)
    assert stats["origin"].endswith("amc23.parquet")


# ------------------------------------------------------------------------------------------- Hub mapping


def test_hub_column_mapping_through_datasets(tmp_path, monkeypatch):
    """The Hub path on a locally built Hub-shaped parquet (gsm8k-style columns), read by the real datasets."""
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)  # CI sets it; without a local folder the Hub is read
    path = tmp_path / "hub.parquet"
    tom = "Tom has 3 apples and buys 4. How many?"
    pd.DataFrame(
        {
            "question": [tom, "What is 10 - 2?", tom],
            "answer": ["3 + 4 = 7\n#### 7", "#### 8", "3 + 4 = 7\n#### 7"],
        }
    ).to_parquet(path)
    real_load = datasets.load_dataset
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return real_load("parquet", data_files=str(path), split="train")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    spec = get_spec("gsm8k")
    raw, origin = read_raw(spec, None)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert origin == "openai/gsm8k"
    assert raw["answer"].tolist() == ["7", "8", "7"]
    stats = prepare_dataset("gsm8k", tmp_path / "g.parquet", check_golds=False)
    df = load_prepared(tmp_path / "g.parquet")
    assert stats["id_kind"] == "content hash"  # this source has no id column
    assert len(df) == 2  # the repeated question is merged
    # paper template renders the release's format around the Hub's raw problem
    blank = FORMATS["dapo_answer_blank"][0]
    assert df["prompt"][0][0]["content"] == blank[0] + df["problem"][0] + blank[1]


def test_hub_missing_mapped_column(tmp_path, monkeypatch):
    path = tmp_path / "hub.parquet"
    pd.DataFrame({"question": ["q"], "solution": ["s"]}).to_parquet(path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_parquet(str(path)))
    spec = DatasetSpec("x", "eval", "bare", hub=HubSource("org/x", "test", problem="question"))
    with pytest.raises(SteerBenchError, match=r"x: Hub dataset org/x lacks the mapped column\(s\) \{'answer'"):
        read_raw(spec, None)


# --------------------------------------------------------------------------------------------- bad input


def _write_release(data_dir, name, rows, *, drop=()):
    """A verl-format file under the registry's file name for ``name``; rows are (index, problem, gold)."""
    df = pd.DataFrame(
        {
            "data_source": [name] * len(rows),
            "prompt": [[{"role": "user", "content": ANSWER[0] + p + ANSWER[1]}] for _, p, _ in rows],
            "reward_model": [{"ground_truth": g, "style": "rule"} for *_, g in rows],
            "extra_info": [{"index": i} for i, _, _ in rows],
        }
    ).drop(columns=list(drop))
    data_dir.mkdir(exist_ok=True)
    df.to_parquet(data_dir / get_spec(name).local_file)


def test_missing_answer_column(tmp_path):
    _write_release(tmp_path / "d", "aime24", [(0, "What is 1+1?", "2")], drop=["reward_model"])
    with pytest.raises(SteerBenchError, match=r"aime24: .*aime24.parquet lacks column\(s\) \['reward_model'\]"):
        prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path / "d")
    assert not (tmp_path / "o.parquet").exists()


def test_bad_rows_error_names_ids_or_are_skipped(tmp_path):
    rows = [
        (0, "What is 1+1?", "2"),
        (1, "   ", "3"),  # empty problem
        (2, "What is 2+2?", ""),  # missing gold
        (3, "What is 3+3?", "}{"),  # a gold math-verify cannot parse
        (4, "What is 4+4?", "8"),
    ]
    _write_release(tmp_path / "d", "aime24", rows)
    with pytest.raises(SteerBenchError) as err:
        prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path / "d")
    msg = str(err.value)
    assert "aime24: bad rows" in msg
    assert "empty problem: 1 row(s): aime24/0001" in msg
    assert "missing or empty answer: 1 row(s): aime24/0002" in msg
    assert "--on-bad-row skip" in msg
    stats = prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path / "d", on_bad_row="skip")
    assert load_prepared(tmp_path / "o.parquet")["problem_id"].tolist() == ["aime24/0000", "aime24/0004"]
    assert stats["skipped"] == {
        "empty problem": 1,
        "missing or empty answer": 1,
        "gold does not grade (error: gold does not parse: '}{')": 1,
    }


def test_unparseable_gold_alone_is_named(tmp_path):
    _write_release(tmp_path / "d", "aime24", [(0, "What is 1+1?", "2"), (7, "What is 3+3?", "}{")])
    with pytest.raises(SteerBenchError, match=r"gold does not parse.*: 1 row\(s\): aime24/0007"):
        prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path / "d")


def test_one_prompt_with_two_golds(tmp_path):
    _write_release(tmp_path / "d", "aime24", [(0, "What is 1+1?", "2"), (0, "What is 1+1?", "3")])
    with pytest.raises(SteerBenchError, match="one prompt with different golds: 1 row"):
        prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path / "d", check_golds=False)


def test_unknown_dataset_and_missing_file(tmp_path):
    with pytest.raises(SteerBenchError, match=r"unknown dataset 'aime2024' \(did you mean 'aime24'\?\)"):
        prepare_dataset("aime2024", tmp_path / "o.parquet")
    with pytest.raises(SteerBenchError, match="aime24 source file not found"):
        prepare_dataset("aime24", tmp_path / "o.parquet", data_dir=tmp_path)


def test_cli(tmp_path, shared_data, capsys):
    out = tmp_path / "amc.parquet"
    args = ["prepare", "--dataset", "amc23", "--out", str(out), "--data-dir", str(shared_data), "--no-gold-check"]
    assert main(args) == 0
    assert len(load_prepared(out)) == 40
    assert main(["prepare", "--dataset", "nope", "--out", str(out)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_hub_verl_layout_renders_the_release_prompt(tmp_path, monkeypatch):
    """DAPO-Math-17k on the Hub: verl rows with the "Answer:" instruction, each prompt repeated; ``paper``
    gives STEER's boxed prompt around the recovered problem."""
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)  # CI sets it; without a local folder the Hub is read
    path = tmp_path / "dapo.parquet"
    problems = ["Find $x$ if $x+1=3$.", "Compute $2^5$."]
    pd.DataFrame(
        {
            "data_source": ["math_dapo"] * 4,
            "prompt": [[{"role": "user", "content": ANSWER[0] + p + ANSWER[1]}] for p in problems * 2],
            "reward_model": [{"ground_truth": g, "style": "rule"} for g in ["2", "32"] * 2],
            "extra_info": [{"index": f"uuid-{i}"} for i in range(4)],
        }
    ).to_parquet(path)
    real_load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: real_load("parquet", data_files=str(path))["train"])
    stats = prepare_dataset("dapo_math_17k", tmp_path / "o.parquet")
    df = load_prepared(tmp_path / "o.parquet")
    assert stats["origin"] == "BytedTsinghua-SIA/DAPO-Math-17k"
    assert df["problem"].tolist() == problems
    assert df["problem_id"].tolist() == ["dapo_math_17k/uuid-0", "dapo_math_17k/uuid-1"]
    boxed = FORMATS["dapo_boxed"][0]
    assert df["prompt"][1] == [{"role": "user", "content": boxed[0] + problems[1] + boxed[1]}]
