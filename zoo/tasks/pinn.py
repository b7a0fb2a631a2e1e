"""Physics-informed networks: a "dataset" is a problem (PDE, domain, initial condition, collocation
grid, reference solution), training is solving it, and eval compares the solution with the
reference solver's on the N x M grid.

A training item is one space column of the collocation grid: x_i with all M times, its initial
value u0(x_i) and, where a loop detector sits at x_i, the observed values. The default batch is
every column (the full grid, as the LPINN code trains); under DDP the columns are split over the
processes. Batches carry the Problem object, so the model computes its own physics loss
(`pinn_loss(problem, batch)`): Eulerian and Lagrangian formulations differ there and only there.

The weights of a PINN solve one problem instance: the model keeps the problem's parameters in
a `problem_state` buffer (saved with the weights), eval without -o uses them, and eval of a
checkpoint on other parameters is refused rather than measured.
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
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, to_device


@runtime_checkable
class PinnModel(Protocol):
    """What a physics-informed model provides.

    - `forward(x, t)` -> u (P,) at P points (for a Lagrangian model: the label x0 and t);
    - `pinn_loss(problem, batch)` -> (loss, logs): its physics + initial + observation terms;
    - `field(problem, x, t)` -> (u on the Eulerian (M, N) grid, characteristic positions (M, N) or None);
    - `check_problem(problem)`: raise DataError for a problem it cannot solve;
    - `use_problem(problem)`: fit problem-dependent state before training (a scale; may do nothing);
    - `problem_state`: an (8,) buffer where the task records which problem the weights solve;
    - `example_input(batch)` -> (x, t)."""

    problem_state: torch.Tensor

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...
    def pinn_loss(self, problem, batch: dict): ...
    def field(self, problem, x: torch.Tensor, t: torch.Tensor): ...
    def check_problem(self, problem) -> None: ...
    def use_problem(self, problem) -> None: ...
    def example_input(self, batch: int = 8): ...


class PinnOptions(TaskOptions):
    c: Optional[float] = Field(None, description="convection speed (convection, convection-diffusion; default 50)")
    nu: Optional[float] = Field(None, description="viscosity / diffusion nu >= 0 (default 0.01; lwr 0)")
    C: Optional[float] = Field(None, description="burgers: u0 = sin x + C (default 0)")
    v_max: Optional[float] = Field(None, description="lwr: free-flow speed of the Greenshields flux (default 1.5)")
    detectors: Optional[int] = Field(None, description="lwr: number of loop detectors observing rho(t) (default 4)")
    rho: Optional[float] = Field(None, description="reaction-diffusion: reaction rate (default 5)")
    n_x: Optional[int] = Field(None, description="space points N of the collocation/evaluation grid (default 256)")
    n_t: Optional[int] = Field(None, description="time points M of the grid, t from 0 to t_max (default 100)")
    t_max: Optional[float] = Field(None, description="final time (default 1)")


#: the order of problems and of their parameters in a model's problem_state buffer
_PARAM_KEYS = ["c", "nu", "C", "v_max", "detectors", "rho"]
_PROBLEM_KEYS = ["n_x", "n_t", "t_max"]


def _problems():
    from zoo.data import pinn_problems
    return pinn_problems


def _encode(problem) -> torch.Tensor:
    names = list(_problems().DEFAULTS)
    state = torch.zeros(8)
    state[0], state[1] = 1.0, float(names.index(problem.name))
    for i, k in enumerate(_PARAM_KEYS):
        if k in problem.params:
            state[2 + i] = float(problem.params[k])
    return state


def _decode(state: torch.Tensor) -> tuple[str, dict] | None:
    if float(state[0]) != 1.0:
        return None
    pp = _problems()
    name = list(pp.DEFAULTS)[int(state[1])]
    # the buffer is float32: read back the 6 significant digits it holds (0.01, not 0.0100021)
    params = {k: float(f"{float(state[2 + i]):.6g}") for i, k in enumerate(_PARAM_KEYS) if k in pp.DEFAULTS[name]}
    if "detectors" in params:
        params["detectors"] = int(params["detectors"])
    return name, params


class ProblemDataset(Dataset):
    """The columns of one problem's grid; `reference` is the (M, N) reference field."""

    def __init__(self, problem, reference: np.ndarray):
        self.problem = problem
        self.reference = torch.as_tensor(reference, dtype=torch.float32)
        self.x = torch.as_tensor(problem.x_grid(), dtype=torch.float32)
        self.t = torch.as_tensor(problem.t_grid(), dtype=torch.float32)
        self.u0 = torch.as_tensor(problem.u0(problem.x_grid()), dtype=torch.float32)
        det = {int(round(d / (2 * np.pi) * problem.n_x)) for d in problem.detectors}
        self.observed = torch.tensor([i in det for i in range(problem.n_x)], dtype=torch.float32)
        self.meta = {"source": problem.describe()}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "t": self.t, "u0": self.u0[i], "obs": self.reference[:, i],
                "obs_mask": self.observed[i], "problem": self.problem}


