"""Blocks shared by physics-informed networks: the periodic input embedding, a tanh MLP and
autograd derivatives of a network output with respect to its raw inputs."""

from __future__ import annotations

import torch
from torch import nn


def periodic_embedding(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(cos x, sin x, t): periodicity in x on [0, 2 pi) is built in, so no boundary term is needed."""
    return torch.stack([torch.cos(x), torch.sin(x), t], dim=-1)


class TanhMLP(nn.Module):
    """Linear(in, w) tanh, (depth - 1) x [Linear(w, w) tanh], Linear(w, out)."""

    def __init__(self, in_dim: int = 3, width: int = 50, depth: int = 5, out_dim: int = 1):
        super().__init__()
        layers = [nn.Linear(in_dim, width)] + [nn.Linear(width, width) for _ in range(depth - 1)]
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(width, out_dim)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            z = torch.tanh(layer(z))
        return z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(z))


def grad(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy/dx pointwise (y and x of the same shape; each y_i depends only on x_i), kept in the graph."""
    return torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y), create_graph=True)[0]


def norm(v: torch.Tensor) -> torch.Tensor:
    """The L2 norm (the LPINN code sums norms, not means); safe gradient at zero."""
    return torch.sqrt((v * v).sum() + 1e-20)


def eulerian_terms(net, problem, batch: dict, problem_override=None):
    """Residual at every collocation point, initial-condition error on the t = 0 points and
    observation error on the observed points, for an Eulerian network `net(x, t) -> u`."""
    problem = problem_override or problem
    x = batch["x"].detach().requires_grad_(True)
    t = batch["t"].detach().requires_grad_(True)
    u = net(x, t)
    u_t, u_x = grad(u, t), grad(u, x)
    u_xx = grad(u_x, x) if problem.nu > 0 else torch.zeros_like(u_x)
    res = problem.eulerian_residual(u, u_t, u_x, u_xx)
    ic = batch["ic"] > 0.5
    obs = batch["obs_mask"] > 0.5
    return res, (u - batch["u0"])[ic], (u - batch["obs"])[obs]


def mean_sq(v: torch.Tensor) -> torch.Tensor:
    """Mean square; zero (with a graph) for an empty selection."""
    return (v * v).mean() if v.numel() else v.sum()


def example_points(batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded points (x in [0, 2 pi), t in [0, 1)): every PINN's example input for export and bench."""
    g = torch.Generator().manual_seed(0)
    return 2 * torch.pi * torch.rand(batch, generator=g), torch.rand(batch, generator=g)


@torch.no_grad()
def eulerian_field(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """u on the (M, N) grid of t x x: an Eulerian network is evaluated on the grid directly."""
    tt, xx = torch.meshgrid(t, x, indexing="ij")
    return net(xx.reshape(-1), tt.reshape(-1)).reshape(len(t), len(x))
