"""Multi-task vision: one network, many sub-tasks, each sample carrying its task id and each task
id its own head (segmentation, classification, detection or regression).

Models implement `MultiTaskModel`: `tasks` (task id -> object with `kind` and `size`), `img_size`,
`in_chans`, and `forward(images, task_id)` -> that head's output (`forward(images)` -> every head's,
a tuple in task order, for export). Training batches hold one sub-task each, chosen uniformly at random per batch
(the official `MultiTaskUniformSampler`); the choice is a pure function of the batch's indices, so
`--resume` replays the same tasks. Losses are the official ones: Dice (seg), cross-entropy (cls),
MSE on normalised points (reg), objectness BCE + 8 x L1 of the box at the ground-truth centre cell
(det; no other cell is supervised).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from zoo._io import pyplot, save_figure
from zoo.data import ultrasound as us
from zoo.errors import DataError, UnknownNameError
from zoo.tasks.base import DatasetEntry, LossModule, Task, TaskOptions, device_of, seeded_images, to_device


@runtime_checkable
class MultiTaskModel(Protocol):
    tasks: dict
    img_size: int
    in_chans: int

    def forward(self, images: torch.Tensor, task_id: Optional[str] = None):
        """Images in [0, 1] -> the head of `task_id`'s output (all heads, a tuple in task order, when None)."""


class MultiTaskOptions(TaskOptions):
    task_id: Optional[str] = Field(None, description="predict: the sub-task (head) to run on the image")
    index: int = Field(0, description="predict: the dataset sample to use when no image file is given")
    train_fpn: bool = Field(True, description="train the shared decoder (false = the official code, which leaves it "
                                              "out of every optimiser group)")
    per_task: Optional[int] = Field(None, description="us-synth: samples per sub-task (default 40 train / 12 test)")


def _spec(model) -> dict:
    return {tid: (t.kind, int(t.size)) for tid, t in model.tasks.items()}


def _us_synth(split, model, options):
    return us.us_synth(split, _spec(model), seed=int(options.get("data_seed", 0)),
                       per_task=options.get("per_task"), img=int(model.img_size))


def _mni(split, model, options):
    seg = [tid for tid, t in model.tasks.items() if t.kind == "segmentation" and int(t.size) == 3]
    if "brain_tissue" in model.tasks:
        seg = ["brain_tissue"]
    if not seg:
        raise DataError("mni152-tissue needs a 3-class segmentation head (e.g. brain_tissue)")
    return us.mni152_tissue(split, img=int(model.img_size), task_id=seg[0])


class UniformTaskBatches(Dataset):
    """Training view: item i is a reference; `collate` turns a batch of references into a batch of
    one sub-task chosen uniformly (seeded by the batch's indices), drawing that task's samples."""

    def __init__(self, base: us.MultiTaskSet):
        self.base = base
        self.task_ids = sorted(base.by_task)
        self.name, self.split = base.name, base.split

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return (self, int(i))


def _kinds(model):
    return {tid: t.kind for tid, t in model.tasks.items()}


