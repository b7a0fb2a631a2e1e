"""MTO-PINN: a PINN trained by multi-task optimisation (Wang, Qin, Shafiei, Dia, Mihaita,
Grzybowska; arXiv 2307.03920, IJCNN 2023), for traffic density.

Only the abstract is public (no code, no sizes, no rule for the auxiliary tasks or the transfer):
every choice below is OUR INTERPRETATION of "auxiliary tasks solved together with the main task,
with knowledge transferred adaptively between them":
- network (our interpretation): the Eulerian PINN's trunk (periodic embedding (cos x, sin x, t),
  5 tanh layers of 50) shared by all tasks, one linear head per task (hard parameter sharing);
  10,553 parameters, 102 more than the plain `pinn` of the same trunk.
- main task: the problem as given (PDE residual + initial condition + loop-detector observations,
  mean squares), head 0; `forward` is head 0.
- auxiliary task 1 (our interpretation): the same PDE relaxed by extra viscosity nu + `aux_nu`
  (a smoother solution that is easier to fit), head 1.
- auxiliary task 2 (our interpretation): a data-only task, the initial condition and the detector
  observations without the PDE, head 2.
- adaptive transfer (our interpretation): at each step each auxiliary loss enters with weight
  max(0, cos(g_main, g_k)), the cosine between its gradient on the shared trunk and the main
  task's; an auxiliary task that pulls against the main one is switched off for that step.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.pinn import (TanhMLP, eulerian_field, eulerian_terms, example_points, mean_sq,
                             periodic_embedding)


class MTOPINN(nn.Module):
    formulation = "eulerian"

    def __init__(self, width: int = 50, depth: int = 5, aux_nu: float = 0.05):
        super().__init__()
        self.aux_nu = float(aux_nu)
        self.trunk = TanhMLP(3, width, depth, 1)
        del self.trunk.out            # the heads replace the trunk's own output layer
        self.heads = nn.ModuleList([nn.Linear(width, 1) for _ in range(3)])
        self.register_buffer("problem_state", torch.zeros(8))
        self._relaxed: dict = {}

    def head(self, k: int):
        return lambda x, t: self.heads[k](self.trunk.features(periodic_embedding(x, t))).squeeze(-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.heads[0](self.trunk.features(periodic_embedding(x, t))).squeeze(-1)

    def check_problem(self, problem) -> None:
        """The auxiliary task relaxes the viscosity nu: a problem without one cannot be trained here."""
        if "nu" not in problem.params:
            from zoo.errors import DataError
            raise DataError(f"mto-pinn's auxiliary task relaxes the viscosity nu; {problem.name} has none "
                            f"(use burgers, convection-diffusion or lwr)")

    def use_problem(self, problem) -> None:
        """No problem-dependent state beyond problem_state (written by the task)."""

    def _relaxed_problem(self, problem):
        key = id(problem)
        if key not in self._relaxed:
            self._relaxed = {key: (problem, problem.with_params(nu=problem.nu + self.aux_nu))}
        return self._relaxed[key][1]

    def task_losses(self, problem, batch: dict) -> list[torch.Tensor]:
        res, ic, obs = eulerian_terms(self.head(0), problem, batch)
        main = mean_sq(res) + mean_sq(ic) + mean_sq(obs)
        res1, ic1, _ = eulerian_terms(self.head(1), problem, batch, self._relaxed_problem(problem))
        aux1 = mean_sq(res1) + mean_sq(ic1)
        _, ic2, obs2 = eulerian_terms(self.head(2), problem, batch)
        aux2 = mean_sq(ic2) + mean_sq(obs2)
        return [main, aux1, aux2]

    def pinn_loss(self, problem, batch: dict):
        main, *aux = self.task_losses(problem, batch)
        shared = [p for p in self.trunk.parameters() if p.requires_grad]
        g_main = torch.cat([g.reshape(-1) for g in torch.autograd.grad(main, shared, retain_graph=True)])
        loss, logs = main, {"main": float(main.detach())}
        for k, a in enumerate(aux, start=1):
            g = torch.autograd.grad(a, shared, retain_graph=True, allow_unused=True)
            g = torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1) for gi, p in zip(g, shared)])
            w = torch.clamp(torch.nn.functional.cosine_similarity(g_main, g, dim=0), min=0.0).detach()
            loss = loss + w * a
            logs[f"aux{k}"], logs[f"w{k}"] = float(a.detach()), float(w)
        return loss, logs

    def field(self, problem, x: torch.Tensor, t: torch.Tensor):
        """(u on the (M, N) grid, None): no characteristic curves."""
        return eulerian_field(self, x, t), None

    def example_input(self, batch: int = 8):
        return example_points(batch)


def mto_pinn(**config) -> MTOPINN:
    return MTOPINN(**config)
