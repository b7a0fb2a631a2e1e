"""Operator learning: a model maps an input function (sensor values or a field) and query points
to the output function's values there.

A batch is a dict: `input` (B, m) or (B, C, H, W), `points` (B, P, d), `values` (B, P) and an
optional `mask` (B, P) (1 inside the geometry; masked points count neither in loss nor metrics).

Each dataset says what the branch must read (`branch_input`: sensor values, a coefficient field,
...) and how its relative L2 is normalised; models declare what their branch reads
(`OperatorModel`), so the task never looks at a family or a builder key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from zoo._io import pyplot, save_figure
from zoo.errors import DataError
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, evaluate_sharded, to_device


@runtime_checkable
class OperatorModel(Protocol):
    """What an operator model provides.

    - `forward(branch_input, points)` -> (B, P) values at the points;
    - `branch_input`: what its branch reads, one of BRANCH_INPUTS;
    - `input_grid`: side of the square field the branch reads (None for vector branches);
    - `example_input(batch)` -> (branch input, points) for export and bench;
    - `out_mean`/`out_std` and `fit_output_stats(values)`, `output_stats()`: the scalar output
      standardisation fitted on the training set (None from output_stats while never fitted)."""

    branch_input: str
    input_grid: Optional[int]
    out_mean: torch.Tensor
    out_std: torch.Tensor

    def forward(self, branch_input: torch.Tensor, points: torch.Tensor) -> torch.Tensor: ...
    def example_input(self, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]: ...
    def fit_output_stats(self, values: torch.Tensor) -> None: ...
    def output_stats(self) -> Optional[tuple[float, float]]: ...


#: branch_input vocabulary: what it means, for messages
BRANCH_INPUTS = {
    "sensors": "an input function's values at sensors (an MLP branch)",
    "field": "a 2-D coefficient field (a CNN branch)",
    "reaction-coefficients": "reaction-polynomial coefficients and an initial condition",
    "masked-field": "a (log K, geometry mask) image",
    "design": "design scalars",
}


class OperatorOptions(TaskOptions):
    resolution: Optional[int] = Field(None, description="darcy-neuralop test resolution: 16 (default) or 32")
    index: int = Field(0, description="predict: which sample to draw")
    # the Fisher generator (zoo.data.fisher.DEFAULTS)
    diffusion: Optional[float] = Field(None, description="fisher: diffusion coefficient D")
    length_scale: Optional[float] = Field(None, description="fisher: length scale of the initial-condition GRF")
    a_values: Optional[int] = Field(None, description="fisher: number of reaction amplitudes a in [0.1, 1]")
    b_values: Optional[int] = Field(None, description="fisher: number of beta values in [0.5, 2] (form 4)")
    per_form: Optional[list[int]] = Field(None, description="fisher: samples of reaction forms 1, 2 and 4")
    substeps: Optional[int] = Field(None, description="fisher: solver substeps per output time")
    test_fraction: Optional[float] = Field(None, description="fisher: share of samples in the test split")
    # the multi-geometry Darcy generator (zoo.data.multi_geometry_darcy.DEFAULTS)
    grid: Optional[int] = Field(None, description="multi-geometry-darcy: generated grid size")
    train_per_geometry: Optional[int] = Field(None, description="multi-geometry-darcy: train samples per geometry")
    test_per_geometry: Optional[int] = Field(None, description="multi-geometry-darcy: test samples per geometry")
    alpha: Optional[float] = Field(None, description="multi-geometry-darcy: GRF smoothness of log K")
    tau: Optional[float] = Field(None, description="multi-geometry-darcy: GRF inverse length scale of log K")
    source: Optional[float] = Field(None, description="multi-geometry-darcy: constant source term f")


class ArrayDataset(Dataset):
    """Samples from aligned arrays; `points` may be shared by all samples (2-D) or per sample."""

    def __init__(self, inputs: np.ndarray, points: np.ndarray, values: np.ndarray,
                 mask: np.ndarray | None = None, meta: dict | None = None):
        self.inputs = torch.as_tensor(inputs, dtype=torch.float32)
        self.points = torch.as_tensor(points, dtype=torch.float32)
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        self.meta = meta or {}

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i):
        item = {"input": self.inputs[i],
                "points": self.points if self.points.dim() == 2 else self.points[i],
                "values": self.values[i]}
        if self.mask is not None:
            item["mask"] = self.mask[i] if self.mask.dim() > 1 else self.mask
        return item

    def take(self, indices) -> dict:
        """collate_operator([self[i] for i in indices]) by one gather per array: a full-batch step
        over 10k samples costs a millisecond instead of 10k item dicts and stacks."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {"input": self.inputs[idx], "points": self.points if self.points.dim() == 2 else self.points[idx],
                 "values": self.values[idx]}
        if self.mask is not None:
            batch["mask"] = self.mask[idx] if self.mask.dim() > 1 else self.mask.expand(len(idx), -1).clone()
        return batch


