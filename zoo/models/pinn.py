"""The Eulerian physics-informed network (PINN) baseline, as the Lagrangian-PINN code builds it
(spec operators.md E, `PINN_POLAR`): inputs embedded periodically as (cos x, sin x, t), 5 tanh
layers of 50, one linear output; 10,451 parameters.

Loss (our choice where the LPINN code's baseline script was not read): mean squared PDE residual
on the collocation grid + mean squared initial-condition error + mean squared error at observed
points (where the problem has loop-detector data); all weights 1, as the "failure modes" PINN
(Krishnapriyan et al. 2021) does. No boundary term: the embedding is periodic.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.pinn import (TanhMLP, eulerian_field, eulerian_terms, example_points, mean_sq,
                             periodic_embedding)


class PINN(nn.Module):
    """u(x, t) = MLP(cos x, sin x, t)."""

    formulation = "eulerian"

    def __init__(self, width: int = 50, depth: int = 5):
        super().__init__()
        self.net = TanhMLP(3, width, depth, 1)
        # which problem these weights solve (written by the pinn task; saved with the weights)
        self.register_buffer("problem_state", torch.zeros(8))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(periodic_embedding(x, t)).squeeze(-1)

    def check_problem(self, problem) -> None:
        """Every problem of the pinn task has an Eulerian residual: nothing to refuse."""

    def use_problem(self, problem) -> None:
        """No problem-dependent state beyond problem_state (written by the task)."""

    def pinn_loss(self, problem, batch: dict):
        res, ic, obs = eulerian_terms(self, problem, batch)
        l_r, l_ic, l_obs = mean_sq(res), mean_sq(ic), mean_sq(obs)
        loss = l_r + l_ic + l_obs
        return loss, {"residual": float(l_r.detach()), "ic": float(l_ic.detach()), "obs": float(l_obs.detach())}

    def field(self, problem, x: torch.Tensor, t: torch.Tensor):
        """(u on the (M, N) grid, None): no characteristic curves."""
        return eulerian_field(self, x, t), None

    def example_input(self, batch: int = 8):
        return example_points(batch)


def pinn(**config) -> PINN:
    return PINN(**config)
