"""Time-dependent operators: predict the next frame of a PDE's fields from the last few frames,
and roll that one-step model out autoregressively.

Models of this kind expose `step(history) -> next frame` with history (B, T, C, H, W) and the
next frame (B, C, H, W), plus `time_history`, `fields` and `example_input(batch, resolution)`;
an optional `loss(pred, target) -> (loss, logs)` is the paper's training loss (else relative L2).

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

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError, UnknownNameError
from zoo.tasks.base import Task


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


class RolloutTask(Task):
    name = "pde-rollout"
    datasets = {
        "navier-stokes": "2-D incompressible NS vorticity, FNO recipe (nu=1e-3), 64x64, 21 frames (t=0..20); "
                         "generated (256 train / 32 val / 32 test trajectories); or --data a PDEArena/PDEBench "
                         ".h5 or Poseidon .nc file",
    }
    default_batch_size = 16
    default_lr = 1e-3
    default_steps = 2000
    main_metric = "rollout_rel_l2"

    # ---- data ---------------------------------------------------------------------------------
    @staticmethod
    def _fields(model_config: dict):
        fields = model_config.get("fields")
        return list(fields) if isinstance(fields, (list, tuple)) else None

    def load_dataset(self, dataset, split, data_path, model_config, options):
        from zoo.data import navier_stokes as ns

        fields = self._fields(model_config)
        history = int(model_config.get("time_history", 1))
        if data_path:
            traj = ns.read_file(data_path, split=split, fields=fields, limit=options.get("limit"),
                                transpose=bool(options.get("transpose", False)))
        elif dataset == "navier-stokes":
            params = {k: options[k] for k in ("resolution", "frames", "dt", "nu", "record_every") if k in options}
            traj = ns.load_generated(split, seed=int(options.get("data_seed", 0)), size=options.get("size"),
                                     fields=fields, **params)
        elif dataset is None:
            raise DataError("give --dataset navier-stokes or --data PATH")
        else:
            raise UnknownNameError("dataset for the pde-rollout task", dataset, self.datasets)
        ns.check_frames(traj)
        self._check_resolution(traj, model_config)
        frames = torch.from_numpy(np.ascontiguousarray(traj.frames))
        return RolloutDataset(frames, history, traj.fields, traj.source, options.get("start"),
                              {"resolution": int(frames.shape[-1]), **traj.info})

    @staticmethod
    def _check_resolution(traj, model_config: dict) -> None:
        n = traj.frames.shape[-1]
        trained = model_config.get("resolution")
        if trained is not None and int(trained) != n:
            raise DataError(f"{traj.source}: the grid is {n}x{n}, this model was trained at {trained}x{trained} "
                            f"and is not resolution-invariant; resample the data or use a checkpoint made at {n}")
        if "image_size" in model_config:   # DRIFT-Net: resamples spectrally to its own grid
            if n % 2:
                raise DataError(f"{traj.source}: the grid is {n}x{n}; spectral resampling needs an even size")
        elif n % 16:                          # SineNet: four 2x poolings
            raise DataError(f"{traj.source}: the grid is {n}x{n}; SineNet's four 2x poolings need a multiple of 16")

    # ---- training -----------------------------------------------------------------------------
    def prepare(self, model, dataset, options):
        """Fit the per-field standardisation on the training trajectories (models built without it)."""
        if options.get("pretrained") or not getattr(model, "stats_from_data", False):
            return
        fr = dataset.frames
        mean = fr.mean(dim=(0, 1, 3, 4))
        std = fr.std(dim=(0, 1, 3, 4)).clamp_min(1e-6)
        with torch.no_grad():
            model.field_mean.copy_(mean.reshape(model.field_mean.shape))
            model.field_std.copy_(std.reshape(model.field_std.shape))

    def loss(self, model, batch):
        pred = model.step(batch["history"])
        if hasattr(model, "loss"):
            return model.loss(pred, batch["target"])
        loss = _rel_l2(pred, batch["target"]).mean()
        return loss, {"rel_l2": float(loss.detach())}

    def example_batch(self, model, model_config, options):
        b = int(options.get("batch_size") or 2)
        n = int(options.get("resolution") or options.get("imgsz") or model_config.get("resolution")
                or model_config.get("image_size") or 64)
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
        asked = options.get("steps") or options.get("rollout_steps")
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
        bs = int(options.get("batch_size") or 16)
        t = frames.shape[1]
        one_l2, one_l1, roll_l2, roll_l1 = [], [], [], []
        for lo in range(0, frames.shape[0], bs):
            chunk = frames[lo:lo + bs]
            for j in range(start, t):
                pred = model.step(chunk[:, j - model.time_history:j])
                one_l2.append(_rel_l2(pred, chunk[:, j]).mean(dim=1))
                one_l1.append(_rel_l1(pred, chunk[:, j]))
            preds = self._rollout(model, chunk, start, steps)
            truth = chunk[:, start:start + steps]
            roll_l2.append(torch.stack([_rel_l2(preds[:, k], truth[:, k]).mean(dim=1) for k in range(steps)], 1))
            roll_l1.append(torch.stack([_rel_l1(preds[:, k], truth[:, k]) for k in range(steps)], 1))
        one_l2_all, one_l1_all = torch.cat(one_l2), torch.cat(one_l1)
        per_step_l2 = torch.cat(roll_l2).mean(0)
        per_step_l1 = torch.cat(roll_l1).mean(0)
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
            cfg = {"fields": list(model.fields), "time_history": model.time_history}
            for key in ("image_size", "resolution"):
                if getattr(model, key, None):
                    cfg[key] = getattr(model, key)
            dataset = self.load_dataset(None, options.get("split", "test"), input, cfg, options)
        if dataset is None:
            raise DataError("predict needs trajectories: give --dataset navier-stokes, --data PATH or a file as INPUT")
        model.eval()
        i = int(options.get("index", 0))
        if not 0 <= i < dataset.frames.shape[0]:
            raise DataError(f"trajectory index {i} is out of range (the data has {dataset.frames.shape[0]})")
        start, steps = self._steps(dataset, options)
        traj = dataset.frames[i:i + 1]
        preds = self._rollout(model, traj, start, steps)[0]
        truth = traj[0, start:start + steps]
        per_step = [float(_rel_l2(preds[k:k + 1], truth[k:k + 1]).mean()) for k in range(steps)]
        field = options.get("field", dataset.fields[0])
        if field not in dataset.fields:
            raise DataError(f"no field '{field}' to draw; the data has {dataset.fields}")
        summary = {"trajectory": i, "start_frame": start, "steps": steps, "field": field,
                   "rel_l2_per_step": per_step, "rollout_rel_l2": float(np.mean(per_step))}
        if save:
            c = dataset.fields.index(field)
            _animate(truth[:, c].numpy(), preds[:, c].numpy(), per_step, start, field, Path(save),
                     title=f"{type(model).__name__} rollout on {dataset.source}")
        return summary

    def example_input(self, model, model_config, options):
        b = int(options.get("batch_size") or 2)
        n = options.get("resolution") or options.get("imgsz")
        return tuple(model.example_input(b, int(n) if n else None))


def _animate(truth: np.ndarray, pred: np.ndarray, per_step: list[float], start: int, field: str, save: Path,
             title: str) -> None:
    """truth | prediction | error over the rollout, as a GIF (or the last frame as PNG/JPG/PDF)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

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

    save.parent.mkdir(parents=True, exist_ok=True)
    tmp = save.with_name(f".{save.stem}.tmp{save.suffix}")
    try:
        if save.suffix.lower() == ".gif":
            anim = FuncAnimation(fig, show, frames=len(per_step), blit=False)
            anim.save(str(tmp), writer=PillowWriter(fps=2))
        else:
            show(len(per_step) - 1)
            fig.savefig(tmp, dpi=110)
        tmp.replace(save)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
