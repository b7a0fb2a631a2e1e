"""DeepONet (Lu, Jin, Pang, Zhang, Karniadakis; arXiv 1910.03193), unstacked.

G(u)(y) = sum_k b_k(u) t_k(y) + b0: a branch net encodes the input function u (sensor values, or
a 2-D field through a CNN), a trunk net encodes the query point y, one trainable scalar bias b0.

Two configurations, each pinned by a test:
- antiderivative (the paper's default script): branch FNN [100, 40, 40], trunk FNN [1, 40, 40],
  ReLU, 7,401 parameters. As in the official code, the last branch layer is linear and the trunk
  applies its activation on every layer, the last one included.
- darcy (Lu et al. 2022, DeepONet/FNO comparison, 29x29 grid): CNN branch Conv(64, 5x5, s2) ->
  Conv(128, 5x5, s2) -> Dense 128 (ReLU) -> Dense 128, trunk FNN [2, 128, 128, 128, 128],
  682,753 parameters. The input is scaled a*0.1 - 0.75 as in the official script.

Deviation (documented in the model card): the official Darcy script de-standardises the output
with a per-grid-point mean/std; we use one scalar mean/std fitted on the training set so that the
trunk can be queried at any resolution (the trunk is resolution-free; a per-point table is not).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.field_stats import OutputStats

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def _mlp(sizes: list[int], act: str, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(_ACTS[act]())
    return nn.Sequential(*layers)


class ConvBranch(nn.Module):
    """The Darcy branch: two strided valid convolutions and two dense layers."""

    def __init__(self, grid: int, channels=(64, 128), kernel: int = 5, stride: int = 2,
                 hidden: int = 128, width: int = 128, act: str = "relu"):
        super().__init__()
        convs: list[nn.Module] = []
        c_in, size = 1, grid
        for c in channels:
            convs += [nn.Conv2d(c_in, c, kernel, stride), _ACTS[act]()]
            c_in, size = c, (size - kernel) // stride + 1
        if size < 1:
            raise ValueError(f"grid {grid} is too small for the branch CNN")
        self.convs = nn.Sequential(*convs)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, hidden), _ACTS[act](),
                                  nn.Linear(hidden, width))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(a))


class DeepONet(OutputStats):
    """Unstacked DeepONet with one output.

    forward(branch_input, points) -> (B, P)
      branch_input: (B, m) sensor values, or (B, 1, H, W) for the CNN branch
      points: (P, d) shared by the batch, or (B, P, d)

    The operator task's contract (`zoo.tasks.operator.OperatorModel`): `branch_input` names what
    the branch reads ("sensors" or "field"), `input_grid` the side of the field (None for sensors),
    `example_input(batch)`, and the output statistics of `OutputStats`.
    """

    def __init__(self, branch: nn.Module, trunk: nn.Module, *, input_scale: float = 1.0,
                 input_shift: float = 0.0, sensors: int | None = None, grid: int | None = None,
                 coord_dim: int = 1):
        super().__init__()
        self.branch = branch
        self.trunk = trunk
        self.bias = nn.Parameter(torch.zeros(1))
        self.input_scale, self.input_shift = input_scale, input_shift
        self.sensors, self.input_grid, self.coord_dim = sensors, grid, coord_dim
        self.branch_input = "field" if grid is not None else "sensors"
        # output de-normalisation, fitted on the training set
        self.init_output_stats()

    def forward(self, branch_input: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        b = self.branch(branch_input * self.input_scale + self.input_shift)  # (B, p)
        t = self.trunk(points)                                               # (P, p) or (B, P, p)
        if t.dim() == 2:
            out = b @ t.transpose(0, 1)
        else:
            out = torch.einsum("bk,bpk->bp", b, t)
        return self.destandardize(out + self.bias)

    def example_input(self, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """(branch input, query points) of the right shapes, for export, bench and tests."""
        if self.input_grid is not None:
            g = self.input_grid
            a = torch.where(torch.rand(batch, 1, g, g) > 0.5, 12.0, 3.0)  # the Darcy coefficient values
            x = torch.linspace(0.0, 1.0, g)
            pts = torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1).reshape(-1, 2)
            return a, pts.expand(batch, -1, -1).contiguous()
        return torch.randn(batch, self.sensors), torch.rand(batch, 100, self.coord_dim)


def deeponet(branch: str = "mlp", sensors: int = 100, branch_layers=(40, 40), trunk_layers=(40, 40),
             coord_dim: int = 1, activation: str = "relu", grid: int = 29, input_scale: float = 1.0,
             input_shift: float = 0.0) -> DeepONet:
    """Builder. Defaults: the paper's antiderivative net. `branch="cnn"` gives the Darcy net."""
    branch_layers, trunk_layers = list(branch_layers), list(trunk_layers)
    if branch_layers[-1] != trunk_layers[-1]:
        from zoo.errors import ConfigError
        raise ConfigError(f"branch width {branch_layers[-1]} and trunk width {trunk_layers[-1]} must match")
    if branch == "mlp":
        branch_net: nn.Module = _mlp([sensors, *branch_layers], activation, last_act=False)
    elif branch == "cnn":
        branch_net = ConvBranch(grid, hidden=branch_layers[0], width=branch_layers[-1], act=activation)
    else:
        from zoo.errors import ConfigError
        raise ConfigError(f"unknown DeepONet branch '{branch}' (mlp or cnn)")
    trunk = _mlp([coord_dim, *trunk_layers], activation, last_act=True)
    return DeepONet(branch_net, trunk, input_scale=input_scale, input_shift=input_shift,
                    sensors=sensors if branch == "mlp" else None, grid=grid if branch == "cnn" else None,
                    coord_dim=coord_dim)
