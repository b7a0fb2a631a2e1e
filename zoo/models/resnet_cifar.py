"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as used by the local-learning papers MAN and AugLocal.

Three stages of BasicBlocks with widths 16/32/64 behind a 3x3 stem of width 16, global average
pooling and one linear classifier. ResNet-32 has [5, 5, 5] blocks (466,906 parameters, the
"0.467M" of the local-learning papers), ResNet-110 [18, 18, 18] (1,730,714, "1.731M").

Details follow the official MAN / AugLocal code (both derived from InfoPro), which differs from the
original paper's "option A" ResNet: a stage change uses a projection shortcut (1x1 conv + BN, stride
2) instead of zero-padded identity, which is why ResNet-32 has 0.467M and not 0.464M parameters.
Convolutions are initialised N(0, sqrt(2 / (k*k*out_channels))), BatchNorm with weight 1 / bias 0.
The official model also carries a second, unused 64->classes Linear (`fc` next to the used `fc64`);
we build only the classifier that is used.

The model takes images scaled to [0, 1] and normalises them itself with the dataset's mean/std
(non-persistent buffers from the config): predict/export callers need no preprocessing, and MAN's
reconstruction target (the image before normalisation) is simply the model input.

The model implements the classification task's `Classifier` protocol (`in_chans`, `img_size`,
`num_classes`, `class_names`) and `zoo.layers.local_learning.LocalBackbone`, what local learning
needs to train it block by block without knowing its family: `local_layers()` (stem, then every
residual block, in order), `classify(x)` (pool + fc), `make_block(c_in, c_out, stride)` (a fresh
block of this family for auxiliary networks), `local_split(k)` (the official split tables for K
local modules), `layer_stages`, `init_module` and `local_learning` (the released recipe).
The deployable checkpoint is this plain backbone; auxiliary networks exist only while training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Local-module end points used by InfoPro and MAN (`networks/config.py` of both repositories), as
#: (stage, block) pairs; the stem is merged into the first module. K = 1 is end-to-end training.
#: Note the ResNet-110 "K=55" table has 54 entries and ResNet-32 "K=16" has 15: the papers count
#: the stem as a layer of its own when naming K.
_INFOPRO_SPLITS: dict[int, dict[int, list[tuple[int, int]]]] = {
    32: {
        1: [(3, 4)],
        2: [(2, 1), (3, 4)],
        3: [(1, 4), (2, 4), (3, 4)],
        4: [(1, 2), (2, 1), (3, 0), (3, 4)],
        8: [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)],
        16: [(s, b) for s in (1, 2, 3) for b in range(5)],
    },
    110: {
        1: [(3, 17)],
        2: [(2, 8), (3, 17)],
        3: [(1, 17), (2, 17), (3, 17)],
        4: [(1, 11), (2, 7), (3, 3), (3, 17)],
        8: [(1, 4), (1, 11), (2, 0), (2, 7), (2, 14), (3, 3), (3, 10), (3, 17)],
        16: [(1, 1), (1, 4), (1, 7), (1, 10), (1, 13), (1, 16), (2, 1), (2, 4), (2, 7), (2, 11), (2, 15),
             (3, 1), (3, 5), (3, 9), (3, 13), (3, 17)],
        32: [(1, 1), (1, 2), (1, 4), (1, 5), (1, 7), (1, 9), (1, 11), (1, 13), (1, 14), (1, 16), (1, 17),
             (2, 1), (2, 2), (2, 4), (2, 5), (2, 7), (2, 9), (2, 11), (2, 13), (2, 14), (2, 16), (2, 17),
             (3, 1), (3, 3), (3, 4), (3, 6), (3, 7), (3, 9), (3, 11), (3, 13), (3, 15), (3, 17)],
        55: [(s, b) for s in (1, 2, 3) for b in range(18)],
    },
}

DEPTHS = {20: (3, 3, 3), 32: (5, 5, 5), 44: (7, 7, 7), 56: (9, 9, 9), 110: (18, 18, 18)}

#: per-channel statistics of the datasets the zoo trains these models on (images in [0, 1])
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)   # the values of the official training scripts
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def _he_fan_out_(conv: nn.Conv2d) -> None:
    n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
    conv.weight.data.normal_(0, math.sqrt(2.0 / n))


