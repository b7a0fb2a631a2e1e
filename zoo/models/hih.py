"""HiH: a multi-modal Hierarchy-in-Hierarchy gait network (Wang et al., arXiv 2311.11210).

Built from the facts of the official OpenGait fork (gudaochangsheng/HiH @519fcf1; no licence, so
this is a clean-room re-implementation from its layer shapes, not a copy):

* stem: a 3x3x3 Conv3d (no bias) 1 -> C + BatchNorm3d + ReLU on the silhouette sequence;
* four layers of **HGD** (hierarchical gait decomposer) blocks. The first block of a layer has
  `stage` parallel branches; branch i cuts the map into 2**i horizontal strips and runs a 3x3
  convolution on each strip, then a temporal 3x1x1 convolution; the branches are summed, and a
  1x1 projection (+ BN) of the input is added as the residual. Two official styles exist:
    - ``"2d"`` (Gait3D, GREW files): the strip convolution is one 2-D conv shared by all strips
      (GaitPart's FocalConv), applied frame by frame; BN2d after it, a temporal conv + BN3d
      after that; then one more 3x3 conv + temporal conv (``conv2``) after the sum;
    - ``"3d"`` (CASIA-B, OU-MVLP files): every strip has its own (1,3,3) Conv3d; BN3d/ReLU
      around the temporal conv inside each branch; OU-MVLP adds the ``conv2`` pair, CASIA-B not.
  Later blocks of a layer have one branch.
* between layer 2 and 3, **DTA**: a temporal max-pool (kernel 3, stride 3) in the released
  configs; with the pose branch on, a pose-guided 3-D deformable resampling before the pool;
* head: temporal max pooling, horizontal pyramid pooling (mean + max per horizontal bin),
  SeparateFCs (one matrix per part) and SeparateBNNecks (BN over all parts, then a cosine
  classifier per part against normalised class vectors).

Variants (official configs): Gait3D C=64 blocks [1,2,2,1] stages [1,2,3,4] strides [1,2,2,1],
16 bins, 3000 classes; GREW blocks [1,3,3,1], last-layer stage 1, 20000 classes; OU-MVLP (3d
style) widths C,2C,4C,4C at stride 1, stages [1,2,3,3], 5153 classes; CASIA-B (3d style) widths
C,C,2C,4C at stride 1, no conv2, 64 bins, FC 4C -> 2C, 74 classes.

**Code vs paper.** Every released config sets ``enhance: False``: the pose branch (DSE, the
pose-guided spatial offsets, and DTA's deformable resampling) is never built, and DTA is a plain
temporal max-pool. We follow the released configs by default (``pose=False``). ``pose=True``
builds our interpretation of the paper's pose branch: a DSE module in front of the first block of
every layer (the official code does not fix the placement) fed with the pose heatmap max-pooled
to the feature size, predicting (dx, dy, scale) with a 3x3 conv, offsets tanh(d / size) * relu(scale)
added to an identity grid; and a DTA module whose 3x3x3 conv predicts (dx, dy, dt, spatial scale,
temporal scale) for a 3-D grid_sample before the temporal pool.
The official OU-MVLP file builds its ``conv2`` from the block's input width, which cannot run when
a layer widens; we count it as built (to match the published parameter count) but run it only
where widths agree, and otherwise build it planes -> planes (``conv2_from_input=False``).

Inputs: silhouettes (B, T, H, W) in [0, 1] (64x44 for the real sets) and, with the pose branch,
pose heatmaps of the same shape. Outputs: embeddings (B, E, P) and logits (B, K, P).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


# ---- blocks -------------------------------------------------------------------------------------

class StripConv2d(nn.Module):
    """One 3x3 conv applied separately to each of 2**level horizontal strips (shared weights)."""

    def __init__(self, cin: int, cout: int, stride: int, level: int):
        super().__init__()
        self.level = level
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

    def forward(self, x):   # x: (N, C, H, W)
        if self.level == 0:
            return self.conv(x)
        strips = x.split(max(1, x.shape[2] // 2 ** self.level), dim=2)
        return torch.cat([self.conv(s) for s in strips], dim=2)


class StripConv3d(nn.Module):
    """A (1,3,3) Conv3d per horizontal strip (2**level strips, each with its own weights)."""

    def __init__(self, cin: int, cout: int, stride: int, level: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                                             bias=False) for _ in range(2 ** level))

    def forward(self, x):   # x: (N, C, T, H, W)
        if len(self.convs) == 1:
            return self.convs[0](x)
        strips = x.split(max(1, x.shape[3] // len(self.convs)), dim=3)
        if len(strips) != len(self.convs):   # height not divisible: the last strips share a conv
            return torch.cat([self.convs[min(i, len(self.convs) - 1)](s) for i, s in enumerate(strips)], dim=3)
        return torch.cat([c(s) for c, s in zip(self.convs, strips)], dim=3)


def _temporal(c: int) -> nn.Conv3d:
    return nn.Conv3d(c, c, (3, 1, 1), padding=(1, 0, 0), bias=False)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame of (N, C, T, H, W)."""
    n, c, t, h, w = x.shape
    y = module(x.transpose(1, 2).reshape(n * t, c, h, w))
    return y.reshape(n, t, *y.shape[1:]).transpose(1, 2)


