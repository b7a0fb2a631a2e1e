"""MT-DeepONet (Kumar, Goswami, Kontolati, Shields, Karniadakis; "Synergistic learning with
multi-task DeepONet for efficient PDE problem solving", arXiv 2408.02198, Neural Networks 184,
107113, 2025). Official code: github.com/varunsingh88/MT-DeepONet (TensorFlow/Keras, MIT).

A DeepONet whose branch net is modified so that one network learns several tasks at once:
- **Fisher** (several functional forms of the reaction term): the branch reads the 4 coefficients
  of the reaction polynomial in (u, u^2, u^3, u^4) followed by the 64 standardised values of the
  initial condition (68 inputs). Branch: Dense 128 -> LayerNorm -> leaky ReLU (x2) -> Dense 300;
  trunk on (t, x): 128, 128, 128 (leaky ReLU) -> 300. 136,664 parameters.
- **Darcy on several geometries**: the branch reads a 2-channel image (standardised
  log-permeability, binary geometry mask); the mask also multiplies the prediction, so points
  outside the geometry are exactly 0 and take no part in the loss. Branch CNN: 4 x [Conv 5x5
  "same" ReLU (16, 32, 64, 64) + AvgPool 2] on 100x100 -> Dense 128 tanh -> Dense 128 tanh ->
  Dense 150 (dropout 0.1 after the two tanh layers); trunk on (x, y) scaled to [-1, 1]:
  64, 128, 128, 128 (leaky ReLU) -> 150. 559,164 parameters.
- **3D heated plate** (parameterised holes): branch on 2 design scalars: 32, 64, 128, 128 (Dense ->
  BatchNorm -> swish, dropout 0.1 after the first two) -> 200 (SELU); trunk on (x, y, z): nine
  Dense -> BatchNorm -> swish layers (32, 64, 64, 64, 128 x 5) in which layer k >= 3 also adds a
  linear projection of layer k-2, then Dense 200. 238,448 trainable parameters (BatchNorm running
  statistics are buffers, as in Keras they are non-trainable weights).
The output is sum_k b_k t_k with no bias (the official einsum has none).

Layer sizes, activations and initialisers follow the official Keras models: Glorot-normal kernels
(truncated, Keras' flavour), biases N(0, 0.01) (N(0, 0.001) for the heated plate, whose kernels
are N(0, 0.001) too), Keras' LayerNorm/BatchNorm epsilon 1e-3, leaky ReLU slope 0.2 (tf.nn's
default). Deviations, all for reusing the zoo's operator task:
- outputs are de-standardised with one scalar mean/std fitted on the training set (the official
  Fisher script standardises each of the 1280 output points separately; Darcy multiplies u by
  10), so the trunk can be queried anywhere;
- the Darcy mask that multiplies the prediction is read from the branch input's mask channel at
  each query point (nearest cell), which is the official flattened mask on the grid itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ConfigError
from zoo.layers.field_stats import OutputStats

#: per-problem architecture of the official code (config values of network_setup_*.yaml)
PROBLEMS = {
    "fisher": {"branch": "mlp", "branch_in": 68, "branch_layers": [128, 128], "trunk_in": 2,
               "trunk_layers": [128, 128, 128], "latent": 300},
    "darcy": {"branch": "cnn", "branch_in": 2, "grid": 100, "cnn_filters": [16, 32, 64, 64], "kernel": 5,
              "branch_layers": [128, 128], "dropout": 0.1, "trunk_in": 2, "trunk_layers": [64, 128, 128, 128],
              "latent": 150, "coord_scale": [-1.0, 1.0]},
    "heated-plate": {"branch": "mlp-bn", "branch_in": 2, "branch_layers": [32, 64, 128, 128], "dropout": 0.1,
                     "trunk_in": 3, "trunk_layers": [32, 64, 64, 64, 128, 128, 128, 128, 128], "latent": 200},
}

KERAS_EPS = 1e-3
LEAKY_SLOPE = 0.2


def _keras_glorot_(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    # Keras GlorotNormal: truncated normal at 2 std, std corrected for the truncation
    std = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def _dense(c_in: int, c_out: int, kernel_std: float | None = None, bias_std: float = 0.01) -> nn.Linear:
    layer = nn.Linear(c_in, c_out)
    if not layer.weight.is_meta:
        with torch.no_grad():
            if kernel_std is None:
                _keras_glorot_(layer.weight, c_in, c_out)
            else:
                layer.weight.normal_(0.0, kernel_std)
            layer.bias.normal_(0.0, bias_std)
    return layer


class FisherBranch(nn.Module):
    """Dense -> LayerNorm -> leaky ReLU -> dropout, twice, then a linear Dense to the latent size."""

    def __init__(self, c_in: int, hidden: list[int], latent: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([c_in, *hidden[:-1]], hidden):
            layers += [_dense(a, b), nn.LayerNorm(b, eps=KERAS_EPS), nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(dropout)]
        layers.append(_dense(hidden[-1], latent))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvBranch(nn.Module):
    """4 x [5x5 'same' conv + ReLU, 2x2 average pool] -> Dense tanh x2 (dropout) -> Dense latent."""

    def __init__(self, c_in: int, grid: int, filters: list[int], kernel: int, hidden: list[int], latent: int,
                 dropout: float):
        super().__init__()
        convs: list[nn.Module] = []
        size, c = grid, c_in
        for f in filters:
            conv = nn.Conv2d(c, f, kernel, padding="same")
            if not conv.weight.is_meta:
                with torch.no_grad():
                    _keras_glorot_(conv.weight, c * kernel * kernel, f * kernel * kernel)
                    conv.bias.normal_(0.0, 0.01)
            convs += [conv, nn.ReLU(), nn.AvgPool2d(2)]  # Keras 'valid' pooling floors odd sizes
            c, size = f, size // 2
        self.convs = nn.Sequential(*convs)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip([c * size * size, *hidden[:-1]], hidden):
            layers += [_dense(a, b), nn.Tanh(), nn.Dropout(dropout)]
        layers.append(_dense(hidden[-1], latent))
        self.head = nn.Sequential(*layers)

    def forward(self, x):
        # Keras flattens channels-last: (B, H, W, C) order, kept so official kernels map 1:1
        return self.head(self.convs(x).permute(0, 2, 3, 1))


class DesignBranch(nn.Module):
    """Heated plate: Dense -> BatchNorm -> swish (dropout after the first two), then Dense + SELU."""

    def __init__(self, c_in: int, hidden: list[int], latent: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([c_in, *hidden[:-1]], hidden)):
            layers += [_dense(a, b, kernel_std=1e-3, bias_std=1e-3), nn.BatchNorm1d(b, eps=KERAS_EPS, momentum=0.01),
                       nn.SiLU()]
            if i < 2:
                layers.append(nn.Dropout(dropout))
        layers += [_dense(hidden[-1], latent, kernel_std=1e-3, bias_std=1e-3), nn.SELU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPTrunk(nn.Module):
    """Dense layers with leaky ReLU, then a linear Dense to the latent size."""

    def __init__(self, c_in: int, hidden: list[int], latent: int):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([c_in, *hidden[:-1]], hidden):
            layers += [_dense(a, b), nn.LeakyReLU(LEAKY_SLOPE)]
        layers.append(_dense(hidden[-1], latent))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ResidualTrunk(nn.Module):
    """Heated plate trunk: Dense -> BatchNorm -> swish layers; from the third layer on each adds a
    linear projection of the output two layers back."""

    def __init__(self, c_in: int, hidden: list[int], latent: int):
        super().__init__()
        self.layers = nn.ModuleList([_dense(a, b, kernel_std=1e-3, bias_std=1e-3)
                                     for a, b in zip([c_in, *hidden[:-1]], hidden)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(b, eps=KERAS_EPS, momentum=0.01) for b in hidden])
        self.projections = nn.ModuleList([_dense(hidden[k - 2], hidden[k], kernel_std=1e-3, bias_std=1e-3)
                                          for k in range(2, len(hidden))])
        self.out = _dense(hidden[-1], latent, kernel_std=1e-3, bias_std=1e-3)

    def forward(self, x):
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])  # BatchNorm over every point
        outs: list[torch.Tensor] = []
        for k, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            h = F.silu(norm(layer(x if k == 0 else outs[-1])))
            if k >= 2:
                h = h + self.projections[k - 2](outs[k - 2])
            outs.append(h)
        return self.out(outs[-1]).reshape(*shape, -1)


#: what the branch of each problem's network reads (the operator task's `branch_input` vocabulary)
BRANCH_INPUT = {"fisher": "reaction-coefficients", "darcy": "masked-field", "heated-plate": "design"}


class MTDeepONet(OutputStats):
    """forward(branch_input, points, mask=None) -> (B, P).

    branch_input: (B, 68) for Fisher, (B, 2, H, W) for Darcy, (B, 2) for the heated plate;
    points: (P, d) shared by the batch or (B, P, d); mask: optional (B, P) geometry mask.
    Fulfils the operator task's contract: `branch_input`, `input_grid`, `example_input(batch)`,
    the output statistics of `OutputStats`."""

    def __init__(self, problem: str, branch: nn.Module, trunk: nn.Module, branch_shape: tuple, trunk_dim: int,
                 coord_scale=None, mask_channel: int | None = None):
        super().__init__()
        self.problem = problem
        self.branch_shape, self.trunk_dim = tuple(branch_shape), int(trunk_dim)
        self.branch, self.trunk = branch, trunk
        self.coord_scale = tuple(coord_scale) if coord_scale else None
        self.mask_channel = mask_channel
        self.branch_input = BRANCH_INPUT[problem]
        self.input_grid = int(self.branch_shape[-1]) if len(self.branch_shape) == 3 else None
        self.init_output_stats()

    def _mask_at(self, image_mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        # nearest cell of the (H, W) mask at points in [0, 1]^2 (x = row axis, as the task's grid)
        b = image_mask.shape[0]
        pts = points if points.dim() == 3 else points.expand(b, -1, -1)
        grid = torch.stack([pts[..., 1], pts[..., 0]], dim=-1) * 2 - 1  # grid_sample wants (col, row)
        m = F.grid_sample(image_mask[:, None], grid[:, None], mode="nearest", align_corners=True)
        return m[:, 0, 0]

    def forward(self, branch_input: torch.Tensor, points: torch.Tensor, mask: torch.Tensor | None = None):
        coeffs = self.branch(branch_input)                                    # (B, p)
        coords = points
        if self.coord_scale is not None:
            lo, hi = self.coord_scale
            coords = points * (hi - lo) + lo
        basis = self.trunk(coords)                                            # (P, p) or (B, P, p)
        out = coeffs @ basis.transpose(0, 1) if basis.dim() == 2 else torch.einsum("bk,bpk->bp", coeffs, basis)
        out = self.destandardize(out)
        if mask is None and self.mask_channel is not None:
            mask = self._mask_at(branch_input[:, self.mask_channel], points)
        return out * mask if mask is not None else out

    def example_input(self, batch: int = 8, points: int = 256):
        """(branch input, query points) of the right shapes, for export and bench."""
        shape = self.branch_shape
        x = torch.randn(batch, *shape)
        if self.mask_channel is not None:
            x[:, self.mask_channel] = (torch.rand(batch, *shape[1:]) > 0.3).float()
        return x, torch.rand(batch, points, self.trunk_dim)


def mt_deeponet(problem: str = "fisher", **overrides) -> MTDeepONet:
    """Builder: the official network of `problem` (fisher, darcy, heated-plate); keys of
    PROBLEMS[problem] can be overridden (e.g. grid=64 for a smaller Darcy image)."""
    if problem not in PROBLEMS:
        from zoo.errors import UnknownNameError
        raise UnknownNameError("MT-DeepONet problem", problem, list(PROBLEMS))
    unknown = set(overrides) - set(PROBLEMS[problem])
    if unknown:
        raise ConfigError(f"mt_deeponet({problem}): unknown option(s) {sorted(unknown)}")
    c = {**PROBLEMS[problem], **overrides}
    if c["branch"] == "mlp":
        branch: nn.Module = FisherBranch(c["branch_in"], list(c["branch_layers"]), c["latent"], c.get("dropout", 0.0))
        trunk: nn.Module = MLPTrunk(c["trunk_in"], list(c["trunk_layers"]), c["latent"])
        return MTDeepONet(problem, branch, trunk, (c["branch_in"],), c["trunk_in"])
    if c["branch"] == "cnn":
        branch = ConvBranch(c["branch_in"], int(c["grid"]), list(c["cnn_filters"]), int(c["kernel"]),
                            list(c["branch_layers"]), c["latent"], c["dropout"])
        trunk = MLPTrunk(c["trunk_in"], list(c["trunk_layers"]), c["latent"])
        return MTDeepONet(problem, branch, trunk, (c["branch_in"], int(c["grid"]), int(c["grid"])), c["trunk_in"],
                          coord_scale=c.get("coord_scale"), mask_channel=1)
    branch = DesignBranch(c["branch_in"], list(c["branch_layers"]), c["latent"], c["dropout"])
    trunk = ResidualTrunk(c["trunk_in"], list(c["trunk_layers"]), c["latent"])
    return MTDeepONet(problem, branch, trunk, (c["branch_in"],), c["trunk_in"])


__all__ = ["MTDeepONet", "mt_deeponet", "PROBLEMS"]
