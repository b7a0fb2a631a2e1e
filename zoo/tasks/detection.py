"""Object detection: COCO-json / YOLO-txt data, letterbox + YOLO augmentations, COCO mAP through
faster-coco-eval, optional NMS, pictures of predictions.

What the task needs from a model is the `DetectorModel` protocol below: `detect(images)` gives
(B, k, 6) detections [x1, y1, x2, y2, score, label] in input pixels, `loss(batch)` the training
loss, `example_input(batch, imgsz)` a seeded image batch, plus `num_classes`, `class_names`,
`stride` (the output strides; images are a multiple of the largest), `fused` and `fuse()` (the
deploy graph used for inference). The YOLOv10 head geometry and loss MHAF-YOLO uses live in
zoo/layers/yolov10_head.py, beside the model.

A batch is a dict: `images` (B, 3, S, S) float in [0, 1]; `batch_idx`, `cls` (N,) and `boxes`
(N, 4) xyxy in input pixels for the N objects of the batch; `meta` per image (dataset index,
resize ratio, padding, original size), which maps predictions back to the original image.

Splits are named truthfully: a dataset without a test split (trees, shapes, most user folders) is
evaluated on val when test is asked, and the dataset object's `split` says so; `evaluate` reports
how many images its metrics came from.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from zoo.data import coco
from zoo.errors import ConfigError, DataError
from zoo.tasks.base import IMAGE_SUFFIXES, DatasetEntry, Task, TaskOptions, device_of, evaluate_sharded, to_device

PAD_VALUE = 114  # the grey ultralytics letterboxes with
DEFAULT_IMGSZ = 640
#: score thresholds: evaluation keeps nearly everything (the official validator's 0.001, so the
#: precision-recall curve is complete); predict shows confident boxes only
EVAL_CONF, PREDICT_CONF = 0.001, 0.25
#: detections per image: COCO's protocol scores the best 100; predict returns up to 300
EVAL_MAX_DET, PREDICT_MAX_DET = 100, 300

#: the official recipe's augmentation (ultralytics/cfg/default.yaml as used by MHAF-YOLO); each
#: key can be overridden with `-o key=value`.
AUGMENT_DEFAULTS = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.9,
                    "fliplr": 0.5, "mosaic": 1.0}


@runtime_checkable
class DetectorModel(Protocol):
    """What a detection model provides to the task."""

    num_classes: int
    class_names: list[str]
    stride: torch.Tensor    # strides of the output levels; image sides are multiples of the largest
    fused: bool             # True once `fuse()` has made the deploy graph

    def detect(self, images: torch.Tensor) -> torch.Tensor:
        """(B, k, 6) detections [x1, y1, x2, y2, score, label] in input pixels, best first."""

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, logs) of a training batch (the model in training mode)."""

    def example_input(self, batch: int, imgsz: int) -> torch.Tensor:
        """A seeded (batch, 3, imgsz, imgsz) image batch in [0, 1]."""

    def fuse(self) -> nn.Module:
        """The deploy graph (same outputs), in place."""


