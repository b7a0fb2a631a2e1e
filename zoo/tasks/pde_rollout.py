"""Time-dependent operators: predict the next frame of a PDE's fields from the last few frames,
and roll that one-step model out autoregressively.

Models of this kind fulfil `RolloutModel`: `step(history) -> next frame` with history
(B, T, C, H, W) and the next frame (B, C, H, W), `time_history`, `fields`, `native_grid`,
`check_grid(n, source)` (their grid rule, a DataError naming it), `example_input(batch, resolution)`,
`loss(pred, target) -> (loss, logs)` (the paper's training loss) and the field statistics of
`zoo.layers.field_stats.FieldStats` (`stats_from_data`, `fit_field_stats(frames)`).

Metrics, with the papers' definitions (all as fractions, not percent):
- `*_rel_l2` (SineNet / PDEArena "scaledl2"): ||pred - y||_2 / ||y||_2 over space, per sample,
  frame and field, averaged over samples and fields;
- `*_rel_l1` (DRIFT-Net / Poseidon): sum |pred - y| / sum |y| over space and all fields, per
  sample, averaged (`one_step_rel_l1_median`: the median over samples, Poseidon's headline);
- one-step: every frame t >= start predicted from the true frames before it;
- rollout: from the true frames before `start`, `steps` autoregressive steps; `rollout_*` is the
  mean over the steps of the per-step error (PDEArena's unrolled loss), `final_*` the last step,
  `rel_l2_step01..` each step.
Options (`-o key=value`): steps (default 10), start (first predicted frame; default the model's
history length), index (predict: which trajectory), field (predict: which field to draw),
limit (read at most this many trajectories of a file), transpose (swap the grid axes of a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from zoo._io import atomic_write, pyplot, save_figure
from zoo.errors import DataError
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, to_device


@runtime_checkable
class RolloutModel(Protocol):
    """What a one-step PDE model provides (see the module docstring)."""

    fields: list
    time_history: int
    stats_from_data: bool

    @property
    def native_grid(self) -> Optional[int]: ...
    def check_grid(self, n: int, source: str) -> None: ...
    def step(self, history: torch.Tensor) -> torch.Tensor: ...
    def example_input(self, batch: int = 2, resolution: Optional[int] = None) -> tuple: ...
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple: ...
    def fit_field_stats(self, frames: torch.Tensor) -> None: ...


class RolloutOptions(TaskOptions):
    steps: Optional[int] = Field(None, description="rollout steps (default 10, or what the data holds)")
    start: Optional[int] = Field(None, description="first predicted frame (default: the model's history length)")
    index: int = Field(0, description="predict: which trajectory")
    field: Optional[str] = Field(None, description="predict: which field to draw (default the first)")
    transpose: bool = Field(False, description="swap the two grid axes of a file")
    resolution: Optional[int] = Field(None, description="grid of generated data / example inputs")
    frames: Optional[int] = Field(None, description="navier-stokes: frames per generated trajectory")
    dt: Optional[float] = Field(None, description="navier-stokes: solver time step")
    nu: Optional[float] = Field(None, description="navier-stokes: viscosity")
    record_every: Optional[float] = Field(None, description="navier-stokes: time between recorded frames")


class RolloutDataset(Dataset):
    """Trajectories (N, T, C, H, W); items are one-step training pairs (history -> next frame)."""

    def __init__(self, frames: torch.Tensor, history: int, fields: list[str], source: str, start: int | None = None,
                 info: dict | None = None):
        n, t = frames.shape[:2]
        if t < history + 1:
            raise DataError(f"{source}: {t} time step(s) per trajectory; the model needs {history} of history "
                            f"plus 1 to predict")
        self.frames, self.history, self.fields, self.source = frames, history, fields, source
        self.start = max(history, int(start) if start is not None else history)
        if self.start >= t:
            raise DataError(f"{source}: start frame {self.start} is past the last frame ({t - 1})")
        self.pairs = [(i, j) for i in range(n) for j in range(self.start, t)]
        self.meta = {"kind": "pde-rollout", "source": source, "fields": fields, **(info or {})}

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        i, j = self.pairs[k]
        return {"history": self.frames[i, j - self.history:j], "target": self.frames[i, j]}


def _rel_l2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): PDEArena's scaled L2 per sample and field."""
    return (pred - y).flatten(2).norm(dim=-1) / y.flatten(2).norm(dim=-1).clamp_min(1e-12)


def _rel_l1(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B,): Poseidon's relative L1 over all fields of a sample."""
    return (pred - y).abs().flatten(1).sum(-1) / y.abs().flatten(1).sum(-1).clamp_min(1e-12)


def _rollout_set(traj, model, options) -> "RolloutDataset":
    """Trajectories (generated or a file) checked against the model's grid rule, as one-step pairs."""
    from zoo.data import navier_stokes as ns
    ns.check_frames(traj)
    model.check_grid(int(traj.frames.shape[-1]), traj.source)
    frames = torch.from_numpy(np.ascontiguousarray(traj.frames))
    return RolloutDataset(frames, model.time_history, traj.fields, traj.source, options.get("start"),
                          {"resolution": int(frames.shape[-1]), **traj.info})


