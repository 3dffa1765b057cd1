"""A NaN anywhere in training stops the run with the named error and keeps the last good checkpoint: in the
loss, the gradient, the weights after an optimizer step, the old log-probs, and the rollout's logits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from trainrun import make_cfg
from transformers import AutoModelForCausalLM, AutoTokenizer

from steer_bench.config.method import load_method
from steer_bench.errors import NonFiniteError
from steer_bench.files import read_json, read_jsonl
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.hf import HFEngine
from steer_bench.train import train
from steer_bench.train.guards import check_token_values


def _assert_last_checkpoint_good(run: Path, before_step: int) -> None:
    last = run / "checkpoints" / "last"
    saved = read_json(last / "state.json")["step"]
    assert saved < before_step
    model = AutoModelForCausalLM.from_pretrained(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, before_step))
    assert not (run / "train.done").exists()


@pytest.mark.slow
def test_weights_made_nan_by_an_optimizer_step_stop_the_run(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault: the 5th optimizer step (step 3's first mini-batch: 2 per step) writes a NaN into one weight.
    # Loss and gradient norm are finite at that point; only the weight check can see it.
    real_step, calls = torch.optim.AdamW.step, []

    def poisoned_step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        out = real_step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            with torch.no_grad():
                self.param_groups[0]["params"][3].view(-1)[0] = math.nan
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    cfg = make_cfg(model_dir, data, steps=4)
    with pytest.raises(NonFiniteError, match=r"step 3: the weights are not finite after the optimizer step") as err:
        train(cfg, load_method("grpo"), tmp_path)
    assert "last good checkpoint" in str(err.value)
    assert "(step 2)" in str(err.value)
    _assert_last_checkpoint_good(tmp_path, before_step=3)


@pytest.mark.slow
def test_an_absurd_learning_rate_ends_in_the_named_error(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    # lr 1e30: which guard fires first (weights, logits in generate, old log-probs, loss) depends on the CPU's
    # float behaviour; every one of them must give the named error, never a raw traceback from elsewhere.
    cfg = make_cfg(model_dir, data, steps=4, optim={"lr": 1e30, "weight_decay": 0.0, "grad_clip": 1e30})
    with pytest.raises(NonFiniteError, match=r"step \d: .*not finite|step \d: the .* is (nan|inf)") as err:
        train(cfg, load_method("grpo"), tmp_path)
    assert "last good checkpoint" in str(err.value)
    assert not (tmp_path / "train.done").exists()


def test_rollout_logits_that_are_not_finite_raise_the_named_error(model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = HFEngine(model, tokenizer)
    prompt = tokenizer("Q:1+2")["input_ids"]
    params = SamplingParams(max_new_tokens=4, temperature=1.0, top_p=1.0, n=2, seed=0)
    assert len(engine.generate([prompt], params).response_ids) == 2  # healthy weights sample fine
    with torch.no_grad():
        model.model.norm.weight.fill_(math.inf)  # finite hidden states × inf gain: ±inf/NaN logits
    with pytest.raises(NonFiniteError, match="next-token scores are not finite"):
        engine.generate([prompt], params)


def test_token_checks_look_only_at_response_tokens() -> None:
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    values = torch.tensor([[0.1, -0.2, math.nan], [math.inf, 0.3, 0.4]])  # non-finite only where masked out
    check_token_values({"the old log-prob": values}, mask, where="(test)")
    values[1, 2] = math.nan
    with pytest.raises(NonFiniteError, match=r"the old log-prob is not finite \(test\) on 1 .*row 1, position 2"):
        check_token_values({"the old log-prob": values}, mask, where="(test)")
