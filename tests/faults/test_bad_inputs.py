"""Every bad input file gets a SteerBenchError naming the file and what is wrong, and nothing already
computed is touched: corrupt, truncated and empty parquet files, wrong column types, a model folder without
(or with truncated) weights, a tokenizer without a chat template, a checkpoint of another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from trainrun import make_cfg
from transformers import AutoTokenizer

from steer_bench.config.method import load_method
from steer_bench.config.run import ModelConfig
from steer_bench.data.prepare import prepare_dataset
from steer_bench.data.schema import load_prepared
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation.engines import check_model
from steer_bench.rollout.model import load_policy, prompt_token_ids
from steer_bench.train import train


def _release_dir(tmp: Path, content: bytes | None = None, frame: pd.DataFrame | None = None) -> Path:
    """A data folder whose aime24.parquet is ``content`` (raw bytes) or ``frame`` (a parquet of it)."""
    d = tmp / "release"
    d.mkdir()
    if frame is not None:
        frame.to_parquet(d / "aime24.parquet")
    else:
        (d / "aime24.parquet").write_bytes(content if content is not None else b"")
    return d


def _good_bytes(shared_data: Path) -> bytes:
    return (shared_data / "aime24.parquet").read_bytes()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda good: b"this is not a parquet file\n", "not a readable parquet file"),
        (lambda good: good[: len(good) // 2], "not a readable parquet file"),  # truncated copy
        (lambda good: b"", "empty file"),
    ],
    ids=["corrupt", "truncated", "zero-bytes"],
)
def test_prepare_names_a_bad_source_file_and_keeps_the_previous_output(
    tmp_path: Path, shared_data: Path, make, message: str
) -> None:
    out = tmp_path / "aime24.parquet"
    prepare_dataset("aime24", out, data_dir=shared_data, check_golds=False)
    before = out.read_bytes()
    bad = _release_dir(tmp_path, content=make(_good_bytes(shared_data)))
    with pytest.raises(SteerBenchError, match=message) as err:
        prepare_dataset("aime24", out, data_dir=bad, check_golds=False)
    assert str(bad / "aime24.parquet") in str(err.value)
    assert out.read_bytes() == before  # the earlier result is untouched


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({"prompt": pd.Series([], dtype=object), "reward_model": pd.Series([], dtype=object)}),
            "no rows",
        ),
        (pd.DataFrame({"prompt": [1, 2], "reward_model": [{"ground_truth": "3"}] * 2}), "'prompt'"),
        (pd.DataFrame({"prompt": ["What is 1+2?"], "reward_model": [{"ground_truth": "3"}]}), "'prompt'"),
        (pd.DataFrame({"prompt": [[{"role": "user", "content": "1+2?"}]], "reward_model": ["3"]}), "reward_model"),
    ],
    ids=["no-rows", "int-prompts", "string-prompts", "string-answers"],
)
def test_prepare_names_wrong_column_types(
    tmp_path: Path, shared_data: Path, frame: pd.DataFrame, message: str
) -> None:
    bad = _release_dir(tmp_path, frame=frame)
    with pytest.raises(SteerBenchError, match=message) as err:
        prepare_dataset("aime24", tmp_path / "out.parquet", data_dir=bad, check_golds=False)
    assert "aime24.parquet" in str(err.value)
    assert not (tmp_path / "out.parquet").exists()


def test_a_prepared_file_with_wrong_types_is_named(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "aime24.parquet"
    prepare_dataset("aime24", out, data_dir=shared_data, limit=4, check_golds=False)
    df = pd.read_parquet(out)
    df["answer"] = range(len(df))  # ints, not strings
    df.to_parquet(tmp_path / "ints.parquet")
    with pytest.raises(SteerBenchError, match=r"ints\.parquet: empty or non-string 'answer'"):
        load_prepared(tmp_path / "ints.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(SteerBenchError, match=r"empty\.parquet: empty file"):
        load_prepared(tmp_path / "empty.parquet")


def _copy_model(model_dir: Path, tmp: Path) -> Path:
    d = tmp / "model"
    shutil.copytree(model_dir, d)
    return d


def test_a_model_folder_without_weights_is_named(model_dir: Path, tmp_path: Path) -> None:
    d = _copy_model(model_dir, tmp_path)
    (d / "model.safetensors").unlink()
    for load in (lambda: load_policy(ModelConfig(path=str(d))), lambda: check_model(str(d))):
        with pytest.raises(SteerBenchError, match=rf"{d}: no model weights"):
            load()


def test_truncated_weights_are_named(model_dir: Path, tmp_path: Path) -> None:
    d = _copy_model(model_dir, tmp_path)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SteerBenchError, match=r"model\.safetensors: not a readable safetensors file"):
        load_policy(ModelConfig(path=str(d)))


def test_a_tokenizer_without_a_chat_template_is_named(model_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    d = _copy_model(model_dir, tmp_path)
    config = json.loads((d / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(d)
    problems = pd.DataFrame({"problem_id": ["p/1"], "prompt": [[{"role": "user", "content": "1+2?"}]]})
    with pytest.raises(SteerBenchError, match=rf"{d}: the tokenizer has no chat template"):
        prompt_token_ids(tokenizer, problems, max_len=64, source="test")


@pytest.mark.slow
def test_resuming_a_checkpoint_of_another_model_is_refused_before_any_write(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(make_cfg(model_dir, data, steps=1), load_method("grpo"), run)
    other = _copy_model(model_dir, tmp_path)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (other / "config.json").write_text(json.dumps(config))
    (run / "train.done").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(
        SteerBenchError, match=r"checkpoints/last: a checkpoint of a different model .*num_hidden_layers"
    ):
        train(make_cfg(other, data, steps=2), load_method("grpo"), run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
