"""`steer-bench warmstart`: the CPU miniature's starting policy — a tokenizer and a tiny Qwen2 model trained by SFT
on the synthetic task, then evaluated (:mod:`steer_bench.warmstart.build` has the steps). A program of its own:
the RL trainer (:mod:`steer_bench.train`) only reads the model folder it writes."""

from steer_bench.warmstart.build import WarmstartConfig, prompt_ids, warmstart

__all__ = ["WarmstartConfig", "prompt_ids", "warmstart"]