class MultiTaskTask(Task):
    name = "multi-task"
    DATASETS = {
        "us-synth": DatasetEntry("seeded ultrasound-like images (speckle, shadows, elliptical structures) for every "
                                 "sub-task of the model: seg, cls, det and reg", _us_synth),
        "mni152-tissue": DatasetEntry("nilearn's MNI152 T1 template, axial slices with grey/white-matter masks "
                                      "(one real 3-class segmentation sub-task)", _mni),
    }
    Options = MultiTaskOptions
    model_protocol = MultiTaskModel
    default_batch_size = 8
    default_lr = 1e-4
    default_steps = 500
    main_metric = "score"
    lower_is_better = False
    metric_definitions = {
        "<task>/dsc": "segmentation: Dice of the foreground classes (mean over classes, then samples; MONAI)",
        "<task>/hd95": "segmentation: 95th-percentile Hausdorff distance in pixels, foreground classes (MONAI)",
        "<task>/auc": "classification: one-vs-rest macro ROC AUC of the softmax scores (binary: AUC of class 1)",
        "<task>/acc": "classification: fraction of samples whose top class is right",
        "<task>/f1_macro": "classification: macro-averaged F1", "<task>/f1_weighted": "classification: support-weighted F1",
        "<task>/mcc": "classification: Matthews correlation coefficient",
        "<task>/iou": "detection: IoU of the box at the highest-objectness cell with the true box",
        "<task>/mre_px": "regression: mean radial error of the points, in pixels of the image's own size",
        "mean_dsc": "mean of the segmentation tasks' dsc", "mean_acc": "mean of the classification tasks' acc",
        "mean_auc": "mean of the classification tasks' auc", "mean_iou": "mean of the detection tasks' iou",
        "mean_mre_px": "mean of the regression tasks' mre_px",
        "score": "mean of every [0, 1] metric column (dsc, auc, acc, f1s, mcc, iou), distances left out "
                 "(the official model-selection rule leaves out MAE)",
        "samples": "number of samples evaluated",
    }

    # ---- data -------------------------------------------------------------------------
    def load_dataset(self, dataset, split, data_path, model, options):
        ds = super().load_dataset(dataset, split, data_path, model, options)
        for note in getattr(ds, "notes", []):
            print(f"note: {note}", file=sys.stderr)
        unknown = sorted(set(ds.by_task) - set(model.tasks))
        if unknown:
            raise UnknownNameError("task id", unknown[0], list(model.tasks))
        return UniformTaskBatches(ds) if split == "train" else ds

    def read_data(self, path, dataset, split, model, options):
        return us.read_challenge(path, _spec(model), int(model.img_size), split)

    def collate(self, items):
        if items and isinstance(items[0], tuple) and isinstance(items[0][0], UniformTaskBatches):
            view = items[0][0]
            idx = [i for _, i in items]
            g = np.random.default_rng(idx)                      # the batch's task: uniform over sub-tasks
            tid = view.task_ids[int(g.integers(len(view.task_ids)))]
            pool = view.base.by_task[tid]
            items = [view.base[pool[int(j)]] for j in g.integers(len(pool), size=len(idx))]
        return _stack(items)

    # ---- training ---------------------------------------------------------------------
    def loss(self, model, batch):
        batch = to_device(batch, device_of(model))
        tid = batch["task_id"]
        if tid not in model.tasks:
            raise UnknownNameError("task id", tid, list(model.tasks))
        kind = model.tasks[tid].kind
        out = model(batch["image"], tid)
        if kind == "segmentation":
            import segmentation_models_pytorch as smp
            loss = smp.losses.DiceLoss(mode="multiclass", from_logits=True)(out, batch["mask"])
        elif kind == "classification":
            loss = F.cross_entropy(out, batch["label"])
        elif kind == "regression":
            loss = F.mse_loss(out, batch["points"].flatten(1))
        else:
            loss = detection_loss(out, batch["box"])
        return loss, {f"{kind}": float(loss.detach())}

    def training_module(self, model, options):
        return _GroupedLoss(model, self, bool(options.get("train_fpn", True)))

    def example_batch(self, model, options):
        b = int(options.get("batch_size") or 2)
        tid = next(iter(model.tasks))
        rng = np.random.default_rng(0)
        items = [us.synth_sample(rng, tid, model.tasks[tid].kind, int(model.tasks[tid].size), int(model.img_size))
                 for _ in range(b)]
        return to_device(_stack(items), device_of(model))

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 1)
        s = int(model.img_size)
        return (seeded_images(model, b, int(model.in_chans), s),)

    # ---- inference --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        model.eval()
        base = dataset.base if isinstance(dataset, UniformTaskBatches) else dataset
        if not len(base):
            raise DataError("the evaluation set is empty")
        bs = int(options.get("batch_size") or 32)
        metrics: dict = {}
        per_kind: dict[str, dict[str, list]] = {}
        for tid in sorted(base.by_task):
            if tid not in model.tasks:
                raise UnknownNameError("task id", tid, list(model.tasks))
            kind, size = model.tasks[tid].kind, int(model.tasks[tid].size)
            idx = base.by_task[tid]
            outs, items = [], [base[i] for i in idx]
            for s in range(0, len(items), bs):
                batch = to_device(_stack(items[s:s + bs]), device_of(model))
                outs.append(model(batch["image"], tid).float().cpu())
            out = torch.cat(outs)
            m = _task_metrics(kind, size, out, items)
            for k, v in m.items():
                metrics[f"{tid}/{k}"] = v
                per_kind.setdefault(kind, {}).setdefault(k, []).append(v)
        score_cols = []
        for kind, cols in per_kind.items():
            for k, vals in cols.items():
                key = {"dsc": "mean_dsc", "acc": "mean_acc", "auc": "mean_auc", "iou": "mean_iou",
                       "mre_px": "mean_mre_px"}.get(k)
                if key:
                    metrics[key] = float(np.nanmean(vals))
                if k not in ("hd95", "mre_px"):
                    score_cols += vals
        metrics["score"] = float(np.nanmean(score_cols)) if score_cols else float("nan")
        metrics["samples"] = len(base)
        return metrics

    @torch.no_grad()
    def predict(self, model, input, dataset, save, options):
        model.eval()
        tid = options.get("task_id")
        truth = None
        if input:
            if not tid:
                raise DataError(f"which head? pass -o task_id=ID (one of: {', '.join(model.tasks)})")
            from zoo.tasks.classification import load_image
            image, source = load_image(input, int(model.in_chans), int(model.img_size), resize=True), str(input)
        elif dataset is not None and len(dataset):
            base = dataset.base if isinstance(dataset, UniformTaskBatches) else dataset
            pool = base.by_task.get(tid) if tid else list(range(len(base)))
            if tid and not pool:
                raise DataError(f"the set has no samples of task {tid}")
            i = int(options.get("index", 0))
            if not 0 <= i < len(pool):
                raise DataError(f"sample index {i} is out of range (the set has {len(pool)})")
            truth = base[pool[i]]
            image, tid, source = truth["image"], truth["task_id"], f"{base.name} #{pool[i]}"
        else:
            raise DataError("predict needs an image file (INPUT) with -o task_id=ID, or --dataset")
        if tid not in model.tasks:
            raise UnknownNameError("task id", tid, list(model.tasks))
        kind = model.tasks[tid].kind
        out = model(image[None].to(device_of(model)), tid).float().cpu()[0]
        res: dict = {"input": source, "task_id": tid, "kind": kind}
        if kind == "segmentation":
            pred = out.argmax(0)
            res["pixels"] = {str(c): int(n) for c, n in enumerate(torch.bincount(pred.flatten(), minlength=out.shape[0]))}
        elif kind == "classification":
            p = out.softmax(0)
            res["prediction"], res["probs"] = int(p.argmax()), [round(float(v), 4) for v in p]
        elif kind == "regression":
            res["points"] = out.view(-1, 2).tolist()
        else:
            res["box"], res["objectness"] = pick_box(out[None])[0].tolist(), float(out[4].max().sigmoid())
        if save:
            _draw(image, kind, out, res, Path(save), truth)
        return res


