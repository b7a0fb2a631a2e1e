"""Ultrasound multi-task data: the FM_UIA challenge layout (reader and writer), a seeded generator of
ultrasound-like images for every kind of sub-task, and MNI152 brain-tissue slices (nilearn).

The challenge layout: `<root>/csv_files/*.csv`, one row per sample, columns `task_id`, `task_name`,
`image_path` and `mask_path` (relative to the csv folder), `mask` (the class of a classification
sample), `num_classes`, `point_<k>_xy` (JSON "[x, y]" in image pixels, regression),
`x_min, y_min, x_max, y_max` (pixels, detection); images in Classification/, Segmentation/,
Detection/, Regression/ folders. A sample here is a dict: image (3, S, S) in [0, 1], task_id, and
its target: `mask` (S, S) int64, `label` int, `box` (4,) normalised xyxy, or `points` (P, 2)
normalised xy; `orig_size` (w, h) keeps the pixel scale for MRE.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError

FOLDERS = {"segmentation": "Segmentation", "classification": "Classification", "detection": "Detection",
           "regression": "Regression"}


class MultiTaskSet(Dataset):
    """Samples of several sub-tasks; `by_task` maps task id -> sample indices."""

    def __init__(self, samples: list[dict], name: str, split: str, notes: list[str] | None = None):
        self.samples, self.name, self.split, self.notes = samples, name, split, list(notes or [])
        self.by_task: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            self.by_task.setdefault(s["task_id"], []).append(i)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


# ---- generator --------------------------------------------------------------------------------------

def _ellipse(xx, yy, cx, cy, rx, ry, angle=0.0):
    x, y = xx - cx, yy - cy
    c, s = math.cos(angle), math.sin(angle)
    return ((x * c + y * s) / rx) ** 2 + ((-x * s + y * c) / ry) ** 2 <= 1


def _background(rng, size):
    """Speckled sector scan: Rayleigh speckle, depth attenuation, a fan mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tissue = 0.35 + 0.1 * np.sin(6 * yy + rng.uniform(0, 6))
    fan = (np.abs(np.arctan2(xx - 0.5, yy + 0.15)) < 0.75)
    return tissue * (1.0 - 0.4 * yy) * fan, fan, xx, yy


def _finish(rng, img, fan, shadow_x=None):
    speckle = rng.rayleigh(0.8, img.shape).astype(np.float32)
    img = img * speckle
    if shadow_x is not None:   # acoustic shadow under a strong reflector
        yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32) / img.shape[0]
        img = img * np.where((np.abs(xx - shadow_x[0]) < shadow_x[1]) & (yy > shadow_x[2]), 0.25, 1.0)
    img = np.clip(img * fan, 0, 1)
    return np.repeat(img[None], 3, 0).astype(np.float32)


def synth_sample(rng: np.random.Generator, task_id: str, kind: str, size_or_classes: int, img: int) -> dict:
    """One sample of a sub-task of `kind`: seg = nested elliptical structures (one class each), cls =
    a structure whose orientation encodes the class, det = one hypoechoic lesion, reg = bright landmarks."""
    base, fan, xx, yy = _background(rng, img)
    out = {"task_id": task_id, "orig_size": (img, img)}
    if kind == "segmentation":
        mask = np.zeros((img, img), np.int64)
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.4, 0.65), rng.uniform(0.16, 0.26)
        for c in range(1, size_or_classes):
            scale = 1 - 0.7 * (c - 1) / max(1, size_or_classes - 1)
            off = 0.25 * r * (c - 1) * np.array([math.cos(c * 2.1), math.sin(c * 2.1)])
            m = _ellipse(xx, yy, cx + off[0], cy + off[1], r * scale, 0.7 * r * scale, rng.uniform(0, math.pi))
            mask[m & fan] = c
        levels = np.concatenate([[0.0], np.linspace(0.95, 0.1, size_or_classes - 1)])   # one echo level per class
        image = np.where(mask > 0, levels[mask], base)
        out["mask"] = torch.from_numpy(mask)
        out["image"] = _finish(rng, image, fan, (cx, 0.6 * r, cy + r))
    elif kind == "classification":
        label = int(rng.integers(size_or_classes))
        angle = math.pi * label / size_or_classes + rng.normal(0, 0.04)
        m = _ellipse(xx, yy, rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.6), 0.28, 0.07, angle)
        out["label"] = label
        out["image"] = _finish(rng, np.where(m, 0.9, base), fan)
    elif kind == "detection":
        cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.75)
        rx, ry = rng.uniform(0.06, 0.15), rng.uniform(0.05, 0.12)
        m = _ellipse(xx, yy, cx, cy, rx, ry)
        ys, xs = np.nonzero(m)
        out["box"] = torch.tensor([xs.min() / img, ys.min() / img, (xs.max() + 1) / img, (ys.max() + 1) / img],
                                  dtype=torch.float32)
        out["image"] = _finish(rng, np.where(m, 0.05, base), fan, (cx, rx * 0.8, cy + ry))
    elif kind == "regression":
        pts = np.stack([rng.uniform(0.2, 0.8, size_or_classes), rng.uniform(0.3, 0.8, size_or_classes)], 1)
        pts = pts[np.argsort(pts[:, 0])]
        image = base.copy()
        for x, y in pts:
            image = np.where(_ellipse(xx, yy, x, y, 0.035, 0.035), 1.0, image)
        out["points"] = torch.tensor(pts, dtype=torch.float32)
        out["image"] = _finish(rng, image, fan)
    else:
        raise DataError(f"task {task_id}: unknown kind {kind!r}")
    out["image"] = torch.from_numpy(out["image"])
    return out


