"""Multi-class 2-D segmentation: per-class Dice, HD95 and mean absolute symmetric distance (MONAI),
overlay pictures, NIfTI volumes read as 2-D slices.

Batches are (images in [0, 1] of shape (B, C, H, W), int64 masks (B, H, W)). Models implement the
`Segmenter` protocol below; their training loss is their own (`segmentation_loss`), so a two-stage
recipe (e.g. supervised, then co-training consistency) lives with the model, and the task hands it
the training step, which is saved with the run and so survives `--resume`.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader

from zoo._io import pyplot, save_figure
from zoo.data import prostate
from zoo.errors import DataError
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, seeded_images, to_device


@runtime_checkable
class Segmenter(Protocol):
    in_chans: int
    img_size: int
    num_classes: int
    class_names: list[str]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, in_chans, H, W) -> logits (B, num_classes, H, W)."""

    def segmentation_loss(self, images: torch.Tensor, masks: torch.Tensor, presence=None, step: int = 0):
        """(loss, logs) of one training batch at training step `step`."""


class SegmentationOptions(TaskOptions):
    labels: Optional[str] = Field(None, description="--data NIfTI image: its label volume (same grid and affine)")
    index: int = Field(0, description="predict: the dataset slice to segment when no image file is given")
    resize: bool = Field(False, description="resize slices / an image file of another size to the model's size")


def _phantom(split, model, options):
    return prostate.phantom(split, seed=int(options.get("data_seed", 0)), cases=options.get("size"),
                            size=int(model.img_size))


class SegmentationTask(Task):
    name = "segmentation"
    DATASETS = {"prostate-phantom": DatasetEntry(
        "seeded T2-like prostate phantom, 4 zones (PZ, TZ, DPU, AFS) with per-slice presence; 24/6 cases x 12 slices",
        _phantom)}
    Options = SegmentationOptions
    model_protocol = Segmenter
    default_batch_size = 16
    default_lr = 2e-3
    default_steps = 600
    main_metric = "dice_mean"
    lower_is_better = False
    metric_definitions = {
        "dice_<class>": "Dice overlap 2|P∩G|/(|P|+|G|) of one class, averaged over the slices where the class is in the "
                        "ground truth or the prediction (MONAI DiceMetric)",
        "hd95_<class>": "95th-percentile symmetric Hausdorff distance in pixels between predicted and true boundaries, "
                        "mean over slices holding the class; a missed class counts the image diagonal (MONAI)",
        "masd_<class>": "mean absolute symmetric surface distance in pixels, same slices and penalty (MONAI "
                        "SurfaceDistanceMetric, symmetric)",
        "dice_mean": "mean of the foreground classes' Dice",
        "masd_mean": "mean of the foreground classes' MASD",
        "hd95_mean": "mean of the foreground classes' HD95",
        "slices": "number of 2-D slices evaluated",
    }

    # ---- data -------------------------------------------------------------------------
    def load_dataset(self, dataset, split, data_path, model, options):
        ds = super().load_dataset(dataset, split, data_path, model, options)
        for note in getattr(ds, "notes", []):
            print(f"note: {note}", file=sys.stderr)
        if isinstance(ds, prostate.SegmentationSlices):
            s = int(model.img_size)
            if ds.channels != int(model.in_chans):
                raise DataError(f"{ds.name} has {ds.channels}-channel images but the model takes {model.in_chans}")
            if ds.image_size != (s, s) and not options.get("resize"):
                raise DataError(f"{ds.name} slices are {ds.image_size[0]}x{ds.image_size[1]} but the model expects "
                                f"{s}x{s}; pass -o resize=true to resize them")
            if len(ds) and int(ds.masks.max()) >= int(model.num_classes):
                raise DataError(f"{ds.name} has label values up to {int(ds.masks.max())} but the model has "
                                f"{model.num_classes} classes")
        return ds

    def read_data(self, path, dataset, split, model, options):
        p = Path(path)
        if p.name.endswith((".nii", ".nii.gz")):
            size = int(model.img_size) if options.get("resize") else None
            return prostate.read_nifti(p, options.get("labels"), int(model.num_classes), list(model.class_names), size)
        if p.name.endswith(".dcm"):
            raise DataError(f"{p}: a DICOM-SEG holds the labels only; convert the series and its SEG to NIfTI "
                            "(image + label volume) and pass the image with -o labels=...")
        raise DataError(f"{p}: not a known segmentation file (a NIfTI image .nii/.nii.gz with -o labels=PATH)")

    # ---- training ---------------------------------------------------------------------
    def loss(self, model, batch, step: int = 0):
        images, masks = to_device(batch, device_of(model))[:2]
        return model.segmentation_loss(images, masks, None, step)

    def training_module(self, model, options):
        return _StepCounting(model, self)

    def example_batch(self, model, options):
        b = int(options.get("batch_size") or 2)
        s = int(model.img_size)
        g = torch.Generator().manual_seed(0)
        images = torch.rand(b, int(model.in_chans), s, s, generator=g)
        masks = torch.randint(0, int(model.num_classes), (b, s, s), generator=g)
        return to_device([images, masks], device_of(model))

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 1)
        s = int(model.img_size)
        return (seeded_images(model, b, int(model.in_chans), s),)

    # ---- inference --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        model.eval()
        k = int(model.num_classes)
        names = list(model.class_names)
        loader = DataLoader(dataset, batch_size=int(options.get("batch_size") or 32), shuffle=False)
        device = device_of(model)
        preds, truths = [], []
        for images, masks in loader:
            images = _fit(images.to(device), int(model.img_size), bool(options.get("resize")))
            logits = model(images).float()
            if logits.shape[-2:] != masks.shape[-2:]:
                logits = torch.nn.functional.interpolate(logits, size=masks.shape[-2:], mode="bilinear")
            preds.append(logits.argmax(1).cpu())
            truths.append(masks)
        if not preds:
            raise DataError("the evaluation set is empty")
        return segmentation_metrics(torch.cat(preds), torch.cat(truths), k, names)

    @torch.no_grad()
    def predict(self, model, input, dataset, save, options):
        model.eval()
        s, c = int(model.img_size), int(model.in_chans)
        truth = None
        if input:
            from zoo.tasks.classification import load_image
            image, source = load_image(input, c, s, resize=bool(options.get("resize"))), str(input)
        elif dataset is not None and len(dataset):
            i = int(options.get("index", 0))
            if not 0 <= i < len(dataset):
                raise DataError(f"slice index {i} is out of range (the set has {len(dataset)})")
            image, truth = dataset[i]
            source = f"{getattr(dataset, 'name', 'dataset')} #{i}"
        else:
            raise DataError("predict needs an image file (INPUT) or --dataset/--data")
        pred = model(_fit(image[None].to(device_of(model)), s, bool(options.get("resize")))).argmax(1)[0].cpu()
        names = list(model.class_names)
        counts = torch.bincount(pred.flatten(), minlength=len(names))
        out = {"input": source, "pixels": {names[j]: int(counts[j]) for j in range(len(names))}}
        if truth is not None and truth.shape == pred.shape:
            out["metrics"] = segmentation_metrics(pred[None], truth[None], len(names), names)
        if save:
            draw_overlay(image, pred, Path(save), names, truth=truth)
        return out


