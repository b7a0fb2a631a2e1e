"""Prostate-zone segmentation data: a seeded T2-like phantom, and readers of the real formats
(NIfTI image + zone-label volumes via nibabel; DICOM-SEG via pydicom, as TCIA's PROSTATEx zone
segmentations are published).

Slices are 2-D samples: (image (1, H, W) float in [0, 1], mask (H, W) int64 with 0 background,
1 PZ, 2 TZ, 3 DPU, 4 AFS).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError

ZONES = ["background", "PZ", "TZ", "DPU", "AFS"]


class SegmentationSlices(Dataset):
    """2-D slices with integer masks; `notes` says how the data was read (e.g. a volume was sliced)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, name: str, split: str,
                 class_names: list[str], notes: list[str] | None = None):
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise DataError(f"{name}: masks of size {tuple(masks.shape[-2:])} do not match images of size "
                            f"{tuple(images.shape[-2:])}")
        self.images, self.masks = images.float(), masks.long()
        self.name, self.split, self.class_names = name, split, list(class_names)
        self.notes = list(notes or [])
        self.channels = int(images.shape[1])
        self.image_size = tuple(int(s) for s in images.shape[-2:])

    def __len__(self):
        return int(self.images.shape[0])

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


# ---- the phantom ------------------------------------------------------------------------------------

def _phantom_case(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One case: a stack of axial slices from base (z=0) to apex. Zones follow the anatomy: PZ the
    posterior crescent, TZ central-anterior, DPU the urethra inside the TZ towards the apex only,
    AFS the anterior band towards the base only, so not every zone is in every slice."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.52 + rng.uniform(-0.05, 0.05)
    rx, ry = rng.uniform(0.25, 0.32), rng.uniform(0.18, 0.24)
    tilt = rng.uniform(-0.2, 0.2)
    images, masks = [], []
    for k in range(depth):
        t = (k + 0.5) / depth                       # 0 base .. 1 apex
        shrink = math.sqrt(max(0.0, 1 - (2 * t - 1) ** 2)) * 0.8 + 0.2
        x, y = xx - cx, yy - cy
        xr = x * math.cos(tilt) - y * math.sin(tilt)
        yr = x * math.sin(tilt) + y * math.cos(tilt)
        prostate = (xr / (rx * shrink)) ** 2 + (yr / (ry * shrink)) ** 2 <= 1
        tz = (xr / (0.62 * rx * shrink)) ** 2 + ((yr + 0.25 * ry * shrink) / (0.6 * ry * shrink)) ** 2 <= 1
        tz &= prostate
        mask = np.zeros((size, size), np.int64)
        mask[prostate] = 1                           # PZ: the rest of the gland (posterior, peripheral)
        mask[tz] = 2
        if t > 0.4:                                  # distal urethra: apex half only
            r = 0.045 * shrink
            mask[(xr ** 2 + (yr + 0.2 * ry * shrink) ** 2) <= r * r] = 3
        if t < 0.7:                                  # anterior fibromuscular stroma: base and mid
            afs = ((xr / (0.75 * rx * shrink)) ** 2 + ((yr + 0.95 * ry * shrink) / (0.35 * ry * shrink)) ** 2 <= 1)
            mask[afs & (mask != 3)] = 4
        # T2-like contrast: PZ bright, TZ intermediate and mottled, urethra bright, AFS dark
        level = np.array([0.35, 0.75, 0.5, 0.85, 0.15], np.float32)
        img = level[mask]
        img = img + 0.08 * (mask == 2) * np.sin(40 * xx + rng.uniform(0, 6)) * np.cos(35 * yy)
        bias = 1 + 0.15 * (xx - 0.5) * rng.uniform(-1, 1) + 0.15 * (yy - 0.5) * rng.uniform(-1, 1)
        img = img * bias + rng.normal(0, 0.06, img.shape)
        images.append(np.clip(img, 0, 1).astype(np.float32))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def phantom(split: str, seed: int = 0, cases: int | None = None, size: int = 96, depth: int = 12) -> SegmentationSlices:
    """Seeded phantom: train and test come from disjoint seeds (24 / 6 cases of 12 slices by default)."""
    n = int(cases or (24 if split == "train" else 6))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    imgs, msks = zip(*(_phantom_case(rng, size, depth) for _ in range(n)))
    images = torch.from_numpy(np.concatenate(imgs))[:, None]
    masks = torch.from_numpy(np.concatenate(msks))
    return SegmentationSlices(images, masks, "prostate-phantom", split, ZONES)


# ---- NIfTI ------------------------------------------------------------------------------------------

def _load_nifti(path: Path):
    import nibabel as nib
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj), np.asarray(img.affine, np.float64)
    except Exception as exc:   # nibabel raises several types for a bad file
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def read_nifti(image_path: str | Path, label_path: str | Path | None, num_classes: int = len(ZONES),
               class_names: list[str] | None = None, size: int | None = None) -> SegmentationSlices:
    """An image volume and its label volume (same grid, same affine). A 3-D volume is cut into axial
    2-D slices (last axis), and `notes` says so; a 2-D image is one slice."""
    image_path = Path(image_path)
    if label_path is None:
        raise DataError(f"{image_path}: a NIfTI image needs its label volume: pass -o labels=PATH/TO/zones.nii.gz")
    label_path = Path(label_path)
    img, aff_i = _load_nifti(image_path)
    lab, aff_l = _load_nifti(label_path)
    if img.shape[:3] != lab.shape[:3]:
        raise DataError(f"{label_path} has shape {lab.shape} but {image_path} has {img.shape}")
    if not np.allclose(aff_i, aff_l, atol=1e-3):
        raise DataError(f"{label_path} has a different affine from {image_path}: the label volume is not on the image's grid")
    notes = []
    if img.ndim == 2:
        img, lab = img[..., None], lab[..., None]
    elif img.ndim == 3:
        notes.append(f"{image_path.name} is a 3-D volume {img.shape}: cut into {img.shape[2]} axial 2-D slices")
    else:
        raise DataError(f"{image_path} has {img.ndim} dimensions; expected a 2-D image or a 3-D volume")
    lab = np.rint(lab).astype(np.int64)
    if lab.min() < 0 or lab.max() >= num_classes:
        raise DataError(f"{label_path} has label values {int(lab.min())}..{int(lab.max())} but the model has "
                        f"{num_classes} classes (0..{num_classes - 1})")
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, 1), np.percentile(img, 99)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(img, 2, 0)))[:, None]
    masks = torch.from_numpy(np.ascontiguousarray(np.moveaxis(lab, 2, 0)))
    if size and tuple(images.shape[-2:]) != (size, size):
        import torch.nn.functional as F
        notes.append(f"slices resized from {tuple(images.shape[-2:])} to {size}x{size} (labels: nearest)")
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return SegmentationSlices(images, masks, image_path.name, "test", class_names or ZONES, notes)


