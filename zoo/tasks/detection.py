"""Object detection: COCO-json / YOLO-txt data, letterbox + YOLO augmentations, the YOLOv10
dual-assignment loss, NMS-free decoding, COCO mAP through faster-coco-eval, pictures of predictions.

Models of this task (MHAF-YOLO so far) follow one output contract (REG_MAX, STRIDES and
make_anchors below are its geometry): in training mode `forward`
returns {"one2many": maps, "one2one": maps}, three raw (B, 4*16 + nc, H, W) maps at strides
8/16/32 (DFL box bins then class logits); in eval mode it returns (B, k, 6) detections
[x1, y1, x2, y2, score, label] in input pixels. Models carry `num_classes` and `class_names`.

A batch is a dict: `images` (B, 3, S, S) float in [0, 1]; `batch_idx`, `cls` (N,) and `boxes`
(N, 4) xyxy in input pixels for the N objects of the batch; `meta` per image (dataset index,
resize ratio, padding, original size), which maps predictions back to the original image.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zoo.errors import ConfigError, DataError, UnknownNameError
from zoo.tasks.base import Task

PAD_VALUE = 114  # the grey ultralytics letterboxes with
REG_MAX = 16
STRIDES = (8, 16, 32)

#: the official recipe's augmentation (ultralytics/cfg/default.yaml as used by MHAF-YOLO); each
#: key can be overridden with `-o key=value`.
AUGMENT_DEFAULTS = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.9,
                    "fliplr": 0.5, "mosaic": 1.0}
#: the official loss gains and task-aligned assigner settings
LOSS_GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}
TAL_ALPHA, TAL_BETA = 0.5, 6.0


# ---------------------------------------------------------------------------------------------
# Images: letterbox and augmentation (torch RNG only, so the training loop's seed fixes them)
# ---------------------------------------------------------------------------------------------
def letterbox(image, size: int):
    """Resize a PIL image so its long side is `size` (aspect kept), pad to size x size with grey,
    centred. Returns (uint8 HWC array, ratio, (pad_x, pad_y))."""
    from PIL import Image
    w, h = image.size
    r = size / max(w, h)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BILINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = np.asarray(image)
    return canvas, r, (px, py)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def random_affine(img: np.ndarray, boxes: np.ndarray, out_size: int, scale: float, translate: float,
                  center: tuple[float, float] | None = None):
    """Random zoom (1 +- scale) and shift of a square `img` into an out_size x out_size canvas:
    `center` of the input (default its middle) lands at the output's middle, +- translate *
    out_size. When the zoomed input is larger than the output (a training crop smaller than the
    letterbox), the shift ranges over the whole input, so every part of it is seen. Boxes follow;
    those left with under 10% of their transformed area or under 2 px a side are dropped
    (ultralytics' box_candidates)."""
    from PIL import Image
    s = max(_uniform(1 - scale, 1 + scale), 0.05)
    cx, cy = center if center is not None else (img.shape[1] / 2, img.shape[0] / 2)
    span = translate * out_size
    if center is None and out_size < img.shape[1]:
        span = max(span, (img.shape[1] * s - out_size) / 2)
    tx, ty = _uniform(-span, span), _uniform(-span, span)
    cout = out_size / 2
    # the output pixel (u, v) samples the input at ((u - cout - tx) / s + cx, (v - cout - ty) / s + cy)
    coeffs = (1 / s, 0, cx - (cout + tx) / s, 0, 1 / s, cy - (cout + ty) / s)
    out = Image.fromarray(img).transform((out_size, out_size), Image.AFFINE, coeffs, Image.BILINEAR,
                                         fillcolor=(PAD_VALUE,) * 3)
    if len(boxes):
        moved = (boxes - np.array([cx, cy, cx, cy])) * s + np.array([cout + tx, cout + ty, cout + tx, cout + ty])
        clipped = moved.clip(0, out_size)
        wh0 = moved[:, 2:] - moved[:, :2]
        wh1 = clipped[:, 2:] - clipped[:, :2]
        keep = (wh1[:, 0] > 2) & (wh1[:, 1] > 2) & (wh1.prod(1) > 0.1 * wh0.prod(1))
        return np.asarray(out), clipped, keep
    return np.asarray(out), boxes.reshape(0, 4), np.zeros(0, bool)


def hsv_jitter(img: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """Random hue/saturation/value gains (1 +- gain each), as ultralytics' augment_hsv."""
    from PIL import Image
    if not any(gains):
        return img
    r = [_uniform(-g, g) + 1 for g in gains]
    h, s, v = Image.fromarray(img).convert("HSV").split()
    x = np.arange(256, dtype=np.float32)
    luts = [((x * r[0]) % 256).astype(np.uint8), np.clip(x * r[1], 0, 255).astype(np.uint8),
            np.clip(x * r[2], 0, 255).astype(np.uint8)]
    bands = [band.point(lut.tolist()) for band, lut in zip((h, s, v), luts)]
    return np.asarray(Image.merge("HSV", bands).convert("RGB"))


class DetectionDataset(Dataset):
    """Records -> letterboxed (optionally augmented) training/eval items."""

    def __init__(self, records, imgsz: int = 640, augment: dict | None = None, cache_images: bool | None = None,
                 crop: int | None = None):
        for what, size in (("imgsz", imgsz), ("crop", crop or imgsz)):
            if int(size) % 32 or int(size) <= 0:
                raise ConfigError(f"{what} must be a positive multiple of 32 (the largest stride), got {size}")
        self.records, self.imgsz, self.augment = records, int(imgsz), augment
        # training samples may be crops of the letterboxed image: objects keep the scale they have
        # at evaluation (imgsz) while a step costs what a crop-sized image costs
        self.crop = int(crop or imgsz)
        self.names = records.names
        # small sets (the trees tiles, the shapes set) are decoded once and kept
        self.cache = len(records) <= 512 if cache_images is None else cache_images
        self._images: dict[int, object] = {}

    def __len__(self):
        return len(self.records)

    def image(self, i: int):
        from PIL import Image, UnidentifiedImageError
        if i in self._images:
            return self._images[i]
        path = self.records.files[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError):
            raise DataError(f"{path}: not an image (cannot be decoded)") from None
        if self.cache:
            self._images[i] = img
        return img

    def _letterboxed(self, i: int, size: int):
        img, r, (px, py) = letterbox(self.image(i), size)
        boxes = self.records.boxes[i] * r + np.array([px, py, px, py], np.float32)
        return img, boxes, self.records.classes[i].copy(), r, (px, py)

    def _mosaic(self, i: int):
        """Four images around a random centre (xc, yc) on a 2S canvas (ultralytics' mosaic, basic
        form). Returns the canvas, its boxes and classes, and the centre."""
        s = self.imgsz
        idx = [i] + torch.randint(0, len(self), (3,)).tolist()
        canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
        xc, yc = int(_uniform(s / 2, 3 * s / 2)), int(_uniform(s / 2, 3 * s / 2))
        all_boxes, all_cls = [], []
        for k, j in enumerate(idx):
            img, boxes, cls, _, (px, py) = self._letterboxed(j, s)
            h = w = s
            # the placed part of the letterboxed image, without its padding
            nh, nw = s - 2 * py, s - 2 * px
            img, boxes = img[py:py + nh, px:px + nw], boxes - [px, py, px, py]
            h, w = nh, nw
            if k == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            elif k == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b = 0, h - (y2a - y1a)
            elif k == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b = w - (x2a - x1a), 0
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b = 0, 0
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
            shift = np.array([x1a - x1b, y1a - y1b] * 2, np.float32)
            if len(boxes):
                b = (boxes + shift).clip([x1a, y1a, x1a, y1a], [x2a, y2a, x2a, y2a])
                visible = (b[:, 2] - b[:, 0] > 1) & (b[:, 3] - b[:, 1] > 1)
                all_boxes.append(b[visible])
                all_cls.append(cls[visible])
        boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
        cls = np.concatenate(all_cls) if all_cls else np.zeros(0, np.int64)
        return canvas, boxes, cls, (float(xc), float(yc))

    def __getitem__(self, i: int):
        aug = self.augment
        if aug is None:
            img, boxes, cls, r, pad = self._letterboxed(i, self.imgsz)
        else:
            center = None
            if float(torch.rand(())) < aug["mosaic"]:
                img, boxes, cls, center = self._mosaic(i)
            else:
                img, boxes, cls, _, _ = self._letterboxed(i, self.imgsz)
            img, boxes, keep = random_affine(img, boxes.astype(np.float32), self.crop, aug["scale"],
                                             aug["translate"], center)
            cls = cls[keep] if len(cls) else cls
            boxes = boxes[keep] if len(keep) else boxes
            img = hsv_jitter(img, (aug["hsv_h"], aug["hsv_s"], aug["hsv_v"]))
            if float(torch.rand(())) < aug["fliplr"]:
                img = img[:, ::-1]
                boxes = boxes.copy()
                boxes[:, [0, 2]] = self.crop - boxes[:, [2, 0]]
            r, pad = 1.0, (0, 0)
        return {"image": torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1),
                "boxes": torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4),
                "cls": torch.as_tensor(np.asarray(cls, np.int64)).reshape(-1),
                "meta": {"index": i, "ratio": r, "pad": pad, "size": self.records.sizes[i]}}


