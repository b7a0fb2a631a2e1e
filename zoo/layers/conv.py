"""Convolution + BatchNorm + activation, and the arithmetic of folding a BatchNorm into a conv.

Used by the YOLO-style families (MHAF-YOLO first). The submodule names `conv`, `bn`, `act` are the
ones ultralytics-derived checkpoints use, so official state dicts map key for key."""

from __future__ import annotations

import torch
from torch import nn

#: ultralytics' `initialize_weights` sets these on every BatchNorm of its models; checkpoints trained
#: there carry running statistics that assume them, so the YOLO families keep them.
YOLO_BN_EPS = 1e-3
YOLO_BN_MOMENTUM = 0.03


def batch_norm(channels: int, eps: float = YOLO_BN_EPS, momentum: float = YOLO_BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


@torch.no_grad()
def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv weight, conv bias) followed by an eval-mode BatchNorm -> one (weight, bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), (bias - bn.running_mean) * scale + bn.bias


class ConvBnAct(nn.Module):
    """Conv2d (no bias, 'same' padding for odd kernels) -> BatchNorm2d -> activation.

    `act=True` means SiLU, `act=False` no activation, or pass a module. `fuse()` folds the BN into
    the conv (which then gets a bias) and removes `bn`, as deployed YOLO models do."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool | nn.Module = True, dilation: int = 1):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, dilation=dilation, groups=groups,
                              bias=False)
        self.bn = batch_norm(c_out)
        self.act = nn.SiLU() if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        if self.bn is None:
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> "ConvBnAct":
        if self.bn is None:
            return self
        weight, bias = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        fused = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size,
                          self.conv.stride, self.conv.padding, dilation=self.conv.dilation,
                          groups=self.conv.groups, bias=True).to(weight)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.conv = fused
        self.bn = None
        return self


def fuse_descendants(module: nn.Module) -> nn.Module:
    """Call `fuse()` on every descendant of `module` that has one, children before parents (a
    parent's fuse may rely on its children being folded already). `module` itself is left to its
    caller, so a model's own `fuse()` can call this. Returns `module`."""
    for child in list(module.children()):
        fuse_descendants(child)
        if callable(getattr(child, "fuse", None)):
            child.fuse()
    return module
