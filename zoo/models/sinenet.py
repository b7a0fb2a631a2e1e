"""SineNet (Zhang, Helwig, Lin, Xie, Fu, Wojtowytsch, Ji; "SineNet: Learning Temporal Dynamics in
Time-Dependent Partial Differential Equations", ICLR 2024, arXiv 2403.19507).
Official code: github.com/divelab/AIRS, OpenPDE/SineNet (GPL-3.0; its PDEArena fork is MIT).

The network, as the official `sinenet_dual` module builds it:
- input: the last `time_history` frames of all fields stacked on channels (scalars first, then the
  two components of each vector field); a 3x3 conv lifts them to `hidden` channels;
- K "waves" run one after the other, each a 4-level U-Net with its own weights, and each adds its
  input to its output (wave residual). Level i has int(hidden * mult**i) channels;
- down step: 2x2 average pool, then a conv block (two [3x3 conv -> GroupNorm(1) -> GELU]) plus a
  1x1-conv shortcut of the pooled features. Disentangled ("dual", the official default): the
  wave's input, pooled once more at each level, is concatenated to the pooled features before
  the conv block at levels 2-4 (not at level 1, and not into the shortcut);
- up step: bicubic x2 interpolation (circularly padded first when padding is circular), concat
  with the skip (skip first), conv block, plus a 1x1 shortcut of the upsampled features;
- a 3x3 conv projects to one future frame of all fields.
Padding is "zeros" or "circular" for every conv (separate names, `-circ`).

Parameter counts (pinned by tests; INS = 3 fields in/out, 4 frames of history):
SineNet-8 35,490,219 (the number the official registry writes next to sinenet8-dual);
the -6/-4/-2 variants use the official channel multipliers (1.5, 1.611, 1.8075) chosen there to
keep the budget near that number.

Fields are standardised with `field_mean`/`field_std` (buffers) inside the model, as the official
normaliser does around the network (PDEArena NavierStokes2D statistics for the INS configs).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ConfigError, DataError
from zoo.layers.field_stats import FieldStats

VARIANTS = {
    8: {"waves": 8, "mult": 1.425},
    6: {"waves": 6, "mult": 1.5},
    4: {"waves": 4, "mult": 1.611},
    2: {"waves": 2, "mult": 1.8075},
}

#: PDEArena NavierStokes2D (smoke, vx, vy) statistics used by the official normaliser
INS_MEAN = [0.7171192169189453, -5.4855921888252723e-11, -3.2108783187823065e-08]
INS_STD = [0.4428091049194336, 0.4393102824687958, 0.508793294429779]


def _exporting() -> bool:
    """Inside torch.onnx.export / torch.export / torch.jit tracing: graphs for other runtimes."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.jit.is_tracing())


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same eager arithmetic) whose circular padding goes into an exported
    graph as slices and concats: torch writes it as ONNX Pad(mode="wrap"), which OpenVINO's ONNX
    reader refuses, so a circular SineNet could not run there."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "circular" or not _exporting():
            return super()._conv_forward(input, weight, bias)
        ph, pw = self.padding
        x = torch.cat([input[..., -ph:, :], input, input[..., :ph, :]], dim=-2) if ph else input
        x = torch.cat([x[..., -pw:], x, x[..., :pw]], dim=-1) if pw else x
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class ConvBlock(nn.Module):
    """[3x3 conv -> GroupNorm(groups) -> GELU] twice."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str, groups: int = 1, norm: bool = True):
        super().__init__()
        self.conv1 = PaddedConv2d(c_in, c_out, 3, padding=1, padding_mode=padding_mode)
        self.conv2 = PaddedConv2d(c_out, c_out, 3, padding=1, padding_mode=padding_mode)
        self.norm1 = nn.GroupNorm(groups, c_out) if norm else nn.Identity()
        self.norm2 = nn.GroupNorm(groups, c_out) if norm else nn.Identity()

    def forward(self, x):
        x = F.gelu(self.norm1(self.conv1(x)))
        return F.gelu(self.norm2(self.conv2(x)))


class DownLevel(nn.Module):
    """Average-pool, (concat the pooled wave input), conv blocks with a residual shortcut."""

    def __init__(self, c_in: int, c_out: int, c_lift: int, padding_mode: str, blocks: int, first: bool,
                 disentangle: bool):
        super().__init__()
        self.concat_lift = disentangle and not first
        self.disentangle = disentangle
        self.blocks = nn.ModuleList([ConvBlock((c_in + c_lift * self.concat_lift) if i == 0 else c_out, c_out,
                                               padding_mode) for i in range(blocks)])
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, lifted: torch.Tensor, h: torch.Tensor):
        if self.disentangle:
            lifted = F.avg_pool2d(lifted, 2)
        h = F.avg_pool2d(h, 2)
        residual = h
        if self.concat_lift:
            h = torch.cat([h, lifted], dim=1)
        for i, block in enumerate(self.blocks):
            h = block(h) + (self.shortcut(residual) if i == 0 else residual)
            residual = h
        return lifted, h


def _bicubic_x2_matrix(n: int, circular: bool, dtype=torch.float32, device=None) -> torch.Tensor:
    """The (2n, n) matrix M with M @ v == PyTorch's x2 bicubic of v along one axis (align_corners
    False, A = -0.75, border indices clamped; circular: wrapped, which is what padding by 2, resizing
    and cropping computes). Built from aranges in float64 (the weights at t = 0.25/0.75 are exact
    dyadic numbers), so an exporter traces a few ops it folds to a constant, not n^2 Python floats."""
    a = -0.75
    f64 = torch.float64
    o = torch.arange(2 * n, dtype=f64, device=device)
    src = (o + 0.5) / 2 - 0.5
    i0 = torch.floor(src)
    t = src - i0

    def near(x):   # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):    # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    w = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)                  # (2n, 4)
    idx = i0.to(torch.int64)[:, None] + torch.arange(-1, 3, device=device)[None]
    idx = idx.remainder(n) if circular else idx.clamp(0, n - 1)
    onehot = (idx[:, :, None] == torch.arange(n, device=device)[None, None]).to(f64)    # (2n, 4, n)
    return (w[:, :, None] * onehot).sum(1).to(dtype)


class UpLevel(nn.Module):
    """x2 bicubic upsampling, concat with the skip, conv blocks with a residual shortcut."""

    def __init__(self, c_in: int, c_out: int, padding_mode: str, blocks: int, mode: str = "bicubic"):
        super().__init__()
        self.circular = padding_mode == "circular"
        self.mode = mode
        self.blocks = nn.ModuleList([ConvBlock(c_in + c_out if i == 0 else c_out, c_out, padding_mode)
                                     for i in range(blocks)])
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def upsample(self, x):
        if self.mode == "bicubic" and _exporting():
            return self._upsample_matmul(x)
        if not self.circular:
            return F.interpolate(x, scale_factor=2, mode=self.mode)
        # wrap 2 cells, interpolate, crop the 4 cells the padding became
        x = F.interpolate(F.pad(x, (2, 2, 2, 2), mode="circular"), scale_factor=2, mode=self.mode)
        return x[..., 4:-4, 4:-4]

    def _upsample_matmul(self, x):
        """The export graph's upsampling: two matmuls with constant interpolation matrices.
        onnxruntime's cubic Resize is a slow generic kernel (most of SineNet's ONNX time); GEMMs are
        its fastest op. Same weights and taps as eager, so the outputs agree to fp32 rounding."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        mh = _bicubic_x2_matrix(h, self.circular, x.dtype, x.device)
        mw = mh if w == h else _bicubic_x2_matrix(w, self.circular, x.dtype, x.device)
        return torch.matmul(mh, torch.matmul(x, mw.t()))

    def forward(self, x, skip):
        up = self.upsample(x)
        h, residual = torch.cat([skip, up], dim=1), up
        for i, block in enumerate(self.blocks):
            h = block(h) + (self.shortcut(residual) if i == 0 else residual)
            residual = h
        return h