class _GroupedLoss(LossModule):
    """The official optimiser groups (encoder lr, heads 10x lr; the FPN at lr unless train_fpn=false)."""

    def __init__(self, model, task, train_fpn: bool):
        super().__init__(model, task)
        self.train_fpn = train_fpn

    def param_groups(self, lr):
        if hasattr(self.model, "parameter_groups"):
            return self.model.parameter_groups(lr, train_fpn=self.train_fpn)
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]


def _stack(items: list[dict]) -> dict:
    tids = {s["task_id"] for s in items}
    if len(tids) != 1:
        raise DataError(f"a batch must hold one sub-task, got {sorted(tids)}")
    batch = {"task_id": items[0]["task_id"], "image": torch.stack([s["image"] for s in items])}
    for key in ("mask", "box", "points"):
        if key in items[0]:
            batch[key] = torch.stack([s[key] for s in items])
    if "label" in items[0]:
        batch["label"] = torch.tensor([int(s["label"]) for s in items])
    return batch


def detection_loss(out: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Official: objectness BCE-with-logits (target 1) + 8 x L1 of the box, both at the cell that
    holds the true box's centre only."""
    b, _, h, w = out.shape
    cx = ((box[:, 0] + box[:, 2]) / 2 * w).long().clamp(0, w - 1)
    cy = ((box[:, 1] + box[:, 3]) / 2 * h).long().clamp(0, h - 1)
    cell = out[torch.arange(b), :, cy, cx]                       # (B, 5)
    obj = F.binary_cross_entropy_with_logits(cell[:, 4], torch.ones_like(cell[:, 4]))
    return obj + 8.0 * F.l1_loss(cell[:, :4], box)


def pick_box(out: torch.Tensor) -> torch.Tensor:
    """The box of the cell with the highest objectness, per image: (B, 4) normalised xyxy."""
    b = out.shape[0]
    flat = out[:, 4].flatten(1).argmax(1)
    return out[:, :4].flatten(2)[torch.arange(b), :, flat]


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp_min(0).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp_min(1e-9)


def _task_metrics(kind: str, size: int, out: torch.Tensor, items: list[dict]) -> dict:
    if kind == "segmentation":
        from zoo.tasks.segmentation import segmentation_metrics
        m = segmentation_metrics(out.argmax(1), torch.stack([s["mask"] for s in items]), size,
                                 [str(c) for c in range(size)])
        return {"dsc": m["dice_mean"], "hd95": m["hd95_mean"]}
    if kind == "classification":
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score
        y = np.array([int(s["label"]) for s in items])
        p = out.softmax(1).numpy()
        pred = p.argmax(1)
        try:
            auc = float(roc_auc_score(y, p[:, 1]) if size == 2 else
                        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(size))))
        except ValueError:   # a class missing from the set: AUC is undefined
            auc = float("nan")
        return {"auc": auc, "acc": float(accuracy_score(y, pred)),
                "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
                "f1_weighted": float(f1_score(y, pred, average="weighted", zero_division=0)),
                "mcc": float(matthews_corrcoef(y, pred))}
    if kind == "regression":
        pts = torch.stack([s["points"] for s in items])
        scale = torch.tensor([[list(s["orig_size"])] for s in items], dtype=torch.float32)   # (N, 1, 2) w, h
        err = ((out.view_as(pts) - pts) * scale).norm(dim=-1)
        return {"mre_px": float(err.mean())}
    boxes = torch.stack([s["box"] for s in items])
    return {"iou": float(_iou(pick_box(out), boxes).mean())}