def collate_columns(items: list[dict]) -> dict:
    """Columns -> flat collocation points (P = columns x M)."""
    m = len(items[0]["t"])
    x = torch.stack([it["x"] for it in items])[:, None].expand(-1, m).reshape(-1)
    t = torch.stack([it["t"] for it in items]).reshape(-1)
    u0 = torch.stack([it["u0"] for it in items])[:, None].expand(-1, m).reshape(-1)
    obs = torch.stack([it["obs"] for it in items]).reshape(-1)
    mask = torch.stack([it["obs_mask"] for it in items])[:, None].expand(-1, m).reshape(-1)
    ic = (torch.arange(m) == 0).float().repeat(len(items))
    return {"x": x, "t": t, "u0": u0, "obs": obs, "obs_mask": mask, "ic": ic, "problem": items[0]["problem"]}


def _problem_options(options: dict) -> dict:
    return {k: options[k] for k in _PARAM_KEYS + _PROBLEM_KEYS if options.get(k) is not None}


def _loader(name: str):
    def load(split, model, options):
        pp = _problems()
        given = _problem_options(options)
        stored = _decode(model.problem_state) if hasattr(model, "problem_state") else None
        params = dict(given)
        if stored is not None and stored[0] == name and split != "train":
            # the weights solve one instance: default to it, refuse another one
            for k, v in stored[1].items():
                if k in given and abs(float(given[k]) - v) > 1e-6 * max(1.0, abs(v)):
                    raise DataError(f"these weights solve {name} with {k} = {v:g}, not {given[k]:g}: a PINN "
                                    f"checkpoint solves one problem; train one with `zoo finetune ... --dataset "
                                    f"{name} -o {k}={given[k]:g}`")
                params.setdefault(k, v)
        problem = pp.make_problem(name, params)
        model.check_problem(problem)
        problem, reference = pp.load(name, {**params})
        return ProblemDataset(problem, reference)
    return load


METRICS = {
    "rel_l2": "relative L2 error ||U_pred - U_ref||_F / ||U_ref||_F over the N x M grid (Eulerian field; a "
              "Lagrangian model's prediction is first interpolated from its characteristics back to the grid)",
    "err_2norm": "matrix 2-norm (largest singular value) of the error field U_pred - U_ref on the N x M grid, as "
                 "the LPINN paper reports it (full grid; the LPINN code trims 2 edge points)",
    "err_fro": "Frobenius norm of the error field on the N x M grid (LPINN paper)",
    "ref_2norm": "matrix 2-norm of the reference field (the scale err_2norm is read against)",
}


