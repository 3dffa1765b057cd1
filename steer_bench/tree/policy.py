"""A tabular softmax policy over the tree's states, exposed as a model: tokens in, (B, T, V) logits out.

Every state has its own free logit vector (one row of ``table``), so an update at one state changes no
other state's distribution — the exact setting of the paper's single-state analysis. The library's
losses see ordinary (B, T) log-probs and entropies computed from these logits, as they would for an LM.
"""

from __future__ import annotations

import torch
from torch import nn

from steer_bench.tree.task import TreeTask


class TabularPolicy(nn.Module):
    """π(a | s) = softmax(table[s])_a with ``table`` of shape (S, K), S = task.num_states."""

    def __init__(self, task: TreeTask, *, init_std: float, seed: int) -> None:
        super().__init__()
        self.task = task
        gen = torch.Generator().manual_seed(seed)
        init = init_std * torch.randn(task.num_states, task.K, generator=gen, dtype=torch.float64)
        self.table = nn.Parameter(init)

    def forward(self, problems: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """problems (B,), responses (B, T) -> logits (B, T, K): the distribution each token was drawn from."""
        return self.table[self.task.state_ids(problems, responses)]

    @torch.no_grad()
    def sample(self, problems: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw one response per entry of ``problems`` (B,) at temperature 1 -> (B, D) long."""
        task = self.task
        base = task.table_of(problems) * task.states_per_table
        prefix = torch.zeros_like(problems)  # the prefix so far as a base-K number (state_ids' j_t)
        tokens, offset = [], 0
        for rows in task.rows:
            probs = torch.softmax(self.table[base + offset + prefix % rows], dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            tokens.append(token)
            prefix = prefix * task.K + token
            offset += rows
        return torch.stack(tokens, dim=1)

    @torch.no_grad()
    def probs(self) -> torch.Tensor:
        """π for every state, (S, K)."""
        return torch.softmax(self.table, dim=-1)
