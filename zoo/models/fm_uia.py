"""FM_UIA 2026 challenge baseline (arXiv 2602.01055): one encoder and one FPN decoder shared by 27
ultrasound sub-tasks, each with its own head keyed by its task id.

Composed as the official model factory composes it, from segmentation_models_pytorch parts:
- encoder `smp.encoders.get_encoder("efficientnet-b4", depth=5)` (smp's own EfficientNet port;
  out channels 3/48/32/56/160/448). We build it with random weights: nothing is downloaded;
- decoder: the FPN decoder of an `smp.FPN` (pyramid 256, segmentation channels 128, stride 4);
- routing: segmentation and detection heads read the FPN map, classification and regression heads
  read the deepest encoder map;
- heads: segmentation = smp `SegmentationHead` (1x1 conv to C classes incl. background, x4 upsample);
  classification = smp `ClassificationHead` (avg pool, dropout 0.2, linear); regression = avg pool +
  linear to 2*P normalised (x, y) coordinates; detection = grid head on the FPN map
  ([3x3 conv, BN, ReLU] x 2 + 1x1 conv to 5 channels: 4 box coordinates, sigmoid, normalised xyxy,
  and 1 objectness logit); inference takes the cell with the highest objectness.

Parameters at the official configuration: 20.27M = encoder 17.55M + FPN 1.80M + heads 0.92M
(pinned in tests/test_fm_uia.py). Images come in as [0, 1]; the model applies ImageNet mean/std.

Optimiser groups (`param_groups`): the official training script gives the encoder lr and every head
10x lr, and puts the FPN decoder in no group at all, so the official baseline never trains its FPN.
We follow the paper's intent and train the FPN at the encoder's lr by default; `-o train_fpn=false`
reproduces the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

#: kind of each official sub-task and its class count (segmentation: incl. background) or point count
OFFICIAL_TASKS: dict[str, tuple[str, int]] = {
    # regression: number of landmark points
    "FUGC": ("regression", 2), "IUGC": ("regression", 3), "fetal_femur": ("regression", 2),
    # classification: number of classes
    "breast_2cls": ("classification", 2), "breast_3cls": ("classification", 3),
    "fetal_head_pos_cls": ("classification", 8), "fetal_plane_cls": ("classification", 6),
    "fetal_sacral_pos_cls": ("classification", 8), "liver_lesion_2cls": ("classification", 2),
    "lung_2cls": ("classification", 2), "lung_disease_3cls": ("classification", 3),
    "organ_cls": ("classification", 6),
    # detection: one box each
    "spinal_cord_injury_loc": ("detection", 1), "thyroid_nodule_det": ("detection", 1),
    "uterine_fibroid_det": ("detection", 1),
    # segmentation: classes incl. background
    "breast_lesion": ("segmentation", 2), "cardiac_multi": ("segmentation", 4),
    "carotid_artery": ("segmentation", 2), "cervix": ("segmentation", 2), "cervix_multi": ("segmentation", 3),
    "fetal_abdomen_multi": ("segmentation", 5), "fetal_head": ("segmentation", 2),
    "fetal_heart": ("segmentation", 2), "head_symphysis_multi": ("segmentation", 3), "lung": ("segmentation", 2),
    "ovary_tumor": ("segmentation", 2), "thyroid_nodule": ("segmentation", 2),
}

KINDS = ("segmentation", "classification", "detection", "regression")
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SubTask:
    """One head: its kind and its size (classes for seg/cls, points for regression, boxes for det)."""
    kind: str
    size: int


class DetectionHead(nn.Module):
    """Grid head on the FPN map: 4 normalised box coordinates (sigmoid, xyxy) + 1 objectness logit per cell."""

    def __init__(self, channels: int = 128):
        super().__init__()
        layers = []
        for _ in range(2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, 5, 1)

    def forward(self, x):
        y = self.out(self.body(x))
        return torch.cat([y[:, :4].sigmoid(), y[:, 4:]], 1)


class RegressionHead(nn.Module):
    def __init__(self, channels: int, points: int):
        super().__init__()
        self.fc = nn.Linear(channels, 2 * points)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class FMUIABaseline(nn.Module):
    """Shared encoder + FPN, one head per task id. `forward(images, task_id)` returns that head's
    output; `forward(images)` returns every head's output as a tuple in `task_ids` order (export)."""

    def __init__(self, tasks: Optional[dict[str, list]] = None, encoder: str = "efficientnet-b4",
                 pyramid_channels: int = 256, segmentation_channels: int = 128, img_size: int = 256,
                 in_chans: int = 3):
        super().__init__()
        import segmentation_models_pytorch as smp
        from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead

        spec = tasks if tasks is not None else {k: list(v) for k, v in OFFICIAL_TASKS.items()}
        self.tasks = {}
        for tid, (kind, size) in spec.items():
            if kind not in KINDS:
                raise ValueError(f"task {tid}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
            self.tasks[str(tid)] = SubTask(kind, int(size))
        self.img_size, self.in_chans = int(img_size), int(in_chans)
        self.task_ids = list(self.tasks)
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_chans, depth=5, weights=None)
        fpn = smp.FPN(encoder, encoder_weights=None, in_channels=in_chans,
                      decoder_pyramid_channels=pyramid_channels,
                      decoder_segmentation_channels=segmentation_channels, classes=1)
        self.decoder = fpn.decoder      # only the decoder is kept (as the official factory does)
        del fpn
        deep = self.encoder.out_channels[-1]
        c = segmentation_channels
        heads = {}
        for tid, t in self.tasks.items():
            if t.kind == "segmentation":
                heads[tid] = SegmentationHead(c, t.size, kernel_size=1, upsampling=4)
            elif t.kind == "classification":
                heads[tid] = ClassificationHead(deep, t.size, pooling="avg", dropout=0.2)
            elif t.kind == "regression":
                heads[tid] = RegressionHead(deep, t.size)
            else:
                heads[tid] = DetectionHead(c)
        self.heads = nn.ModuleDict(heads)
        self.register_buffer("mean", torch.tensor(_MEAN[:in_chans] if in_chans == 3 else [0.5] * in_chans).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD[:in_chans] if in_chans == 3 else [0.25] * in_chans).view(1, -1, 1, 1), persistent=False)

    def features(self, images: torch.Tensor):
        """(FPN map at stride 4, deepest encoder map)."""
        feats = self.encoder((images - self.mean) / self.std)
        return self.decoder(feats), feats[-1]

    def head(self, task_id: str, fpn: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        kind = self.tasks[task_id].kind
        return self.heads[task_id](fpn if kind in ("segmentation", "detection") else deep)

    def forward(self, images: torch.Tensor, task_id: Optional[str] = None):
        fpn, deep = self.features(images)
        if task_id is not None:
            return self.head(task_id, fpn, deep)
        return tuple(self.head(tid, fpn, deep) for tid in self.task_ids)   # fixed order: traceable

    def output_names(self) -> list[str]:
        """Names of forward(images)'s outputs, in order (an exporter reports parity per head)."""
        return list(self.task_ids)

    def parameter_groups(self, lr: float, train_fpn: bool = True) -> list[dict]:
        """Official groups: encoder at lr, heads at 10x lr; the FPN at lr unless train_fpn=False
        (the official code, which leaves it out and so never updates it)."""
        groups = [{"params": list(self.encoder.parameters()), "lr": lr},
                  {"params": list(self.heads.parameters()), "lr": 10 * lr}]
        if train_fpn:
            groups.append({"params": list(self.decoder.parameters()), "lr": lr})
        else:
            for p in self.decoder.parameters():
                p.requires_grad_(False)
        return groups

    def parameter_breakdown(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"encoder": count(self.encoder), "fpn": count(self.decoder), "heads": count(self.heads),
                "total": count(self)}


def fm_uia_baseline(**config) -> FMUIABaseline:
    """The official configuration (EfficientNet-B4, FPN 256/128, 27 sub-tasks, 256x256), or any override."""
    return FMUIABaseline(**config)
