"""A tiny SFT'd Qwen2 model for tests, built by the real warm start from ``configs/warmstart/smoke.yaml``.

Built once per test session (a few seconds on 2 cores) and shared by every module that asks::

    import pytest
    from tiny import tiny_model_dir  # tests/ is on sys.path under pytest

    @pytest.fixture(scope="session")
    def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tiny_model_dir(tmp_path_factory)

The folder is a normal HF model folder (model, tokenizer with ``padding_side="left"``, eos ``<|im_end|>``,
pad ``<|endoftext|>``, ChatML template) plus ``warmstart.json``; treat it as read-only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from steer_bench.config import load_model
from steer_bench.warmstart import WarmstartConfig, warmstart

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO / "configs" / "warmstart" / "smoke.yaml"
_BUILT: dict[str, Path] = {}


def build_tiny_model(out_dir: Path, overrides: list[str] | None = None) -> Path:
    """Run the smoke warm start into ``out_dir`` (single-threaded: a model this small gains nothing from
    two threads, and one thread is robust to a busy machine)."""
    cfg = load_model(WarmstartConfig, SMOKE_CONFIG, overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        warmstart(cfg, out_dir)
    finally:
        torch.set_num_threads(threads)
    return out_dir


def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny model folder (built on first use)."""
    if "smoke" not in _BUILT:
        _BUILT["smoke"] = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return _BUILT["smoke"]


def load_tiny(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh (model, tokenizer) pair from the folder: tests may change the model freely."""
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, problems: list[str]) -> list[list[int]]:
    """Token ids of chat-templated one-turn prompts, ready for a rollout engine."""
    chats = [[{"role": "user", "content": p}] for p in problems]
    return [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in chats
    ]