def us_synth(split: str, tasks: dict, seed: int = 0, per_task: int | None = None, img: int = 64) -> MultiTaskSet:
    """Seeded ultrasound-like set: `per_task` samples of every (task id -> (kind, size)) of the model
    (default 40 train / 12 test); train and test come from different seeds."""
    n = int(per_task or (40 if split == "train" else 12))
    samples = []
    for k, (tid, (kind, size)) in enumerate(sorted(tasks.items())):
        rng = np.random.default_rng([seed, k, 0 if split == "train" else 1])
        samples += [synth_sample(rng, tid, kind, int(size), img) for _ in range(n)]
    return MultiTaskSet(samples, "us-synth", split)


# ---- the challenge layout: writer and reader --------------------------------------------------------

def write_challenge(root: str | Path, dataset: MultiTaskSet, tasks: dict) -> Path:
    """Write samples in the challenge layout (PNG images and masks, one csv per task)."""
    from PIL import Image

    from zoo._io import atomic_write, atomic_write_text
    root = Path(root)
    csv_dir = root / "csv_files"
    rows: dict[str, list[dict]] = {}
    for i, s in enumerate(dataset.samples):
        tid = s["task_id"]
        kind, size = tasks[tid]
        folder = FOLDERS[kind]
        rel = Path("..") / folder / tid / f"{i:05d}.png"
        pic = (s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        atomic_write(csv_dir / rel, lambda p, a=pic: Image.fromarray(a).save(p, format="PNG"))
        h, w = pic.shape[:2]
        row = {"task_id": tid, "task_name": tid, "image_path": rel.as_posix(), "mask_path": "", "mask": "",
               "num_classes": size}
        if kind == "segmentation":
            mrel = Path("..") / folder / tid / f"{i:05d}_mask.png"
            m = s["mask"].numpy().astype(np.uint8)
            atomic_write(csv_dir / mrel, lambda p, a=m: Image.fromarray(a).save(p, format="PNG"))
            row["mask_path"] = mrel.as_posix()
        elif kind == "classification":
            row["mask"] = int(s["label"])
        elif kind == "regression":
            for k, (x, y) in enumerate(s["points"].tolist(), start=1):
                row[f"point_{k}_xy"] = json.dumps([round(x * w, 2), round(y * h, 2)])
        else:
            b = s["box"].tolist()
            row.update(x_min=b[0] * w, y_min=b[1] * h, x_max=b[2] * w, y_max=b[3] * h)
        rows.setdefault(tid, []).append(row)
    for tid, task_rows in rows.items():
        cols = list(dict.fromkeys(k for r in task_rows for k in r))
        import io
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(task_rows)
        atomic_write_text(csv_dir / f"{tid}.csv", buf.getvalue())
    return root


def _image(path: Path, where: str, size: int, mode: str) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError
    if not path.is_file():
        raise DataError(f"{where}: image not found: {path}")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{where}: {path} is not a readable image ({exc})") from None
    orig = im.size
    im = im.convert(mode)
    if im.size != (size, size):
        im = im.resize((size, size), Image.NEAREST if mode == "L" else Image.BILINEAR)
    return np.asarray(im), orig


def read_challenge(root: str | Path, tasks: dict, img: int, split: str = "val") -> MultiTaskSet:
    """Read `<root>/csv_files/*.csv` for the model's sub-tasks (task id -> (kind, size)); images are
    resized to the model's input size; masks must have their image's size and values < num_classes."""
    root = Path(root)
    csv_dir = root / "csv_files"
    if not csv_dir.is_dir():
        raise DataError(f"{root}: not the challenge layout (no csv_files/ folder)")
    files = sorted(csv_dir.glob("*.csv"))
    if not files:
        raise DataError(f"{csv_dir}: no .csv files")
    samples = []
    for f in files:
        with open(f, newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                where = f"{f.name} line {n}"
                tid = (row.get("task_id") or "").strip()
                if tid not in tasks:
                    import difflib
                    close = difflib.get_close_matches(tid, list(tasks), n=3)
                    raise DataError(f"{where}: unknown task id {tid!r}; the model has no head for it"
                                    + (f" (did you mean {', '.join(close)}?)" if close else ""))
                kind, size = tasks[tid]
                image, orig = _image(csv_dir / row["image_path"], where, img, "RGB")
                s = {"task_id": tid, "orig_size": orig,
                     "image": torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1).contiguous()}
                try:
                    if kind == "segmentation":
                        mpath = csv_dir / (row.get("mask_path") or "")
                        from PIL import Image
                        if not mpath.is_file():
                            raise DataError(f"{where}: mask not found: {mpath}")
                        msize = Image.open(mpath).size
                        if msize != orig:
                            raise DataError(f"{where}: mask {mpath.name} is {msize[0]}x{msize[1]} but its image is "
                                            f"{orig[0]}x{orig[1]}")
                        mask, _ = _image(mpath, where, img, "L")
                        if int(mask.max()) >= int(size):
                            raise DataError(f"{where}: mask {mpath.name} has label value {int(mask.max())} but task "
                                            f"{tid} has {size} classes (0..{int(size) - 1})")
                        s["mask"] = torch.from_numpy(mask.astype(np.int64))
                    elif kind == "classification":
                        label = int(float(row["mask"]))
                        if not 0 <= label < int(size):
                            raise DataError(f"{where}: class {label} is outside task {tid}'s {size} classes")
                        s["label"] = label
                    elif kind == "regression":
                        pts = [json.loads(row[f"point_{k}_xy"]) for k in range(1, int(size) + 1)]
                        s["points"] = torch.tensor([[x / orig[0], y / orig[1]] for x, y in pts], dtype=torch.float32)
                    else:
                        b = [float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
                        s["box"] = torch.tensor([b[0] / orig[0], b[1] / orig[1], b[2] / orig[0], b[3] / orig[1]])
                except (KeyError, ValueError, TypeError) as exc:
                    raise DataError(f"{where}: bad or missing {kind} column ({type(exc).__name__}: {exc})") from None
                samples.append(s)
    return MultiTaskSet(samples, root.name, split)


# ---- MNI152 (nilearn) -------------------------------------------------------------------------------

def mni152_tissue(split: str, img: int = 64, task_id: str = "brain_tissue") -> MultiTaskSet:
    """Axial slices of nilearn's MNI152 T1 template with 3-class masks (0 other, 1 grey, 2 white
    matter: argmax of the probability maps above 0.5). Even slices train, odd slices test; a single
    template, so a smoke/overfit set, not a benchmark."""
    try:
        import nibabel as nib
        import nilearn
    except ImportError:
        raise DataError("the mni152 set needs nilearn (pip install nilearn)") from None
    base = Path(nilearn.__file__).parent / "datasets" / "data"
    names = ["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
             "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"]
    if not all((base / n).is_file() for n in names):
        raise DataError(f"the MNI152 template files are not in {base}")
    t1, gm, wm = (np.asarray(nib.load(str(base / n)).dataobj, np.float32) for n in names)
    gm, wm = gm / max(gm.max(), 1), wm / max(wm.max(), 1)
    samples = []
    import torch.nn.functional as F
    for z in range(40, 150, 2):
        zz = z + (0 if split == "train" else 1)
        sl = torch.from_numpy(np.rot90(t1[:, :, zz]).copy() / max(t1.max(), 1))
        m = np.zeros(gm.shape[:2], np.int64)
        m[(gm[:, :, zz] > 0.5) & (gm[:, :, zz] >= wm[:, :, zz])] = 1
        m[(wm[:, :, zz] > 0.5) & (wm[:, :, zz] > gm[:, :, zz])] = 2
        mt = torch.from_numpy(np.rot90(m).copy())
        image = F.interpolate(sl[None, None].float(), size=(img, img), mode="bilinear")[0].repeat(3, 1, 1)
        mask = F.interpolate(mt[None, None].float(), size=(img, img), mode="nearest")[0, 0].long()
        samples.append({"task_id": task_id, "orig_size": (img, img), "image": image.clamp(0, 1), "mask": mask})
    return MultiTaskSet(samples, "mni152-tissue", split)