class _StepCounting(nn.Module):
    """Training wrapper that counts its training steps in a buffer (saved with the run state, so a
    resumed run continues in the right stage) and hands the count to the model's loss."""

    runs_backward = False

    def __init__(self, model, task):
        super().__init__()
        self.model, self._task = model, task
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch):
        out = self._task.loss(self.model, batch, int(self.step))
        if self.training:
            self.step += 1
        return out


def _fit(images: torch.Tensor, size: int, resize: bool) -> torch.Tensor:
    if tuple(images.shape[-2:]) == (size, size):
        return images
    if not resize:
        raise DataError(f"images are {images.shape[-2]}x{images.shape[-1]} but the model expects {size}x{size}; "
                        "pass -o resize=true")
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def segmentation_metrics(pred: torch.Tensor, truth: torch.Tensor, k: int, names: list[str]) -> dict:
    """Per-class Dice / HD95 / MASD with MONAI on (N, H, W) label maps; foreground classes only."""
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    p = torch.nn.functional.one_hot(pred.long(), k).permute(0, 3, 1, 2).float()
    g = torch.nn.functional.one_hot(truth.long(), k).permute(0, 3, 1, 2).float()
    diag = float(np.hypot(*truth.shape[-2:]))
    dice = compute_dice(p, g, include_background=True, ignore_empty=False)          # (N, k)
    present = (g.flatten(2).sum(-1) > 0)
    predicted = (p.flatten(2).sum(-1) > 0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # MONAI warns on empty prediction/ground truth: handled below
        hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95)
        sd = compute_average_surface_distance(p, g, include_background=True, symmetric=True)
    out: dict = {}
    dices, hds, sds = [], [], []
    for c in range(1, k):
        name = names[c] if c < len(names) else str(c)
        either = present[:, c] | predicted[:, c]
        d = float(dice[either, c].mean()) if either.any() else float("nan")
        has = present[:, c]
        h_c = torch.where(predicted[:, c] & torch.isfinite(hd[:, c]), hd[:, c], torch.full_like(hd[:, c], diag))[has]
        s_c = torch.where(predicted[:, c] & torch.isfinite(sd[:, c]), sd[:, c], torch.full_like(sd[:, c], diag))[has]
        h = float(h_c.mean()) if has.any() else float("nan")
        s = float(s_c.mean()) if has.any() else float("nan")
        out[f"dice_{name}"], out[f"hd95_{name}"], out[f"masd_{name}"] = d, h, s
        dices.append(d), hds.append(h), sds.append(s)
    out["dice_mean"] = float(np.nanmean(dices)) if dices else float("nan")
    out["hd95_mean"] = float(np.nanmean(hds)) if hds else float("nan")
    out["masd_mean"] = float(np.nanmean(sds)) if sds else float("nan")
    out["slices"] = int(pred.shape[0])
    return out


_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.float32) / 255


def draw_overlay(image: torch.Tensor, pred: torch.Tensor, path: Path, names: list[str], truth=None) -> None:
    """The image with the predicted classes coloured over it (and the ground truth beside it when known)."""
    plt = pyplot()
    base = image.float().cpu()
    base = base[0] if base.shape[0] == 1 else base.permute(1, 2, 0).mean(-1)
    panels = [("prediction", pred)] + ([("ground truth", truth)] if truth is not None else [])
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.4))
    axes[0].imshow(base.numpy(), cmap="gray")
    axes[0].set_title("image")
    for ax, (title, lab) in zip(axes[1:], panels):
        colours = _COLOURS[np.asarray(lab) % len(_COLOURS)]
        rgb = np.repeat(base.numpy()[..., None], 3, -1)
        alpha = (np.asarray(lab) > 0)[..., None] * 0.5
        ax.imshow(rgb * (1 - alpha) + colours * alpha)
        ax.set_title(title)
    for ax in axes:
        ax.set_axis_off()
    handles = [plt.Rectangle((0, 0), 1, 1, color=_COLOURS[c % len(_COLOURS)]) for c in range(1, len(names))]
    fig.legend(handles, names[1:], loc="lower center", ncol=len(names) - 1, fontsize=8)
    save_figure(fig, path, dpi=110)
