"""Image restoration (deweathering): paired degraded/clean images, PSNR and SSIM per weather type,
overlap-tiled inference for large images, predict pictures (input | restored | ground truth).

Batches are (degraded (B, 3, H, W), clean (B, 3, H, W), weather index (B,)) in [0, 1]. Models
implement `RestorationModel`: `forward(images) -> restored`, `in_chans`, `tile_size` (the size they
were trained at; larger images are cut into overlapping tiles of it) and `patch_size` (sizes must be
multiples of it; smaller sides are reflect-padded).

Loss: L1 (weight 1) + a perceptual term (weight 0.04), as the MoFME training. The official term
compares VGG16 features (relu1_2, relu2_2, relu3_3) pretrained on ImageNet, which cannot be fetched
offline; we use the same VGG16 layers with fixed, seeded *random* weights (random conv features
still compare local structure at three scales), and say so. `-o perceptual=none` turns it off.
PSNR and SSIM come from torchmetrics (data range 1, per image, then averaged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from zoo._io import pyplot, save_figure
from zoo.data import allweather as aw
from zoo.errors import DataError
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, seeded_images, to_device


@runtime_checkable
class RestorationModel(Protocol):
    in_chans: int
    tile_size: int
    patch_size: int

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Degraded images in [0, 1] (B, C, H, W) -> restored images, same shape."""


class RestorationOptions(TaskOptions):
    crop: Optional[int] = Field(None, description="train split: crop size (default: the model's tile size)")
    overlap: Optional[int] = Field(None, description="tiled inference: overlap between tiles in pixels (default: tile/4)")
    perceptual: str = Field("random-vgg", description="perceptual loss: random-vgg (seeded random VGG16 layers, no pretrained weights offline) or none")
    perceptual_weight: float = Field(0.04, description="weight of the perceptual term (official: 0.04)")
    index: int = Field(0, description="predict: the dataset sample to restore when no image file is given")