class PinnTask(Task):
    name = "pinn"
    DATASETS = {n: DatasetEntry(d, _loader(n)) for n, d in {
        "convection": "u_t + c u_x = 0 on [0, 2pi) x [0, 1], u0 = sin x, c = 50 (-o c=...); exact reference; "
                      "256 x 100 grid",
        "convection-diffusion": "u_t + c u_x = nu u_xx, u0 = sin x, c = 50, nu = 0.01; exact in Fourier space",
        "burgers": "u_t + u u_x = nu u_xx, u0 = sin x + C, nu = 0.01, C = 0 (-o C=...); pseudo-spectral reference",
        "lwr": "LWR traffic density on a ring road, Greenshields flux, 4 loop detectors; Godunov reference",
        "reaction-diffusion": "u_t = nu u_xx + rho u(1 - u), Gaussian u0; Strang-splitting reference "
                              "(no characteristic form)",
    }.items()}
    Options = PinnOptions
    model_protocol = PinnModel
    metric_definitions = METRICS
    default_batch_size = 256     # all 256 columns of the default grid: full-batch training
    default_lr = 5e-3
    default_steps = 2000
    main_metric = "rel_l2"

    def collate(self, items):
        return collate_columns(items)

    def prepare(self, model, dataset, options):
        """Record which problem the weights are being trained to solve."""
        model.problem_state.copy_(_encode(dataset.problem))
        model.use_problem(dataset.problem)

    def loss(self, model, batch):
        problem = batch["problem"]
        batch = to_device({k: v for k, v in batch.items() if k != "problem"}, device_of(model))
        return model.pinn_loss(problem, batch)

    def example_batch(self, model, options):
        """A tiny grid of the first problem the model can solve (each model says which it can)."""
        from zoo.data import pinn_problems as pp
        from zoo.errors import DataError
        for name in ("convection", "convection-diffusion", "burgers", "lwr"):
            problem = pp.make_problem(name, {"n_x": 8, "n_t": 4})
            try:
                model.check_problem(problem)
                break
            except DataError:
                continue
        ds = ProblemDataset(problem, pp.reference(problem))
        return collate_columns([ds[i] for i in range(len(ds))])

    def _field(self, model, dataset):
        device = device_of(model)
        model.eval()
        with torch.no_grad():
            pred, curves = model.field(dataset.problem, dataset.x.to(device), dataset.t.to(device))
        return pred.detach().cpu().double().numpy(), None if curves is None else curves.detach().cpu().numpy()

    def evaluate(self, model, dataset, options):
        pred, _ = self._field(model, dataset)
        ref = dataset.reference.double().numpy()
        return _metrics(pred, ref)

    def predict(self, model, input, dataset, save, options):
        if input is not None:
            raise DataError(f"pinn models take no INPUT ('{input}'): the problem is the dataset "
                            f"(--dataset, default the checkpoint's)")
        if dataset is None:
            raise DataError("predict needs a problem (--dataset)")
        pred, curves = self._field(model, dataset)
        ref = dataset.reference.double().numpy()
        summary = {"problem": dataset.problem.describe(), **_metrics(pred, ref)}
        if save:
            _draw(dataset, pred, ref, curves, save, type(model).__name__)
        return summary

    def example_input(self, model, options):
        return tuple(model.example_input(int(options.get("batch_size") or 8)))


def _metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    err = pred - ref
    if not np.all(np.isfinite(pred)):
        raise DataError("the model's prediction has non-finite values: nothing measured")
    return {"rel_l2": float(np.linalg.norm(err) / max(np.linalg.norm(ref), 1e-30)),
            "err_2norm": float(np.linalg.norm(err, 2)), "err_fro": float(np.linalg.norm(err)),
            "ref_2norm": float(np.linalg.norm(ref, 2))}


def _draw(dataset, pred, ref, curves, save: Path, model_name: str) -> None:
    plt = pyplot()
    p = dataset.problem
    ext = (0, 2 * np.pi, 0, p.t_max)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    m = float(np.abs(pred - ref).max()) or 1.0
    rel = np.linalg.norm(pred - ref) / max(np.linalg.norm(ref), 1e-30)
    panels = [(ref, "reference", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
              (pred, "prediction", {"vmin": lo, "vmax": hi, "cmap": "viridis"}),
              (pred - ref, f"error (rel. L2 {rel:.2%})", {"vmin": -m, "vmax": m, "cmap": "coolwarm"})]
    t = dataset.t.numpy()
    for ax, (img, title, kw) in zip(axes, panels):
        im = ax.imshow(img, origin="lower", aspect="auto", extent=ext, **kw)
        if curves is not None:   # the model's characteristics x_L(x0, t), every 16th label
            for i in range(0, curves.shape[1], max(1, curves.shape[1] // 16)):
                xs = np.mod(curves[:, i], 2 * np.pi)
                jumps = np.abs(np.diff(xs)) > np.pi   # break the line where it wraps round the ring
                xs = np.where(np.r_[False, jumps], np.nan, xs)
                ax.plot(xs, t, color="white", lw=0.6, alpha=0.8)
            ax.set_xlim(0, 2 * np.pi)
        for d in p.detectors:
            ax.axvline(d, color="red", lw=0.8, ls=":")
        ax.set_xlabel("x")
        ax.set_ylabel("t")
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{model_name} on {p.describe()}")
    save_figure(fig, save)
