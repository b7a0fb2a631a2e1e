"""Supervised local learning: train a classification backbone as K gradient-isolated local modules.

Each module is trained by a loss computed right after it (an auxiliary network); its output is
detached before it enters the next module, and each local loss is back-propagated at once, so the
activations of a module are freed before the next module runs. This is where the memory saving of
local learning comes from, and why the wrappers here run their own backward passes
(`runs_backward = True`): the fine-tune loop only steps the optimizer. They sit in `layers`, beside
the auxiliary heads and losses they are made of, so that the classification task (which picks a
model's training module) can reach them; `LocalLearningOptions` declares the `-o` keys they read.

Methods (`method=`):

* ``man`` - Momentum Auxiliary Network (Su et al., ECCV 2024, arXiv 2407.05623), on top of InfoPro
  (decoder + classifier local loss), as in the official `resnetInfoPro_MAN.py`: at each module
  boundary the output x goes through an EMA copy of the *next* residual block (no gradient; after
  each local backward ``ema = m * ema + (1 - m) * next_block`` with m = 0.995, parameters only) plus
  a trainable copy of that block (the paper's "learnable bias" is in the code a full trainable copy
  of the block, not a bias vector); y = LB(x) + EMA(x) feeds a reconstruction decoder (BCE against
  the input image) and a "2c2f" auxiliary classifier (CE). Loss weights ixx/ixy are interpolated
  between (5, 0.5) and (0, 0) with ratio = stage index of the next block / (K - 2): the official
  code uses the stage index, not the boundary index, there; we follow it. Both copies start from a
  fresh initialisation (the official global init loop re-initialises them), not from the block.
  Split tables for K come from the backbone (`local_split`), the stem merged into the first module.
* ``auglocal`` - AugLocal (Ma et al., ICLR 2024, arXiv 2402.17318), official `AuxNetwork('unifSamp')`:
  layer-wise modules; the auxiliary net of layer l re-instantiates d of its later layers, chosen
  uniformly (indices round(l + (L-l-1)/d * i), i = 1..d, Python rounding), with fresh weights, then
  average pooling, [BatchNorm1d when d <= 1] and a linear classifier, trained with CE. With the
  pyramid coefficient c the depth of layer i is max(1, round(d(1 - ic/(K'-2)) + ic/(K'-2))).
  As the official `train.py` does, K' = K - d local modules are used (the last d+1 layers and the
  classifier form the last module, trained with the output loss), so ResNet-32 K=16 d=2 has 13
  auxiliary networks. `aux_widen` multiplies the auxiliary widths (official `--aux_net_widen`);
  stage changes inside an auxiliary net are placed by the real network's spatial sizes, which is the
  official width-ratio rule for widen = 1 (for widen != 1 the official rule loses the downsampling).
* ``bp`` - plain end-to-end back-propagation through the same loop, the reference.

A backbone plugs in by implementing the `LocalBackbone` protocol below (`CifarResNet` does); a
classifier that does not can still be trained with ``bp``.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from zoo.errors import ConfigError, UnknownNameError
from zoo.options import Options

METHODS = ("man", "auglocal", "bp")

_Pair = Union[float, tuple[float, float]]


class LocalLearningOptions(Options):
    """The `-o` keys `training_method` reads (unset: the entry's recipe, else the defaults below)."""

    # a plain string, so that an unknown method is answered with the closest names
    method: Optional[str] = Field(None, description="training method: bp, man or auglocal "
                                                    "(default: the entry's recipe, else bp)")
    local_blocks: Optional[int] = Field(None, description="man/auglocal: number K of local modules")
    aux_depth: Optional[int] = Field(None, description="auglocal: depth d of the auxiliary networks (2)")
    pyramid: Optional[Union[bool, float]] = Field(
        None, description="auglocal: pyramid coefficient of the auxiliary depths (0.5; false = constant depth)")
    aux_widen: Optional[float] = Field(None, description="auglocal: width multiplier of the auxiliary networks (1)")
    ema_decay: Optional[float] = Field(None, description="man: EMA momentum of the next-block copy (0.995)")
    ixx: Optional[_Pair] = Field(None, description="man: reconstruction-loss weight, first and last module ([5, 0])")
    ixy: Optional[_Pair] = Field(None, description="man: auxiliary-CE weight, first and last module ([0.5, 0])")


# ---- the backbone protocol ---------------------------------------------------------------------

@runtime_checkable
class LocalBackbone(Protocol):
    """What man and auglocal need from a classification backbone, besides its plain forward."""

    in_chans: int
    img_size: int
    num_classes: int
    #: the recipe the entry was released with ({"method": ..., "local_blocks": K, ...}; {} for none)
    local_learning: dict
    #: stage index of each local layer (0 for the stem): MAN's loss weights follow it
    layer_stages: list[int]

    def local_layers(self) -> list[nn.Module]:
        """Modules applied in sequence; the first takes the image."""

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The output head on the last local layer's features."""

    def make_block(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        """A fresh block of this family (AugLocal's auxiliary networks are made of them)."""

    def local_split(self, k: int) -> Optional[list[int]]:
        """The last layer index of each of the official K modules, or None without a table for K."""

    def init_module(self, module: nn.Module) -> None:
        """Initialise `module` in the backbone's own scheme (the official code re-initialises every
        auxiliary module with its global init loop)."""


def _layers(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, LocalBackbone):
        raise ConfigError(f"{type(model).__name__} does not implement the local-learning backbone protocol "
                          "(local_layers()/classify()/...); local learning (man, auglocal) needs it, use --method bp")
    return list(model.local_layers())


@torch.no_grad()
def probe_layers(model: nn.Module, img_size: int | None = None) -> list[tuple[int, int, int]]:
    """(channels, height, width) of every local layer's output, from one forward of a dummy image."""
    layers = _layers(model)
    size = img_size or model.img_size
    param = next(model.parameters())
    x = torch.zeros(2, model.in_chans, size, size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    shapes = []
    try:
        for layer in layers:
            x = layer(x)
            shapes.append(tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    return shapes


def man_modules(model: nn.Module, k: int) -> list[list[int]]:
    """The K local modules of MAN/InfoPro as lists of layer indices (stem merged into the first)."""
    n_layers = len(_layers(model))
    name = type(model).__name__
    if k < 1:
        raise ConfigError(f"--local-blocks must be at least 1, got {k}")
    ends = model.local_split(k)
    if ends is None:
        tables = [t for t in range(1, n_layers + 1) if model.local_split(t)]
        if tables:
            raise ConfigError(f"K={k} does not split {name} ({n_layers} layers) into the official local "
                              f"modules; choose K from {', '.join(map(str, tables))}")
        if n_layers % k:
            raise ConfigError(f"K={k} does not divide {name} ({n_layers} layers) into equal local modules")
        ends = [(i + 1) * (n_layers // k) - 1 for i in range(k)]
    if ends[-1] != n_layers - 1 or any(b <= a for a, b in zip(ends, ends[1:])):
        raise ConfigError(f"the split table of {name} for K={k} is not increasing up to its last layer")
    starts = [0] + [e + 1 for e in ends[:-1]]
    return [list(range(s, e + 1)) for s, e in zip(starts, ends)]


def auglocal_depths(n_modules: int, depth: int, pyramid: float | None) -> list[int]:
    """Auxiliary depth of each of the n_modules - 1 layers that have an auxiliary network."""
    if not pyramid:
        return [depth] * (n_modules - 1)
    denom = n_modules - 2
    out = []
    for i in range(n_modules - 1):
        r = (i * pyramid) / denom if denom > 0 else 0.0
        out.append(max(1, round(depth * (1 - r) + r * 1)))
    return out


def auglocal_selection(layer: int, depth: int, n_layers: int) -> list[int]:
    """Indices of the later layers whose architecture the auxiliary net of `layer` re-instantiates."""
    if depth >= n_layers - 1 - layer:
        return list(range(layer + 1, n_layers))
    return [round(layer + (n_layers - layer - 1) / depth * i) for i in range(1, depth + 1)]


# ---- auxiliary networks ------------------------------------------------------------------------

class ReconstructionDecoder(nn.Module):
    """InfoPro's decoder: bilinear upsampling to the image size, conv3x3 -> 12, BN, ReLU,
    conv3x3 -> image channels, sigmoid; loss = BCE against the image in [0, 1]."""

    def __init__(self, c_in: int, image_channels: int, hidden: int = 12):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c_in, hidden, 3, 1, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                                 nn.Conv2d(hidden, image_channels, 3, 1, 1), nn.Sigmoid())

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        features = F.interpolate(features, size=image.shape[-2:], mode="bilinear", align_corners=True)
        with torch.autocast(device_type=image.device.type, enabled=False):
            return F.binary_cross_entropy(self.net(features.float()), image.float())


class ConvAuxClassifier(nn.Module):
    """InfoPro's "2c2f" auxiliary classifier: two 3x3 conv-BN-ReLU (the first doubles the width
    with stride 2 until the network's last width is reached, as 16->32 s2, 32->64 s2, 64->64 s1),
    average pooling, FC -> 128, ReLU, FC -> classes."""

    def __init__(self, c_in: int, max_width: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        c_mid, stride = (2 * c_in, 2) if c_in < max_width else (c_in, 1)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, stride, 1, bias=False), nn.BatchNorm2d(c_mid), nn.ReLU(),
            nn.Conv2d(c_mid, c_mid, 3, 1, 1, bias=False), nn.BatchNorm2d(c_mid), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(c_mid, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---- the training wrappers ---------------------------------------------------------------------

class _LocalTraining(nn.Module):
    """forward(batch=(images, labels)) runs every local forward *and backward*; returns the output
    loss (detached) and logs. The optimizer over `self.parameters()` then steps once.

    The fine-tune loop may set `loss_scale` (gradient accumulation, AMP loss scaling): every local
    loss is multiplied by it before its backward. Under torch.distributed the loop must not wrap
    this module in DistributedDataParallel (its hooks expect one backward after forward returns);
    the training loop all-reduces the gradients after forward instead. All state that training needs
    (auxiliary nets, EMA copies) is registered here, so the loop's state_dict covers resume."""

    runs_backward = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.loss_scale = 1.0

    def _layers(self) -> list[nn.Module]:
        return _layers(self.model)

    def _backward(self, loss: torch.Tensor) -> None:
        (loss * self.loss_scale).backward()

    def _local_backward(self, loss: torch.Tensor, x: torch.Tensor, local: list[torch.Tensor]) -> torch.Tensor:
        """Back-propagate one local loss now and cut the graph: the returned features enter the
        next module without a path back, so this module's activations can be freed."""
        self._backward(loss)
        local.append(loss.detach())
        return x.detach()

    def _local_forward(self, images: torch.Tensor, labels: torch.Tensor,
                       layers: list[nn.Module]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the local modules with their local backward passes; return the features the output
        head classifies and the local losses."""
        raise NotImplementedError

    def forward(self, batch):
        images, labels = batch[0], batch[1]
        if not (self.training and torch.is_grad_enabled()):
            # evaluation: the deployable model's own forward, no auxiliary nets
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
            return loss, {"loss": float(loss.detach()), "acc": _accuracy(logits, labels)}
        x, local = self._local_forward(images, labels, self._layers())
        logits = self.model.classify(x)
        loss = F.cross_entropy(logits, labels)
        self._backward(loss)
        logs = {"loss": float(loss.detach()), "acc": _accuracy(logits, labels)}
        if local:
            logs["local_loss"] = float(torch.stack(local).mean())
        return loss.detach(), logs

    def auxiliary_parameters(self) -> int:
        """Parameters that exist only while training (the deployable model excluded)."""
        own = {id(p) for p in self.model.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in own)


class ManTraining(_LocalTraining):
    """MAN on top of InfoPro (see the module docstring)."""

    def __init__(self, model: nn.Module, local_blocks: int = 16, ema_decay: float = 0.995,
                 ixx: tuple[float, float] = (5.0, 0.0), ixy: tuple[float, float] = (0.5, 0.0)):
        super().__init__(model)
        if not 0.0 <= ema_decay <= 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1], got {ema_decay}")
        layers = self._layers()
        self.local_blocks, self.ema_decay = int(local_blocks), float(ema_decay)
        self.ixx, self.ixy = tuple(map(float, ixx)), tuple(map(float, ixy))
        self.modules_ = man_modules(model, self.local_blocks)
        shapes = probe_layers(model)
        max_width = max(c for c, _, _ in shapes)
        stages, n_classes = model.layer_stages, model.num_classes
        self.learnable_copy, self.ema_copy = nn.ModuleList(), nn.ModuleList()
        self.decoders, self.classifiers = nn.ModuleList(), nn.ModuleList()
        self.weights: list[tuple[float, float]] = []
        for i, group in enumerate(self.modules_[:-1]):
            nxt = group[-1] + 1
            lb, ema = copy.deepcopy(layers[nxt]), copy.deepcopy(layers[nxt])
            model.init_module(lb)
            model.init_module(ema)
            for p in ema.parameters():
                p.requires_grad_(False)
            width = shapes[nxt][0]
            decoder = ReconstructionDecoder(width, model.in_chans)
            head = ConvAuxClassifier(width, max_width, n_classes)
            model.init_module(decoder)
            model.init_module(head)
            self.learnable_copy.append(lb)
            self.ema_copy.append(ema)
            self.decoders.append(decoder)
            self.classifiers.append(head)
            position = stages[nxt] if stages else i
            ratio = position / (self.local_blocks - 2) if self.local_blocks > 2 else 0.0
            self.weights.append((self.ixx[0] * (1 - ratio) + self.ixx[1] * ratio,
                                 self.ixy[0] * (1 - ratio) + self.ixy[1] * ratio))
        self._next_layer = [group[-1] + 1 for group in self.modules_[:-1]]

    @torch.no_grad()
    def _ema_update(self, i: int) -> None:
        m = self.ema_decay
        block = self._layers()[self._next_layer[i]]
        for p_ema, p in zip(self.ema_copy[i].parameters(), block.parameters()):
            p_ema.mul_(m).add_(p.detach(), alpha=1 - m)

    def _local_forward(self, images, labels, layers):
        x, local = images, []
        for i, group in enumerate(self.modules_):
            for j in group:
                x = layers[j](x)
            if i == len(self.modules_) - 1:
                break
            y = self.learnable_copy[i](x) + self.ema_copy[i](x)
            w_x, w_y = self.weights[i]
            loss = w_x * self.decoders[i](y, images) + w_y * F.cross_entropy(self.classifiers[i](y), labels)
            x = self._local_backward(loss, x, local)
            self._ema_update(i)
        return x, local


class AugLocalTraining(_LocalTraining):
    """AugLocal (see the module docstring)."""

    def __init__(self, model: nn.Module, local_blocks: int | None = None, aux_depth: int = 2,
                 pyramid: float | None = 0.5, aux_widen: float = 1.0):
        super().__init__(model)
        layers = self._layers()
        n_layers = len(layers)
        name = type(model).__name__
        k = n_layers if local_blocks is None else int(local_blocks)
        d = int(aux_depth)
        if not 2 <= k <= n_layers:
            raise ConfigError(f"K={k} does not divide {name} into layer-wise local modules: AugLocal needs "
                              f"2 <= K <= {n_layers} (its number of layers)")
        if d < 1:
            raise ConfigError(f"--aux-depth must be at least 1, got {d}")
        if d > k - 2:
            raise ConfigError(f"--aux-depth {d} is larger than the layers after a block allow for K={k}: "
                              f"AugLocal trains the last d layers with the output loss (K' = K - d local "
                              f"modules), so d <= K - 2 = {k - 2}")
        if aux_widen <= 0:
            raise ConfigError(f"aux_widen must be positive, got {aux_widen}")
        self.local_blocks, self.aux_depth, self.pyramid, self.aux_widen = k, d, pyramid, float(aux_widen)
        self.n_modules = k - d
        self.depths = auglocal_depths(self.n_modules, d, pyramid)
        shapes = probe_layers(model)
        n_classes = model.num_classes
        self.selections: list[list[int]] = []
        self.aux_nets = nn.ModuleList()
        for layer, depth in enumerate(self.depths):
            chosen = auglocal_selection(layer, depth, n_layers)
            self.selections.append(chosen)
            self.aux_nets.append(self._aux_net(model, shapes, layer, chosen, depth, n_classes))

    def _aux_net(self, model, shapes, layer, chosen, depth, n_classes) -> nn.Module:
        blocks: list[nn.Module] = []
        c_cur, ref_size, pending = shapes[layer][0], shapes[layer][1], 0
        for j in chosen:
            c_j, size_j = shapes[j][0], shapes[j][1]
            if size_j > ref_size:
                raise ConfigError(f"AugLocal: layer {j} has a larger feature map than layer {layer}")
            pending += int(round(math.log2(ref_size / size_j)))
            ref_size = size_j
            stride = 1
            if pending >= 1:
                stride, pending = 2, pending - 1
            c_out = int(c_j * self.aux_widen)
            blocks.append(model.make_block(c_cur, c_out, stride))
            c_cur = c_out
        tail: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if depth <= 1:
            tail.append(nn.BatchNorm1d(c_cur))
        tail.append(nn.Linear(c_cur, n_classes))
        net = nn.Sequential(*blocks, *tail)
        model.init_module(net)
        return net

    def _local_forward(self, images, labels, layers):
        x, local = images, []
        for layer, aux in enumerate(self.aux_nets):
            x = layers[layer](x)
            x = self._local_backward(F.cross_entropy(aux(x), labels), x, local)
        for layer in layers[len(self.aux_nets):]:   # the last module: trained by the output loss
            x = layer(x)
        return x, local


class BackpropTraining(nn.Module):
    """End-to-end cross-entropy; the loop runs the one backward."""

    runs_backward = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        images, labels = batch[0], batch[1]
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss": float(loss.detach()), "acc": _accuracy(logits, labels)}


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.detach().argmax(1) == labels).float().mean() * 100)


# ---- choosing a method from the CLI's options ----------------------------------------------------

def training_method(model: nn.Module, options: dict | None = None) -> nn.Module:
    """The wrapper for options["method"] (else the recipe the model was released with, else bp).

    Options read: method, local_blocks, aux_depth, pyramid (coefficient; 0/false = constant depth),
    aux_widen, ema_decay, ixx, ixy (pairs: first and last module weights)."""
    options = options or {}
    recipe = dict(model.local_learning or {}) if isinstance(model, LocalBackbone) else {}
    method = options.get("method") or recipe.get("method") or "bp"
    if method not in METHODS:
        raise UnknownNameError("training method", str(method), METHODS)
    if recipe.get("method") != method:
        recipe = {}   # a recipe's K/depth belong to its own method
    pick = lambda key, default: options[key] if options.get(key) is not None else recipe.get(key, default)  # noqa: E731
    if method == "bp":
        return BackpropTraining(model)
    if method == "man":
        k = pick("local_blocks", None)
        if k is None:
            k = _finest_table(model)
        return ManTraining(model, local_blocks=_as_int(k, "local_blocks"), ema_decay=float(pick("ema_decay", 0.995)),
                           ixx=_pair(pick("ixx", (5.0, 0.0)), "ixx"), ixy=_pair(pick("ixy", (0.5, 0.0)), "ixy"))
    pyramid = pick("pyramid", 0.5)
    pyramid = 0.0 if pyramid in (False, None, "false", "off") else float(pyramid)
    k = pick("local_blocks", None)
    return AugLocalTraining(model, local_blocks=None if k is None else _as_int(k, "local_blocks"),
                            aux_depth=_as_int(pick("aux_depth", 2), "aux_depth"), pyramid=pyramid,
                            aux_widen=float(pick("aux_widen", 1.0)))


def _finest_table(model) -> int:
    n = len(_layers(model))
    ks = [k for k in range(n, 0, -1) if model.local_split(k)]
    return ks[0] if ks else n


def _as_int(value, what: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    if out != value and not isinstance(value, str):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    return out


def _pair(value, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    try:
        a, b = value
        return float(a), float(b)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number or a pair [first, last], got {value!r}") from None
