"""A synthetic verifiable task shaped as a reasoning tree, and exact calculus on it.

Each problem p is a root; a response is a sequence of D tokens in {0..K-1} (a root-to-leaf path); a
verifier accepts a subset of the K^D leaves. The policy has its own free logits at every *state*:

- ``state: prev``   — state = (table, depth t, previous token): a Markov policy, 1 + (D-1)·K states per table;
- ``state: prefix`` — state = (table, full prefix): the complete tree, (K^D - 1)/(K - 1) states per table.

``share`` problems use one table (table g = p // share). With ``share: 1`` every problem has its own
states (no interference); with ``share > 1`` problems compete for shared logits — the tabular stand-in for
an LM's generalisation, where collapsing onto one problem's path costs the others' pass@k.

Verifiers (``kind``), each a deterministic automaton over the tokens (q_0 = 0, q_{t+1} = δ_p(t, q_t, a_t),
correct iff q_D is accepting):

- ``mod``     — correct iff (Σ_t a_t + c_p) mod m == 0 with a random offset c_p per problem (≈ 1/m of the
  leaves; every wrong leaf is a near miss, one changed token away from a correct one). q = Σ a mod m.
- ``targets`` — each problem has ``targets`` secret leaves; correct iff within Hamming distance ``radius``
  of one (sparse reward; the leaves at distance radius + 1 are the near misses). q = the distances so far
  to each target, capped at radius + 1.

Because the verifier is an automaton, the joint law of (policy state, automaton state) at each depth is a
small dynamic programme: the exact expected accuracy (probability mass on correct leaves), the occupancy of
every state and hence the exact expected token entropy of a rollout, without sampling.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from steer_bench.config import StrictModel
from steer_bench.errors import SteerBenchError

MAX_AUTOMATON_STATES = 4096
MAX_TABLE_ROWS = 1 << 21


class ModVerifier(StrictModel):
    kind: Literal["mod"]
    modulus: int = Field(ge=2)


class TargetsVerifier(StrictModel):
    kind: Literal["targets"]
    targets: int = Field(ge=1)
    radius: int = Field(ge=0)


class TreeTaskConfig(StrictModel):
    problems: int = Field(ge=1)
    depth: int = Field(ge=1)
    branching: int = Field(ge=2)
    state: Literal["prev", "prefix"]
    share: int = Field(ge=1)
    verifier: Annotated[ModVerifier | TargetsVerifier, Field(discriminator="kind")]

    @model_validator(mode="after")
    def _sizes(self) -> TreeTaskConfig:
        v = self.verifier
        q = v.modulus if isinstance(v, ModVerifier) else (v.radius + 2) ** v.targets
        if q > MAX_AUTOMATON_STATES:
            raise ValueError(f"verifier needs {q} automaton states (> {MAX_AUTOMATON_STATES}); use fewer targets")
        rows = math.ceil(self.problems / self.share) * sum(_rows(self.state, self.branching, self.depth))
        if rows > MAX_TABLE_ROWS:
            raise ValueError(f"the policy table would have {rows} states (> {MAX_TABLE_ROWS}); use state: prev")
        return self


def _rows(state: str, K: int, D: int) -> list[int]:
    """R_t, the states per table at depth t: 1 at the root, then K (``prev``) or K^t (``prefix``)."""
    return [1] + [K] * (D - 1) if state == "prev" else [K**t for t in range(D)]


@dataclass(frozen=True)
class TreeTask:
    """One instance of the task (problems drawn from a seed): the verifier automaton, no parameters.

    ``delta`` (P, D, Q, K) long: next automaton state; ``accept`` (P, Q) bool.
    """

    cfg: TreeTaskConfig
    delta: torch.Tensor
    accept: torch.Tensor

    @property
    def P(self) -> int:
        return self.cfg.problems

    @property
    def D(self) -> int:
        return self.cfg.depth

    @property
    def K(self) -> int:
        return self.cfg.branching

    @property
    def tables(self) -> int:
        return math.ceil(self.P / self.cfg.share)

    @property
    def rows(self) -> list[int]:
        return _rows(self.cfg.state, self.K, self.D)

    @property
    def states_per_table(self) -> int:
        return sum(self.rows)

    @property
    def num_states(self) -> int:
        return self.tables * self.states_per_table

    def table_of(self, problems: torch.Tensor) -> torch.Tensor:
        return problems // self.cfg.share

    def state_ids(self, problems: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Row of the logit table that generates each response token.

        problems (B,) long, responses (B, T) long with T ≤ D -> (B, T) long. Token t is drawn at the state
        of its prefix j_t = Σ_{u<t} a_u K^{t-1-u}: row = table·S + offset_t + (j_t mod R_t).
        """
        base = self.table_of(problems) * self.states_per_table
        prefix = torch.zeros_like(problems)
        cols, offset = [], 0
        for t, rows in enumerate(self.rows[: responses.shape[1]]):
            cols.append(base + offset + prefix % rows)
            prefix = prefix * self.K + responses[:, t]
            offset += rows
        return torch.stack(cols, dim=1)

    def score(self, problems: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """The verifier: (B,) problems, (B, D) responses -> (B,) float64 rewards in {0, 1}."""
        q = torch.zeros_like(problems)
        for t in range(self.D):
            q = self.delta[problems, t, q, responses[:, t]]
        return self.accept[problems, q].to(torch.float64)

    def level_probs(self, table: torch.Tensor) -> list[torch.Tensor]:
        """Split a per-state table (S, ...) by depth: D tensors (P, R_t, ...), each problem's rows."""
        per_table = table.view(self.tables, self.states_per_table, *table.shape[1:])
        owner = self.table_of(torch.arange(self.P))
        out, offset = [], 0
        for rows in self.rows:
            out.append(per_table[:, offset : offset + rows][owner])
            offset += rows
        return out

    def occupancy(self, probs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Exact law of the rollout under the policy ``probs`` (S, K).

        Returns (occ, acc): occ[t] (P, R_t) = probability that a response to problem p visits each depth-t
        state; acc (P,) = probability that the response is correct. Dynamic programme over
        x_t[p, r, q] = P(state row r, automaton state q at depth t): sum over the token a drawn at (r),
        moving to row r' (= a for ``prev``, r·K + a for ``prefix``) and automaton state δ_p(t, q, a).
        """
        Q = self.accept.shape[1]
        x = torch.zeros(self.P, 1, Q, dtype=probs.dtype)
        x[:, 0, 0] = 1.0
        occ = []
        for t, pi in enumerate(self.level_probs(probs)):  # pi (P, R_t, K)
            occ.append(x.sum(-1))
            if self.cfg.state == "prev" or t == self.D - 1:
                w = torch.einsum("prq,pra->pqa", x, pi).unsqueeze(1)  # the next row is a: sum over r now
            else:
                w = torch.einsum("prq,pra->prqa", x, pi)  # the next row is r·K + a: keep r
            idx = self.delta[:, t].unsqueeze(1).expand_as(w)  # (P, ., Q, K) -> q'
            x = torch.zeros_like(w).scatter_add_(2, idx, w)  # (P, R, Q', K): indexed by q'
            x = x.transpose(2, 3).reshape(self.P, -1, Q)  # rows r·K + a (or a), then q'
        acc = (x.sum(1) * self.accept).sum(-1)
        return occ, acc

    def expected_entropy(self, occ: list[torch.Tensor], entropy: torch.Tensor) -> torch.Tensor:
        """(1/D)·E_{a~π}[Σ_t H(s_t)] per problem (P,): the exact value of a rollout's token-mean entropy.

        occ from :meth:`occupancy`; entropy (S,) the entropy of every state.
        """
        levels = self.level_probs(entropy)
        return sum((o * h).sum(-1) for o, h in zip(occ, levels, strict=True)) / self.D


def pass_at_k(acc: torch.Tensor, k: int) -> torch.Tensor:
    """Exact pass@k of k independent samples given per-problem accuracy ``acc``: 1 − (1 − acc)^k."""
    return 1.0 - (1.0 - acc).clamp(0.0, 1.0) ** k


def make_task(cfg: TreeTaskConfig, seed: int) -> TreeTask:
    """Draw the problems (offsets or target leaves) from ``seed``; the same seed gives the same task."""
    gen = torch.Generator().manual_seed(seed)
    K, D, P, v = cfg.branching, cfg.depth, cfg.problems, cfg.verifier
    a = torch.arange(K)
    if isinstance(v, ModVerifier):
        q = torch.arange(v.modulus)
        delta = ((q.view(-1, 1) + a) % v.modulus).expand(P, D, -1, -1)
        offsets = torch.randint(0, v.modulus, (P, 1), generator=gen)
        accept = (q + offsets) % v.modulus == 0
    else:
        cap = v.radius + 1
        # automaton state = capped distances (d_1..d_n) to the n targets, numbered in base cap + 1
        dists = torch.tensor(list(itertools.product(range(cap + 1), repeat=v.targets)))  # (Q, n)
        weights = (cap + 1) ** torch.arange(v.targets - 1, -1, -1)
        targets = torch.randint(0, K, (P, v.targets, D), generator=gen)
        miss = (a.view(1, 1, 1, K) != targets.unsqueeze(-1)).long()  # (P, n, D, K)
        new = (dists.view(1, 1, -1, v.targets, 1) + miss.permute(0, 2, 1, 3).unsqueeze(2)).clamp(max=cap)
        delta = (new * weights.view(1, 1, 1, -1, 1)).sum(3)  # (P, D, Q, K)
        accept = (dists <= v.radius).any(-1).expand(P, -1)
    task = TreeTask(cfg=cfg, delta=delta.contiguous(), accept=accept.contiguous())
    _, acc = task.occupancy(torch.full((task.num_states, K), 1.0 / K, dtype=torch.float64))
    if not (acc > 0).all():
        raise SteerBenchError(f"task {cfg.model_dump()} seed {seed}: some problem has no correct leaf")
    return task
