"""Readers of the two box formats users hold: COCO json and YOLO txt folders.

Both produce `DetectionRecords`: one entry per image with its boxes in pixel xyxy and contiguous
class indices 0..K-1 (COCO category ids are kept for writing results). Every problem a user can
cause (not an image, an empty folder, a box outside its image, an unknown class, a json missing a
field) raises DataError with one line naming the file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from zoo.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: a box may poke out of its image by this many pixels (rounding in the tools that wrote it)
PIXEL_TOLERANCE = 1.0
#: YOLO coordinates are fractions of the image; allow float rounding
FRACTION_TOLERANCE = 1e-3


@dataclass
class DetectionRecords:
    files: list[Path] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)     # (width, height)
    image_ids: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)          # (n, 4) xyxy pixels, float32
    classes: list[np.ndarray] = field(default_factory=list)        # (n,) int64 in 0..K-1
    crowd: list[np.ndarray] = field(default_factory=list)          # (n,) bool: COCO iscrowd
    areas: list[np.ndarray] = field(default_factory=list)          # (n,) the area COCO eval ranks by
    names: list[str] = field(default_factory=list)                 # class index -> name
    category_ids: list[int] = field(default_factory=list)          # class index -> COCO category id
    source: str = ""
    #: the split these records really are ("train", "val", "test"), or "all" for a file or folder
    #: that is not split; may differ from the split asked for (test falls back to val)
    split: str = "all"

    def __len__(self):
        return len(self.files)

    def head(self, n: int) -> "DetectionRecords":
        """The first `n` images (and their objects); classes and split unchanged."""
        per_image = ("files", "sizes", "image_ids", "boxes", "classes", "crowd", "areas")
        return replace(self, **{k: getattr(self, k)[:n] for k in per_image})

    def add(self, file: Path, size, image_id: int, boxes, classes, crowd=None, areas=None):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.files.append(file)
        self.sizes.append((int(size[0]), int(size[1])))
        self.image_ids.append(int(image_id))
        self.boxes.append(boxes)
        self.classes.append(np.asarray(classes, dtype=np.int64).reshape(-1))
        self.crowd.append(np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd, bool))
        wh = boxes[:, 2:] - boxes[:, :2]
        self.areas.append(wh[:, 0] * wh[:, 1] if areas is None else np.asarray(areas, np.float32))

    def coco_ground_truth(self) -> dict:
        """The records as a COCO json dict (what faster-coco-eval scores against)."""
        images, anns = [], []
        for i in range(len(self)):
            w, h = self.sizes[i]
            images.append({"id": self.image_ids[i], "file_name": self.files[i].name, "width": w, "height": h})
            for b, c, crowd, area in zip(self.boxes[i], self.classes[i], self.crowd[i], self.areas[i]):
                anns.append({"id": len(anns) + 1, "image_id": self.image_ids[i],
                             "category_id": self.category_ids[int(c)],
                             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                             "area": float(area), "iscrowd": int(crowd)})
        cats = [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.names)]
        return {"images": images, "annotations": anns, "categories": cats}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; DataError when the file is not a readable image."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise DataError(f"{path}: not an image (cannot be decoded)") from None


def _check_box(box, size, where: str):
    x1, y1, x2, y2 = box
    w, h = size
    if not np.all(np.isfinite(box)):
        raise DataError(f"{where}: box {list(map(float, box))} is not finite")
    if x1 < -PIXEL_TOLERANCE or y1 < -PIXEL_TOLERANCE or x2 > w + PIXEL_TOLERANCE or y2 > h + PIXEL_TOLERANCE:
        raise DataError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {w}x{h} image")
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has negative width or height")


# ---------------------------------------------------------------------------------------------
# COCO json
# ---------------------------------------------------------------------------------------------
def _need(obj: dict, keys, where: str):
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, got {type(obj).__name__}")
    for k in keys:
        if k not in obj:
            raise DataError(f"{where}: missing field '{k}'")


def read_coco(json_path: str | Path, image_root: str | Path | None = None) -> DetectionRecords:
    """A COCO detection json (images, annotations, categories). Images are looked up under
    `image_root`, else next to the json, in `images/` beside it, or in its parent's `images/`."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{json_path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{json_path}: not valid JSON ({exc})") from None
    _need(data, ("images", "annotations", "categories"), str(json_path))
    cats = data["categories"]
    if not cats:
        raise DataError(f"{json_path}: 'categories' is empty")
    for j, c in enumerate(cats):
        _need(c, ("id", "name"), f"{json_path}: categories[{j}]")
    cats = sorted(cats, key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(cats)}
    images = data["images"]
    if not images:
        raise DataError(f"{json_path}: 'images' is empty")
    by_image: dict[int, list] = {}
    for j, a in enumerate(data["annotations"]):
        _need(a, ("image_id", "bbox", "category_id"), f"{json_path}: annotations[{j}]")
        by_image.setdefault(a["image_id"], []).append((j, a))
    roots = [Path(image_root)] if image_root else [
        json_path.parent, json_path.parent / "images", json_path.parent.parent / "images",
        json_path.parent.parent / json_path.stem.replace("instances_", ""),
        json_path.parent.parent / "images" / json_path.stem.replace("instances_", "")]
    records = DetectionRecords(names=[str(c["name"]) for c in cats], category_ids=[c["id"] for c in cats],
                               source=str(json_path))
    root = None
    known_ids = {img.get("id") for img in images if isinstance(img, dict)}
    for j, img in enumerate(images):
        _need(img, ("id", "file_name"), f"{json_path}: images[{j}]")
        if root is None:
            found = [r for r in roots if (r / img["file_name"]).is_file()]
            if not found:
                raise DataError(f"{json_path}: image '{img['file_name']}' not found under "
                                f"{', '.join(str(r) for r in roots)}")
            root = found[0]
        file = root / img["file_name"]
        size = image_size(file)
        if "width" in img and "height" in img and (img["width"], img["height"]) != size:
            raise DataError(f"{file}: the json says {img['width']}x{img['height']}, the file is {size[0]}x{size[1]}")
        boxes, classes, crowd, areas = [], [], [], []
        for k, a in by_image.get(img["id"], []):
            where = f"{json_path}: annotations[{k}]"
            bbox = a["bbox"]
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise DataError(f"{where}: 'bbox' must be [x, y, width, height]")
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raise DataError(f"{where}: 'bbox' holds a non-number") from None
            box = np.array([x, y, x + w, y + h], np.float32)
            _check_box(box, size, where)
            if a["category_id"] not in index_of:
                raise DataError(f"{where}: category_id {a['category_id']} is not in 'categories'")
            boxes.append(box)
            classes.append(index_of[a["category_id"]])
            crowd.append(bool(a.get("iscrowd", 0)))
            areas.append(float(a.get("area", w * h)))
        records.add(file, size, img["id"], boxes, classes, crowd, areas)
    stray = set(by_image) - known_ids
    if stray:
        raise DataError(f"{json_path}: annotations refer to image_id {sorted(stray)[0]}, which is not in 'images'")
    return records