def init_weights(module: nn.Module) -> None:
    """The official initialisation, applied to every conv and BatchNorm below `module`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            _he_fan_out_(m)
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus a shortcut (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Stem(nn.Module):
    """Normalise the [0, 1] image, then 3x3 conv + BN + ReLU."""

    def __init__(self, in_chans: int, width: int, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.conv = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv((x - self.mean) / self.std)))


class ClassifierHead(nn.Module):
    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class CifarResNet(nn.Module):
    """forward(images in [0, 1], shape (B, in_chans, H, W)) -> logits (B, num_classes)."""

    def __init__(self, depths=(5, 5, 5), widths=(16, 32, 64), stem_width: int = 16, in_chans: int = 3,
                 num_classes: int = 10, img_size: int = 32, mean=None, std=None,
                 class_names: list[str] | None = None, local_learning: dict | None = None,
                 split_tables: dict | None = None):
        super().__init__()
        # without statistics: CIFAR-10's for RGB input, else a neutral [0, 1] -> [-1, 1]
        mean = mean if mean is not None else (CIFAR10_MEAN if in_chans == 3 else 0.5)
        std = std if std is not None else (CIFAR10_STD if in_chans == 3 else 0.5)
        mean, std = _per_channel(mean, in_chans, "mean"), _per_channel(std, in_chans, "std")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.class_names = list(class_names) if class_names else None
        #: the training method this entry was released with (read by the classification task)
        self.local_learning = dict(local_learning or {})
        self.widths = tuple(widths)
        self.stem = Stem(in_chans, stem_width, mean, std)
        c_in = stem_width
        self.stages = len(depths)
        for i, (n, c) in enumerate(zip(depths, widths)):
            blocks = [BasicBlock(c_in if j == 0 else c, c, stride=(1 if i == 0 or j else 2)) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = c
        self.head = ClassifierHead(c_in, num_classes)
        self.layer_stages = [0] + [i + 1 for i, n in enumerate(depths) for _ in range(n)]
        self._split_tables = split_tables or {}
        init_weights(self)

    # ---- plain inference -------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.local_layers():
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # ---- what local learning needs ------------------------------------------------------------
    def local_layers(self) -> list[nn.Module]:
        """The stem followed by every residual block, in forward order."""
        layers: list[nn.Module] = [self.stem]
        for i in range(self.stages):
            layers += list(getattr(self, f"layer{i + 1}"))
        return layers

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def init_module(self, module: nn.Module) -> None:
        init_weights(module)

    def make_block(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        block = BasicBlock(c_in, c_out, stride)
        init_weights(block)
        return block

    def local_split(self, k: int) -> list[int] | None:
        """Index (into `local_layers()`) of the last layer of each of the official K modules, or
        None when the official code has no table for this K."""
        table = self._split_tables.get(k)
        if table is None:
            return None
        first_of_stage = {s: self.layer_stages.index(s) for s in range(1, self.stages + 1)}
        return [first_of_stage[stage] + block for stage, block in table]


def _per_channel(values, in_chans: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(values) == 1:
        values = values * in_chans
    if len(values) != in_chans:
        raise ValueError(f"{what} has {len(values)} values for {in_chans} input channels")
    return values


def resnet_cifar(depth: int = 32, in_chans: int = 3, num_classes: int = 10, img_size: int = 32,
                 widths=(16, 32, 64), mean=None, std=None, class_names: list[str] | None = None,
                 local_learning: dict | None = None) -> CifarResNet:
    """Builder for the registry. `depth` 32 or 110 are the papers' variants (20/44/56 also build).

    `local_learning` ({"method": "man"|"auglocal"|"bp", "local_blocks": K, ...}) is the recipe the
    registry entry was released with; it does not change the network, only how `zoo finetune`
    trains it by default. `img_size` is the input size the weights were trained at (checked by the
    classification task); the network itself accepts any size of 8 pixels or more."""
    from zoo.errors import ConfigError

    if depth not in DEPTHS:
        raise ConfigError(f"CIFAR ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    if len(widths) != 3:
        raise ConfigError(f"CIFAR ResNet needs 3 stage widths, got {list(widths)}")
    try:
        return CifarResNet(DEPTHS[depth], tuple(widths), 16, in_chans, num_classes, img_size, mean, std,
                           class_names, local_learning, _INFOPRO_SPLITS.get(depth))
    except ValueError as exc:
        raise ConfigError(f"resnet{depth}: {exc}") from None
