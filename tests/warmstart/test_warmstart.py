"""The warm start: tokenizer round trip, SFT pieces, the smoke preset end to end, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny import SMOKE_CONFIG, tiny_model_dir
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from steer_bench.cli import main
from steer_bench.config import load_model, validate
from steer_bench.data.synthetic import arithmetic_table, left_to_right, make_synthetic, solve
from steer_bench.errors import SteerBenchError
from steer_bench.warmstart.build import (
    EOS,
    PAD,
    SFTConfig,
    SyntheticTaskConfig,
    TinyModelConfig,
    WarmstartConfig,
    batch_backward,
    build_model,
    check_reload,
    lr_factor,
    sft,
    sft_rows,
    sft_tensors,
    train_tokenizer,
    warmstart,
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return make_synthetic("train", 300, seed=0, levels=[1, 2])


@pytest.fixture(scope="module")
def tokenizer(train_df: pd.DataFrame):
    return train_tokenizer([*train_df["problem"], *train_df["solution"], "user\n", "assistant\n"], vocab_size=280)


def _model_folder(tokenizer, folder: Path) -> None:
    build_model(tokenizer, TinyModelConfig(hidden_size=16, num_layers=1), seed=0).config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_tokenizer_ids_survive_save_and_reload(tokenizer, train_df: pd.DataFrame, tmp_path: Path) -> None:
    _model_folder(tokenizer, tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "Qwen2Tokenizer"  # transformers 5 forces it for qwen2: our pipeline must match
    chats = [
        tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in train_df["prompt"]
    ]
    texts = [*chats, *train_df["solution"], "unseen: Ünïcode ✓ 123 + 4.5\n\n  x"]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert reloaded(text)["input_ids"] == ids
        assert reloaded.decode(ids) == text  # byte-level: every string round-trips, nothing is dropped
    assert (reloaded.padding_side, reloaded.eos_token, reloaded.pad_token) == ("left", EOS, PAD)
    assert chats[0] == f"<|im_start|>user\n{train_df['problem'].iloc[0]}<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer("12345")["input_ids"] == [tokenizer.convert_tokens_to_ids(c) for c in "12345"]  # single digits
    check_reload(tokenizer, tmp_path, texts)  # the check warmstart runs passes ...


def test_reload_check_catches_a_foreign_pre_tokenizer(train_df: pd.DataFrame, tmp_path: Path) -> None:
    # ... and fails for a tokenizer trained with GPT-2's ByteLevel pre-tokenizer (multi-digit merges), whose
    # pre-tokenizer Qwen2Tokenizer silently replaces on reload.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        list(train_df["solution"]), trainers.BpeTrainer(vocab_size=300, special_tokens=[PAD, "<|im_start|>", EOS])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, padding_side="left")
    _model_folder(tok, tmp_path)
    with pytest.raises(SteerBenchError, match="tokenizer ids change on reload"):
        check_reload(tok, tmp_path, list(train_df["solution"]))
    (tmp_path / "config.json").unlink()
    with pytest.raises(SteerBenchError, match=r"no config\.json"):
        check_reload(tok, tmp_path, ["12"])


def test_sft_tensors_mask_prompt_and_padding(tokenizer, train_df: pd.DataFrame) -> None:
    df = train_df.iloc[:3]
    input_ids, labels = sft_tensors(tokenizer, df)
    for i in range(3):
        prompt = tokenizer.apply_chat_template(
            list(df["prompt"].iloc[i]), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        response = tokenizer(df["solution"].iloc[i])["input_ids"] + [tokenizer.eos_token_id]
        n = len(prompt) + len(response)
        assert input_ids[i, :n].tolist() == prompt + response
        assert (input_ids[i, n:] == tokenizer.pad_token_id).all()
        assert (labels[i, : len(prompt)] == -100).all()
        assert (labels[i, n:] == -100).all()
        assert labels[i, len(prompt) : n].tolist() == response


@pytest.mark.slow
def test_length_buckets_give_the_padded_batch_gradient(tokenizer, train_df: pd.DataFrame) -> None:
    """Sorting a batch by length into micro-batches, each padded to its own longest row, gives the gradient of
    the one padded batch: the same per-token losses over the same label count, summed in another order."""
    cfg_model = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    input_ids, labels = sft_tensors(tokenizer, train_df)
    last = (labels != -100).cumsum(1).argmax(1)
    idx = torch.randperm(len(input_ids), generator=torch.Generator().manual_seed(0))[:13]
    assert len(set(last[idx].tolist())) > 3  # lengths differ, so buckets drop padding columns
    grads, losses = [], []
    for buckets in (1, 3, 13):
        model = build_model(tokenizer, cfg_model, seed=0)
        losses.append(batch_backward(model, (input_ids, labels, last), idx, buckets=buckets))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    width = int(last[idx].max()) + 1
    reference = build_model(tokenizer, cfg_model, seed=0)(
        input_ids=input_ids[idx, :width], labels=labels[idx, :width]
    ).loss.item()  # HF's own token mean over the padded batch
    # float32 sums of ~10^3 terms of O(1): relative rounding ≲ 10^3 · 2^-24 ≈ 6e-5; 1e-4 leaves a margin
    assert losses == pytest.approx([reference] * 3, rel=1e-4)
    for g in grads[1:]:
        assert (g - grads[0]).norm() <= 1e-4 * grads[0].norm()


def test_lr_schedule_by_hand() -> None:
    kw = {"warmup_steps": 4, "max_steps": 14, "min_lr_ratio": 0.1}
    assert [lr_factor(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, **kw) == pytest.approx(1.0)
    assert lr_factor(9, **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_factor(14, **kw) == pytest.approx(0.1)
    assert lr_factor(99, **kw) == pytest.approx(0.1)
    assert lr_factor(3, warmup_steps=0, max_steps=4, min_lr_ratio=0.0) == pytest.approx(
        0.5 * (1 + math.cos(0.75 * math.pi))
    )


@pytest.mark.slow
def test_sft_lowers_loss_and_stops_at_target_accuracy(tokenizer, train_df: pd.DataFrame) -> None:
    cfg_model = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32)
    model = build_model(tokenizer, cfg_model, seed=0)
    data = sft_tensors(tokenizer, train_df)
    checks: list[int] = []

    def validate_fn(m) -> float:  # logic test of the stop rule: a scripted accuracy per check
        checks.append(len(checks))
        return [0.1, 0.3, 0.6, 0.9][len(checks) - 1]

    cfg = SFTConfig(max_steps=40, batch_size=8, lr=1e-2, eval_every=5, stop_accuracy=0.5, log_every=5)
    out = sft(model, data, cfg, seed=0, validate=validate_fn)
    assert out["steps"] == 15
    assert len(checks) == 3
    assert [h["step"] for h in out["history"]["val_accuracy"]] == [5, 10, 15]
    losses = [h["loss"] for h in out["history"]["loss"]]
    assert losses[-1] < losses[0]
    assert not model.training


def test_smoke_preset_writes_a_loadable_model(tiny_dir: Path) -> None:
    files = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "warmstart.json", "warmstart.yaml"} <= files
    assert "eval_samples.jsonl" in files
    metrics = json.loads((tiny_dir / "warmstart.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.tie_word_embeddings
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert (tok.padding_side, tok.eos_token, tok.pad_token) == ("left", EOS, PAD)
    assert model.config.eos_token_id == tok.eos_token_id == model.generation_config.eos_token_id
    cfg = load_model(WarmstartConfig, tiny_dir / "warmstart.yaml")  # the resolved config reloads
    assert cfg == load_model(WarmstartConfig, SMOKE_CONFIG)
    assert metrics["sft_steps"] == cfg.sft.max_steps
    assert [h["step"] for h in metrics["sft_history"]["val_accuracy"]] == [75, 150]
    test = metrics["test"]
    assert test["n"] == cfg.task.n_test
    assert 0 <= test["accuracy"] <= 1
    assert test["finished_fraction"] > 0.8  # it has learned to stop
    assert 0 < test["response_entropy"] < math.log(len(tok))
    samples = [json.loads(line) for line in (tiny_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == cfg.task.n_test
    assert sum(s["correct"] for s in samples) / len(samples) == pytest.approx(test["accuracy"])
    assert sum("\\boxed{" in s["response"] for s in samples) > len(samples) // 2  # it has learned the format


def test_sft_model_prefers_worked_solutions_and_stops(tiny_dir: Path) -> None:
    # Even the seconds-long smoke SFT has learned the task's language: a test problem's worked solution costs
    # under half the per-token NLL of a uniform guess, and after the answer it puts most mass on eos.
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    row = make_synthetic("test", 1, seed=5, levels=[1]).iloc[0]
    prompt = tok.apply_chat_template(list(row["prompt"]), add_generation_prompt=True, tokenize=True, return_dict=False)
    response = tok(row["solution"])["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
    nll = -logp.gather(-1, ids[0, len(prompt) :, None]).mean().item()
    assert nll < 0.5 * math.log(len(tok))
    assert logp[-1, tok.eos_token_id].exp().item() > 0.5


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SteerBenchError, match=r"unknown key 'sft.max_step' \(did you mean 'max_steps'\?\)"):
        load_model(WarmstartConfig, SMOKE_CONFIG, ["sft.max_step=10"])
    with pytest.raises(SteerBenchError, match=r"sft\.max_steps"):
        validate(WarmstartConfig, {"sft": {"batch_size": 4, "lr": 1e-3, "max_steps": 0}}, source="x.yaml")
    bad_level = load_model(WarmstartConfig, SMOKE_CONFIG, ["task.levels=[1,9]"])
    with pytest.raises(SteerBenchError, match=r"task.levels \[1, 9\] invalid; valid levels: \[1, 2, 3, 4, 5, 6\]"):
        warmstart(bad_level, tmp_path / "out")
    no_eval = load_model(WarmstartConfig, SMOKE_CONFIG, ["sft.eval_every=0", "sft.stop_accuracy=0.5"])
    with pytest.raises(SteerBenchError, match=r"stop_accuracy needs sft\.eval_every"):
        warmstart(no_eval, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The CLI prints the error without a traceback and exits 2.
    rc = main(["warmstart", "--recipe", str(SMOKE_CONFIG), "--out", str(tmp_path / "o"), "--set", "model.hidden=3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown key 'model.hidden'" in err
    assert "hidden_size" in err
    assert "Traceback" not in err


def test_sft_rows_mix_strategies_per_problem_and_add_the_table() -> None:
    problems = make_synthetic("train", 40, seed=0, levels=[5])
    task = SyntheticTaskConfig(levels=[5], n_train=40, solutions_per_problem=4, wrong_order_fraction=0.25)
    rows = sft_rows(problems, task)
    assert len(rows) == 160
    for p, group in rows.groupby("problem"):
        assert sorted(group["solution"]) == sorted([left_to_right(p), *[solve(p)] * 3])  # exactly 1 of 4 wrong
    table = sft_rows(problems, task.model_copy(update={"arithmetic_table": True}))
    facts = table.iloc[160:]
    assert len(facts) == len(arithmetic_table([5]))
    fact = facts[facts["problem"] == "7-42"].iloc[0]
    assert (fact["solution"], fact["prompt"]) == ("7-42=-35;\\boxed{-35}", [{"role": "user", "content": "7-42"}])
    with pytest.raises(ValueError, match="whole number of rows per problem"):
        SyntheticTaskConfig(solutions_per_problem=2, wrong_order_fraction=0.25)
