"""YOLOv10 head geometry and loss, shared by the YOLO-style detector families (MHAF-YOLO first).

Geometry: a head emits three raw maps (B, 4 * REG_MAX + nc, H, W) at strides 8/16/32: per anchor,
REG_MAX distance bins for each side of its box (DFL) and then the class logits. `decode` turns them
into (B, 4 + nc, A) xyxy input-pixel boxes and sigmoid scores; `topk_select` is YOLOv10's NMS-free
selection over the one-to-one head.

Loss: YOLOv10's consistent dual assignment = a YOLOv8 loss with a task-aligned assigner taking the
top 10 anchors per object on the one-to-many head, plus the same with top 1 on the one-to-one head.
A batch holds `batch_idx`, `cls` (N,) and `boxes` (N, 4) xyxy in input pixels for the N objects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REG_MAX = 16
STRIDES = (8, 16, 32)

#: the official loss gains and task-aligned assigner settings
LOSS_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
TAL_ALPHA, TAL_BETA = 0.5, 6.0
#: anchors per object on each head (consistent dual assignment)
TOPK_ONE2MANY, TOPK_ONE2ONE = 10, 1


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
def make_anchors(maps, strides=STRIDES, offset: float = 0.5):
    """Grid-cell centres in grid units (A, 2) and the stride of each anchor (A, 1), level after
    level, row-major: the anchor order of the flattened maps."""
    points, stride_list = [], []
    for m, s in zip(maps, strides):
        h, w = m.shape[-2:]
        sx = torch.arange(w, device=m.device, dtype=m.dtype) + offset
        sy = torch.arange(h, device=m.device, dtype=m.dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), device=m.device, dtype=m.dtype))
    return torch.cat(points), torch.cat(stride_list)


class DFL(nn.Module):
    """Distribution focal loss decoding: the expectation of a softmax over `bins` distance bins.
    Kept as a fixed 1x1 conv (not trained) because official checkpoints store it."""

    def __init__(self, bins: int = REG_MAX):
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1))

    def forward(self, x):  # (B, 4 * bins, A) -> (B, 4, A)
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def decode(maps, num_classes: int, dfl: nn.Module, strides=STRIDES) -> torch.Tensor:
    """Raw maps -> (B, 4 + nc, A): xyxy boxes in input pixels, sigmoid class scores."""
    b = maps[0].shape[0]
    x = torch.cat([m.view(b, num_classes + 4 * REG_MAX, -1) for m in maps], 2)
    box, cls = x.split((4 * REG_MAX, num_classes), 1)
    anchors, anchor_strides = make_anchors(maps, strides)
    lt, rb = dfl(box).chunk(2, 1)
    xyxy = torch.cat((anchors.T - lt, anchors.T + rb), 1) * anchor_strides.T
    return torch.cat((xyxy, cls.sigmoid()), 1)


def topk_select(dense: torch.Tensor, num_classes: int, max_det: int) -> torch.Tensor:
    """NMS-free top-k of the official `v10postprocess`: keep the max_det anchors with the best
    class score, then the max_det best (anchor, class) pairs among them -> (B, k, 6) rows
    [x1, y1, x2, y2, score, label]."""
    boxes, scores = dense.transpose(1, 2).split((4, num_classes), dim=-1)
    k = min(max_det, boxes.shape[1])
    _, index = scores.amax(-1).topk(k, dim=-1)
    boxes = boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
    scores = scores.gather(1, index.unsqueeze(-1).expand(-1, -1, num_classes))
    scores, flat = scores.flatten(1).topk(k, dim=-1)
    labels = flat % num_classes
    boxes = boxes.gather(1, (flat // num_classes).unsqueeze(-1).expand(-1, -1, 4))
    return torch.cat((boxes, scores.unsqueeze(-1), labels.unsqueeze(-1).to(boxes.dtype)), -1)


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------
def ciou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complete IoU of paired xyxy boxes (torchvision computes 1 - CIoU)."""
    from torchvision.ops import complete_box_iou_loss
    return 1 - complete_box_iou_loss(a, b, reduction="none", eps=1e-7)