def _draw(image, kind, out, res, path: Path, truth) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    pic = image.permute(1, 2, 0).numpy()
    ax.imshow(pic)
    h, w = pic.shape[:2]
    if kind == "segmentation":
        pred = out.argmax(0).numpy()
        ax.imshow(np.ma.masked_where(pred == 0, pred), cmap="autumn", alpha=0.5, vmin=0, vmax=max(1, out.shape[0] - 1))
        title = "segmentation (prediction in colour)"
    elif kind == "classification":
        title = f"class {res['prediction']} (p={max(res['probs']):.2f})"
        if truth is not None:
            title += f", true {truth['label']}"
    elif kind == "regression":
        p = np.array(res["points"])
        ax.scatter(p[:, 0] * w, p[:, 1] * h, c="red", marker="x", label="predicted")
        if truth is not None:
            t = truth["points"].numpy()
            ax.scatter(t[:, 0] * w, t[:, 1] * h, facecolors="none", edgecolors="lime", label="true")
        ax.legend(fontsize=7)
        title = "landmarks"
    else:
        x0, y0, x1, y1 = res["box"]
        ax.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, color="red"))
        if truth is not None:
            x0, y0, x1, y1 = truth["box"].tolist()
            ax.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, color="lime"))
        title = f"box (objectness {res['objectness']:.2f})"
    ax.set_title(f"{res['task_id']}: {title}", fontsize=9)
    ax.set_axis_off()
    save_figure(fig, path, dpi=110)