class Branch2d(nn.Module):
    def __init__(self, cin, cout, stride, level):
        super().__init__()
        self.spatial = nn.Sequential(StripConv2d(cin, cout, stride, level), nn.BatchNorm2d(cout), nn.ReLU())
        self.temporal = _temporal(cout)
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        return self.bn(self.temporal(_per_frame(self.spatial, x)))


class Branch3d(nn.Module):
    def __init__(self, cin, cout, stride, level):
        super().__init__()
        self.body = nn.Sequential(StripConv3d(cin, cout, stride, level), nn.BatchNorm3d(cout), nn.ReLU(),
                                  _temporal(cout), nn.BatchNorm3d(cout), nn.ReLU())

    def forward(self, x):
        return self.body(x)


class DSE(nn.Module):
    """Pose-guided spatial enhancement (our interpretation): resample features at offsets predicted
    from the pose heatmap."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        nn.init.zeros_(self.offset.weight)   # start as the identity warp

    def forward(self, x, pose):   # x: (N, C, T, H, W), pose: (N, 1, T, H0, W0)
        n, c, t, h, w = x.shape
        p = F.adaptive_max_pool3d(pose.detach(), (t, h, w)).transpose(1, 2).reshape(n * t, 1, h, w)
        dx, dy, scale = self.offset(p).chunk(3, dim=1)
        off = torch.tanh(torch.cat([dx / w, dy / h], 1)) * F.relu(scale)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx, gy], -1)[None] + off.permute(0, 2, 3, 1)
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.reshape(n, t, c, h, w).transpose(1, 2)


class DTA(nn.Module):
    """Temporal aggregation between layers 2 and 3: max-pool over time (kernel 3, stride 3), as the
    released configs run it; with `deformable=True` (our interpretation of the paper's pose branch)
    a pose-predicted 3-D resampling first."""

    def __init__(self, deformable: bool = False):
        super().__init__()
        self.deformable = deformable
        if deformable:
            self.offset = nn.Conv3d(1, 5, 3, padding=1, bias=False)
            nn.init.zeros_(self.offset.weight)

    def forward(self, x, pose: Optional[torch.Tensor]):
        if x.shape[2] < 3:   # too short to pool: repeat the frames (as the official code does)
            x = x.repeat(1, 1, 3 if x.shape[2] == 1 else 2, 1, 1)
            if pose is not None:
                pose = pose.repeat(1, 1, 3 if pose.shape[2] == 1 else 2, 1, 1)
        if self.deformable and pose is not None:
            n, c, t, h, w = x.shape
            p = F.adaptive_max_pool3d(pose.detach(), (t, h, w))
            dx, dy, dt, s, st = self.offset(p).chunk(5, dim=1)
            spatial = torch.tanh(torch.cat([dx / w, dy / h], 1)) * F.relu(s)
            temporal = torch.tanh(dt / t) * F.relu(st)
            zs = torch.linspace(-1, 1, t, device=x.device, dtype=x.dtype)
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
            gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
            grid = torch.stack([gx, gy, gz], -1)[None] + torch.cat([spatial, temporal], 1).permute(0, 2, 3, 4, 1)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        x = F.max_pool3d(x, (3, 1, 1), (3, 1, 1))
        if pose is not None:
            pose = F.max_pool3d(pose, (3, 1, 1), (3, 1, 1))
        return x, pose


class HGD(nn.Module):
    """Hierarchical gait decomposer block: `stage` strip-conv branches summed, (conv2), residual."""

    def __init__(self, cin: int, cout: int, stride: int, stage: int, style: str, conv2: bool,
                 conv2_from_input: bool = False, pose: bool = False):
        super().__init__()
        Branch = Branch2d if style == "2d" else Branch3d
        self.style = style
        self.branches = nn.ModuleList(Branch(cin, cout, stride, i) for i in range(stage))
        self.conv2 = None
        self.conv2_runs = True
        if conv2:
            if style == "2d":
                self.conv2 = Branch2d(cout, cout, 1, 0)
            else:
                # official OU-MVLP: built from the input width with the block's stride
                c2_in, c2_stride = (cin, stride) if conv2_from_input else (cout, 1)
                self.conv2 = Branch3d(c2_in, cout, c2_stride, 0)
                self.conv2_runs = c2_in == cout and c2_stride == 1
        if style == "2d":
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False),
                                          nn.BatchNorm3d(cout))
        self.dse = DSE() if pose else None

    def forward(self, x, pose: Optional[torch.Tensor] = None):
        if self.dse is not None and pose is not None:
            x = self.dse(x, pose)
        out = self.branches[0](x)
        if self.style == "2d":
            out = F.relu(out)
        for b in self.branches[1:]:
            y = b(x)
            out = out + (F.relu(y) if self.style == "2d" else y)
        if self.conv2 is not None and self.conv2_runs:
            out = self.conv2(out)
        res = _per_frame(self.shortcut, x) if self.style == "2d" else self.shortcut(x)
        return F.relu(out + res)


class SeparateFCs(nn.Module):
    """One (in x out) matrix per horizontal part."""

    def __init__(self, parts: int, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts, cin, cout)))

    def forward(self, x):   # (N, C, P) -> (N, C', P)
        return torch.einsum("ncp,pco->nop", x, self.weight)


class SeparateBNNecks(nn.Module):
    """BNNeck over all parts at once, then a cosine classifier per part."""

    def __init__(self, parts: int, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(parts * channels)
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(parts, channels, num_classes)))

    def forward(self, x):   # (N, C, P) -> features (N, C, P), logits (N, K, P)
        n, c, p = x.shape
        feat = self.bn(x.reshape(n, c * p)).reshape(n, c, p)
        feat = F.normalize(feat, dim=1)
        logits = torch.einsum("ncp,pck->nkp", feat, F.normalize(self.weight, dim=1))
        return feat, logits


def horizontal_pyramid(x: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, bins): mean + max over each of `bins` horizontal strips."""
    n, c, h, w = x.shape
    if h % bins:
        raise ValueError(f"feature height {h} is not divisible into {bins} horizontal bins")
    z = x.reshape(n, c, bins, -1)
    return z.mean(-1) + z.amax(-1)


# ---- the network --------------------------------------------------------------------------------

class HiH(nn.Module):
    """The HiH gait network; implements the gait-recognition task's `GaitModel` protocol."""

    def __init__(self, channels: int = 64, widths: Sequence[int] = (1, 2, 4, 4), strides: Sequence[int] = (1, 2, 2, 1),
                 stages: Sequence[int] = (1, 2, 3, 4), blocks: Sequence[int] = (1, 2, 2, 1), style: str = "2d",
                 conv2: bool = True, conv2_from_input: bool = False, bins: int = 16, embed_ratio: int = 4,
                 num_classes: int = 3000, pose: bool = False, frame_size: Sequence[int] = (64, 44),
                 in_channels: int = 1):
        super().__init__()
        if style not in ("2d", "3d"):
            raise ValueError(f"style must be '2d' or '3d', not {style!r}")
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.num_classes = int(num_classes)
        self.uses_pose = bool(pose)
        self.bins = int(bins)
        c = int(channels)
        self.stem = nn.Sequential(nn.Conv3d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm3d(c), nn.ReLU())
        layers, cin = [], c
        for j in range(4):
            cout = c * int(widths[j])
            blks = [HGD(cin, cout, int(strides[j]), int(stages[j]), style, conv2, conv2_from_input, pose)]
            blks += [HGD(cout, cout, 1, 1, style, conv2, conv2_from_input, False) for _ in range(int(blocks[j]) - 1)]
            layers.append(nn.ModuleList(blks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.dta = DTA(deformable=pose)
        self.embed_dim = cin * int(embed_ratio) // 4
        self.fcs = SeparateFCs(self.bins, cin, self.embed_dim)
        self.bnnecks = SeparateBNNecks(self.bins, self.embed_dim, self.num_classes)

    def backbone_parameters(self) -> int:
        """Parameters without the BNNeck classifier (what the spec's 'backbone' counts)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("bnnecks."))

    def forward(self, silhouettes: torch.Tensor, pose: Optional[torch.Tensor] = None):
        """silhouettes (B, T, H, W) -> (embeddings (B, E, P), logits (B, K, P))."""
        x = silhouettes.unsqueeze(1)
        p = pose.unsqueeze(1) if (pose is not None and self.uses_pose) else None
        x = self.stem(x)
        for layer in (self.layer1, self.layer2):
            for i, blk in enumerate(layer):
                x = blk(x, p)
        x, p = self.dta(x, p)
        for layer in (self.layer3, self.layer4):
            for blk in layer:
                x = blk(x, p)
        x = x.amax(dim=2)                        # temporal max pooling
        feat = horizontal_pyramid(x, self.bins)
        embed = self.fcs(feat)
        _, logits = self.bnnecks(embed)
        return embed, logits


# ---- variants (official configs) ----------------------------------------------------------------

_VARIANTS = {
    "gait3d": dict(widths=(1, 2, 4, 4), strides=(1, 2, 2, 1), stages=(1, 2, 3, 4), blocks=(1, 2, 2, 1), style="2d",
                   conv2=True, bins=16, embed_ratio=4, num_classes=3000),
    "grew": dict(widths=(1, 2, 4, 4), strides=(1, 2, 2, 1), stages=(1, 2, 3, 1), blocks=(1, 3, 3, 1), style="2d",
                 conv2=True, bins=16, embed_ratio=4, num_classes=20000),
    "oumvlp": dict(widths=(1, 2, 4, 4), strides=(1, 1, 1, 1), stages=(1, 2, 3, 3), blocks=(1, 1, 1, 1), style="3d",
                   conv2=True, conv2_from_input=True, bins=16, embed_ratio=4, num_classes=5153),
    "casiab": dict(widths=(1, 1, 2, 4), strides=(1, 1, 1, 1), stages=(1, 2, 3, 3), blocks=(1, 1, 1, 1), style="3d",
                   conv2=False, bins=64, embed_ratio=2, num_classes=74),
}


def hih(variant: str = "gait3d", **config) -> HiH:
    """A HiH network: an official variant's settings, overridden by `config`."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown HiH variant {variant!r}; one of {', '.join(_VARIANTS)}")
    return HiH(**{**_VARIANTS[variant], **config})