@torch.no_grad()
def task_aligned_assign(scores, boxes, anchors, gt_cls, gt_boxes, gt_mask, topk: int,
                        alpha: float = TAL_ALPHA, beta: float = TAL_BETA, eps: float = 1e-9):
    """TOOD's task-aligned assignment, as YOLOv8/v10 use it.

    scores (B, A, C) sigmoid, boxes (B, A, 4) xyxy pixels, anchors (A, 2) pixels, gt_cls (B, M),
    gt_boxes (B, M, 4), gt_mask (B, M) bool. Alignment t = s^alpha * CIoU^beta for the object's
    class; each object takes its `topk` best anchors whose centres lie inside it; an anchor claimed
    by several objects keeps the one it overlaps most. Returns (target boxes (B, A, 4), target
    scores (B, A, C) = one-hot scaled by t normalised per object to its best IoU, fg mask (B, A))."""
    b, a, c = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return boxes.new_zeros(b, a, 4), scores.new_zeros(b, a, c), torch.zeros(b, a, dtype=torch.bool,
                                                                                  device=scores.device)
    lt = anchors[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - anchors[None, None]
    inside = torch.cat((lt, rb), -1).amin(-1) > eps                                  # (B, M, A)
    candidate = inside & gt_mask[:, :, None]
    overlaps = torch.zeros(b, m, a, device=scores.device)
    pairs = candidate.nonzero(as_tuple=True)
    overlaps[pairs] = ciou(gt_boxes[pairs[0], pairs[1]], boxes[pairs[0], pairs[2]]).clamp(0).to(overlaps.dtype)
    cls_scores = torch.zeros(b, m, a, device=scores.device)
    cls_scores[pairs] = scores[pairs[0], pairs[2], gt_cls[pairs[0], pairs[1]]].to(cls_scores.dtype)
    align = cls_scores.pow(alpha) * overlaps.pow(beta)                                # (B, M, A)
    top = align.topk(min(topk, a), dim=-1).indices
    chosen = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True)
    positive = chosen & candidate
    # an anchor claimed by several objects goes to the one it overlaps most
    multi = positive.sum(1, keepdim=True) > 1
    best = F.one_hot(overlaps.argmax(1), m).permute(0, 2, 1).bool()
    positive = torch.where(multi, best & positive.any(1, keepdim=True), positive)
    fg = positive.any(1)                                                              # (B, A)
    gt_index = positive.float().argmax(1)                                             # (B, A)
    batch = torch.arange(b, device=scores.device)[:, None]
    target_boxes = gt_boxes[batch, gt_index]
    target_cls = gt_cls[batch, gt_index]
    align = align * positive
    best_align = align.amax(-1, keepdim=True)
    best_iou = (overlaps * positive).amax(-1, keepdim=True)
    norm = (align * best_iou / (best_align + eps)).amax(1)                            # (B, A)
    target_scores = F.one_hot(target_cls, c).float() * (norm * fg)[..., None]
    return target_boxes, target_scores, fg


def _padded_targets(batch: dict, bsz: int, device):
    """The batch's flat object list -> per-image padded (B, M, 4) boxes, (B, M) classes and mask."""
    counts = torch.bincount(batch["batch_idx"].to(device), minlength=bsz) if len(batch["cls"]) else \
        torch.zeros(bsz, dtype=torch.long, device=device)
    m = int(counts.max()) if len(counts) else 0
    gt_boxes = torch.zeros(bsz, m, 4, device=device)
    gt_cls = torch.zeros(bsz, m, dtype=torch.long, device=device)
    gt_mask = torch.zeros(bsz, m, dtype=torch.bool, device=device)
    if m:
        idx = batch["batch_idx"].to(device)
        order = torch.argsort(idx, stable=True)
        slot = torch.arange(len(idx), device=device) - torch.cumsum(counts, 0)[idx[order]] + counts[idx[order]]
        gt_boxes[idx[order], slot] = batch["boxes"].to(device)[order].float()
        gt_cls[idx[order], slot] = batch["cls"].to(device)[order]
        gt_mask[idx[order], slot] = True
    return gt_boxes, gt_cls, gt_mask