def _generated_navier_stokes(split, model, options):
    from zoo.data import navier_stokes as ns
    params = {k: options[k] for k in ("resolution", "frames", "dt", "nu", "record_every") if k in options}
    traj = ns.load_generated(split, seed=int(options.get("data_seed", 0)), size=options.get("size"),
                             fields=list(model.fields), **params)
    return _rollout_set(traj, model, options)


#: metric -> definition (shown by `zoo info` and the model card); all fractions, not percent
METRICS = {
    "one_step_rel_l2": "every frame t >= start predicted from the true frames before it; ||pred - y||_2 / ||y||_2 "
                       "over space per sample, frame and field (PDEArena scaledl2), averaged",
    "one_step_rel_l1": "sum |pred - y| / sum |y| over space and all fields per sample and frame (Poseidon), averaged",
    "one_step_rel_l1_median": "the median over samples and frames of the one-step relative L1 (Poseidon's headline)",
    "rollout_rel_l2": "`steps` autoregressive steps from the true frames before `start`; the mean over steps of the "
                      "per-step relative L2 (PDEArena's unrolled error)",
    "rollout_rel_l1": "as rollout_rel_l2 with Poseidon's relative L1",
    "final_rel_l2": "the relative L2 of the last rollout step",
    "rel_l2_stepNN": "the relative L2 of rollout step NN",
    "rollout_steps": "number of autoregressive steps", "start_frame": "first predicted frame",
    "trajectories": "number of trajectories the metrics come from", "resolution": "grid side of the data",
}


