"""`zoo finetune`: validate the request, then run the one training loop (in this process, or under
torch.distributed.run with `nproc_per_node` processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from zoo.options import Options


class FinetuneOptions(Options):
    weight_decay: float = Field(1e-4, description="AdamW weight decay")
    warmup: int = Field(0, description="linear warm-up steps before the cosine schedule")
    grad_clip: Optional[float] = Field(None, description="clip the gradient norm to this value")
    fused: Optional[bool] = Field(None, description="AdamW's fused kernel (one pass over all parameters, CPU or "
                                                    "CUDA): true/false; default: torch's choice")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16, or fp16 with a loss scaler)")
    config: Optional[dict[str, Any]] = Field(None, description="builder arguments to override (your own data)")
    overwrite: bool = Field(False, description="start over in an --out that already holds a run")
    no_eval: bool = Field(False, description="skip the test-split evaluation at the end")
    eval_every: int = Field(0, ge=0, description="evaluate on the test split every N steps: a learning curve "
                                                 "in curve.json and curve.png beside the checkpoint (0: off)")
    curve_train: bool = Field(False, description="with eval_every: also measure the training split (no "
                                                 "augmentation) at each point, to see over-fitting")
    tag: Optional[str] = Field(None, description="checkpoint tag written to config.json (default: the dataset)")
    license: str = Field("MIT", description="licence of the weights written to the model card")
    dtype: Optional[str] = Field(None, description="store weights as float16 to halve the file")


RUNS = Path("runs") / "finetune"


def next_run_dir(name: str, root: Path = RUNS) -> Path:
    """`runs/finetune/<name>-N` with the first free N, created here."""
    from zoo._io import next_numbered_dir
    return next_numbered_dir(root, Path(name).name if ("/" in name or name.startswith(".")) else name)


def default_pretrained(name: str, dataset: str | None, data: str | None = None) -> tuple[bool, str | None]:
    """Start from the checkpoint when the model has one for this dataset (timm/ultralytics start
    from weights too); otherwise random init, with the one-line reason."""
    import zoo.registry as reg
    from zoo.loading import is_checkpoint_dir

    if is_checkpoint_dir(name):
        return True, None
    mname, entry, tag = reg.resolve(name, dataset)
    if data is not None and dataset is None and "." not in name:
        return False, f"--data without --dataset: training {mname} from random init (--pretrained to start from its checkpoint)"
    if tag is not None and (dataset is None or "." in name or entry.checkpoints[tag].dataset == dataset):
        return True, None
    return False, (f"{mname} has no checkpoint" + (f" for dataset '{dataset}'" if dataset else "")
                   + "; training from random init (--scratch)")


def _check_numbers(*, lr, seed, **counts) -> None:
    """Counts are positive integers, the learning rate a positive finite number, the seed fits a
    64-bit generator: anything else is one line before any work."""
    import math

    from zoo.errors import ConfigError
    for key, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"--{key.replace('_', '-')} must be a whole number of at least 1, not {value}")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive finite number, not {lr}")
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be a whole number in [0, 2^63), not {seed}")


def _check_curve_options(opts: dict) -> None:
    """A learning curve needs evaluations, and its training column needs the curve: a combination
    that would silently do less than asked is one line instead."""
    from zoo.errors import ConfigError
    if opts.get("eval_every") and opts.get("no_eval"):
        raise ConfigError("-o eval_every needs the evaluations that -o no_eval=true turns off; drop one of them")
    if opts.get("curve_train") and not opts.get("eval_every"):
        raise ConfigError("-o curve_train=true measures the training split at each point of the learning curve; "
                          "add -o eval_every=N")


def finetune(name: str, *, dataset: str | None = None, out: str | Path | None = None, data: str | None = None,
             steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
             lr: float | None = None, seed: int = 0, resume: bool = False, nproc_per_node: int = 1,
             save_every: int | None = None, pretrained: bool | None = None, hub: str | None = None,
             progress: bool = True, device: str | None = None, accumulate: int = 1,
             launch: dict | None = None, options: dict | None = None) -> dict:
    """Train `name` into the run folder `out`. `launch` joins torchrun's rendezvous past one machine
    (nnodes, node_rank, master_addr, master_port, rdzv_endpoint, rdzv_backend, rdzv_id) and sets
    `max_restarts` (a restarted worker group resumes from the run's last saved state)."""
    from zoo.loading import resolve_device
    from zoo.options import combine, validate
    import zoo.registry as reg
    from zoo.tasks import get_task

    from zoo.loading import is_checkpoint_dir
    if is_checkpoint_dir(name):
        from zoo.checkpoint import read_config
        meta = read_config(name)
        task_name = meta.get("task") or reg.load_registry().models[meta["model"]].task
    else:
        _, entry, _ = reg.resolve(name, dataset)
        task_name = entry.task
    schema = combine(get_task(task_name).Options, FinetuneOptions, name="finetune-options")
    opts = validate(options, schema, f"`zoo finetune` of {task_name} models")
    _check_numbers(steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, accumulate=accumulate,
                   save_every=save_every, nproc_per_node=nproc_per_node)
    _check_curve_options(opts)
    dev = resolve_device(device)   # an unavailable device fails here, before any data work
    from zoo.training.distributed import Launch
    rendezvous = Launch.of(**(launch or {}))
    if rendezvous.multi_node and out is None:
        from zoo.errors import ConfigError
        raise ConfigError(f"--nnodes {rendezvous.nnodes} needs --out: the run folder every node names "
                          f"(node 0 writes it)")
    notes = []
    if pretrained is None:
        pretrained, note = default_pretrained(name, dataset, data)
        if note:   # reported with the result: a bad request stays a one-line error
            notes.append(note)
    if out is None:
        if resume:
            from zoo.errors import ConfigError
            raise ConfigError("--resume needs --out: the run folder to continue")
        out = next_run_dir(name)
    args = dict(name=name, dataset=dataset, out=str(out), data=data, steps=steps, epochs=epochs,
                batch_size=batch_size, lr=lr, seed=seed, resume=resume, save_every=save_every,
                pretrained=pretrained, hub=hub, progress=progress, device=str(dev) if device else None,
                accumulate=accumulate, options=opts)
    import time

    from zoo.training import loop
    t0 = time.perf_counter()
    distributed = nproc_per_node > 1 or rendezvous.needed
    res = loop.launch_distributed(args, nproc_per_node, rendezvous) if distributed else loop.run(args)
    _record_provenance(Path(out), args, dev, nproc_per_node, time.perf_counter() - t0)
    notes = list(res.get("notes") or []) + notes
    return {**res, "pretrained": pretrained, **({"notes": notes} if notes else {})}


def _data_identity(dataset: str | None, data: str | None, seed: int) -> dict:
    """What the run trained on: the built-in set's name (its reader pins its files), or the user's
    file(s) by sha256; the seed that orders the batches and draws the generated sets."""
    from zoo._io import sha256_file
    ident: dict[str, Any] = {"dataset": dataset, "seed": seed}
    if data:
        ident["data"] = data
        path = Path(data)
        files = [path] if path.is_file() else (sorted(f for f in path.rglob("*") if f.is_file())[:50]
                                               if path.is_dir() else [])
        if files:
            ident["files"] = {str(f.relative_to(path) if f != path else f.name): sha256_file(f) for f in files}
    return {k: v for k, v in ident.items() if v is not None}


def _record_provenance(out: Path, args: dict, dev, nproc: int, seconds: float) -> None:
    """Wall time, device and data identity join the provenance the checkpoint recorded when it was
    written (version, commit, CPU, threads); the model card shows them all."""
    from zoo.checkpoint import CONFIG, add_provenance, read_config
    if not (out / CONFIG).is_file():
        return
    meta = read_config(out)
    data = _data_identity(args.get("dataset"), args.get("data"), args.get("seed", 0))
    if meta.get("eval_data"):
        data["eval"] = meta["eval_data"]
    add_provenance(out, {"wall_seconds": round(seconds, 1), "data": data,
                         "hardware": {"device": str(dev), "processes": nproc},
                         "eval": {"dataset": meta.get("dataset"), "split": "test"}})