def grid_points(s: int) -> np.ndarray:
    """The s x s vertex grid of the unit square, row-major, as (s*s, 2) coordinates."""
    x = np.linspace(0.0, 1.0, s, dtype=np.float32)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def fit_darcy_to_grid(coeff: np.ndarray, sol: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bring a Darcy set to the branch CNN's grid.

    When (s-1) is a multiple of (grid-1) both fields are subsampled (the paper's protocol, e.g.
    421 -> 29 every 15th point); otherwise the coefficient is resampled to the grid (nearest)
    and the solution stays at its own resolution, where the trunk is queried."""
    s = coeff.shape[1]
    if s == grid:
        return coeff, sol, s
    if s > grid and (s - 1) % (grid - 1) == 0:
        r = (s - 1) // (grid - 1)
        return coeff[:, ::r, ::r], sol[:, ::r, ::r], grid
    idx = np.rint(np.linspace(0, s - 1, grid)).astype(int)
    return coeff[:, idx][:, :, idx], sol, s


def collate_operator(items: list[dict]) -> dict:
    """Stack samples; query points shared by the whole set stay one (P, d) tensor, so the trunk
    runs once per batch instead of once per sample."""
    shared = all(it["points"] is items[0]["points"] for it in items)
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if not (k == "points" and shared)}
    if shared:
        out["points"] = items[0]["points"]
    return out


# ---- datasets: name -> loader; each checks the model's branch reads what the set provides --------

#: the branch input each named set provides, and a model that reads it
_NEEDS = {"antiderivative": ("sensors", "deeponet.antiderivative"),
          "darcy": ("field", "deeponet.darcy"),
          "darcy-neuralop": ("field", "deeponet.darcy-neuralop"),
          "fisher": ("reaction-coefficients", "the MT-DeepONet 'fisher' network, mt-deeponet.fisher"),
          "multi-geometry-darcy": ("masked-field", "the MT-DeepONet 'darcy' network (train one with "
                                                   "`zoo finetune mt-deeponet --dataset multi-geometry-darcy`)")}


def _check_model(model, dataset: str, source: str) -> None:
    need, example = _NEEDS[dataset]
    have = model.branch_input
    if have != need:
        where = "" if source == dataset else f"{source}: "
        raise DataError(f"{where}{dataset} needs a model whose branch reads {BRANCH_INPUTS[need]}, e.g. "
                        f"{example}; this model's branch reads {BRANCH_INPUTS.get(have, have)}")


def _load_antiderivative(split, model, options):
    from zoo.data import antiderivative
    _check_model(model, "antiderivative", "antiderivative")
    d = antiderivative.load(split, seed=int(options.get("data_seed", 0)), size=options.get("size"))
    # one query point per function: a per-sample ratio would divide by single values near 0
    return ArrayDataset(d["u"], d["y"][:, None, :], d["s"], meta={"kind": "antiderivative", "rel_l2": "global",
                                                                   "source": "generated antiderivative"})


def _darcy_set(d: dict, model, dataset: str, source: str) -> ArrayDataset:
    """The one path from Darcy arrays (FNO units of the coefficient) to samples for a field branch."""
    _check_model(model, dataset, source)
    coeff, sol, s = fit_darcy_to_grid(d["coeff"], d["sol"], int(model.input_grid))
    return ArrayDataset(coeff[:, None], grid_points(s), sol.reshape(len(sol), -1),
                        meta={"kind": "darcy", "dataset": dataset, "grid": int(model.input_grid),
                              "resolution": s, "source": source, "rel_l2": "per-sample"})


def _load_darcy(split, model, options):
    from zoo.data import darcy
    d = darcy.load_generated(split, seed=int(options.get("data_seed", 0)), size=options.get("size"))
    return _darcy_set(d, model, "darcy", "generated darcy")


def _neuralop_file(split: str, options: dict) -> Path:
    from zoo.data import darcy
    res = str(options.get("resolution") or 16)
    which = "16-train" if split == "train" else res
    if which not in darcy.REAL_FILES:
        raise DataError(f"darcy-neuralop has resolutions 16 and 32, not {res}")
    return darcy.real_file(which)


def _read_darcy_file(path, dataset: str, model) -> ArrayDataset:
    """A Darcy file of the given format, read by that format's one reader (built-in or user file)."""
    from zoo.data import darcy
    return _darcy_set(darcy.read_file(path), model, dataset, str(path))


def _load_darcy_neuralop(split, model, options):
    return _read_darcy_file(_neuralop_file(split, options), "darcy-neuralop", model)


def _fisher_params(options: dict) -> dict:
    from zoo.data import fisher
    return {k: v for k, v in options.items() if k in fisher.DEFAULTS}


def _load_fisher(split, model, options):
    from zoo.data import fisher
    _check_model(model, "fisher", "fisher")
    d = fisher.load(split, seed=int(options.get("data_seed", 0)), size=options.get("size"), **_fisher_params(options))
    # the official MT-DeepONet script reports one Frobenius ratio over the whole test set
    return ArrayDataset(d["inputs"], d["points"], d["values"],
                        meta={"kind": "fisher", "form": d["form"], "rel_l2": "global", "source": "generated fisher"})


def _multi_geometry_darcy(split, model, options, data_path=None):
    from zoo.data import multi_geometry_darcy as mgd
    source = str(data_path) if data_path else "multi-geometry-darcy"
    _check_model(model, "multi-geometry-darcy", source)
    params = {k: v for k, v in options.items() if k in mgd.DEFAULTS}
    d = mgd.load(split, seed=int(options.get("data_seed", 0)), size=options.get("size"), data_path=data_path, **params)
    if d["grid"] != model.input_grid:
        raise DataError(f"{d['source']}: the grid is {d['grid']}x{d['grid']}, the branch CNN expects {model.input_grid}")
    return ArrayDataset(d["inputs"], d["points"], d["values"], d["mask"],
                        meta={"kind": "darcy", "dataset": "multi-geometry-darcy", "grid": d["grid"],
                              "resolution": d["grid"], "source": d["source"], "rel_l2": "per-sample"})


def _load_multi_geometry_darcy(split, model, options):
    return _multi_geometry_darcy(split, model, options)


#: metric -> definition (shown by `zoo info` and the model card)
METRICS = {
    "mse": "mean squared error over all (unmasked) query points of the set, in the data's units",
    "rel_l2": "relative L2 error, normalised as the dataset's paper does: per-sample ||pred - true||_2 / "
              "||true||_2 averaged over samples (darcy, darcy-neuralop, multi-geometry-darcy: Lu et al. 2022, "
              "FNO), or one ratio ||pred - true||_2 / ||true||_2 over every point of the set "
              "(antiderivative, whose samples are single points; fisher: the official MT-DeepONet script)",
    "rel_l2_median": "median over samples of the per-sample relative L2 error (robust to near-zero targets)",
    "samples": "number of samples (input functions) the metrics come from",
}


class OperatorTask(Task):
    name = "operator"
    DATASETS = {
        "antiderivative": DatasetEntry(
            "ds/dx = u(x): GRF inputs (RBF, l=0.2), 100 sensors; 10k train / 100k test triplets (generated)",
            _load_antiderivative),
        "darcy": DatasetEntry(
            "2-D Darcy flow, FNO recipe, 29x29 (generated; or --data an FNO .mat file)", _load_darcy),
        "darcy-neuralop": DatasetEntry(
            "the real Darcy files shipped in the neuraloperator 0.3.0 wheel (train 1000 @16x16; test 50 @16x16, "
            "50 @32x32 with -o resolution=32; or --data a neuraloperator .pt file)", _load_darcy_neuralop),
        "fisher": DatasetEntry(
            "1-D Fisher equation, 3 reaction forms (MT-DeepONet), 20x64 (t, x) outputs; 3200 train / 800 test "
            "(generated)", _load_fisher),
        "multi-geometry-darcy": DatasetEntry(
            "Darcy flow on square/circle/triangle domains with a geometry mask (MT-DeepONet), 100x100; "
            "900 train / 180 test (generated; or --data an official .mat file)", _load_multi_geometry_darcy),
    }
    Options = OperatorOptions
    model_protocol = OperatorModel
    metric_definitions = METRICS
    default_batch_size = 256
    default_lr = 1e-3
    default_steps = 2000
    main_metric = "rel_l2"
    int8_tolerance = {"rel_l2": ("rel_increase", 0.05)}   # at most 5 % more relative L2 error

    # ---- data ---------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        """A user's file, read by the reader of its format exactly as the named set of that format."""
        if dataset == "multi-geometry-darcy" or (dataset is None and model.branch_input == "masked-field"):
            return _multi_geometry_darcy(split, model, options, data_path=path)
        if dataset in ("antiderivative", "fisher"):
            raise DataError(f"{dataset} is generated; it has no file format (drop --data)")
        from zoo.data import darcy
        fmt = darcy.file_format(path)
        if dataset is not None and dataset != fmt:
            # the two formats carry solutions in different units: never evaluate one as the other
            raise DataError(f"{path}: a {Path(path).suffix} file has the {fmt} format, whose solution units differ "
                            f"from the {dataset} set's; use --dataset {fmt} (or no --dataset)")
        return _read_darcy_file(path, fmt, model)

    def collate(self, items):
        return collate_operator(items)

    # ---- training -----------------------------------------------------------------------
    def prepare(self, model, dataset, options):
        """Fit the output normalisation on the training set (only when training from scratch)."""
        if not options.get("pretrained"):
            model.fit_output_stats(dataset.values)

    def loss(self, model, batch):
        batch = to_device(batch, device_of(model))
        pred = model(batch["input"], batch["points"])
        err = (pred - batch["values"]) ** 2
        if "mask" in batch:
            err = err * batch["mask"]
            mse = err.sum() / batch["mask"].sum().clamp_min(1)
        else:
            mse = err.mean()
        return mse / model.out_std**2, {"mse": float(mse.detach())}  # train in normalised units

    def example_batch(self, model, options):
        inp, pts = self.example_input(model, options)
        return {"input": inp, "points": pts, "values": torch.zeros(pts.shape[:2])}

    # ---- inference ----------------------------------------------------------------------
    @staticmethod
    def _check_units(model, dataset) -> None:
        """Refuse data whose values are far from the scale the model was trained on: that is a file
        in other units (e.g. a neuraloperator file given to an FNO-units checkpoint), not an error
        to measure."""
        stats = model.output_stats()
        if stats is None or len(dataset) == 0:
            return
        mask = dataset.mask
        vals = dataset.values if mask is None else dataset.values[(mask.expand_as(dataset.values) > 0.5)]
        data_rms = float(vals.pow(2).mean().sqrt())
        model_rms = (stats[0] ** 2 + stats[1] ** 2) ** 0.5
        if model_rms > 0 and data_rms > 0 and not 0.1 <= data_rms / model_rms <= 10:
            src = dataset.meta.get("source", "the data")
            raise DataError(f"{src}: its values (rms {data_rms:.3g}) are not in the units this model was trained on "
                            f"(rms {model_rms:.3g}); nothing computed; use the checkpoint made for this data")

    @torch.inference_mode()
    def evaluate(self, model, dataset, options):
        return evaluate_sharded(self, model, dataset, options)

    def eval_batch_size(self, options):
        return int(options.get("batch_size") or 1024)

    @torch.inference_mode()
    def evaluate_shard(self, model, dataset, indices, options):
        """Per-batch sums (squared error, squared truth, points) and per-sample relative errors."""
        from torch.utils.data import DataLoader, Subset

        self._check_units(model, dataset)
        model.eval()
        device = device_of(model)
        loader = DataLoader(Subset(dataset, indices), batch_size=self.eval_batch_size(options), shuffle=False,
                            collate_fn=collate_operator)
        state = {"sq": [], "true_sq": [], "points": [], "rel": []}
        for batch in loader:
            batch = to_device(batch, device)
            pred = model(batch["input"], batch["points"])
            mask = batch.get("mask", torch.ones_like(pred))
            err = (pred - batch["values"]) * mask
            true = batch["values"] * mask
            state["sq"].append(float((err**2).sum()))
            state["true_sq"].append(float((true**2).sum()))
            state["points"].append(int(mask.sum()))
            state["rel"].append((err.norm(dim=1) / true.norm(dim=1).clamp_min(1e-12)).cpu())
        return state

    def merge_eval(self, dataset, states, options):
        # accumulated batch by batch in dataset order, as one process does: the same floats
        sq_sum, true_sq, n_points, rel = 0.0, 0.0, 0, []
        for st in states:
            for sq, tsq, npts in zip(st["sq"], st["true_sq"], st["points"]):
                sq_sum += sq
                true_sq += tsq
                n_points += npts
            rel += st["rel"]
        rel_all = torch.cat(rel) if rel else torch.zeros(0)
        if dataset.meta.get("rel_l2") == "global":
            rel_l2 = (sq_sum / max(true_sq, 1e-24)) ** 0.5
        else:
            rel_l2 = float(rel_all.mean())
        return {"mse": sq_sum / max(n_points, 1), "rel_l2": rel_l2,
                "rel_l2_median": float(rel_all.median()), "samples": len(dataset)}

    @torch.inference_mode()
    def predict(self, model, input, dataset, save, options):
        model.eval()
        i = int(options.get("index", 0))
        if input is not None:   # the sample comes from a dataset; a stray INPUT is not silently ignored
            raise DataError(f"{self.name} models take no INPUT ('{input}'): predict needs a dataset, and draws "
                            f"sample -o index=N of --dataset or --data (default: the checkpoint's dataset)")
        if dataset is None or len(dataset) == 0:
            raise DataError("predict needs a dataset (--dataset or --data)")
        if not 0 <= i < len(dataset):
            raise DataError(f"sample index {i} is out of range (the set has {len(dataset)})")
        kind = dataset.meta.get("kind")
        if kind not in _PICTURES:
            raise DataError("predict: this dataset has no picture defined")
        self._check_units(model, dataset)
        return _PICTURES[kind](model, dataset, i, save)

    def dynamic_axes(self, args):
        """Exported graphs take any batch size and any number of query points."""
        return [{0: "batch"}, {0: "batch", 1: "points"}]

    def graph_inputs(self, args):
        """Query points shared by the batch, (P, d), go to the graph as (B, P, d)."""
        if len(args) == 2 and args[1].dim() == 2:
            return args[0], args[1].expand(args[0].shape[0], *args[1].shape)
        return args

    def data_config(self, model):
        return {"branch_input": model.branch_input, "branch_input_means": BRANCH_INPUTS.get(model.branch_input),
                "input_grid": model.input_grid, "layout": "(branch input (B, ...), query points (B, P, d))"}

    def example_input(self, model, options):
        return tuple(model.example_input(int(options.get("batch_size") or 8)))


# ---- pictures (predict) ------------------------------------------------------------------------

def _predict_darcy(model, dataset, i, save):
    item = to_device(dataset[i], device_of(model))
    pred = model(item["input"][None], item["points"][None])[0].cpu()
    s = int(round(len(item["values"]) ** 0.5))
    truth, pred = item["values"].cpu().reshape(s, s).numpy(), pred.reshape(s, s).numpy()
    err = pred - truth
    rel = float(np.linalg.norm(err) / max(np.linalg.norm(truth), 1e-12))
    summary = {"sample": i, "rel_l2": rel, "resolution": s}
    if save:
        plt = pyplot()
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        panels = [(item["input"][0].cpu().numpy(), "input a(x)", "viridis"), (truth, "truth u", "magma"),
                  (pred, "prediction", "magma"), (err, f"error (rel. L2 {rel:.2%})", "coolwarm")]
        vmax = float(max(abs(truth).max(), abs(pred).max()))
        for ax, (img, title, cmap) in zip(axes, panels):
            kw = {"vmin": 0, "vmax": vmax} if cmap == "magma" else {}
            if cmap == "coolwarm":
                m = float(abs(err).max()) or 1.0
                kw = {"vmin": -m, "vmax": m}
            im = ax.imshow(img, cmap=cmap, origin="lower", **kw)
            ax.set_title(title)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(f"{type(model).__name__} on Darcy flow")
        save_figure(fig, save)
    return summary


def _predict_antiderivative(model, dataset, i, save):
    from scipy.interpolate import CubicSpline
    device = device_of(model)
    u = dataset.inputs[i]
    x = np.linspace(0, 1, u.numel())
    truth = CubicSpline(x, u.numpy()).antiderivative()(x)
    pts = torch.as_tensor(x, dtype=torch.float32, device=device)[:, None]
    pred = model(u[None].to(device), pts)[0].cpu().numpy()
    summary = {"sample": i, "rel_l2": float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12)),
               "mse": float(((pred - truth) ** 2).mean())}
    if save:
        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        axes[0].plot(x, u.numpy()); axes[0].set_title("input u(x)")
        axes[1].plot(x, truth, label="truth"); axes[1].plot(x, pred, "--", label="prediction")
        axes[1].legend(); axes[1].set_title("s(x) = ∫u")
        axes[2].plot(x, pred - truth, color="C3"); axes[2].set_title(f"error (MSE {summary['mse']:.2e})")
        fig.suptitle(f"{type(model).__name__} on the antiderivative operator")
        save_figure(fig, save)
    return summary