def detection_loss(maps, batch: dict, num_classes: int, topk: int):
    """YOLOv8's loss on one head's raw maps: BCE on classes, CIoU + DFL on boxes of assigned
    anchors, each normalised by the sum of target scores. Returns (weighted sum, (box, cls, dfl))."""
    device = maps[0].device
    bsz = maps[0].shape[0]
    maps = [m.float() for m in maps]  # the loss in fp32 whatever precision the forward ran in
    pred = torch.cat([m.flatten(2) for m in maps], 2).transpose(1, 2)                 # (B, A, 64 + C)
    dist_logits, cls_logits = pred.split((4 * REG_MAX, num_classes), -1)
    anchors, strides = make_anchors(maps)
    proj = torch.arange(REG_MAX, device=device, dtype=pred.dtype)
    dist = dist_logits.view(bsz, -1, 4, REG_MAX).softmax(-1) @ proj                     # (B, A, 4) grid units
    pred_boxes = torch.cat((anchors - dist[..., :2], anchors + dist[..., 2:]), -1)      # xyxy grid units
    gt_boxes, gt_cls, gt_mask = _padded_targets(batch, bsz, device)

    target_boxes, target_scores, fg = task_aligned_assign(
        cls_logits.detach().sigmoid(), (pred_boxes.detach() * strides).float(), anchors * strides,
        gt_cls, gt_boxes, gt_mask, topk)
    score_sum = target_scores.sum().clamp(min=1)
    loss_cls = F.binary_cross_entropy_with_logits(cls_logits, target_scores.to(cls_logits.dtype),
                                                  reduction="sum") / score_sum
    if fg.any():
        weight = target_scores.sum(-1)[fg]
        target = target_boxes / strides
        loss_box = ((1 - ciou(pred_boxes[fg], target[fg])) * weight).sum() / score_sum
        # DFL: cross-entropy to the two bins around each target distance, linearly weighted
        anchor_fg = anchors.expand(bsz, -1, -1)[fg]
        ltrb = torch.cat((anchor_fg - target[fg][:, :2], target[fg][:, 2:] - anchor_fg), -1).clamp(0, REG_MAX - 1.01)
        left = ltrb.long()
        w_right = ltrb - left
        logits = dist_logits[fg].view(-1, REG_MAX)
        ce_left = F.cross_entropy(logits, left.view(-1), reduction="none").view(-1, 4)
        ce_right = F.cross_entropy(logits, (left + 1).view(-1), reduction="none").view(-1, 4)
        loss_dfl = (((1 - w_right) * ce_left + w_right * ce_right).mean(-1) * weight).sum() / score_sum
    else:
        loss_box = loss_dfl = cls_logits.sum() * 0
    parts = torch.stack((loss_box * LOSS_GAINS["box"], loss_cls * LOSS_GAINS["cls"], loss_dfl * LOSS_GAINS["dfl"]))
    return parts.sum(), parts.detach()


def dual_assignment_loss(out: dict, batch: dict, num_classes: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the one-to-many (top-10) and one-to-one (top-1) losses of a dual head's training
    output {"one2many": maps, "one2one": maps}. The official trainer multiplies by the batch size
    for SGD; this is the per-image mean (AdamW does not care)."""
    many, parts_many = detection_loss(out["one2many"], batch, num_classes, topk=TOPK_ONE2MANY)
    one, parts_one = detection_loss(out["one2one"], batch, num_classes, topk=TOPK_ONE2ONE)
    logs = {"box": float(parts_many[0]), "cls": float(parts_many[1]), "dfl": float(parts_many[2]),
            "o2o_box": float(parts_one[0]), "o2o_cls": float(parts_one[1]), "o2o_dfl": float(parts_one[2])}
    return many + one, logs
