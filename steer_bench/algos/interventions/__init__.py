"""The token-level interventions, one file each; importing the package registers them (``@register``)."""

from steer_bench.algos.interventions import clip_cov, fork_tokens, kl_cov, ppo, stare, steer, steer_signed

__all__ = ["clip_cov", "fork_tokens", "kl_cov", "ppo", "stare", "steer", "steer_signed"]