def _vgg_features() -> nn.Module:
    """VGG16's first 16 layers (to relu3_3) with seeded random weights, frozen."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256]
    layers, c = [], 3
    g = torch.Generator().manual_seed(16)
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        conv = nn.Conv2d(c, v, 3, padding=1)
        with torch.no_grad():
            conv.weight.normal_(0, (2.0 / (9 * c)) ** 0.5, generator=g)
            conv.bias.zero_()
        layers += [conv, nn.ReLU()]
        c = v
    net = nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


_TAPS = (3, 8, 15)   # relu1_2, relu2_2, relu3_3


class PerceptualLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _vgg_features()

    def forward(self, pred, target):
        loss, x, y = 0.0, pred, target
        for i, layer in enumerate(self.net):
            x, y = layer(x), layer(y)
            if i in _TAPS:
                loss = loss + F.mse_loss(x, y)
        return loss / len(_TAPS)


class RestorationLoss(nn.Module):
    runs_backward = False

    def __init__(self, model, task, options):
        super().__init__()
        self.model = model
        self._task = task
        self.weight = float(options.get("perceptual_weight", 0.04))
        kind = options.get("perceptual", "random-vgg")
        if kind not in ("random-vgg", "none"):
            raise DataError(f"perceptual must be random-vgg or none, not '{kind}'")
        self.perceptual = PerceptualLoss() if kind == "random-vgg" and self.weight > 0 else None

    def forward(self, batch):
        bad, clean, _ = to_device(batch, device_of(self.model))
        out = self.model(bad)
        l1 = F.l1_loss(out, clean)
        loss = l1
        logs = {"l1": float(l1)}
        if self.perceptual is not None:
            self.perceptual.to(out.device)
            p = self.perceptual(out, clean)
            loss = loss + self.weight * p
            logs["perceptual"] = float(p)
        return loss, logs


# ---- tiled inference ----------------------------------------------------------------------------

def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    ph, pw = h - x.shape[2], w - x.shape[3]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[2] and pw < x.shape[3] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, stride))
    return s + [n - tile]


@torch.no_grad()
def restore(model, images: torch.Tensor, overlap: int | None = None) -> torch.Tensor:
    """Restore (B, C, H, W) images of any size >= the patch size: sides padded to a multiple of the
    patch size, images larger than the tile cut into overlapping tiles whose outputs are blended
    with a weight that falls off towards the tile border."""
    p, tile = int(model.patch_size), int(model.tile_size)
    b, c, h, w = images.shape
    if h < p or w < p:
        raise DataError(f"image is {w}x{h} pixels, smaller than one {p}x{p} patch of the model")
    H, W = -(-h // p) * p, -(-w // p) * p
    x = _pad_to(images, H, W)
    if H <= tile and W <= tile:
        return model(x)[:, :, :h, :w]
    th, tw = min(tile, H), min(tile, W)
    ov = int(tile // 4 if overlap is None else overlap)
    stride_h, stride_w = max(p, th - ov), max(p, tw - ov)
    ramp = lambda n: torch.minimum(torch.arange(n) + 1.0, torch.arange(n, 0, -1.0)).clamp(max=max(1, ov)) 
    weight = (ramp(th)[:, None] * ramp(tw)[None, :]).to(x.device, x.dtype)
    out = torch.zeros_like(x)
    norm = torch.zeros(1, 1, H, W, device=x.device, dtype=x.dtype)
    for y0 in _starts(H, th, stride_h):
        for x0 in _starts(W, tw, stride_w):
            y = model(x[:, :, y0:y0 + th, x0:x0 + tw])
            out[:, :, y0:y0 + th, x0:x0 + tw] += y * weight
            norm[:, :, y0:y0 + th, x0:x0 + tw] += weight
    return (out / norm)[:, :, :h, :w]


def _load_input(path: str) -> tuple[torch.Tensor, list[str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file not found: {path}")
    notes: list[str] = []
    arr = aw.read_image(p, notes)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()), notes


class RestorationTask(Task):
    name = "restoration"
    DATASETS = {
        "allweather-synth": DatasetEntry(
            "rain streaks, raindrops and snow (3 densities, seeded) on scikit-image's colour photographs; split by photograph",
            lambda split, model, options: aw.SynthWeather(
                split, crop=int(options.get("crop") or model.tile_size), size=options.get("size"),
                seed=int(options.get("data_seed", 0)))),
    }
    Options = RestorationOptions
    model_protocol = RestorationModel
    default_batch_size = 8
    default_lr = 2e-4
    default_steps = 500
    main_metric = "psnr"
    lower_is_better = False
    metric_definitions = {
        "psnr": "peak signal-to-noise ratio of the restored image against the clean one, dB, data range 1 (torchmetrics), mean over images",
        "ssim": "structural similarity (torchmetrics, 11x11 Gaussian window, data range 1), mean over images",
        "psnr_rain": "psnr over the rain-streak images", "ssim_rain": "ssim over the rain-streak images",
        "psnr_raindrop": "psnr over the raindrop images", "ssim_raindrop": "ssim over the raindrop images",
        "psnr_snow": "psnr over the snow images", "ssim_snow": "ssim over the snow images",
        "psnr_input": "psnr of the degraded input itself (the do-nothing baseline)",
        "samples": "number of image pairs evaluated",
    }

    def read_data(self, path, dataset, split, model, options):
        return aw.read_allweather(path, split, limit=options.get("limit"))

    def training_module(self, model, options):
        return RestorationLoss(model, self, options)

    def loss(self, model, batch):
        return RestorationLoss(model, self, {"perceptual": "none"})(batch)

    def example_batch(self, model, options):
        b, s = int(options.get("batch_size") or 2), int(model.tile_size)
        g = torch.Generator().manual_seed(0)
        clean = torch.rand(b, int(model.in_chans), s, s, generator=g)
        bad = (clean + 0.2 * torch.rand(clean.shape, generator=g)).clamp(0, 1)
        return to_device([bad, clean, torch.zeros(b, dtype=torch.long)], device_of(model))

    def example_input(self, model, options):
        b, s = int(options.get("batch_size") or 1), int(model.tile_size)
        return (seeded_images(model, b, int(model.in_chans), s),)

    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn
        model.eval()
        device = device_of(model)
        per: dict[int, list[tuple[float, float]]] = {}
        base = []
        n = len(dataset)
        if n == 0:
            raise DataError("the evaluation set is empty")
        for i in range(n):
            bad, clean, w = dataset[i]
            bad, clean = bad[None].to(device), clean[None].to(device)
            out = restore(model, bad, options.get("overlap")).float().clamp(0, 1)
            ps = float(psnr_fn(out, clean, data_range=1.0))
            ss = float(ssim_fn(out, clean, data_range=1.0)) if min(out.shape[-2:]) >= 11 else float("nan")
            per.setdefault(int(w), []).append((ps, ss))
            base.append(float(psnr_fn(bad, clean, data_range=1.0)))
        allv = [v for vs in per.values() for v in vs]
        metrics = {"psnr": sum(v[0] for v in allv) / len(allv), "ssim": sum(v[1] for v in allv) / len(allv)}
        for w, vs in sorted(per.items()):
            if 0 <= w < len(aw.WEATHERS):
                metrics[f"psnr_{aw.WEATHERS[w]}"] = sum(v[0] for v in vs) / len(vs)
                metrics[f"ssim_{aw.WEATHERS[w]}"] = sum(v[1] for v in vs) / len(vs)
        metrics["psnr_input"] = sum(base) / len(base)
        metrics["samples"] = n
        for msg in sorted(set(getattr(dataset, "notes", []))):
            aw.note(msg)
        return metrics

    @torch.no_grad()
    def predict(self, model, input, dataset, save, options):
        model.eval()
        truth, notes = None, []
        if input:
            bad, notes = _load_input(input)
            source = str(input)
        elif dataset is not None and len(dataset):
            i = int(options.get("index", 0))
            if not 0 <= i < len(dataset):
                raise DataError(f"sample index {i} is out of range (the set has {len(dataset)})")
            bad, truth, _ = dataset[i]
            source = f"{getattr(dataset, 'name', 'dataset')} #{i}"
        else:
            raise DataError("predict needs an image file (INPUT) or --dataset")
        h, w = bad.shape[1:]
        tile = int(model.tile_size)
        if h < tile or w < tile:
            notes.append(f"image {w}x{h} is smaller than one {tile}x{tile} tile: restored whole (sides padded to a multiple of {model.patch_size})")
        out = restore(model, bad[None].to(device_of(model)), options.get("overlap"))[0].float().clamp(0, 1).cpu()
        res = {"input": source, "size": [int(w), int(h)],
               "tiles": 1 if (h <= tile and w <= tile) else len(_starts(h, tile, tile - tile // 4)) * len(_starts(w, tile, tile - tile // 4))}
        if truth is not None:
            from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn
            res["psnr"] = float(psnr_fn(out[None], truth[None], data_range=1.0))
            res["psnr_input"] = float(psnr_fn(bad[None], truth[None], data_range=1.0))
        if notes:
            res["notes"] = notes
            for m in notes:
                aw.note(m)
        if save:
            draw(bad, out, truth, Path(save))
        return res


def draw(bad: torch.Tensor, out: torch.Tensor, truth: Optional[torch.Tensor], path: Path) -> None:
    plt = pyplot()
    panels = [("input", bad), ("restored", out)] + ([("ground truth", truth)] if truth is not None else [])
    h, w = bad.shape[1:]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) * w / max(h, w) + 0.4, 3.4 * h / max(h, w) + 0.4))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(title)
        ax.set_axis_off()
    save_figure(fig, path, dpi=120)
