"""PI-RADS v2 prostate-zone segmentation with a co-training motivated multi-task dual-path CNN
(Das, Ghosh, Stober; arXiv 2309.12970), and the single-branch U-Net it is compared with.

No code or weights were published; the abstract fixes only: four zones (PZ, TZ, DPU, AFS); two
U-Net branches, each learning a group of *connected* zones; stage 1 supervised; stage 2 fine-tunes
both branches with an unsupervised loss penalising disagreement between the branches for the same
class; a multi-task auxiliary output. Everything else below is **our reconstruction**:
- classes: 0 background, 1 PZ, 2 TZ, 3 DPU, 4 AFS;
- branch grouping: branch A learns {PZ, TZ} (the glandular zones, PZ wraps the TZ), branch B learns
  {TZ, DPU, AFS} (the urethra and the stroma border the TZ); TZ, the zone the two groups share, is
  where the branches can disagree; each branch has an "other" channel for everything outside its group;
- U-Net widths (16, 32, 64, 128) by default, 2-D slices, a 1x1 fusion conv over both branches' last
  decoder features gives the 5-class output;
- the auxiliary task: per-slice zone presence (4 sigmoid logits from both bottlenecks), because the
  zones do not all appear in every slice;
- losses: stage 1 = Dice + CE on the fused output + CE on each branch's group labels + BCE presence;
  stage 2 (from step `stage1_steps` on) adds `consistency_weight` x mean squared difference between
  the branches' TZ probabilities and between each branch and the fused output on its own zones.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ZONES = ["background", "PZ", "TZ", "DPU", "AFS"]
GROUP_A = [1, 2]        # our reconstruction: PZ, TZ
GROUP_B = [2, 3, 4]     # our reconstruction: TZ, DPU, AFS


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A plain 2-D U-Net: returns (last decoder feature map, bottleneck map)."""

    def __init__(self, in_chans: int, widths: tuple[int, ...]):
        super().__init__()
        self.down = nn.ModuleList()
        c = in_chans
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.fuse.append(_block(2 * w, w))
            c = w
        self.out_channels = widths[0]

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        bottom = x
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([up(x), skip], 1))
        return x, bottom


class _SegmentationModel(nn.Module):
    class_names = ZONES
    num_classes = len(ZONES)

    def _init_common(self, in_chans: int, img_size: int):
        self.in_chans, self.img_size = int(in_chans), int(img_size)

    @staticmethod
    def _dice_ce(logits, masks):
        ce = F.cross_entropy(logits, masks)
        probs = logits.softmax(1)
        onehot = F.one_hot(masks, logits.shape[1]).permute(0, 3, 1, 2).float()
        inter = (probs * onehot).sum((0, 2, 3))
        dice = 1 - (2 * inter + 1) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
        return ce + dice[1:].mean()


class SingleUNet(_SegmentationModel):
    """The single-branch baseline: one U-Net, 5-class output, Dice + CE (same data and budget)."""

    def __init__(self, in_chans: int = 1, img_size: int = 96, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self._init_common(in_chans, img_size)
        self.net = UNet(in_chans, tuple(widths))
        self.head = nn.Conv2d(self.net.out_channels, self.num_classes, 1)

    def forward(self, images):
        return self.head(self.net(images)[0])

    def segmentation_loss(self, images, masks, presence=None, step: int = 0):
        loss = self._dice_ce(self(images), masks)
        return loss, {"seg": float(loss)}


class DualPathCNN(_SegmentationModel):
    """Two U-Net branches (zone groups A and B), a fusion conv, a per-slice zone-presence head."""

    def __init__(self, in_chans: int = 1, img_size: int = 96, widths: tuple[int, ...] = (16, 32, 64, 128),
                 stage1_steps: int = 0, consistency_weight: float = 1.0):
        super().__init__()
        self._init_common(in_chans, img_size)
        self.branch_a, self.branch_b = UNet(in_chans, tuple(widths)), UNet(in_chans, tuple(widths))
        c = self.branch_a.out_channels
        self.head_a = nn.Conv2d(c, 1 + len(GROUP_A), 1)   # other, PZ, TZ
        self.head_b = nn.Conv2d(c, 1 + len(GROUP_B), 1)   # other, TZ, DPU, AFS
        self.fusion = nn.Conv2d(2 * c, self.num_classes, 1)
        self.presence = nn.Linear(2 * widths[-1], self.num_classes - 1)
        # stage-2 schedule is part of the recipe (our reconstruction): kept with the config
        self.stage1_steps, self.consistency_weight = int(stage1_steps), float(consistency_weight)

    def branches(self, images):
        fa, ba = self.branch_a(images)
        fb, bb = self.branch_b(images)
        return {"fused": self.fusion(torch.cat([fa, fb], 1)), "a": self.head_a(fa), "b": self.head_b(fb),
                "presence": self.presence(torch.cat([ba.mean((2, 3)), bb.mean((2, 3))], 1))}

    def forward(self, images):
        return self.branches(images)["fused"]

    @staticmethod
    def _group_labels(masks, group):
        out = torch.zeros_like(masks)
        for j, cls in enumerate(group, start=1):
            out[masks == cls] = j
        return out

    def consistency(self, out) -> torch.Tensor:
        """Unsupervised: branch A and B must agree on TZ, and each branch with the fused output on its zones."""
        pa, pb, pf = out["a"].softmax(1), out["b"].softmax(1), out["fused"].softmax(1)
        tz_a, tz_b = pa[:, 1 + GROUP_A.index(2)], pb[:, 1 + GROUP_B.index(2)]
        loss = F.mse_loss(tz_a, tz_b)
        for j, cls in enumerate(GROUP_A, start=1):
            loss = loss + F.mse_loss(pa[:, j], pf[:, cls])
        for j, cls in enumerate(GROUP_B, start=1):
            loss = loss + F.mse_loss(pb[:, j], pf[:, cls])
        return loss

    def segmentation_loss(self, images, masks, presence=None, step: int = 0):
        out = self.branches(images)
        seg = self._dice_ce(out["fused"], masks)
        branch = (F.cross_entropy(out["a"], self._group_labels(masks, GROUP_A))
                  + F.cross_entropy(out["b"], self._group_labels(masks, GROUP_B)))
        if presence is None:
            presence = torch.stack([(masks == c).flatten(1).any(1) for c in range(1, self.num_classes)], 1)
        aux = F.binary_cross_entropy_with_logits(out["presence"], presence.float())
        loss = seg + 0.5 * branch + 0.1 * aux
        logs = {"seg": float(seg.detach()), "branch": float(branch.detach()), "presence": float(aux.detach()), "stage": 1.0}
        if self.stage1_steps > 0 and step >= self.stage1_steps:   # stage 2: co-training consistency
            cons = self.consistency(out)
            loss = loss + self.consistency_weight * cons
            logs.update(consistency=float(cons), stage=2.0)
        return loss, logs


def pirads_dual_path(**config) -> DualPathCNN:
    return DualPathCNN(**config)


def pirads_single_unet(**config) -> SingleUNet:
    return SingleUNet(**config)
