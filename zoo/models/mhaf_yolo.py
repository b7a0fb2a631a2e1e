"""MHAF-YOLO (a.k.a. MAF-YOLOv2): multi-branch auxiliary FPN detectors, Lite-N / N / S / M.

Yang et al., "MHAF-YOLO: Multi-Branch Heterogeneous Auxiliary Fusion YOLO for accurate object
detection", arXiv 2502.04656; official code github.com/yang-0201/MHAF-YOLO (AGPL-3.0), a fork of
THU-MIG/yolov10.

The graph is built exactly as the official YAMLs `ultralytics/cfg/models/mafv2/MAF-YOLOv2-*.yaml`
build it (written down here as data in `VARIANTS`): layer `i` of the YAML is `self.model[i]`, so
state-dict keys are the official `model.<idx>.…` keys and official weights convert key for key.

Where code and paper disagree we follow the code:
- the paper's AAF formula does not match its figure (official issue #13); the YAML wiring is used;
- the official `fuse()` leaves the BatchNorms inside the repo's own `mafyolo.Conv` (RepHMS and its
  bottlenecks) unfolded; ours folds them too, so our deploy graph has fewer parameters than the
  README counts (N: 2,175,344 vs 2,182,272) while computing the same function;
- the detection head's box branch is MHAF-YOLO's (1x1 conv, UniRepLKNet block k5, 1x1, 1x1 pred),
  not YOLOv10's; the class branch is YOLOv10's.

Outputs: in training mode `forward` returns {"one2many": maps, "one2one": maps} (three raw
(B, 64 + nc, H, W) maps each); in eval mode it returns (B, max_det, 6) detections
[x1, y1, x2, y2, score, label] in input pixels, decoded from the one-to-one head with top-k instead
of NMS (the one-to-many head is not run). `dense(x)` gives the one-to-one head before top-k,
(B, 4 + nc, anchors) with xyxy pixel boxes and sigmoid scores. `fuse()` re-parameterises every
branch and BatchNorm, deletes the one-to-many head and leaves the deploy graph of the README.
For the detection task the model provides `detect`, `loss`, `example_input`, `num_classes`,
`class_names`, `stride`, `fused` and `fuse` (the task's DetectorModel protocol); the head geometry
and the loss live in zoo/layers/yolov10_head.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError, UnknownNameError
from zoo.layers.conv import ConvBnAct, fuse_descendants
from zoo.layers.rep import UniRepLKNetBlock
from zoo.layers.yolov10_head import DFL, REG_MAX, STRIDES, decode, dual_assignment_loss, topk_select

#: the 80 COCO detection classes in the order YOLO models index them (the official weights' labels)
COCO_NAMES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush"]

# ---------------------------------------------------------------------------------------------
# The official YAMLs as data: (from, module, args). Channel args are YAML values before scaling.
# rephms args: [channels, width W, depth D, depth expansion e, kernel k]
# ---------------------------------------------------------------------------------------------
_BACKBONE_N = [
    (-1, "conv", [64, 3, 2]),             # 0  P1/2
    (-1, "conv", [128, 3, 2]),            # 1  P2/4
    (-1, "rephms", [128, 2, 1, 3, 3]),    # 2
    (-1, "conv", [256, 3, 2]),            # 3  P3/8
    (-1, "rephms", [256, 3, 1, 3, 5]),    # 4
    (-1, "scdown", [512, 3, 2]),          # 5  P4/16
    (-1, "rephms", [512, 3, 1, 3, 7]),    # 6
    (-1, "scdown", [1024, 3, 2]),         # 7  P5/32
    (-1, "rephms", [1024, 2, 1, 3, 9]),   # 8
    (-1, "sppf", [1024, 5]),              # 9
    (-1, "psa", [1024]),                  # 10
]


def _head_nsm(p5: int, p4: int, p3: int, w5, w4, w3):
    """The N/S/M neck (SAF top-down 11-23, AAF bottom-up 24-35) and the head. `p*` are YAML
    channels of the P5/P4/P3 neck nodes, `w*` their RepHMS [W, D, e, k] settings."""
    return [
        (6, "avg", []),                            # 11
        ([-1, 10], "concat", []),                  # 12
        (-1, "rephms", [p5, *w5]),                 # 13  SAF P5
        (-1, "upsample", []),                      # 14
        (10, "upsample", []),                      # 15
        (4, "avg", []),                            # 16
        ([-1, 6, -2, -3], "concat", []),           # 17
        (-1, "rephms", [p4, *w4]),                 # 18  SAF P4
        (-1, "upsample", []),                      # 19
        (6, "upsample", []),                       # 20
        (2, "avg", []),                            # 21
        ([-1, 4, -2, -3], "concat", []),           # 22
        (-1, "rephms", [p3, *w3[0]]),              # 23  SAF P3
        (18, "upsample", []),                      # 24
        ([-1, -2], "concat", []),                  # 25
        (-1, "rephms", [p3, *w3[1]]),              # 26  P3 out
        (-1, "conv", [p4, 3, 2]),                  # 27
        (23, "avg", []),                           # 28
        (13, "upsample", []),                      # 29
        ([-2, -1, 18, -3], "concat", []),          # 30
        (-1, "rephms", [p4, *w4]),                 # 31  P4 out
        (-1, "conv", [p4, 3, 2]),                  # 32
        (18, "avg", []),                           # 33
        ([-2, -1, 13], "concat", []),              # 34
        (-1, "rephms", [p5, *w5]),                 # 35  P5 out
        ([26, 31, 35], "detect", []),              # 36
    ]


def _n_layers():
    w = [2, 1, 3]
    return _BACKBONE_N + _head_nsm(512, 384, 384, [*w, 9], [*w, 7], [[*w, 5], [*w, 5]])


def _s_layers():
    layers = _n_layers()
    layers[7] = (-1, "scdown", [768, 3, 2])
    layers[8] = (-1, "rephms", [768, 2, 1, 3, 9])
    return layers


def _m_layers():
    backbone = [
        (-1, "conv", [48, 3, 2]),
        (-1, "conv", [96, 3, 2]),
        (-1, "rephms", [96, 3, 1, 3, 3]),
        (-1, "conv", [192, 3, 2]),
        (-1, "rephms", [192, 4, 1, 2.5, 5]),
        (-1, "scdown", [384, 3, 2]),
        (-1, "rephms", [384, 4, 1, 2.5, 7]),
        (-1, "scdown", [512, 3, 2]),
        (-1, "rephms", [512, 3, 1, 2, 9]),
        (-1, "sppf", [512, 5]),
        (-1, "psa", [512]),
    ]
    return backbone + _head_nsm(384, 256, 256, [3, 1, 2, 9], [3, 1, 2.5, 7], [[3, 1, 3, 5], [3, 1, 3, 5]])


def _lite_n_layers():
    backbone = list(_BACKBONE_N)
    backbone[4] = (-1, "rephms", [256, 2, 1, 3, 5])
    backbone[6] = (-1, "rephms", [512, 2, 1, 3, 7])
    backbone[7] = (-1, "scdown", [768, 3, 2])
    backbone[8] = (-1, "rephms", [768, 2, 1, 2.5, 9])
    backbone[9] = (-1, "sppf", [768, 5])
    backbone[10] = (-1, "psa", [768])
    w = [2, 1, 3]
    head = [
        (6, "avg", []),                            # 11
        ([-1, 10], "concat", []),                  # 12
        (-1, "rephms", [384, *w, 9]),              # 13
        (-1, "upsample", []),                      # 14
        (4, "avg", []),                            # 15
        ([-1, 6, -2], "concat", []),               # 16
        (-1, "rephms", [384, *w, 7]),              # 17
        (-1, "upsample", []),                      # 18
        (2, "avg", []),                            # 19
        ([-1, 4, -2], "concat", []),               # 20
        (-1, "rephms", [256, *w, 5]),              # 21
        ([-1, 18], "concat", []),                  # 22
        (-1, "rephms", [256, *w, 5]),              # 23  P3 out
        (-1, "conv", [384, 3, 2]),                 # 24
        (21, "avg", []),                           # 25
        ([-2, -1, 17, 14], "concat", []),          # 26
        (-1, "rephms", [384, *w, 7]),              # 27  P4 out
        (-1, "conv", [384, 3, 2]),                 # 28
        (17, "avg", []),                           # 29
        ([-2, -1, 13], "concat", []),              # 30
        (-1, "rephms", [384, *w, 9]),              # 31  P5 out
        ([23, 27, 31], "detect", []),              # 32
    ]
    return backbone + head


#: variant -> (width multiple, max channels, layer list). Depth multiple is 1 in every official YAML.
VARIANTS = {
    "lite-n": (0.25, 1024, _lite_n_layers()),
    "n": (0.25, 1024, _n_layers()),
    "s": (0.5, 1024, _s_layers()),
    "m": (1.0, 768, _m_layers()),
}


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------
class AVG(nn.Module):
    """Halve the resolution by average pooling (the official AVG: adaptive pool to floor(H/2))."""

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % 2 == 0 and w % 2 == 0:  # the same numbers, and an op every exporter knows
            return F.avg_pool2d(x, 2, 2)
        return F.adaptive_avg_pool2d(x, (h // 2, w // 2))


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class Upsample(nn.Upsample):
    def __init__(self):
        super().__init__(scale_factor=2.0, mode="nearest")


class SCDown(nn.Module):
    """YOLOv10's spatial-channel decoupled downsampling: 1x1 conv, then a strided depthwise conv."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.cv1 = ConvBnAct(c_in, c_out, 1)
        self.cv2 = ConvBnAct(c_out, c_out, kernel_size, stride, groups=c_out, act=False)

    def forward(self, x):
        return self.cv2(self.cv1(x))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools concatenated with their input."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = ConvBnAct(c_in, hidden, 1)
        self.cv2 = ConvBnAct(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """YOLOv10's multi-head self-attention over all positions; queries and keys are half as wide
    as values; a depthwise 3x3 positional term is added on the values."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if num_heads < 1:
            raise ConfigError(f"PSA attention needs at least 64 channels per half, got {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = self.head_dim // 2
        self.scale = self.key_dim ** -0.5
        self.qkv = ConvBnAct(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = ConvBnAct(dim, dim, 1, act=False)
        self.pe = ConvBnAct(dim, dim, 3, groups=dim, act=False)

    def forward(self, x):
        b, c, h, w = x.shape
        # the qkv channels are laid out per head as [q(key_dim), k(key_dim), v(head_dim)]
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSA(nn.Module):
    """YOLOv10's partial self-attention: attention + feed-forward on one half of the channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_in != c_out:
            raise ConfigError(f"PSA keeps its width; got {c_in} -> {c_out}")
        self.c = c_in // 2
        self.cv1 = ConvBnAct(c_in, 2 * self.c, 1)
        self.cv2 = ConvBnAct(2 * self.c, c_in, 1)
        self.attn = Attention(self.c, num_heads=self.c // 64)
        self.ffn = nn.Sequential(ConvBnAct(self.c, 2 * self.c, 1), ConvBnAct(2 * self.c, self.c, 1, act=False))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((a, b), 1))


class DepthBottleneck(nn.Module):
    """The RepHMS branch block (official DepthBottleneckUniv2): 1x1 expand to `mid`, large-kernel
    re-parameterisable depthwise + SiLU, 1x1, again depthwise + SiLU, 1x1 back. No residual."""

    def __init__(self, channels: int, expansion: float, kernel_size: int):
        super().__init__()
        mid = int(channels * expansion)
        self.conv1 = ConvBnAct(channels, mid, 1)
        self.conv2 = UniRepLKNetBlock(mid, kernel_size)
        self.act = nn.SiLU()
        self.one_conv = ConvBnAct(mid, mid, 1)
        self.conv3 = UniRepLKNetBlock(mid, kernel_size)
        self.act1 = nn.SiLU()
        self.one_conv2 = ConvBnAct(mid, channels, 1)

    def forward(self, x):
        x = self.one_conv(self.act(self.conv2(self.conv1(x))))
        return self.one_conv2(self.act1(self.conv3(x)))


class RepHMS(nn.Module):
    """Re-parameterised heterogeneous multi-scale block. A 1x1 conv makes `width` chunks of
    c_ = out/2 channels; chunk 0 passes through; branch i (of width-1) runs `depth` bottlenecks, and
    the input of its j-th bottleneck also receives the j-th output of the previous branch (chunk 0
    for the first branch), a Res2Net-like cascade. Every chunk and bottleneck output is
    concatenated and mixed by a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, width: int, depth: int, expansion: float, kernel_size: int):
        super().__init__()
        if width < 2 or depth not in (1, 2):
            # the official cascade bookkeeping only means this rule for depth 1 and 2 (all its configs)
            raise ConfigError(f"RepHMS needs width >= 2 and depth 1 or 2, got width {width}, depth {depth}")
        self.width, self.depth = width, depth
        self.c_ = int(c_out * 0.5)
        self.conv1 = ConvBnAct(c_in, self.c_ * width, 1)
        self.RepElanMSBlock = nn.ModuleList(
            nn.ModuleList(DepthBottleneck(self.c_, expansion, kernel_size) for _ in range(depth))
            for _ in range(width - 1))
        self.conv2 = ConvBnAct(self.c_ * (1 + (width - 1) * depth), c_out, 1)

    def forward(self, x):
        chunks = self.conv1(x).split(self.c_, dim=1)
        outs = [chunks[0]]
        previous = [chunks[0]]  # what the next branch adds at each depth step
        for i, branch in enumerate(self.RepElanMSBlock):
            y = chunks[i + 1]
            current = []
            for j, block in enumerate(branch):
                if j < len(previous):
                    y = y + previous[j]
                y = block(y)
                current.append(y)
            outs += current
            previous = current
        return self.conv2(torch.cat(outs, 1))


class V10Detect(nn.Module):
    """YOLOv10 dual-assignment head with MHAF-YOLO's box branch. The one-to-one branches see
    detached features (so only the one-to-many loss trains the neck through them)."""

    def __init__(self, num_classes: int, channels: list[int], max_det: int = 300):
        super().__init__()
        self.nc = num_classes
        self.no = num_classes + 4 * REG_MAX
        self.max_det = max_det
        c2 = max(16, channels[0] // 4, 4 * REG_MAX)
        c3 = max(channels[0], min(num_classes, 100))

        def box_branch(c):
            return nn.Sequential(ConvBnAct(c, c2, 1), UniRepLKNetBlock(c2, 5), ConvBnAct(c2, c2, 1),
                                 nn.Conv2d(c2, 4 * REG_MAX, 1))

        def cls_branch(c):
            return nn.Sequential(nn.Sequential(ConvBnAct(c, c, 3, groups=c), ConvBnAct(c, c3, 1)),
                                 nn.Sequential(ConvBnAct(c3, c3, 3, groups=c3), ConvBnAct(c3, c3, 1)),
                                 nn.Conv2d(c3, num_classes, 1))

        self.cv2 = nn.ModuleList(box_branch(c) for c in channels)
        self.cv3 = nn.ModuleList(cls_branch(c) for c in channels)
        self.dfl = DFL(REG_MAX)
        self.one2one_cv2 = nn.ModuleList(box_branch(c) for c in channels)
        self.one2one_cv3 = nn.ModuleList(cls_branch(c) for c in channels)
        self.bias_init()

    @torch.no_grad()
    def bias_init(self):
        # box logits start at 1 everywhere; class logits at the prior of ~5 objects per 640 image
        for boxes, classes in ((self.cv2, self.cv3), (self.one2one_cv2, self.one2one_cv3)):
            for a, b, s in zip(boxes, classes, STRIDES):
                a[-1].bias.fill_(1.0)
                b[-1].bias.fill_(math.log(5 / self.nc / (640 / s) ** 2))

    @property
    def has_one2many(self) -> bool:
        return hasattr(self, "cv2")

    @staticmethod
    def _maps(feats, box, cls):
        return [torch.cat((box[i](x), cls[i](x)), 1) for i, x in enumerate(feats)]

    def forward(self, feats):
        one2one = self._maps([f.detach() for f in feats], self.one2one_cv2, self.one2one_cv3)
        if self.training:
            if not self.has_one2many:
                raise ConfigError("a fused MHAF-YOLO has no one-to-many head and cannot be trained")
            return {"one2many": self._maps(feats, self.cv2, self.cv3), "one2one": one2one}
        return self.postprocess(self.decode(one2one))

    def dense(self, feats):
        return self.decode(self._maps(feats, self.one2one_cv2, self.one2one_cv3))

    def decode(self, maps):
        """Raw maps -> (B, 4 + nc, A): xyxy boxes in input pixels, sigmoid class scores."""
        return decode(maps, self.nc, self.dfl, STRIDES)

    def postprocess(self, dense):
        """NMS-free top-k over the one-to-one head -> (B, max_det, 6)."""
        return topk_select(dense, self.nc, self.max_det)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
def _scaled(channels: float, width: float, max_channels: int) -> int:
    return int(math.ceil(min(channels, max_channels) * width / 8) * 8)


class MHAFYOLO(nn.Module):
    def __init__(self, variant: str = "n", num_classes: int = 80, max_det: int = 300,
                 class_names: list[str] | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise UnknownNameError("MHAF-YOLO variant", variant, VARIANTS)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if class_names is None:
            class_names = COCO_NAMES if num_classes == len(COCO_NAMES) else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        self.variant, self.num_classes, self.class_names = variant, num_classes, list(class_names)
        width, max_channels, spec = VARIANTS[variant]
        layers, sources, channels = [], [], []
        for i, (src, kind, args) in enumerate(spec):
            srcs = [src] if isinstance(src, int) else list(src)
            srcs = [i + s if s < 0 else s for s in srcs]  # -1 at layer 0 means the image
            c_in = 3 if i == 0 else channels[srcs[0]]
            if kind in ("conv", "scdown", "sppf", "psa", "rephms"):
                c_out = _scaled(args[0], width, max_channels)
            if kind == "conv":
                layer = ConvBnAct(c_in, c_out, args[1], args[2])
            elif kind == "scdown":
                layer = SCDown(c_in, c_out, args[1], args[2])
            elif kind == "sppf":
                layer = SPPF(c_in, c_out, args[1])
            elif kind == "psa":
                layer = PSA(c_in, c_out)
            elif kind == "rephms":
                layer = RepHMS(c_in, c_out, *args[1:])
            elif kind == "avg":
                layer, c_out = AVG(), c_in
            elif kind == "upsample":
                layer, c_out = Upsample(), c_in
            elif kind == "concat":
                layer, c_out = Concat(), sum(channels[s] for s in srcs)
            elif kind == "detect":
                layer, c_out = V10Detect(num_classes, [channels[s] for s in srcs], max_det), 0
            else:  # pragma: no cover - VARIANTS is our own data
                raise ConfigError(f"unknown layer kind {kind}")
            layers.append(layer)
            sources.append(srcs if kind in ("concat", "detect") else srcs[0])
            channels.append(c_out)
        self.model = nn.ModuleList(layers)
        self.sources = sources
        self.channels = channels
        self.stride = torch.tensor(STRIDES, dtype=torch.float)
        self.fused = False

    @property
    def head(self) -> V10Detect:
        return self.model[-1]

    def features(self, x):
        """The three neck outputs fed to the head (strides 8, 16, 32)."""
        outs = []
        for i, (layer, src) in enumerate(zip(self.model[:-1], self.sources[:-1])):
            inp = x if i == 0 else [outs[s] for s in src] if isinstance(src, list) else outs[src]
            outs.append(layer(inp))
        return [outs[s] for s in self.sources[-1]]

    def forward(self, x):
        return self.head(self.features(x))

    def dense(self, x):
        """One-to-one predictions before top-k: (B, 4 + nc, A), xyxy pixels + sigmoid scores."""
        return self.head.dense(self.features(x))

    # ---- what the detection task asks of its models (zoo.tasks.detection.DetectorModel) ----
    def detect(self, images: torch.Tensor) -> torch.Tensor:
        """(B, max_det, 6) NMS-free detections [x1, y1, x2, y2, score, label] in input pixels:
        what `forward` returns in eval mode (call it in eval mode: BatchNorm statistics)."""
        return self.head.postprocess(self.dense(images))

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """YOLOv10's dual-assignment loss of a training batch (`images` plus the objects'
        `batch_idx`, `cls`, `boxes` in input pixels); runs the training forward (both heads)."""
        if not self.training:
            raise ConfigError("the detection loss needs the training forward: call model.train() first")
        return dual_assignment_loss(self(batch["images"]), batch, self.num_classes)

    def example_input(self, batch: int = 1, imgsz: int = 640) -> torch.Tensor:
        """A seeded (batch, 3, imgsz, imgsz) image batch in [0, 1]; imgsz must be a multiple of the
        largest stride (the maps of every level must tile the image)."""
        largest = int(max(STRIDES))
        if imgsz % largest or imgsz <= 0:
            raise ConfigError(f"imgsz must be a positive multiple of {largest} (the largest stride), got {imgsz}")
        return torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))

    def export_model(self) -> nn.Module:
        """What `zoo export` writes: the one-to-one head's dense predictions, (B, 4 + nc, A) with
        xyxy pixel boxes and class scores. It is NMS-free (one box per object: keep the scores
        above a threshold, or the top k). The top-k itself stays out of the exported graph because
        its order over near-equal scores is not reproducible across runtimes (the official export
        appends it: `forward` in eval mode is that graph)."""
        return _DenseOutput(self)

    @torch.no_grad()
    def fuse(self) -> "MHAFYOLO":
        """Deploy graph: drop the one-to-many head, fold every BatchNorm and re-parameterisable
        branch into single convolutions. In place; returns self (in eval mode)."""
        if self.fused:
            return self
        head = self.head
        for name in ("cv2", "cv3"):
            if hasattr(head, name):
                delattr(head, name)
        fuse_descendants(self)
        self.fused = True
        return self.eval()


class _DenseOutput(nn.Module):
    def __init__(self, model: MHAFYOLO):
        super().__init__()
        self.model = model

    @property
    def fused(self) -> bool:
        return self.model.fused

    def fuse(self) -> "_DenseOutput":
        self.model.fuse()
        return self

    def forward(self, x):
        return self.model.dense(x)


def mhaf_yolo(variant: str = "n", num_classes: int = 80, max_det: int = 300,
              class_names: list[str] | None = None) -> MHAFYOLO:
    """Build an MHAF-YOLO detector: variant "lite-n", "n", "s" or "m" (the official YAMLs);
    80 COCO classes unless told otherwise."""
    return MHAFYOLO(variant=variant, num_classes=num_classes, max_det=max_det, class_names=class_names)