def _predict_fisher(model, dataset, i, save):
    from zoo.data.fisher import NT, NX
    item = to_device(dataset[i], device_of(model))
    pred = model(item["input"][None], item["points"][None])[0].reshape(NT, NX).cpu().numpy()
    truth = item["values"].reshape(NT, NX).cpu().numpy()
    rel = float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12))
    form = int(dataset.meta["form"][i])
    summary = {"sample": i, "reaction_form": form, "rel_l2": rel,
               "coefficients": [round(float(c), 6) for c in item["input"][:4]]}
    if save:
        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        ext = (0, 1, 0, 1)
        m = float(np.abs(pred - truth).max()) or 1.0
        panels = ((axes[0], truth, "truth u(t, x)", {"vmin": 0, "vmax": 1}),
                  (axes[1], pred, "prediction", {"vmin": 0, "vmax": 1}),
                  (axes[2], pred - truth, f"error (rel. L2 {rel:.2%})", {"cmap": "coolwarm", "vmin": -m, "vmax": m}))
        for ax, img, title, kw in panels:
            im = ax.imshow(img, origin="lower", aspect="auto", extent=ext, **kw)
            ax.set_xlabel("x")
            ax.set_ylabel("t")
            ax.set_title(title)
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(f"MT-DeepONet on the Fisher equation, reaction form {form}")
        save_figure(fig, save)
    return summary


_PICTURES = {"darcy": _predict_darcy, "antiderivative": _predict_antiderivative, "fisher": _predict_fisher}
