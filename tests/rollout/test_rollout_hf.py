"""The rollout interface and the ``hf`` engine, on the tiny SFT'd model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import chat_prompt_ids, load_tiny, tiny_model_dir

from steer_bench.errors import SteerBenchError
from steer_bench.rollout import HFEngine, RolloutBatch, SamplingParams, logprob_gap, make_engine, score_responses

PROBLEMS = ["3+4", "12*7", "19-5", "8*8", "1+20"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def model_tok(tiny_dir: Path):
    return load_tiny(tiny_dir)


@pytest.fixture(scope="module")
def prompts(model_tok) -> list[list[int]]:
    tok = model_tok[1]
    # Different lengths, so left padding is exercised; one prompt without the chat template.
    return [*chat_prompt_ids(tok, PROBLEMS), tok("7+7")["input_ids"]]


@pytest.fixture(scope="module")
def engine(model_tok) -> HFEngine:
    return make_engine("hf", *model_tok)


def test_padded_layout_by_hand() -> None:
    batch = RolloutBatch(
        prompt_index=[0, 1],
        prompt_ids=[[5, 6, 7], [8]],
        response_ids=[[9, 2], [10, 11, 12]],
        finished=[True, False],
        response_logprobs=[[-0.5, -1.0], [-0.1, -0.2, -0.3]],
    )
    t = batch.padded(pad_token_id=0)
    assert t.prompt_len == 3
    assert t.input_ids.tolist() == [[5, 6, 7, 9, 2, 0], [0, 0, 8, 10, 11, 12]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert t.position_ids.tolist() == [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]
    assert t.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert t.response_ids.tolist() == [[9, 2, 0], [10, 11, 12]]
    assert torch.allclose(t.response_logprobs, torch.tensor([[-0.5, -1.0, 0.0], [-0.1, -0.2, -0.3]]))
    assert batch.truncated == [False, True]
    assert logprob_gap(t.response_logprobs, torch.zeros(2, 3), t.response_mask).item() == pytest.approx(2.1 / 5)


def test_batch_and_params_validation() -> None:
    with pytest.raises(SteerBenchError, match="top_p"):
        SamplingParams(max_new_tokens=4, top_p=0.0)
    with pytest.raises(SteerBenchError, match="n must be"):
        SamplingParams(max_new_tokens=4, n=0)
    with pytest.raises(ValueError, match="differ in length"):
        RolloutBatch(prompt_index=[0], prompt_ids=[[1]], response_ids=[[2]], finished=[True], response_logprobs=[[]])


def test_errors_name_the_culprit(engine: HFEngine, model_tok) -> None:
    with pytest.raises(SteerBenchError, match=r"prompt\(s\) \[1\] are empty"):
        engine.generate([[1, 2], []], SamplingParams(max_new_tokens=2))
    with pytest.raises(SteerBenchError, match="unknown engine 'sglang'; valid engines: hf, vllm"):
        make_engine("sglang", *model_tok)


@pytest.mark.slow
def test_layout_n_per_prompt_and_masks(engine: HFEngine, prompts: list[list[int]], model_tok) -> None:
    tok = model_tok[1]
    n = 3
    batch = engine.generate(prompts, SamplingParams(max_new_tokens=24, n=n, seed=0))
    assert len(batch) == len(prompts) * n
    assert batch.prompt_index == [i for i in range(len(prompts)) for _ in range(n)]
    assert batch.prompt_ids == [prompts[i] for i in batch.prompt_index]
    t = batch.padded(tok.pad_token_id)
    p = max(len(x) for x in prompts)
    assert t.prompt_len == p
    for row in range(len(batch)):
        prompt, response = batch.prompt_ids[row], batch.response_ids[row]
        assert t.input_ids[row, p - len(prompt) : p].tolist() == prompt
        assert (t.input_ids[row, : p - len(prompt)] == tok.pad_token_id).all()  # left padding
        assert t.attention_mask[row].sum().item() == len(prompt) + len(response)
        assert t.response_mask[row].sum().item() == len(response)
        assert t.response_ids[row, : len(response)].tolist() == response
        assert t.position_ids[row, p - len(prompt)].item() == 0  # the prompt starts at position 0


def test_eos_and_truncation(engine: HFEngine, prompts: list[list[int]], model_tok) -> None:
    eos = model_tok[1].eos_token_id
    batch = engine.generate(prompts, SamplingParams(max_new_tokens=24, n=3, seed=1))
    assert any(batch.finished)
    for response, finished in zip(batch.response_ids, batch.finished, strict=True):
        assert (response[-1] == eos) == finished
        assert eos not in response[:-1]  # cut at the first eos: nothing generated after it is kept
        if not finished:
            assert len(response) == 24
    short = engine.generate(prompts, SamplingParams(max_new_tokens=3, n=2, seed=1))
    assert all(len(r) <= 3 for r in short.response_ids)
    assert any(short.truncated)
    for response, truncated in zip(short.response_ids, short.truncated, strict=True):
        assert truncated == (eos not in response)


@pytest.mark.slow
def test_seeded_generation_is_reproducible_and_leaves_global_rng_alone(engine: HFEngine, prompts) -> None:
    params = SamplingParams(max_new_tokens=16, n=4, seed=7)
    state = torch.get_rng_state()
    a = engine.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), state)
    b = engine.generate(prompts, params)
    c = engine.generate(prompts, SamplingParams(max_new_tokens=16, n=4, seed=8))
    assert a == b
    assert a.response_ids != c.response_ids
    assert len(set(map(tuple, a.response_ids))) > len(prompts)  # n samples of one prompt differ


@pytest.mark.slow
def test_engine_logprobs_match_the_trainer_forward(engine: HFEngine, prompts, model_tok) -> None:
    # score_responses is the trainer's forward on the padded layout (left padding + position ids): it must
    # reproduce what generate sampled from, token by token, at any temperature.
    model, tok = model_tok
    for temperature in (1.0, 0.7):
        batch = engine.generate(prompts, SamplingParams(max_new_tokens=24, n=2, temperature=temperature, seed=3))
        t = batch.padded(tok.pad_token_id)
        with torch.no_grad():
            logp, entropy = score_responses(model, t, temperature=temperature)
        assert logprob_gap(t.response_logprobs, logp, t.response_mask).item() < 1e-5
        assert torch.allclose(t.response_logprobs, logp, atol=1e-4)
        assert (entropy[t.response_mask == 0] == 0).all()
        assert (entropy[t.response_mask == 1] >= 0).all()
        assert (-logp[t.response_mask == 1] >= 0).all()


@pytest.mark.slow
def test_top_p_renormalises(engine: HFEngine, prompts, model_tok) -> None:
    # Under top-p the sampled token's processed log-prob is its raw log-prob minus log(nucleus mass) >= it.
    model, tok = model_tok
    batch = engine.generate(prompts, SamplingParams(max_new_tokens=24, n=2, top_p=0.7, seed=3))
    t = batch.padded(tok.pad_token_id)
    with torch.no_grad():
        logp, _ = score_responses(model, t, temperature=1.0)
    diff = (t.response_logprobs - logp)[t.response_mask == 1]
    assert (diff >= -1e-5).all()
    assert (diff > 1e-3).any()


def test_greedy_and_vanishing_top_p_pick_the_argmax(engine: HFEngine, prompts, model_tok) -> None:
    model, tok = model_tok
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=20, temperature=0, seed=0))
    assert (
        greedy.response_ids
        == engine.generate(prompts, SamplingParams(max_new_tokens=20, temperature=0, seed=9)).response_ids
    )
    nucleus = engine.generate(prompts, SamplingParams(max_new_tokens=20, top_p=1e-6, n=2, seed=4))
    assert nucleus.response_ids == [r for r in greedy.response_ids for _ in range(2)]
    t = greedy.padded(tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=t.input_ids, attention_mask=t.attention_mask, position_ids=t.position_ids).logits
    argmax = logits[:, t.prompt_len - 1 : -1].argmax(-1)
    assert torch.equal(argmax[t.response_mask == 1], t.response_ids[t.response_mask == 1])


def test_temperature_controls_how_likely_samples_are(engine: HFEngine, prompts, model_tok) -> None:
    # Colder sampling picks likelier tokens: the mean NLL of the samples under the untempered model rises with T.
    model, tok = model_tok

    def mean_nll(temperature: float) -> float:
        batch = engine.generate(prompts, SamplingParams(max_new_tokens=12, n=4, temperature=temperature, seed=0))
        t = batch.padded(tok.pad_token_id)
        with torch.no_grad():
            logp, _ = score_responses(model, t, temperature=1.0)
        return -(logp.sum() / t.response_mask.sum()).item()

    assert mean_nll(0.3) < mean_nll(1.0) < mean_nll(2.0)


def test_checkpoint_sampling_defaults_do_not_leak(tiny_dir: Path, prompts) -> None:
    # A checkpoint's generation_config (Qwen2.5-Math ships top_k/top_p/repetition_penalty) must not change
    # RL sampling: with top_k=1 leaking in, sampling would collapse to greedy.
    model, tok = load_tiny(tiny_dir)
    params = SamplingParams(max_new_tokens=16, n=4, seed=11)
    clean = HFEngine(model, tok).generate(prompts, params)
    model.generation_config.top_k = 1
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.top_p = 0.5
    assert HFEngine(model, tok).generate(prompts, params) == clean


def test_chunked_generation_keeps_the_layout(model_tok, prompts) -> None:
    engine = HFEngine(*model_tok, max_batch_size=2)
    batch = engine.generate(prompts, SamplingParams(max_new_tokens=8, n=2, seed=0))
    assert batch.prompt_index == [i for i in range(len(prompts)) for _ in range(2)]
    assert batch.prompt_ids == [prompts[i] for i in batch.prompt_index]
    assert batch == engine.generate(prompts, SamplingParams(max_new_tokens=8, n=2, seed=0))


def test_generation_restores_train_mode(model_tok, prompts) -> None:
    model, tok = model_tok
    model.train()
    try:
        HFEngine(model, tok).generate(prompts[:1], SamplingParams(max_new_tokens=2))
        assert model.training
    finally:
        model.eval()