# ---------------------------------------------------------------------------------------------
# YOLO txt
# ---------------------------------------------------------------------------------------------
def _yolo_names(root: Path) -> list[str] | None:
    """Class names from data.yaml (`names:` list or {id: name}) or classes.txt, when present."""
    for yml in (root / "data.yaml", root / "dataset.yaml"):
        if yml.is_file():
            import yaml
            try:
                names = (yaml.safe_load(yml.read_text()) or {}).get("names")
            except yaml.YAMLError:
                raise DataError(f"{yml}: not valid YAML") from None
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    txt = root / "classes.txt"
    if txt.is_file():
        return [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
    return None


def read_yolo(image_dir: str | Path, label_dir: str | Path, names: list[str] | None = None) -> DetectionRecords:
    """YOLO layout: one `<stem>.txt` per image, lines `class cx cy w h` as fractions of the image
    (a polygon `class x1 y1 x2 y2 ...` is turned into its bounding box). An image without a label
    file has no objects."""
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{image_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    parsed = []
    max_class = -1
    for file in files:
        size = image_size(file)
        label = label_dir / f"{file.stem}.txt"
        rows = []
        if label.is_file():
            for n, line in enumerate(label.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                where = f"{label}:{n}"
                try:
                    values = [float(v) for v in line.split()]
                except ValueError:
                    raise DataError(f"{where}: expected numbers, got '{line.strip()}'") from None
                if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
                    raise DataError(f"{where}: expected 'class cx cy w h' (or a polygon), got {len(values)} values")
                cls = values[0]
                if cls != int(cls) or cls < 0 or (names is not None and cls >= len(names)):
                    allowed = f"0..{len(names) - 1}" if names is not None else "a non-negative integer"
                    raise DataError(f"{where}: class id {cls:g} is out of range ({allowed})")
                coords = np.array(values[1:], np.float64)
                if np.any(coords < -FRACTION_TOLERANCE) or np.any(coords > 1 + FRACTION_TOLERANCE):
                    raise DataError(f"{where}: coordinates must be fractions in [0, 1], got {values[1:]}")
                if len(values) == 5:
                    cx, cy, w, h = coords
                    if w < 0 or h < 0:
                        raise DataError(f"{where}: negative width or height")
                    if cx - w / 2 < -FRACTION_TOLERANCE or cx + w / 2 > 1 + FRACTION_TOLERANCE or \
                            cy - h / 2 < -FRACTION_TOLERANCE or cy + h / 2 > 1 + FRACTION_TOLERANCE:
                        raise DataError(f"{where}: box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g}) "
                                        f"extends outside the image")
                    frac = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                else:
                    xy = coords.reshape(-1, 2)
                    frac = np.array([*xy.min(0), *xy.max(0)])
                frac = np.clip(frac, 0, 1)
                rows.append((int(cls), frac * np.array([size[0], size[1], size[0], size[1]])))
                max_class = max(max_class, int(cls))
        parsed.append((file, size, rows))
    if names is None:
        names = [str(i) for i in range(max_class + 1)] or ["0"]
    records = DetectionRecords(names=names, category_ids=list(range(len(names))), source=str(image_dir))
    for i, (file, size, rows) in enumerate(parsed):
        records.add(file, size, i + 1, [r[1] for r in rows], [r[0] for r in rows])
    return records


# ---------------------------------------------------------------------------------------------
# --data PATH: find the split in a folder of either format
# ---------------------------------------------------------------------------------------------
#: the folder/file names each split goes by
SPLIT_NAMES = {"train": ("train", "train2017"), "val": ("val", "valid", "validation", "val2017"),
               "test": ("test", "test2017")}
#: where to look for a split, in order: a dataset without test annotations is evaluated on val
SPLIT_ALIASES = {"train": SPLIT_NAMES["train"], "val": SPLIT_NAMES["val"],
                 "test": SPLIT_NAMES["test"] + SPLIT_NAMES["val"]}


def _split_named(alias: str) -> str:
    return next((split for split, names in SPLIT_NAMES.items() if alias in names), alias)


def read_any(path: str | Path, split: str) -> DetectionRecords:
    """`path` is a COCO json file, a COCO folder (`annotations/instances_<split>*.json`), or a YOLO
    folder (`images/<split>` + `labels/<split>`, or flat `images/` + `labels/`). The `test` split
    falls back to `val` when a dataset has no test annotations; the records' `split` says which
    split was read ("all" for a single file or an unsplit folder)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    aliases = SPLIT_ALIASES.get(split, (split,))
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise DataError(f"{path}: expected a COCO .json file or a dataset folder")
        return read_coco(path)
    ann_dir = path / "annotations"
    if ann_dir.is_dir():
        jsons = sorted(ann_dir.glob("*.json"))
        for alias in aliases:
            for j in jsons:
                stem = j.stem.lower()
                if stem in (alias, f"instances_{alias}") or stem.endswith(f"_{alias}"):
                    records = read_coco(j, _coco_image_root(path, alias))
                    records.split = _split_named(alias)
                    return records
        raise DataError(f"{ann_dir}: no annotation json for split '{split}' "
                        f"(have: {', '.join(j.name for j in jsons) or 'none'})")
    names = _yolo_names(path)
    for alias in aliases:
        if (path / "images" / alias).is_dir():
            records = read_yolo(path / "images" / alias, path / "labels" / alias, names)
            records.split = _split_named(alias)
            return records
    if (path / "images").is_dir():
        return read_yolo(path / "images", path / "labels", names)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        raise DataError(f"{path}: images without annotations; expected a COCO json or YOLO labels/")
    raise DataError(f"{path}: neither a COCO folder (annotations/*.json) nor a YOLO folder (images/, labels/)")


def _coco_image_root(root: Path, alias: str) -> Path | None:
    for cand in (root / "images" / alias, root / alias, root / "images"):
        if cand.is_dir():
            return cand
    return None