class DetectionOptions(TaskOptions):
    imgsz: Optional[int] = Field(None, gt=0, description="square input size in pixels, a multiple of 32 "
                                 f"(default {DEFAULT_IMGSZ}; 128 for shapes)")
    conf: Optional[float] = Field(None, ge=0, le=1, description=f"score threshold (eval {EVAL_CONF}, "
                                  f"the official validator's; predict {PREDICT_CONF})")
    max_det: Optional[int] = Field(None, ge=1, description=f"detections kept per image (eval {EVAL_MAX_DET}, "
                                   f"the COCO protocol; predict {PREDICT_MAX_DET})")
    nms: bool = Field(False, description="class-wise NMS over the NMS-free detections: removes the near-duplicate "
                      "boxes a one-to-one head can leave on crowded scenes")
    iou: float = Field(0.7, gt=0, le=1, description="IoU above which nms drops the lower-scored box")
    fuse: bool = Field(True, description="infer with the re-parameterised deploy graph (same outputs, faster)")
    tile: Optional[int] = Field(None, gt=31, description="predict: cut a large image into tiles of this many "
                                "pixels, detect in each, merge (aerial images)")
    tile_overlap: float = Field(0.2, ge=0, lt=1, description="predict: overlap between neighbouring tiles")
    tile_iou: float = Field(0.5, gt=0, le=1, description="predict: IoU above which boxes of neighbouring tiles "
                            "are merged")
    augment: bool = Field(True, description="training augmentation (mosaic, zoom/shift, HSV, flip); "
                          "false: plain letterbox")
    crop: Optional[int] = Field(None, gt=0, description="train on random crops of this size (a multiple of 32) "
                                "of the augmented images: objects keep their evaluation scale")
    hsv_h: float = Field(AUGMENT_DEFAULTS["hsv_h"], ge=0, description="hue gain (1 +- g)")
    hsv_s: float = Field(AUGMENT_DEFAULTS["hsv_s"], ge=0, description="saturation gain (1 +- g)")
    hsv_v: float = Field(AUGMENT_DEFAULTS["hsv_v"], ge=0, description="value gain (1 +- g)")
    translate: float = Field(AUGMENT_DEFAULTS["translate"], ge=0, description="random shift, fraction of the image")
    scale: float = Field(AUGMENT_DEFAULTS["scale"], ge=0, description="random zoom (1 +- scale)")
    fliplr: float = Field(AUGMENT_DEFAULTS["fliplr"], ge=0, le=1, description="probability of a left-right flip")
    mosaic: float = Field(AUGMENT_DEFAULTS["mosaic"], ge=0, le=1, description="probability of a 4-image mosaic")


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


def _as_pil(image):
    """A path, a PIL image or an HWC uint8 array as an RGB PIL image."""
    from PIL import Image
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise DataError(f"{path}: image file not found" if not path.is_dir() else f"{path}: is a folder")
        with Image.open(path) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


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

    def __init__(self, records, imgsz: int = DEFAULT_IMGSZ, augment: dict | None = None,
                 cache_images: bool | None = None, crop: int | None = None, multiple: int = 32,
                 requested_split: str | None = None):
        for what, size in (("imgsz", imgsz), ("crop", crop or imgsz)):
            if int(size) % multiple or int(size) <= 0:
                raise ConfigError(f"{what} must be a positive multiple of {multiple} (the largest stride), got {size}")
        self.records, self.imgsz, self.augment = records, int(imgsz), augment
        # the split really held (test falls back to val where a dataset has none), and the one asked for
        self.split = records.split
        self.requested_split = requested_split or records.split
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
# Datasets: name -> loader
# ---------------------------------------------------------------------------------------------
def make_dataset(records: coco.DetectionRecords, split: str, model, options: dict,
                 default_imgsz: int = DEFAULT_IMGSZ) -> DetectionDataset:
    """Records -> the task's dataset: letterboxed at `imgsz`, augmented for training, checked
    against the model's classes (`model` may be None: no check)."""
    if options.get("limit") is not None:
        records = records.head(int(options["limit"]))
    imgsz = int(options.get("imgsz") or default_imgsz)
    augment, crop = None, None
    if split == "train" and options.get("augment", True):
        augment = {k: float(options.get(k, v)) for k, v in AUGMENT_DEFAULTS.items()}
        crop = options.get("crop")
    multiple = 32
    if model is not None:
        _check_classes(model, records.names)
        multiple = int(max(model.stride))
    return DetectionDataset(records, imgsz, augment, crop=crop, multiple=multiple, requested_split=split)


def _trees(split: str, model, options: dict) -> DetectionDataset:
    from zoo.data import trees
    return make_dataset(coco.read_any(trees.prepare(), split), split, model, options)