def collate(items: list[dict]) -> dict:
    return {"images": torch.stack([it["image"] for it in items]).float() / 255,
            "batch_idx": torch.cat([torch.full((len(it["cls"]),), j) for j, it in enumerate(items)]),
            "cls": torch.cat([it["cls"] for it in items]),
            "boxes": torch.cat([it["boxes"] for it in items]),
            "meta": [it["meta"] for it in items]}


# ---------------------------------------------------------------------------------------------
# Loss: YOLOv10's consistent dual assignment = a YOLOv8 loss with a task-aligned assigner taking
# the top 10 anchors per object on the one-to-many head, plus the same with top 1 on one-to-one.
# ---------------------------------------------------------------------------------------------
def ciou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complete IoU of paired xyxy boxes (torchvision computes 1 - CIoU)."""
    from torchvision.ops import complete_box_iou_loss
    return 1 - complete_box_iou_loss(a, b, reduction="none", eps=1e-7)


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


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------
class DetectionTask(Task):
    name = "detection"
    datasets = {
        "trees": "aerial tree crowns from the deepforest 2.1.0 wheel, 640 px tiles, 1 class; 17 train / 5 val tiles",
        "shapes": "seeded synthetic squares/circles/triangles, 128 px, COCO format (for tests and smoke runs)",
    }
    default_batch_size = 8
    default_lr = 2e-3
    default_steps = 1000
    main_metric = "mAP50-95"
    lower_is_better = False

    # ---- data ---------------------------------------------------------------------------------
    def records(self, dataset: str | None, split: str, data_path: str | None, options: dict):
        from zoo.data import coco
        if data_path:
            return coco.read_any(data_path, split)
        if dataset == "trees":
            from zoo.data import trees
            return coco.read_any(trees.prepare(), split)
        if dataset == "shapes":
            from zoo.data import shapes
            root = shapes.prepare(num_images=int(options.get("num_images", 64)), seed=int(options.get("data_seed", 0)))
            return coco.read_any(root, split)
        raise UnknownNameError("detection dataset", str(dataset), self.datasets)

    def load_dataset(self, dataset, split, data_path, model_config, options):
        records = self.records(dataset, split, data_path, options)
        imgsz = int(options.get("imgsz") or (128 if dataset == "shapes" and not data_path else 640))
        augment, crop = None, None
        if split == "train" and options.get("augment", True):
            augment = {k: float(options.get(k, v)) for k, v in AUGMENT_DEFAULTS.items()}
            crop = options.get("crop")
        nc = int(model_config.get("num_classes", 80))
        if len(records.names) > nc:
            raise DataError(f"the data has {len(records.names)} classes ({', '.join(records.names[:5])}"
                            f"{', ...' if len(records.names) > 5 else ''}) but the model predicts {nc}; "
                            f"build it with num_classes={len(records.names)}")
        return DetectionDataset(records, imgsz, augment, crop=crop)

    def collate(self, items):
        return collate(items)

    # ---- training -----------------------------------------------------------------------------
    def loss(self, model, batch):
        """Sum of the one-to-many (top-10) and one-to-one (top-1) losses. The official trainer
        multiplies by the batch size for SGD; this is the per-image mean (AdamW does not care)."""
        out = model(batch["images"])
        if not isinstance(out, dict):
            raise ConfigError("a detection model must return {'one2many', 'one2one'} maps in training mode")
        nc = _num_classes(model)
        many, parts_many = detection_loss(out["one2many"], batch, nc, topk=10)
        one, parts_one = detection_loss(out["one2one"], batch, nc, topk=1)
        logs = {"box": float(parts_many[0]), "cls": float(parts_many[1]), "dfl": float(parts_many[2]),
                "o2o_box": float(parts_one[0]), "o2o_cls": float(parts_one[1]), "o2o_dfl": float(parts_one[2])}
        return many + one, logs

    def example_batch(self, model, model_config, options):
        imgsz = int(options.get("imgsz") or 640)
        bsz = int(options.get("batch_size") or 2)
        g = torch.Generator().manual_seed(0)
        n = 4 * bsz
        xy = torch.rand(n, 2, generator=g) * imgsz * 0.7
        wh = torch.rand(n, 2, generator=g) * imgsz * 0.25 + 8
        return {"images": torch.rand(bsz, 3, imgsz, imgsz, generator=g),
                "batch_idx": torch.arange(n) % bsz,
                "cls": torch.randint(0, _num_classes(model), (n,), generator=g),
                "boxes": torch.cat((xy, (xy + wh).clamp(max=imgsz)), 1),
                "meta": [{"index": i, "ratio": 1.0, "pad": (0, 0), "size": (imgsz, imgsz)} for i in range(bsz)]}

    # ---- inference ----------------------------------------------------------------------------
    def example_input(self, model, model_config, options):
        imgsz = int(options.get("imgsz") or 640)
        if imgsz % 32:
            raise ConfigError(f"imgsz must be a multiple of 32, got {imgsz}")
        return (torch.rand(int(options.get("batch_size") or 1), 3, imgsz, imgsz,
                           generator=torch.Generator().manual_seed(0)),)

    def detect(self, model, dataset: DetectionDataset, options: dict):
        """Run the model over a dataset; yields (dataset index, (k, 6) detections in original pixels)."""
        model = _deploy_copy(model, options)
        bsz = int(options.get("batch_size") or 8)
        for start in range(0, len(dataset), bsz):
            batch = collate([dataset[i] for i in range(start, min(start + bsz, len(dataset)))])
            dets = model(batch["images"])
            for det, meta in zip(dets, batch["meta"]):
                yield meta["index"], to_original(det, meta)

    def evaluate(self, model, dataset, options):
        """COCO box mAP@[.5:.95] and mAP@.5 with faster-coco-eval: the model's detections above
        `conf` (0.001, as the official validator), COCO's protocol of the best `max_dets` (100)
        per image."""
        from faster_coco_eval import COCO, COCOeval_faster
        if not isinstance(dataset, DetectionDataset):
            raise DataError("detection evaluation needs a detection dataset")
        self._check_classes(model, dataset)
        conf = float(options.get("conf", 0.001))
        records = dataset.records
        results = []
        for i, det in self.detect(model, dataset, options):
            det = det[det[:, 4] > conf]
            for x1, y1, x2, y2, score, label in det.tolist():
                results.append({"image_id": records.image_ids[i], "category_id": records.category_ids[int(label)],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        gt = COCO(records.coco_ground_truth())
        if not results or not any(len(b) for b in records.boxes):
            return {"mAP50-95": 0.0, "mAP50": 0.0, "images": float(len(dataset)), "detections": float(len(results))}
        ev = COCOeval_faster(gt, gt.loadRes(results), iouType="bbox", print_function=lambda *a, **k: None)
        ev.params.maxDets = [1, 10, int(options.get("max_dets", 100))]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        stats = [max(0.0, float(s)) for s in ev.stats[:2]]
        return {"mAP50-95": stats[0], "mAP50": stats[1], "images": float(len(dataset)),
                "detections": float(len(results))}

    def predict(self, model, input, dataset, save, options):
        """Detect objects in one image (`input`, a path; else the dataset's first image). Returns
        the boxes (original pixels), labels and scores above `conf` (default 0.25); draws them to
        `save` when given."""
        from PIL import Image, UnidentifiedImageError
        from zoo.data.coco import DetectionRecords
        names = list(getattr(model, "class_names", None) or [])
        if input is None:
            if dataset is None or not len(dataset):
                raise DataError("predict needs an image path (or --dataset/--data to take the first image from)")
            path = dataset.records.files[0]
        else:
            path = Path(input)
            if not path.is_file():
                raise DataError(f"{path}: image file not found")
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError):
            raise DataError(f"{path}: not an image (cannot be decoded)") from None
        imgsz = int(options.get("imgsz") or 640)
        records = DetectionRecords(names=names, category_ids=list(range(len(names))))
        records.add(path, image.size, 1, np.zeros((0, 4)), [])
        ds = DetectionDataset(records, imgsz)
        conf = float(options.get("conf", 0.25))
        _, det = next(self.detect(model, ds, {**options, "batch_size": 1}))
        det = det[det[:, 4] >= conf]
        found = []
        for x1, y1, x2, y2, score, label in det.tolist():
            name = names[int(label)] if int(label) < len(names) else str(int(label))
            found.append({"label": name, "class_id": int(label), "score": round(score, 4),
                          "box": [round(v, 1) for v in (x1, y1, x2, y2)]})
        if save:
            draw_detections(image, found).save(save)
        return {"image": str(path), "size": list(image.size), "detections": found}

    def _check_classes(self, model, dataset):
        nc = _num_classes(model)
        if len(dataset.names) > nc:
            raise DataError(f"the data has {len(dataset.names)} classes but the model predicts {nc}")


def _num_classes(model) -> int:
    nc = getattr(model, "num_classes", None)
    if nc is None:
        raise ConfigError(f"{type(model).__name__} does not say its num_classes")
    return int(nc)


def _deploy_copy(model, options):
    """A fused copy for inference (same outputs, fewer ops) unless the model is fused already or
    `-o no_fuse=true`; the caller's model is left as it was."""
    model.eval()
    if options.get("no_fuse") or getattr(model, "fused", True) or not hasattr(model, "fuse"):
        return model
    with torch.inference_mode(False), torch.no_grad():
        return copy.deepcopy(model).fuse()


def to_original(det: torch.Tensor, meta: dict) -> torch.Tensor:
    """Letterboxed-input boxes -> original image pixels (clipped to the image)."""
    det = det.clone()
    px, py = meta["pad"]
    det[:, [0, 2]] = ((det[:, [0, 2]] - px) / meta["ratio"]).clamp(0, meta["size"][0])
    det[:, [1, 3]] = ((det[:, [1, 3]] - py) / meta["ratio"]).clamp(0, meta["size"][1])
    return det


def draw_detections(image, found: list[dict]):
    """Boxes, labels and scores drawn on a copy of a PIL image."""
    from PIL import ImageDraw
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 400))
    palette = [(255, 56, 56), (50, 205, 50), (0, 149, 255), (255, 178, 29), (207, 210, 49), (72, 249, 10),
               (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187)]
    for d in found:
        color = palette[d["class_id"] % len(palette)]
        x1, y1, x2, y2 = d["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        text = f"{d['label']} {d['score']:.2f}"
        tx, ty = x1, max(0, y1 - 11)
        bbox = draw.textbbox((tx, ty), text)
        draw.rectangle(bbox, fill=color)
        draw.text((tx, ty), text, fill=(255, 255, 255))
    return out