class Wave(nn.Module):
    """One U-Net "wave" with its own weights; the caller adds the wave residual."""

    def __init__(self, hidden: int, mult: float, padding_mode: str, blocks: int, disentangle: bool, levels: int = 4):
        super().__init__()
        ch = [int(hidden * mult**i) for i in range(levels + 1)]
        self.down = nn.ModuleList([DownLevel(ch[i], ch[i + 1], hidden, padding_mode, blocks, first=i == 0,
                                             disentangle=disentangle) for i in range(levels)])
        self.up = nn.ModuleList([UpLevel(ch[i + 1], ch[i], padding_mode, blocks) for i in reversed(range(levels))])

    def forward(self, x):
        feats, lifted = [x], x
        for level in self.down:
            lifted, h = level(lifted, feats[-1])
            feats.append(h)
        h = feats.pop()
        for level in self.up:
            h = level(h, feats.pop())
        return h


class SineNet(FieldStats):
    """SineNet for autoregressive one-frame prediction.

    forward(x): x (B, time_history, fields, H, W) in physical units -> (B, 1, fields, H, W).
    H and W must be divisible by 16 (four 2x poolings)."""

    def __init__(self, fields=("smoke", "u", "v"), time_history: int = 4, time_future: int = 1, hidden: int = 64,
                 waves: int = 8, mult: float = 1.425, padding: str = "zeros", blocks: int = 1,
                 disentangle: bool = True, wave_residual: bool = True, field_mean=None, field_std=None,
                 resolution: int | None = None):
        super().__init__()
        if padding not in ("zeros", "circular"):
            raise ConfigError(f"SineNet padding must be 'zeros' or 'circular', got '{padding}'")
        # fields: the names of the fields, scalars first then vector components (or just a count)
        self.fields = [f"field{i}" for i in range(fields)] if isinstance(fields, int) else list(fields)
        fields = len(self.fields)
        self.num_fields, self.time_history, self.time_future = fields, time_history, time_future
        self.resolution = resolution  # the grid it was trained on (None: any multiple of 16)
        self.wave_residual = wave_residual
        self.lift = PaddedConv2d(time_history * fields, hidden, 3, padding=1, padding_mode=padding)
        self.waves = nn.ModuleList([Wave(hidden, mult, padding, blocks, disentangle) for _ in range(waves)])
        self.project = PaddedConv2d(hidden, time_future * fields, 3, padding=1, padding_mode=padding)
        self.init_field_stats(fields, field_mean, field_std, ndim=5, axis=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.time_history or x.shape[2] != self.num_fields:
            raise ValueError(f"SineNet expects (B, {self.time_history}, {self.num_fields}, H, W), got {tuple(x.shape)}")
        b, _, c, h, w = x.shape
        z = self.lift(self.normalize(x).reshape(b, -1, h, w))
        for wave in self.waves:
            z = wave(z) + z if self.wave_residual else wave(z)
        y = self.project(z).reshape(b, self.time_future, c, h, w)
        return y * self.field_std + self.field_mean

    # ---- the rollout task's contract (zoo.tasks.pde_rollout.RolloutModel) --------------------
    @property
    def native_grid(self) -> int | None:
        return self.resolution

    def check_grid(self, n: int, source: str) -> None:
        """Four 2x poolings need a multiple of 16; a checkpoint is tied to the grid it was trained on."""
        if self.resolution is not None and int(self.resolution) != n:
            raise DataError(f"{source}: the grid is {n}x{n}, this model was trained at {self.resolution}x"
                            f"{self.resolution} and is not resolution-invariant; resample the data or use a "
                            f"checkpoint made at {n}")
        if n % 16:
            raise DataError(f"{source}: the grid is {n}x{n}; SineNet's four 2x poolings need a multiple of 16")

    def step(self, history: torch.Tensor) -> torch.Tensor:
        """(B, T >= time_history, C, H, W) -> the next frame (B, C, H, W)."""
        return self(history[:, -self.time_history:])[:, 0]

    def example_input(self, batch: int = 2, resolution: int | None = None):
        n = resolution or self.resolution or 128
        return (torch.randn(batch, self.time_history, self.num_fields, n, n),)

    def loss(self, pred: torch.Tensor, target: torch.Tensor):
        """The official "scaledl2" loss on standardised fields: ||err|| / ||y|| per sample, frame and
        field over space, averaged. pred/target: (B, C, H, W) or (B, T, C, H, W)."""
        if pred.dim() == 4:
            pred, target = pred[:, None], target[:, None]
        p, t = self.normalize(pred).flatten(3), self.normalize(target).flatten(3)
        rel = (p - t).norm(dim=-1) / t.norm(dim=-1).clamp_min(1e-12)
        loss = rel.mean()
        return loss, {"rel_l2": float(loss.detach())}


def sinenet(variant: int | None = 8, **config) -> SineNet:
    """Builder. `variant` (8, 6, 4 or 2 waves) picks the official waves and channel multiplier;
    `variant=None` takes `waves` and `mult` from the config (our own sizes)."""
    if variant is not None:
        if int(variant) not in VARIANTS:
            from zoo.errors import UnknownNameError
            raise UnknownNameError("SineNet variant", str(variant), [str(k) for k in VARIANTS])
        config = {**VARIANTS[int(variant)], **config}
    try:
        return SineNet(**config)
    except TypeError as exc:
        raise ConfigError(f"sinenet: {exc}") from None


__all__ = ["SineNet", "sinenet", "VARIANTS", "INS_MEAN", "INS_STD"]