def _shapes(split: str, model, options: dict) -> DetectionDataset:
    from zoo.data import shapes
    root = shapes.prepare(num_images=int(options.get("size") or 64), seed=int(options.get("data_seed", 0)))
    return make_dataset(coco.read_any(root, split), split, model, options, default_imgsz=128)


def _check_classes(model, names: list[str]) -> None:
    nc = int(model.num_classes)
    if len(names) > nc:
        raise DataError(f"the data has {len(names)} classes ({', '.join(names[:5])}"
                        f"{', ...' if len(names) > 5 else ''}) but the model predicts {nc}; "
                        f"build it with num_classes={len(names)}")


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------
class DetectionTask(Task):
    name = "detection"
    input_suffixes = IMAGE_SUFFIXES
    DATASETS = {
        "trees": DatasetEntry("aerial tree crowns from the deepforest 2.1.0 wheel, 640 px tiles, 1 class; "
                              "17 train / 5 val tiles (no test split: test evaluates val)", _trees),
        "shapes": DatasetEntry("seeded synthetic squares/circles/triangles, 128 px, COCO format, train/val "
                               "(for tests and smoke runs)", _shapes),
    }
    Options = DetectionOptions
    model_protocol = DetectorModel
    default_batch_size = 8
    default_lr = 2e-3
    default_steps = 1000
    main_metric = "mAP50-95"
    lower_is_better = False
    int8_tolerance = {"mAP50": ("drop", 0.01)}   # one point of mAP50 (stored as a fraction)
    metric_definitions = {
        "mAP50-95": "COCO box AP averaged over IoU 0.50:0.05:0.95 (101-point precision-recall, all areas, "
                    "best max_det=100 detections per image; faster-coco-eval)",
        "mAP50": "COCO box AP at IoU 0.50 (same protocol)",
        "images": "number of images the metrics were computed on",
        "detections": "detections given to the COCO evaluator (above conf, 0.001 by default; after nms when asked)",
    }

    # ---- data ---------------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        """A COCO json/folder or a YOLO folder (`zoo.data.coco.read_any`), read as the named sets are."""
        return make_dataset(coco.read_any(path, split), split, model, options)

    def collate(self, items):
        return collate(items)

    # ---- training -----------------------------------------------------------------------------
    def loss(self, model, batch):
        """The model's own detection loss (for MHAF-YOLO: YOLOv10's dual assignment)."""
        return model.loss(to_device(batch, device_of(model)))

    def example_batch(self, model, options):
        imgsz = int(options.get("imgsz") or DEFAULT_IMGSZ)
        bsz = int(options.get("batch_size") or 2)
        g = torch.Generator().manual_seed(0)
        n = 4 * bsz
        xy = torch.rand(n, 2, generator=g) * imgsz * 0.7
        wh = torch.rand(n, 2, generator=g) * imgsz * 0.25 + 8
        return {"images": torch.rand(bsz, 3, imgsz, imgsz, generator=g),
                "batch_idx": torch.arange(n) % bsz,
                "cls": torch.randint(0, int(model.num_classes), (n,), generator=g),
                "boxes": torch.cat((xy, (xy + wh).clamp(max=imgsz)), 1),
                "meta": [{"index": i, "ratio": 1.0, "pad": (0, 0), "size": (imgsz, imgsz)} for i in range(bsz)]}

    # ---- inference ----------------------------------------------------------------------------
    def example_input(self, model, options):
        return (model.example_input(int(options.get("batch_size") or 1), int(options.get("imgsz") or DEFAULT_IMGSZ)),)

    def eval_batch_size(self, options):
        return int(options.get("batch_size") or 8)

    def detect(self, model, dataset: DetectionDataset, options: dict, indices: range | None = None):
        """Run the model over a dataset (or the images `indices` of it); yields (dataset index,
        (k, 6) detections in letterboxed pixels on the CPU, meta). The model runs where it lives."""
        model = _deploy_copy(model, options)
        device = device_of(model)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        bsz = self.eval_batch_size(options)
        indices = range(len(dataset)) if indices is None else indices
        with torch.no_grad():
            for start in range(0, len(indices), bsz):
                batch = collate([dataset[i] for i in indices[start:start + bsz]])
                dets = model.detect(batch["images"].to(device, dtype)).float().cpu()
                for det, meta in zip(dets, batch["meta"]):
                    yield meta["index"], det, meta

    def evaluate(self, model, dataset, options):
        """COCO box mAP@[.5:.95] and mAP@.5 with faster-coco-eval: the model's detections above
        `conf` (0.001, as the official validator), COCO's protocol of the best `max_det` (100)
        per image; `images` says how many images that was."""
        return evaluate_sharded(self, model, dataset, options)

    def evaluate_shard(self, model, dataset, indices, options):
        """The COCO result records of the images `indices`, in dataset order."""
        if not isinstance(dataset, DetectionDataset):
            raise DataError("detection evaluation needs a detection dataset")
        _check_classes(model, dataset.names)
        conf = float(options.get("conf", EVAL_CONF))
        records = dataset.records
        results = []
        for i, det, meta in self.detect(model, dataset, options, indices):
            det = det[det[:, 4] > conf]
            if options.get("nms"):
                det = nms(det, float(options.get("iou", 0.7)))
            for x1, y1, x2, y2, score, label in to_original(det, meta).tolist():
                results.append({"image_id": records.image_ids[i], "category_id": records.category_ids[int(label)],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        return results

    def merge_eval(self, dataset, states, options):
        # COCO's matching is per image but its precision ranks detections over the whole set:
        # every detection is gathered and scored once
        from faster_coco_eval import COCO, COCOeval_faster
        records = dataset.records
        results = [r for st in states for r in st]
        counts = {"images": len(dataset), "detections": len(results)}
        gt = COCO(records.coco_ground_truth())
        if not results or not any(len(b) for b in records.boxes):
            return {"mAP50-95": 0.0, "mAP50": 0.0, **counts}
        ev = COCOeval_faster(gt, gt.loadRes(results), iouType="bbox", print_function=lambda *a, **k: None)
        ev.params.maxDets = [1, 10, int(options.get("max_det", EVAL_MAX_DET))]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        stats = [max(0.0, float(s)) for s in ev.stats[:2]]
        return {"mAP50-95": stats[0], "mAP50": stats[1], **counts}

    def data_config(self, model):
        return {"input_size": [3, DEFAULT_IMGSZ, DEFAULT_IMGSZ], "value_range": [0.0, 1.0], "mean": None,
                "std": None, "color": "RGB", "letterbox": {"pad_value": int(PAD_VALUE), "centred": True},
                "stride": int(max(model.stride)), "class_names": list(model.class_names or [])}

    def transform(self, model, data_config):
        size = int(data_config["input_size"][-1])

        def prepare(image) -> torch.Tensor:
            image = _as_pil(image)
            canvas, _, _ = letterbox(image, size)
            return torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255.0
        return prepare

    def _detect_image(self, model, image, names, options, conf) -> torch.Tensor:
        """(k, 6) detections above `conf` of one PIL image, in its pixels, best first."""
        imgsz = int(options.get("imgsz") or DEFAULT_IMGSZ)
        records = coco.DetectionRecords(names=names, category_ids=list(range(len(names))))
        records.add(Path("<image>"), image.size, 1, np.zeros((0, 4)), [])
        ds = DetectionDataset(records, imgsz, multiple=int(max(model.stride)))
        ds._images[0] = image   # already decoded (a file or a tile of one)
        _, det, meta = next(self.detect(model, ds, {**options, "batch_size": 1}))
        return to_original(det[det[:, 4] >= conf], meta)

    def _detect_tiled(self, model, image, names, tile, options, conf) -> torch.Tensor:
        """Overlapping tiles, each detected at full resolution, boxes shifted back and merged
        across tile borders by class-wise NMS (small objects in large aerial images)."""
        step = max(1, int(round(tile * (1 - float(options.get("tile_overlap", 0.2))))))
        w, h = image.size
        parts = []
        for y0 in _tile_starts(h, tile, step):
            for x0 in _tile_starts(w, tile, step):
                det = self._detect_image(model, image.crop((x0, y0, min(x0 + tile, w), min(y0 + tile, h))),
                                         names, options, conf)
                det[:, [0, 2]] += x0
                det[:, [1, 3]] += y0
                parts.append(det)
        det = torch.cat(parts) if parts else torch.zeros((0, 6))
        det = det[det[:, 4].argsort(descending=True)]
        return nms(det, float(options.get("tile_iou", 0.5)))

    def predict(self, model, input, dataset, save, options):
        """Detect objects in one image (`input`, a path; else the dataset's first image). Returns
        the boxes (original pixels), labels and scores above `conf` (default 0.25), at most
        `max_det` (300); draws them to `save` when given."""
        from PIL import Image, UnidentifiedImageError
        names = list(model.class_names or [])
        if input is None:
            if dataset is None or not len(dataset):
                raise DataError("predict needs an image path (or --dataset/--data to take the first image from)")
            path = dataset.records.files[0]
        else:
            path = Path(input)
            if path.is_dir():
                raise DataError(f"{path}: is a folder; give an image file")
            if not path.is_file():
                raise DataError(f"{path}: image file not found")
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError):
            raise DataError(f"{path}: not an image (cannot be decoded)") from None
        conf = float(options.get("conf", PREDICT_CONF))
        tile = options.get("tile")
        if tile and max(image.size) > int(tile):
            det = self._detect_tiled(model, image, names, int(tile), options, conf)
        else:
            det = self._detect_image(model, image, names, options, conf)
        if options.get("nms"):
            det = nms(det, float(options.get("iou", 0.7)))
        det = det[:int(options.get("max_det", PREDICT_MAX_DET))]
        found = []
        for x1, y1, x2, y2, score, label in det.tolist():
            name = names[int(label)] if int(label) < len(names) else str(int(label))
            found.append({"label": name, "class_id": int(label), "score": round(score, 4),
                          "box": [round(v, 1) for v in (x1, y1, x2, y2)]})
        if save:
            save_image(draw_detections(image, found), save)
        return {"image": str(path), "size": list(image.size), "detections": found}


def _tile_starts(n: int, tile: int, step: int) -> list[int]:
    """Window origins covering [0, n) with windows of `tile`, the last one flush with the end."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, step))
    return starts if starts[-1] == n - tile else starts + [n - tile]


def _deploy_copy(model, options):
    """A fused copy for inference (same outputs, fewer ops) unless the model is fused already or
    `-o fuse=false`; the caller's model is left as it was."""
    model.eval()
    if not options.get("fuse", True) or model.fused:
        return model
    with torch.inference_mode(False), torch.no_grad():
        return copy.deepcopy(model).fuse()


def nms(det: torch.Tensor, iou: float) -> torch.Tensor:
    """Class-wise non-maximum suppression of (k, 6) detections; the kept rows, best first."""
    from torchvision.ops import batched_nms
    if not len(det):
        return det
    keep = batched_nms(det[:, :4], det[:, 4], det[:, 5].long(), iou)
    return det[keep]


def to_original(det: torch.Tensor, meta: dict) -> torch.Tensor:
    """Letterboxed-input boxes -> original image pixels (clipped to the image)."""
    det = det.clone()
    px, py = meta["pad"]
    det[:, [0, 2]] = ((det[:, [0, 2]] - px) / meta["ratio"]).clamp(0, meta["size"][0])
    det[:, [1, 3]] = ((det[:, [1, 3]] - py) / meta["ratio"]).clamp(0, meta["size"][1])
    return det


def save_image(image, path) -> Path:
    """Save a PIL image atomically, in the format its suffix names (PNG when it names none)."""
    from PIL import Image

    from zoo._io import atomic_write
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


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