class RolloutTask(Task):
    name = "pde-rollout"
    DATASETS = {
        "navier-stokes": DatasetEntry(
            "2-D incompressible NS vorticity, FNO recipe (nu=1e-3), 64x64, 21 frames (t=0..20); generated "
            "(256 train / 32 val / 32 test trajectories); or --data a PDEArena/PDEBench .h5 or Poseidon .nc file",
            lambda split, model, options: _generated_navier_stokes(split, model, options)),
    }
    Options = RolloutOptions
    model_protocol = RolloutModel
    metric_definitions = METRICS
    default_batch_size = 16
    default_lr = 1e-3
    default_steps = 2000
    main_metric = "rollout_rel_l2"
    # the operator task's rule (the 5 % the int8 issue names for operators), on the rollout's error
    int8_tolerance = {"rollout_rel_l2": ("rel_increase", 0.05)}

    # ---- data ---------------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        from zoo.data import navier_stokes as ns
        traj = ns.read_file(path, split=split, fields=list(model.fields), limit=options.get("limit"),
                            transpose=bool(options.get("transpose", False)))
        return _rollout_set(traj, model, options)

    # ---- training -----------------------------------------------------------------------------
    def prepare(self, model, dataset, options):
        """Fit the per-field standardisation on the training trajectories (models built without it)."""
        if model.stats_from_data and not options.get("pretrained"):
            model.fit_field_stats(dataset.frames.to(device_of(model)))

    def loss(self, model, batch):
        batch = to_device(batch, device_of(model))
        return model.loss(model.step(batch["history"]), batch["target"])

    def example_batch(self, model, options):
        b = int(options.get("batch_size") or 2)
        n = int(options.get("resolution") or model.native_grid or 64)
        c = len(model.fields)
        return {"history": torch.randn(b, model.time_history, c, n, n), "target": torch.randn(b, c, n, n)}

    # ---- inference ----------------------------------------------------------------------------
    @staticmethod
    def _rollout(model, frames: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """frames (B, T, C, H, W) -> predictions (B, steps, C, H, W) from the true frames before start."""
        hist = frames[:, start - model.time_history:start]
        preds = []
        for _ in range(steps):
            nxt = model.step(hist)
            preds.append(nxt)
            hist = torch.cat([hist[:, 1:], nxt[:, None]], dim=1)
        return torch.stack(preds, dim=1)

    def _steps(self, dataset: RolloutDataset, options: dict) -> tuple[int, int]:
        t = dataset.frames.shape[1]
        start = dataset.start
        if options.get("start") is not None:
            start = max(int(options["start"]), dataset.history)
        asked = options.get("steps")
        steps = int(asked) if asked else 10
        if start + steps > t:
            if asked:
                raise DataError(f"{dataset.source}: {steps} rollout steps from frame {start} need {start + steps} "
                                f"frames per trajectory, the data has {t}")
            steps = t - start
        return start, steps

    @torch.inference_mode()
    def evaluate(self, model, dataset, options):
        model.eval()
        start, steps = self._steps(dataset, options)
        frames = dataset.frames
        device = device_of(model)
        bs = int(options.get("batch_size") or 16)
        t = frames.shape[1]
        one_l2, one_l1, roll_l2, roll_l1 = [], [], [], []
        for lo in range(0, frames.shape[0], bs):
            chunk = frames[lo:lo + bs].to(device)
            for j in range(start, t):
                pred = model.step(chunk[:, j - model.time_history:j])
                one_l2.append(_rel_l2(pred, chunk[:, j]).mean(dim=1))
                one_l1.append(_rel_l1(pred, chunk[:, j]))
            preds = self._rollout(model, chunk, start, steps)
            truth = chunk[:, start:start + steps]
            roll_l2.append(torch.stack([_rel_l2(preds[:, k], truth[:, k]).mean(dim=1) for k in range(steps)], 1))
            roll_l1.append(torch.stack([_rel_l1(preds[:, k], truth[:, k]) for k in range(steps)], 1))
        one_l2_all, one_l1_all = torch.cat(one_l2).cpu(), torch.cat(one_l1).cpu()
        per_step_l2 = torch.cat(roll_l2).mean(0).cpu()
        per_step_l1 = torch.cat(roll_l1).mean(0).cpu()
        out = {"one_step_rel_l2": float(one_l2_all.mean()), "one_step_rel_l1": float(one_l1_all.mean()),
               "one_step_rel_l1_median": float(one_l1_all.median()),
               "rollout_rel_l2": float(per_step_l2.mean()), "rollout_rel_l1": float(per_step_l1.mean()),
               "final_rel_l2": float(per_step_l2[-1]), "rollout_steps": steps, "start_frame": start,
               "trajectories": int(frames.shape[0]), "resolution": int(frames.shape[-1])}
        for k in range(steps):
            out[f"rel_l2_step{k + 1:02d}"] = float(per_step_l2[k])
        return out

    @torch.inference_mode()
    def predict(self, model, input, dataset, save, options):
        if input:
            dataset = self.load_dataset(None, "test", input, model, options)
        if dataset is None:
            raise DataError("predict needs trajectories: give --dataset navier-stokes, --data PATH or a file as INPUT")
        model.eval()
        i = int(options.get("index", 0))
        if not 0 <= i < dataset.frames.shape[0]:
            raise DataError(f"trajectory index {i} is out of range (the data has {dataset.frames.shape[0]})")
        start, steps = self._steps(dataset, options)
        traj = dataset.frames[i:i + 1].to(device_of(model))
        preds = self._rollout(model, traj, start, steps)[0].cpu()
        truth = traj[0, start:start + steps].cpu()
        per_step = [float(_rel_l2(preds[k:k + 1], truth[k:k + 1]).mean()) for k in range(steps)]
        field = options.get("field") or dataset.fields[0]
        if field not in dataset.fields:
            raise DataError(f"no field '{field}' to draw; the data has {dataset.fields}")
        summary = {"trajectory": i, "start_frame": start, "steps": steps, "field": field,
                   "rel_l2_per_step": per_step, "rollout_rel_l2": float(np.mean(per_step))}
        if save:
            c = dataset.fields.index(field)
            _animate(truth[:, c].numpy(), preds[:, c].numpy(), per_step, start, field, Path(save),
                     title=f"{type(model).__name__} rollout on {dataset.source}")
        return summary

    def data_config(self, model):
        return {"fields": list(model.fields), "time_history": int(model.time_history),
                "grid": model.native_grid, "layout": "(batch, time_history, fields, H, W) frames in physical units"}

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 2)
        n = options.get("resolution")
        return tuple(model.example_input(b, int(n) if n else None))


def _animate(truth: np.ndarray, pred: np.ndarray, per_step: list[float], start: int, field: str, save: Path,
             title: str) -> None:
    """truth | prediction | error over the rollout, as a GIF (or the last frame as PNG/JPG/PDF)."""
    plt = pyplot()

    err = pred - truth
    vmax = float(max(np.abs(truth).max(), np.abs(pred).max())) or 1.0
    emax = float(np.abs(err).max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    ims = [axes[0].imshow(truth[0], cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower"),
           axes[1].imshow(pred[0], cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower"),
           axes[2].imshow(err[0], cmap="PiYG", vmin=-emax, vmax=emax, origin="lower")]
    for ax, im, name in zip(axes, ims, ("truth", "prediction", "error")):
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    head = fig.suptitle("")

    def show(k):
        ims[0].set_data(truth[k])
        ims[1].set_data(pred[k])
        ims[2].set_data(err[k])
        head.set_text(f"{title}\nfield {field}, frame {start + k} (step {k + 1}/{len(per_step)}), "
                      f"rel. L2 {per_step[k]:.2%}")
        return ims

    if save.suffix.lower() != ".gif":
        show(len(per_step) - 1)
        save_figure(fig, save)
        return

    def write_gif(tmp: Path) -> None:
        from PIL import Image
        frames = []
        for k in range(len(per_step)):
            show(k)
            fig.canvas.draw()
            frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB"))
        # 2 frames per second, looping; the format is named because the temp file has no .gif suffix
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=500, loop=0)

    try:
        atomic_write(save, write_gif)
    finally:
        plt.close(fig)
