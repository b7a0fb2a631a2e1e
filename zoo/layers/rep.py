"""Re-parameterisable depthwise convolutions: a large-kernel depthwise conv trained with parallel
smaller (optionally dilated) depthwise branches, each with its own BatchNorm, that fold into one
large kernel for deployment (UniRepLKNet's Dilated Reparam Block, Ding et al., CVPR 2024).

Submodule names (`lk_origin`, `origin_bn`, `dil_conv_k{K}_{r}`, `dil_bn_k{K}_{r}`, `dwconv`,
`norm`) are the ones UniRepLKNet and MHAF-YOLO checkpoints use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.layers.conv import batch_norm, fold_bn

#: large kernel size -> the parallel branches (kernel size, dilation) UniRepLKNet trains with it.
#: The sizes up to 9 use undilated branches (MHAF-YOLO's choice); 11-17 are UniRepLKNet's dilated sets.
DILATED_BRANCHES: dict[int, tuple[tuple[int, int], ...]] = {
    3: ((3, 1), (1, 1)),
    5: ((3, 1), (1, 1)),
    7: ((5, 1), (3, 1)),
    9: ((7, 1), (5, 1), (3, 1)),
    11: ((5, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    15: ((5, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    17: ((5, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
}


def _depthwise(channels: int, kernel_size: int, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                     dilation=dilation, groups=channels, bias=bias)


def dilated_to_dense(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """A k x k kernel applied with dilation r equals a dense (r(k-1)+1)^2 kernel with zeros between taps."""
    if dilation == 1:
        return kernel
    k = kernel.shape[-1]
    size = dilation * (k - 1) + 1
    dense = kernel.new_zeros(*kernel.shape[:-2], size, size)
    dense[..., ::dilation, ::dilation] = kernel
    return dense


def pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a square odd kernel to `size`, centred (same output for 'same' padding)."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


class DilatedReparamBlock(nn.Module):
    """Depthwise k x k conv + BN, plus parallel depthwise branches (each conv + BN), summed.
    `fuse()` folds everything into `lk_origin` (one depthwise k x k conv with bias)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ConfigError(f"re-parameterisable depthwise kernel size must be one of "
                              f"{sorted(DILATED_BRANCHES)}, got {kernel_size}")
        self.kernel_size = kernel_size
        self.branches = DILATED_BRANCHES[kernel_size]
        self.lk_origin = _depthwise(channels, kernel_size)
        self.origin_bn = batch_norm(channels)
        for k, r in self.branches:
            setattr(self, f"dil_conv_k{k}_{r}", _depthwise(channels, k, r))
            setattr(self, f"dil_bn_k{k}_{r}", batch_norm(channels))
        self.fused = False

    def forward(self, x):
        if self.fused:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in self.branches:
            out = out + getattr(self, f"dil_bn_k{k}_{r}")(getattr(self, f"dil_conv_k{k}_{r}")(x))
        return out

    @torch.no_grad()
    def fuse(self) -> "DilatedReparamBlock":
        if self.fused:
            return self
        weight, bias = fold_bn(self.lk_origin.weight, None, self.origin_bn)
        for k, r in self.branches:
            w, b = fold_bn(getattr(self, f"dil_conv_k{k}_{r}").weight, None, getattr(self, f"dil_bn_k{k}_{r}"))
            weight = weight + pad_to(dilated_to_dense(w, r), self.kernel_size)
            bias = bias + b
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        merged = _depthwise(weight.shape[0], self.kernel_size, bias=True).to(weight)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        del self.origin_bn
        self.fused = True
        return self


class UniRepLKNetBlock(nn.Module):
    """The reduced UniRepLKNet block MHAF-YOLO uses: a DilatedReparamBlock followed by an outer
    BatchNorm `norm`; no activation of its own. `fuse()` leaves one depthwise conv with bias at
    `dwconv.lk_origin` and replaces `norm` by an identity (the deployed layout)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.dwconv = DilatedReparamBlock(dim, kernel_size)
        self.norm = batch_norm(dim)

    def forward(self, x):
        return self.norm(self.dwconv(x))

    @torch.no_grad()
    def fuse(self) -> "UniRepLKNetBlock":
        if isinstance(self.norm, nn.Identity):
            return self
        self.dwconv.fuse()
        conv = self.dwconv.lk_origin
        weight, bias = fold_bn(conv.weight, conv.bias, self.norm)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.norm = nn.Identity()
        return self
