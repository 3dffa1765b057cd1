"""Prompt templates, and the instruction formats of the STEER release that ``paper`` reproduces exactly.

Templates (selectable per dataset; the chat template is applied later, by the model's tokenizer):

- ``paper``: the prompt as the STEER release ships it. Each dataset has a release *format* (``FORMATS``): an
  instruction prefix/suffix around the problem (DAPO ``\\boxed{}`` for training, DAPO ``Answer:`` for
  AIME/AMC, the same with ``$Answer`` blanked for GSM8K/Omni, none for MATH500/Minerva/OlympiadBench).
- ``qwen_boxed``: the Qwen2.5-Math harness ``qwen-boxed`` prompt (system "You are a helpful assistant.", the
  problem + "\\nPlease reason step by step, and put your final answer within \\boxed{}.").
- ``dapo_answer``: the DAPO "Answer:" instruction around the problem.

The raw problem is recovered from a release prompt by stripping its format's prefix and suffix
(:func:`split_instruction`), not read from ``extra_info.raw_problem``, which is corrupted in aime25/amc23.
A format can have several *variants* (DAPO-Math-17k's Chinese rows carry a Chinese instruction, 20 of them
twice); :func:`render` with the detected variant re-creates the original prompt exactly.
"""

from __future__ import annotations

from steer_bench.errors import SteerBenchError

_SOLVE = "Solve the following math problem step by step. The last line of your response should be of the form "
_ANSWER_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
_ZH_TAIL = (
    "的格式输出最终答案。如果是选择题，请按顺序输出正确的选项，不带任何标点或空格。"
    "对于其他类型的问题，请只输出最终答案的数值。"
)
_ZH = '\n让我们一步一步地思考。请以"Answer: \\boxed{<final_answer>}"' + _ZH_TAIL
_ZH_CURLY = "\n让我们一步一步地思考。请以“Answer: \\boxed{<final_answer>}”" + _ZH_TAIL

# format -> variants (prefix, suffix); variant 0 is what new prompts are rendered with.
FORMATS: dict[str, tuple[tuple[str, str], ...]] = {
    "dapo_boxed": (
        (
            _SOLVE + "\\boxed{Answer} where Answer is the answer to the problem.\n\n",
            "\n\nRemember to put your answer in \\boxed{...} format on its own line.",
        ),
        ("", _ZH_CURLY + _ZH),  # DAPO-Math-17k's Chinese rows, 20 with the instruction twice
        ("", _ZH),
    ),
    "dapo_answer": (
        (_SOLVE + "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n", _ANSWER_SUFFIX),
    ),
    # GSM8K and Omni-MATH in the release: the same with "$Answer" blanked out
    "dapo_answer_blank": (
        (_SOLVE + "Answer:  (without quotes) where  is the answer to the problem.\n\n", _ANSWER_SUFFIX),
    ),
    "bare": (("", ""),),
}
TEMPLATES = ("paper", "qwen_boxed", "dapo_answer")
QWEN_SYSTEM = "You are a helpful assistant."
QWEN_BOXED_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def split_instruction(content: str, fmt: str) -> tuple[str, int] | None:
    """(raw problem, variant) if ``content`` is a prompt of format ``fmt`` around a non-empty problem, else None.

    The ``bare`` format matches any content (the problem is the content itself)."""
    for variant, (prefix, suffix) in enumerate(FORMATS[fmt]):
        if content.startswith(prefix) and content.endswith(suffix) and len(content) > len(prefix) + len(suffix):
            return content[len(prefix) : len(content) - len(suffix)], variant
    return None


def render(template: str, problem: str, *, fmt: str, variant: int = 0) -> list[dict[str, str]]:
    """The prompt messages of ``template`` for ``problem``; ``fmt``/``variant`` are used by ``paper`` only."""
    if template == "paper":
        prefix, suffix = FORMATS[fmt][variant]
        return [{"role": "user", "content": prefix + problem + suffix}]
    if template == "qwen_boxed":
        return [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": problem + QWEN_BOXED_SUFFIX}]
    if template == "dapo_answer":
        prefix, suffix = FORMATS["dapo_answer"][0]
        return [{"role": "user", "content": prefix + problem + suffix}]
    raise SteerBenchError(f"unknown prompt template {template!r}; valid: {list(TEMPLATES)}")
