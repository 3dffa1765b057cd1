"""`steer-bench warmstart`: tokenizer + tiny Qwen2 model + SFT on the synthetic task (the CPU miniature's start).

Steps, each a function below:

1. :func:`train_tokenizer` — byte-level BPE on the training problems, solutions and role names, with exactly
   the normalizer and pre-tokenizer that transformers 5 rebuilds for any ``qwen2`` checkpoint (NFC, the Qwen2
   split regex with single digits, ByteLevel without its own regex): any other pipeline changes the ids after a
   reload (docs/recipe.md §R15); :func:`check_reload` asserts they survive. The full byte alphabet is kept, so every
   string encodes (nothing is silently dropped). Special tokens: ``<|endoftext|>`` (pad, bos), ``<|im_start|>``,
   ``<|im_end|>`` (eos); ChatML template.
2. :func:`build_model` — a Qwen2ForCausalLM with tied embeddings (≈1M parameters by default).
3. :func:`sft` — token-mean cross-entropy on the response tokens (eos included; prompt tokens masked), AdamW,
   linear warm-up then cosine decay, optionally stopping once the held-out accuracy reaches
   ``sft.stop_accuracy`` (validation problems come from the train split and are never trained on).
4. :func:`evaluate` — T = 1 sampling on the test split with the ``hf`` rollout engine, graded with
   :func:`steer_bench.grading.grade_one` (math-verify, the RL reward's grader), and the mean full-distribution
   entropy of the sampled responses (nats/token, from a teacher-forced forward).

The output folder (written atomically) loads with ``AutoModelForCausalLM`` / ``AutoTokenizer`` and vLLM, and
holds ``warmstart.json`` (metrics), ``warmstart.yaml`` (resolved config) and ``eval_samples.jsonl``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from pydantic import Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX  # what Qwen2Tokenizer rebuilds

from steer_bench.config import StrictModel, dump_yaml
from steer_bench.data.synthetic import LEVELS, arithmetic_table, left_to_right, make_synthetic
from steer_bench.errors import SteerBenchError
from steer_bench.files import atomic_dir, write_json, write_jsonl, write_text
from steer_bench.grading import grade_one
from steer_bench.rollout import HFEngine, SamplingParams, score_responses

log = logging.getLogger(__name__)

PAD, IM_START, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (  # ChatML, as Qwen's
    r"{% for message in messages %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    r"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class SyntheticTaskConfig(StrictModel):
    levels: list[int] = [1, 2, 3]
    """Synthetic levels (steer_bench.data.synthetic.LEVELS: level L has L+1 operands)."""
    n_train: int = Field(20000, ge=1)
    n_val: int = Field(200, ge=1)
    """Held-out problems of the train split for ``sft.stop_accuracy`` (never trained on)."""
    n_test: int = Field(500, ge=1)
    seed: int = 0
    """Seed of the problem draw (kept apart from ``seed`` so warm starts of different seeds share data)."""
    solutions_per_problem: int = Field(1, ge=1)
    """SFT rows per training problem (each with its own solution; batches sample rows)."""
    wrong_order_fraction: float = Field(0.0, ge=0, le=1)
    """Share of each problem's SFT rows written with the wrong strategy (:func:`~steer_bench.data.synthetic.
    left_to_right`): the warm start's uncertainty at the strategy fork. ``solutions_per_problem`` times it must be
    a whole number, so every problem gets exactly that mix and no problem's strategy can be memorised."""

    arithmetic_table: bool = False
    """Add every step of the task's arithmetic as a problem of its own (``7-42`` → ``7-42=-35;\\boxed{-35}``,
    :func:`~steer_bench.data.synthetic.arithmetic_table`): the facts the held-out problems need are then known,
    and the warm start's uncertainty is left at the strategy fork (docs/miniature.md). The steps come from every
    problem of the levels, held-out ones included — facts, never a held-out problem or its solution."""

    @model_validator(mode="after")
    def _whole_mix(self) -> SyntheticTaskConfig:
        wrong = self.wrong_order_fraction * self.solutions_per_problem
        if abs(wrong - round(wrong)) > 1e-9:
            raise ValueError(
                f"wrong_order_fraction ({self.wrong_order_fraction}) × solutions_per_problem "
                f"({self.solutions_per_problem}) must be a whole number of rows per problem"
            )
        return self


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(300, ge=259)
    """256 byte tokens + 3 special tokens + BPE merges."""


class TinyModelConfig(StrictModel):
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(512, ge=1)
    max_position_embeddings: int = Field(256, ge=16)
    """The context length vLLM and the trainer see (prompt + response)."""


class SFTConfig(StrictModel):
    max_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Cosine decay ends at lr · min_lr_ratio (at max_steps)."""
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(0, ge=0)
    """Held-out accuracy every N steps (0 = never)."""
    stop_accuracy: float | None = Field(None, gt=0, le=1)
    """Stop at the first check whose held-out T=1 accuracy reaches this (needs eval_every > 0)."""
    log_every: int = Field(50, ge=1)
    length_buckets: int = Field(1, ge=1)
    """Each batch is sorted by length and cut into this many micro-batches, each padded only to its own longest
    sequence; their summed token losses over the batch's token count give the same gradient as one padded batch
    (up to float summation order) for less compute on padding."""


class EvalConfig(StrictModel):
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(256, ge=1)
    """Prompts per generate call."""


class WarmstartConfig(StrictModel):
    seed: int = 0
    """Model init, batch order and evaluation sampling."""
    task: SyntheticTaskConfig = SyntheticTaskConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: TinyModelConfig = TinyModelConfig()
    sft: SFTConfig
    eval: EvalConfig = EvalConfig()


# --------------------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], *, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenization, ChatML template and left padding."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=PAD,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # a constructor argument is saved; an attribute set later is not (docs/recipe.md §R15)
    )


def check_reload(tokenizer: PreTrainedTokenizerFast, folder: Path, texts: list[str]) -> None:
    """Raise unless ``AutoTokenizer`` reloads ``folder`` with the same ids and settings for ``texts``.

    ``folder`` must hold the model's ``config.json``: for ``model_type: qwen2`` transformers rebuilds the
    tokenizer as ``Qwen2Tokenizer`` (its own pre-tokenizer), which is what every later step will load.
    """
    if not (Path(folder) / "config.json").is_file():
        raise SteerBenchError(f"warmstart: {folder} has no config.json; the reload check would load another class")
    reloaded = AutoTokenizer.from_pretrained(folder)
    for text in texts:
        before, after = tokenizer(text)["input_ids"], reloaded(text)["input_ids"]
        if before != after:
            raise SteerBenchError(
                f"warmstart: tokenizer ids change on reload ({type(reloaded).__name__}) for {text!r}"
            )
    if reloaded.padding_side != "left" or reloaded.eos_token != EOS or reloaded.pad_token != PAD:
        raise SteerBenchError(f"warmstart: reloaded tokenizer lost its settings: {reloaded}")


# --------------------------------------------------------------------------------------------------- model + data


def build_model(tokenizer: PreTrainedTokenizerFast, cfg: TinyModelConfig, *, seed: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def sft_rows(train: pd.DataFrame, task: SyntheticTaskConfig) -> pd.DataFrame:
    """Each training problem ``solutions_per_problem`` times, ``wrong_order_fraction`` of its rows with the
    left-to-right solution (the rest keep the dataset's correct one)."""
    k = task.solutions_per_problem
    wrong = round(task.wrong_order_fraction * k)
    rows = train.loc[train.index.repeat(k)].reset_index(drop=True)
    copy = pd.Series(range(len(rows))) % k
    rows.loc[copy < wrong, "solution"] = [left_to_right(p) for p in rows.loc[copy < wrong, "problem"]]
    if task.arithmetic_table:
        facts = [step.split("=") for step in arithmetic_table(task.levels)]
        table = pd.DataFrame(
            {
                "problem": [x for x, _ in facts],
                "prompt": [[{"role": "user", "content": x}] for x, _ in facts],
                "solution": [f"{x}={z};\\boxed{{{z}}}" for x, z in facts],
            }
        )
        rows = pd.concat([rows, table], ignore_index=True)
    return rows


def prompt_ids(tokenizer: PreTrainedTokenizerFast, df: pd.DataFrame) -> list[list[int]]:
    """Chat-templated prompt ids, one per row of a normalised-schema frame."""
    # apply_chat_template's return type covers every mode; tokenize=True, return_dict=False gives the ids
    return [
        cast(
            "list[int]",
            tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True, return_dict=False),
        )
        for p in df["prompt"]
    ]


def sft_tensors(tokenizer: PreTrainedTokenizerFast, df: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (N, L), labels (N, L)): prompt + solution + eos, right-padded; labels −100 off the response."""
    prompts = prompt_ids(tokenizer, df)
    responses = [
        tokenizer(s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for s in df["solution"]
    ]
    length = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    input_ids = torch.full((len(df), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(df), length), -100, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
    return input_ids, labels


# --------------------------------------------------------------------------------------------------- SFT + eval


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sft(
    model: Qwen2ForCausalLM,
    data: tuple[torch.Tensor, torch.Tensor],
    cfg: SFTConfig,
    *,
    seed: int,
    validate: Callable[[Qwen2ForCausalLM], float] | None = None,
) -> dict[str, Any]:
    """Train in place; ``validate(model) -> accuracy`` is called every ``cfg.eval_every`` steps if given."""
    input_ids, labels = data
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: lr_factor(s, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio),
    )
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list] = {"loss": [], "val_accuracy": []}
    running, step = [], 0
    model.train()
    lengths = (labels != -100).cumsum(1).argmax(1)  # index of each row's last label (right padding after it)
    for step in range(1, cfg.max_steps + 1):
        idx = torch.randint(len(input_ids), (cfg.batch_size,), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss_sum = batch_backward(model, (input_ids, labels, lengths), idx, buckets=cfg.length_buckets)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        running.append(loss_sum)
        if step % cfg.log_every == 0:
            running = _log_loss(history, step, running)
        if validate is not None and cfg.eval_every and step % cfg.eval_every == 0:
            acc = validate(model)
            model.train()
            history["val_accuracy"].append({"step": step, "accuracy": acc})
            log.info("sft step %d held-out accuracy %.3f", step, acc)
            if cfg.stop_accuracy is not None and acc >= cfg.stop_accuracy:
                break
    if running:
        _log_loss(history, step, running)
    model.eval()
    return {"steps": step, "history": history, "final_loss": history["loss"][-1]["loss"]}


def batch_backward(
    model: Qwen2ForCausalLM, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], idx: torch.Tensor, *, buckets: int
) -> float:
    """Accumulate the gradient of the batch ``idx``'s token-mean loss; returns that loss.

    ``data``: (input_ids, labels, index of each row's last label). The batch is sorted by length and cut into
    ``buckets`` micro-batches, each padded only to its own longest row; each part's summed token loss is divided
    by the whole batch's label count, so the parts' gradients add up to the one padded batch's.
    """
    input_ids, labels, last = data
    if buckets == 1:  # HF's own token mean over the one padded batch
        width = int(last[idx].max()) + 1  # right padding: drop all-pad columns (causal, unseen)
        loss = model(input_ids=input_ids[idx, :width], labels=labels[idx, :width]).loss
        loss.backward()
        return loss.item()
    n_labels = int((labels[idx] != -100).sum())
    total = 0.0
    for part, width in length_buckets(idx, last, buckets):
        x, y = input_ids[part, :width], labels[part, :width]
        loss = model(input_ids=x, labels=y, num_items_in_batch=n_labels).loss
        loss.backward()
        total += loss.item()
    return total


def length_buckets(idx: torch.Tensor, last: torch.Tensor, buckets: int) -> list[tuple[torch.Tensor, int]]:
    """The rows ``idx`` sorted by length (``last``: each row's last label) and cut into ``buckets`` parts, each
    with its width: up to its longest row, since the columns after it are right padding in every row of the part
    (causal, unseen)."""
    return [(part, int(last[part].max()) + 1) for part in idx[last[idx].argsort(stable=True)].tensor_split(buckets)]


def _log_loss(history: dict[str, list], step: int, losses: list[float]) -> list[float]:
    """Record the mean loss of the steps since the last record; returns a fresh accumulator."""
    history["loss"].append({"step": step, "loss": sum(losses) / len(losses)})
    log.info("sft step %d loss %.4f", step, history["loss"][-1]["loss"])
    return []


def evaluate(
    model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, df: pd.DataFrame, cfg: EvalConfig, *, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One sampled response per problem -> (metrics, one row per problem). Entropy: nats per response token."""
    engine = HFEngine(model, tokenizer)
    prompts = prompt_ids(tokenizer, df)
    responses: list[list[int]] = []
    finished: list[bool] = []
    entropy_sum, n_tokens = 0.0, 0.0
    for k, start in enumerate(range(0, len(prompts), cfg.batch_size)):
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed + k)
        batch = engine.generate(prompts[start : start + cfg.batch_size], params)
        padded = batch.padded(tokenizer.pad_token_id)
        with torch.no_grad():
            _, entropy = score_responses(model, padded, temperature=cfg.temperature)
        entropy_sum += entropy.sum().item()
        n_tokens += padded.response_mask.sum().item()
        responses += batch.response_ids
        finished += batch.finished
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    correct = [grade_one(t, gold).correct for t, gold in zip(texts, df["answer"], strict=True)]
    by_level = pd.Series(correct, dtype=float).groupby(df["level"].to_numpy()).mean()
    metrics = {
        "accuracy": sum(correct) / len(correct),
        "accuracy_by_level": {str(lv): acc for lv, acc in by_level.items()},
        "response_entropy": entropy_sum / max(n_tokens, 1.0),
        "response_length": n_tokens / len(responses),
        "finished_fraction": sum(finished) / len(finished),
        "n": len(responses),
    }
    rows = [
        {"problem_id": pid, "problem": prob, "answer": gold, "response": text, "correct": ok}
        for pid, prob, gold, text, ok in zip(
            df["problem_id"], df["problem"], df["answer"], texts, correct, strict=True
        )
    ]
    return metrics, rows


# --------------------------------------------------------------------------------------------------- entry points


def warmstart(cfg: WarmstartConfig, out_dir: str | Path) -> dict[str, Any]:
    """Build, train and evaluate the tiny model; write it to ``out_dir`` atomically; return the metrics."""
    bad = sorted(set(cfg.task.levels) - set(LEVELS))
    if bad or not cfg.task.levels:
        raise SteerBenchError(f"warmstart: task.levels {cfg.task.levels} invalid; valid levels: {sorted(LEVELS)}")
    if cfg.sft.stop_accuracy is not None and not cfg.sft.eval_every:
        raise SteerBenchError("warmstart: sft.stop_accuracy needs sft.eval_every > 0")
    t0 = time.perf_counter()
    pool = make_synthetic("train", cfg.task.n_train + cfg.task.n_val, seed=cfg.task.seed, levels=cfg.task.levels)
    train, val = sft_rows(pool.iloc[: cfg.task.n_train], cfg.task), pool.iloc[cfg.task.n_train :]
    test = make_synthetic("test", cfg.task.n_test, seed=cfg.task.seed, levels=cfg.task.levels)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        texts = [*train["problem"], *train["solution"], "system\n", "user\n", "assistant\n"]
        tokenizer = train_tokenizer(texts, vocab_size=cfg.tokenizer.vocab_size)
        model = build_model(tokenizer, cfg.model, seed=cfg.seed)
        model.config.save_pretrained(tmp)  # config.json decides which tokenizer class AutoTokenizer rebuilds
        tokenizer.save_pretrained(tmp)
        chats = [tokenizer.apply_chat_template(list(p), tokenize=False) for p in train["prompt"][:100]]
        check_reload(tokenizer, tmp, chats + texts[:100] + ["any text: Ünïcode ✓ 12 + 34"])
        t1 = time.perf_counter()
        val_cfg = cfg.eval.model_copy(update={"batch_size": len(val)})

        def validate(m: Qwen2ForCausalLM) -> float:
            return evaluate(m, tokenizer, val, val_cfg, seed=cfg.seed + 1)[0]["accuracy"]

        trained = sft(model, sft_tensors(tokenizer, train), cfg.sft, seed=cfg.seed, validate=validate)
        t2 = time.perf_counter()
        test_metrics, rows = evaluate(model, tokenizer, test, cfg.eval, seed=cfg.seed + 2)
        t3 = time.perf_counter()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        metrics = {
            "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "sft_steps": trained["steps"],
            "sft_loss": trained["final_loss"],
            "sft_history": trained["history"],
            "test": test_metrics,
            "wall_time_s": {"data_tokenizer": t1 - t0, "sft": t2 - t1, "eval": t3 - t2, "total": t3 - t0},
            "seed": cfg.seed,
            "torch_threads": torch.get_num_threads(),
        }
        write_json(tmp / "warmstart.json", metrics)
        write_text(tmp / "warmstart.yaml", dump_yaml(cfg))
        write_jsonl(tmp / "eval_samples.jsonl", rows)
    log.info("warmstart: %s", {k: metrics[k] for k in ("params", "sft_steps", "sft_loss", "test")})
    return metrics
