"""Operator learning: a model maps an input function (sensor values or a field) and query points
to the output function's values there. Metrics: MSE and relative L2 (mean over samples).

A batch is a dict: `input` (B, m) or (B, C, H, W), `points` (B, P, d), `values` (B, P) and an
optional `mask` (B, P) (1 inside the geometry; masked points count neither in loss nor metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError, UnknownNameError
from zoo.tasks.base import Task


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


class OperatorTask(Task):
    name = "operator"
    datasets = {
        "antiderivative": "ds/dx = u(x): GRF inputs (RBF, l=0.2), 100 sensors; 10k train / 100k test triplets (generated)",
        "darcy": "2-D Darcy flow, FNO recipe, 29x29 (generated; or --data an FNO .mat / neuraloperator .pt file)",
        "darcy-neuralop": "the real Darcy files shipped in the neuraloperator 0.3.0 wheel (train 1000 @16x16; test 50 @16x16, 50 @32x32 with -o resolution=32)",
        "fisher": "1-D Fisher equation, 3 reaction forms (MT-DeepONet), 20x64 (t, x) outputs; "
                  "3200 train / 800 test (generated)",
        "multi-geometry-darcy": "Darcy flow on square/circle/triangle domains with a geometry mask (MT-DeepONet), "
                                "100x100; 900 train / 180 test (generated; or --data an official .mat file)",
    }
    default_batch_size = 256
    default_lr = 1e-3
    default_steps = 2000
    main_metric = "rel_l2"

    # ---- data ---------------------------------------------------------------------------
    def load_dataset(self, dataset, split, data_path, model_config, options):
        if dataset in ("fisher", "multi-geometry-darcy") or model_config.get("problem"):
            return _mt_deeponet_dataset(dataset, split, data_path, model_config, options)
        if data_path:
            return self._darcy_dataset_from(self._read_darcy_file(data_path, model_config), model_config,
                                            source=str(data_path))
        if dataset is None:
            raise DataError("give --dataset or --data")
        if dataset == "antiderivative":
            from zoo.data import antiderivative
            d = antiderivative.load(split, seed=int(options.get("data_seed", 0)), size=options.get("size"))
            return ArrayDataset(d["u"], d["y"][:, None, :], d["s"], meta={"kind": "antiderivative"})
        if dataset == "darcy":
            from zoo.data import darcy
            d = darcy.load_generated(split, seed=int(options.get("data_seed", 0)), size=options.get("size"))
            return self._darcy_dataset_from(d, model_config, source="generated darcy")
        if dataset == "darcy-neuralop":
            from zoo.data import darcy
            res = str(options.get("resolution", 16))
            which = "16-train" if split == "train" else res
            if which not in darcy.REAL_FILES:
                raise DataError(f"darcy-neuralop has resolutions 16 and 32, not {res}")
            return self._darcy_dataset_from(darcy.load_real(which), model_config,
                                             source=f"neuraloperator 0.3.0 darcy ({which})")
        raise UnknownNameError("dataset for the operator task", dataset, self.datasets)

    @staticmethod
    def _read_darcy_file(path, model_config):
        from zoo.data import darcy
        if model_config.get("branch") != "cnn":
            raise DataError(f"{path}: a Darcy file needs a model with a 2-D (CNN) branch, e.g. deeponet.darcy")
        return darcy.read_file(path)

    @staticmethod
    def _darcy_dataset_from(d, model_config, source):
        if model_config.get("branch") != "cnn":
            raise DataError(f"{source}: Darcy data needs a model with a 2-D (CNN) branch, e.g. deeponet.darcy")
        grid = int(model_config.get("grid", 29))
        coeff, sol, s = fit_darcy_to_grid(d["coeff"], d["sol"], grid)
        return ArrayDataset(coeff[:, None], grid_points(s), sol.reshape(len(sol), -1),
                            meta={"kind": "darcy", "grid": grid, "resolution": s, "source": source})

    def collate(self, items):
        return collate_operator(items)

    # ---- training -----------------------------------------------------------------------
    def prepare(self, model, dataset, options):
        """Fit the output normalisation on the training set (only when training from scratch)."""
        if hasattr(model, "out_mean") and not options.get("pretrained"):
            vals = dataset.values
            model.out_mean.fill_(float(vals.mean()))
            model.out_std.fill_(float(vals.std()) or 1.0)

    def loss(self, model, batch):
        pred = model(batch["input"], batch["points"])
        err = (pred - batch["values"]) ** 2
        if "mask" in batch:
            err = err * batch["mask"]
            mse = err.sum() / batch["mask"].sum().clamp_min(1)
        else:
            mse = err.mean()
        scale = getattr(model, "out_std", None)
        loss = mse / scale**2 if scale is not None else mse  # train in normalised units
        return loss, {"mse": float(mse.detach())}

    def example_batch(self, model, model_config, options):
        inp, pts = self.example_input(model, model_config, options)
        return {"input": inp, "points": pts, "values": torch.zeros(pts.shape[:2])}

    # ---- inference ----------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, model, dataset, options):
        from torch.utils.data import DataLoader

        model.eval()
        loader = DataLoader(dataset, batch_size=int(options.get("batch_size") or 1024), shuffle=False,
                            collate_fn=collate_operator)
        sq_sum, n_points, rel = 0.0, 0, []
        for batch in loader:
            pred = model(batch["input"], batch["points"])
            mask = batch.get("mask", torch.ones_like(pred))
            err = (pred - batch["values"]) * mask
            sq_sum += float((err**2).sum())
            n_points += int(mask.sum())
            rel.append(err.norm(dim=1) / (batch["values"] * mask).norm(dim=1).clamp_min(1e-12))
        rel_all = torch.cat(rel)
        return {"mse": sq_sum / max(n_points, 1), "rel_l2": float(rel_all.mean()),
                "rel_l2_median": float(rel_all.median()), "samples": len(dataset)}

    @torch.inference_mode()
    def predict(self, model, input, dataset, save, options):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        model.eval()
        i = int(options.get("index", 0))
        if dataset is None or len(dataset) == 0:
            raise DataError("predict needs a dataset (--dataset or --data)")
        if not 0 <= i < len(dataset):
            raise DataError(f"sample index {i} is out of range (the set has {len(dataset)})")
        kind = getattr(dataset, "meta", {}).get("kind")
        if kind == "darcy":
            item = dataset[i]
            pred = model(item["input"][None], item["points"][None])[0]
            s = int(round(len(item["values"]) ** 0.5))
            truth, pred = item["values"].reshape(s, s).numpy(), pred.reshape(s, s).numpy()
            err = pred - truth
            rel = float(np.linalg.norm(err) / max(np.linalg.norm(truth), 1e-12))
            summary = {"sample": i, "rel_l2": rel, "resolution": s}
            if save:
                fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
                panels = [(item["input"][0].numpy(), "input a(x)", "viridis"), (truth, "truth u", "magma"),
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
                fig.suptitle("DeepONet on Darcy flow")
                _save_fig(fig, save)
            return summary
        if kind == "antiderivative":
            from scipy.interpolate import CubicSpline
            u = dataset.inputs[i]
            x = np.linspace(0, 1, u.numel())
            truth = CubicSpline(x, u.numpy()).antiderivative()(x)
            pred = model(u[None], torch.as_tensor(x, dtype=torch.float32)[:, None])[0].numpy()
            summary = {"sample": i, "rel_l2": float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12)),
                       "mse": float(((pred - truth) ** 2).mean())}
            if save:
                fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
                axes[0].plot(x, u.numpy()); axes[0].set_title("input u(x)")
                axes[1].plot(x, truth, label="truth"); axes[1].plot(x, pred, "--", label="prediction")
                axes[1].legend(); axes[1].set_title("s(x) = ∫u")
                axes[2].plot(x, pred - truth, color="C3"); axes[2].set_title(f"error (MSE {summary['mse']:.2e})")
                fig.suptitle("DeepONet on the antiderivative operator")
                _save_fig(fig, save)
            return summary
        if kind == "fisher":
            return _predict_fisher(model, dataset, i, save)
        raise DataError("predict: this dataset has no picture defined")

    def dynamic_axes(self, args):
        """Exported graphs take any batch size and any number of query points."""
        return [{0: "batch"}, {0: "batch", 1: "points"}]

    def example_input(self, model, model_config, options):
        b = int(options.get("batch_size") or 8)
        if hasattr(model, "example_input"):
            return tuple(model.example_input(b))
        if model_config.get("branch") == "cnn":
            g = int(model_config.get("grid", 29))
            a = torch.where(torch.rand(b, 1, g, g) > 0.5, 12.0, 3.0)
            pts = torch.as_tensor(grid_points(g)).expand(b, -1, -1).contiguous()
            return a, pts
        m = int(model_config.get("sensors", 100))
        d = int(model_config.get("coord_dim", 1))
        return torch.randn(b, m), torch.rand(b, 100, d)


# ---- MT-DeepONet's sets (issue 6): Fisher reaction forms and Darcy on several geometries -----------

_MT_PROBLEM = {"fisher": "fisher", "multi-geometry-darcy": "darcy"}


def _mt_deeponet_dataset(dataset, split, data_path, model_config, options):
    problem = model_config.get("problem")
    if dataset is None and data_path:
        dataset = "multi-geometry-darcy" if problem == "darcy" else None
    if dataset not in _MT_PROBLEM:
        raise DataError(f"the MT-DeepONet '{problem}' network reads the fisher or multi-geometry-darcy sets, "
                        f"not '{dataset or data_path}'")
    if problem != _MT_PROBLEM[dataset]:
        raise DataError(f"{dataset} needs the MT-DeepONet '{_MT_PROBLEM[dataset]}' network; this model is the "
                        f"'{problem}' one (train one with `zoo finetune mt-deeponet --dataset {dataset}`)")
    seed, size = int(options.get("data_seed", 0)), options.get("size")
    if dataset == "fisher":
        from zoo.data import fisher
        d = fisher.load(split, seed=seed, size=size, **{k: v for k, v in options.items() if k in fisher.DEFAULTS})
        return ArrayDataset(d["inputs"], d["points"], d["values"], meta={"kind": "fisher", "form": d["form"]})
    from zoo.data import multi_geometry_darcy
    d = multi_geometry_darcy.load(split, seed=seed, size=size, data_path=data_path,
                                  **{k: v for k, v in options.items() if k in multi_geometry_darcy.DEFAULTS})
    if d["grid"] != int(model_config.get("grid", 100)):
        raise DataError(f"{d['source']}: the grid is {d['grid']}x{d['grid']}, the branch CNN expects "
                        f"{model_config.get('grid', 100)}")
    return ArrayDataset(d["inputs"], d["points"], d["values"], d["mask"],
                        meta={"kind": "darcy", "grid": d["grid"], "resolution": d["grid"], "source": d["source"]})


def _predict_fisher(model, dataset, i, save):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.data.fisher import NT, NX
    item = dataset[i]
    pred = model(item["input"][None], item["points"][None])[0].reshape(NT, NX).numpy()
    truth = item["values"].reshape(NT, NX).numpy()
    rel = float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12))
    form = int(dataset.meta["form"][i])
    summary = {"sample": i, "reaction_form": form, "rel_l2": rel,
               "coefficients": [round(float(c), 6) for c in item["input"][:4]]}
    if save:
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
        _save_fig(fig, save)
    return summary


def _save_fig(fig, save):
    import matplotlib.pyplot as plt
    save = Path(save)
    save.parent.mkdir(parents=True, exist_ok=True)
    tmp = save.with_name(f".{save.stem}.tmp{save.suffix}")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(save)