def write_nifti(path: str | Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a volume as NIfTI atomically (tests and the phantom export)."""
    import nibabel as nib

    from zoo._io import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(volume, np.eye(4) if affine is None else affine), str(tmp) + ".nii.gz")
        Path(str(tmp) + ".nii.gz").replace(tmp)
    return path


# ---- DICOM-SEG --------------------------------------------------------------------------------------

def read_dicom_seg(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A DICOM Segmentation object as (label map per frame, segment names); frame f of segment s
    (ReferencedSegmentNumber) writes label s. The source image series is a separate object."""
    import pydicom
    path = Path(path)
    if not path.is_file():
        raise DataError(f"DICOM file not found: {path}")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from None
    if str(getattr(ds, "SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.66.4":
        raise DataError(f"{path}: not a DICOM Segmentation object (SOP class {getattr(ds, 'SOPClassUID', '?')})")
    names = [str(s.SegmentLabel) for s in ds.SegmentSequence]
    frames = np.asarray(ds.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    labels = np.zeros(frames.shape, np.int64)
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
    for f in range(frames.shape[0]):
        seg = 1
        if f < len(per_frame) and hasattr(per_frame[f], "SegmentIdentificationSequence"):
            seg = int(per_frame[f].SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        labels[f][frames[f] > 0] = seg
    return labels, names
