"""`shapes`: a seeded synthetic detection set in COCO format (squares, circles, triangles on a noisy
background), small enough for tests and smoke runs. Written once per parameter set under the zoo
data cache in the same layout users hold: `images/<split>/*.png` + `annotations/instances_<split>.json`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

CLASSES = ["square", "circle", "triangle"]
#: per split: number of images and the seed offset (val never repeats a train image)
SPLITS = {"train": (1.0, 0), "val": (0.25, 1)}


def _draw(rng, size: int, max_objects: int):
    """One image (PIL) and its objects [(class index, x1, y1, x2, y2)], all from torch's `rng`."""
    import torch
    from PIL import Image, ImageDraw

    def rand(lo, hi):
        return lo + (hi - lo) * float(torch.rand((), generator=rng))

    bg = (torch.rand(3, generator=rng) * 80 + 40).int().tolist()
    noise = (torch.randn(size, size, 3, generator=rng) * 12 + torch.tensor(bg)).clamp(0, 255).byte()
    img = Image.fromarray(noise.numpy(), "RGB")
    draw = ImageDraw.Draw(img)
    objects = []
    n = int(torch.randint(1, max_objects + 1, (), generator=rng))
    for _ in range(n):
        cls = int(torch.randint(0, len(CLASSES), (), generator=rng))
        side = rand(size * 0.12, size * 0.4)
        for _try in range(20):  # objects do not overlap, so every box is fully visible
            x1, y1 = rand(0, size - side), rand(0, size - side)
            x2, y2 = x1 + side, y1 + side
            if all(x2 <= o[1] or o[3] <= x1 or y2 <= o[2] or o[4] <= y1 for o in objects):
                break
        else:
            continue
        color = tuple((torch.rand(3, generator=rng) * 120 + 130).int().tolist())
        if CLASSES[cls] == "square":
            draw.rectangle([x1, y1, x2, y2], fill=color)
        elif CLASSES[cls] == "circle":
            draw.ellipse([x1, y1, x2, y2], fill=color)
        else:
            draw.polygon([(x1, y2), ((x1 + x2) / 2, y1), (x2, y2)], fill=color)
        objects.append((cls, x1, y1, x2, y2))
    return img, objects


def prepare(num_images: int = 64, size: int = 128, max_objects: int = 4, seed: int = 0) -> Path:
    """Generate (once) and return the dataset folder; the same parameters give the same files."""
    import torch

    from zoo.data import cache_dir, params_key

    key = params_key(num_images=num_images, size=size, max_objects=max_objects, seed=seed, version=1)
    root = cache_dir() / "shapes" / key
    if (root / "annotations" / "instances_val.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{key}."))
    try:
        for split, (fraction, offset) in SPLITS.items():
            rng = torch.Generator().manual_seed(seed * 1000 + offset)
            (tmp / "images" / split).mkdir(parents=True)
            images, anns = [], []
            for i in range(max(1, int(num_images * fraction))):
                img, objects = _draw(rng, size, max_objects)
                name = f"{split}_{i:05d}.png"
                img.save(tmp / "images" / split / name)
                images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
                for cls, x1, y1, x2, y2 in objects:
                    anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                                 "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                 "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
            cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"instances_{split}.json").write_text(
                json.dumps({"images": images, "annotations": anns, "categories": cats}))
        try:
            tmp.rename(root)
        except OSError:  # another process finished first; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
