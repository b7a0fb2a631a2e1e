"""The one fine-tune loop for every task.

Seeded and resumable: the batch order is a pure function of (seed, epoch), and model, optimizer,
scheduler and RNG states are saved atomically every `save_every` steps to `<out>/.train/state.pt`,
so `--resume` after a kill ends exactly where an uninterrupted run ends. Past one process it runs
under torch.distributed.run (DDP; gloo on CPU, nccl on GPU), on one machine or several joined by
torchrun's rendezvous (zoo.training.distributed); only rank 0 writes. Workers that torchrun restarts
(`--max-restarts`) resume from the last state this run saved. The result is a checkpoint folder
(config.json + model.safetensors + README.md) that eval, export and push accept.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zoo._io import atomic_torch_save

STATE = Path(".train") / "state.pt"


def _dist(use_cuda: bool):
    """(rank, world). nccl only when the processes really run on CUDA; gloo otherwise."""
    import torch.distributed as dist
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        restart = _restarts()
        if not restart:
            dist.init_process_group(backend)
        else:
            # a restarted group may be handed the failed attempt's store, whose keys still point
            # at the dead workers' sockets (gloo then fails with "connection refused"): keep each
            # attempt's keys apart
            from datetime import timedelta
            rank = int(os.environ["RANK"])
            agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                  is_master=rank == 0 and not agent, timeout=timedelta(minutes=10),
                                  multi_tenant=True)
            dist.init_process_group(backend, store=dist.PrefixStore(f"zoo/attempt-{restart}", store),
                                    rank=rank, world_size=world)
    rank = dist.get_rank() if world > 1 else 0
    return rank, world


def _amp(device, options: dict):
    """(autocast context factory, GradScaler or None). AMP only on CUDA: bf16 where the GPU has it,
    else fp16 with a loss scaler; `-o amp=false` turns it off."""
    import contextlib

    import torch
    if device.type != "cuda" or options.get("amp") is False:
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def _batches(n: int, batch: int, seed: int, epoch: int, rank: int, world: int):
    """Index batches of one epoch: a permutation fixed by (seed, epoch), sharded over ranks."""
    import torch
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_step = batch * world
    steps = max(1, n // per_step) if n >= per_step else 1
    for s in range(steps):
        chunk = perm[s * per_step:(s + 1) * per_step]
        yield chunk[rank::world].tolist()


def _micro_batches(n: int, batch: int, seed: int, rank: int, world: int, per_epoch: int, start: int):
    """Endless micro-batches from global micro-batch number `start` on; the order is a pure function
    of (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would."""
    m = start
    while True:
        epoch, offset = divmod(m, per_epoch)
        for i, idx in enumerate(_batches(n, batch, seed, epoch, rank, world)):
            if i >= offset:
                yield idx
                m += 1


def command_line(args: dict) -> str:
    """The exact `zoo finetune` command that reproduces this run (stored with the weights)."""
    parts = ["zoo", "finetune", args["name"]]
    for key in ("dataset", "data", "steps", "epochs", "batch_size", "accumulate", "lr", "seed"):
        if args.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(args[key])]
    # always explicit: `zoo finetune` starts from the checkpoint by default when one exists
    parts.append("--pretrained" if args.get("pretrained") else "--scratch")
    for k, v in sorted(args.get("options", {}).items()):
        if k in ("json",):
            continue
        parts += ["-o", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    parts += ["--out", args["out"]]
    return shlex.join(parts)


LOCKED_ENV = "ZOO_RUN_LOCKED"   # set by launch_distributed, which holds the lock for its workers


def _model_of(args: dict) -> str:
    """The model a run trains, found without building anything (a registry look-up, or the
    config.json of a checkpoint folder given as NAME)."""
    import zoo.registry as registry
    from zoo.loading import is_checkpoint_dir

    if is_checkpoint_dir(args["name"]):
        from zoo.checkpoint import read_config
        return read_config(args["name"])["model"]
    return registry.resolve(args["name"], args.get("dataset"))[0]


def _check_out(args: dict) -> None:
    """Every check of the run folder, done before any model build or data preparation: not a
    user's folder, not a finished run unless resumed or overwritten, something to resume."""
    from zoo.checkpoint import check_out_folder
    from zoo.errors import CheckpointError

    out = Path(args["out"])
    options = args.get("options") or {}
    check_out_folder(out, _model_of(args))
    state_path = out / STATE
    if args.get("resume") and not state_path.is_file():
        raise CheckpointError(f"nothing to resume in {out}: no training state ({STATE}) there")
    if not args.get("resume") and not options.get("overwrite"):
        if state_path.is_file():
            raise CheckpointError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        if (out / "config.json").is_file():
            raise CheckpointError(f"{out} already holds a checkpoint; pass -o overwrite=true to replace it, "
                                  f"or choose another --out")


def _restarts() -> int:
    """How often torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def run(args: dict) -> dict:
    """Check the run folder and hold its lock (unless a launcher already does), then train."""
    from zoo.checkpoint import run_lock

    out = str(Path(args["out"]).absolute())
    # ranks other than 0 never write (rank 0 of an elastic multi-node job checks and locks here:
    # no launcher knew it would be the one)
    if os.environ.get(LOCKED_ENV) == out or int(os.environ.get("RANK", "0")) != 0:
        return _run(args)
    # a restarted rank 0 continues its own run's state; any other folder is checked as new
    ours = bool(_restarts()) and _state_of_run(Path(out) / STATE, args.get("run_id"))
    if not ours:
        _check_out(args)
    with run_lock(out):
        if not ours:
            _check_out(args)   # again under the lock: another run may have written meanwhile
        return _run(args)


def _prepare(args: dict, device, options: dict):
    """Build the model (from its checkpoint or random init, seeded) and its training set."""
    import torch

    from zoo.errors import ConfigError, DataError
    from zoo.loading import dataset_for, load

    seed = int(args.get("seed") or 0)
    torch.manual_seed(seed)
    pretrained = bool(args.get("pretrained"))
    overrides = options.get("config") or None  # `-o config='{"num_classes": 3}'` for a user's own data
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError("-o config=... must be a JSON object of builder arguments")
    loaded = load(args["name"], pretrained=pretrained, dataset=args.get("dataset"), hub=args.get("hub"),
                  require_weights=pretrained, overrides=overrides, device=device)
    torch.manual_seed(seed)  # the same init whatever happened while loading
    options["pretrained"] = pretrained
    train_set, dataset_name = dataset_for(loaded, args.get("dataset") or loaded.dataset, args.get("data"),
                                          "train", options)
    if len(train_set) == 0:
        raise DataError("the training set is empty")
    if not args.get("resume"):
        loaded.task.prepare(loaded.model, train_set, options)
    return loaded, train_set, dataset_name


@dataclass
class _Schedule:
    """How many samples, micro-batches and steps: a pure function of the request and the set size."""
    batch: int
    accumulate: int
    per_rank: int
    micro_per_epoch: int
    total: int
    save_every: int
    lr: float

    @classmethod
    def of(cls, args: dict, task, n: int, world: int) -> "_Schedule":
        batch = int(args.get("batch_size") or task.default_batch_size)
        accumulate = max(1, int(args.get("accumulate") or 1))
        per_rank = max(1, batch // world)
        micro_per_epoch = max(1, n // (per_rank * world)) if n >= per_rank * world else 1
        steps_per_epoch = max(1, micro_per_epoch // accumulate)
        total = int(args["steps"]) if args.get("steps") else (
            int(args["epochs"]) * steps_per_epoch if args.get("epochs") else task.default_steps)
        save_every = int(args.get("save_every") or max(1, min(500, total // 10 or 1)))
        return cls(batch, accumulate, per_rank, micro_per_epoch, total, save_every,
                   float(args.get("lr") or task.default_lr))


def _optimiser(module, options: dict, plan: _Schedule):
    """AdamW over the module's parameter groups, linear warm-up then cosine to zero."""
    import torch

    lr = plan.lr
    groups = module.param_groups(lr) if hasattr(module, "param_groups") else [
        {"params": [p for p in module.parameters() if p.requires_grad]}]
    fused = options.get("fused")   # None: torch's default implementation
    try:
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=float(options.get("weight_decay", 1e-4)), fused=fused)
    except RuntimeError as exc:   # e.g. parameters on a device or of a dtype the fused kernel lacks
        from zoo.errors import ConfigError
        raise ConfigError(f"-o fused=true: {str(exc).splitlines()[0]}") from None
    warmup = int(options.get("warmup", 0))

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, plan.total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


class _Stepper:
    """One optimiser step: `accumulate` micro-batches forward/backward (AMP on CUDA), gradient
    all-reduce for methods that run their own backward, clipping, the step and the schedule."""

    def __init__(self, module, opt, sched, task, train_set, device, plan: _Schedule, options: dict, world: int):
        self.module, self.opt, self.sched, self.task = module, opt, sched, task
        self.train_set, self.device, self.plan, self.world = train_set, device, plan, world
        self.clip = options.get("grad_clip")
        self.runs_backward = bool(getattr(module, "runs_backward", False))
        self.wrapped = module
        if world > 1 and not self.runs_backward:
            from torch.nn.parallel import DistributedDataParallel
            self.wrapped = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        self.autocast, self.scaler = _amp(device, options)

    def __call__(self, micro) -> float:
        import torch
        from torch.utils.data import Subset

        from zoo.tasks.base import to_device

        opt, scaler, accumulate = self.opt, self.scaler, self.plan.accumulate
        opt.zero_grad(set_to_none=True)
        for _ in range(accumulate):
            idx = next(micro)
            take = getattr(self.train_set, "take", None)   # a set that gathers a whole batch at once
            if callable(take):
                batch = to_device(take(idx), self.device)
            else:
                items = Subset(self.train_set, idx)
                batch = to_device(self.task.collate([items[j] for j in range(len(idx))]), self.device)
            with self.autocast():
                loss, _ = self.wrapped(batch)
            if not self.runs_backward:
                scaled = loss / accumulate
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if self.world > 1 and self.runs_backward:
            _allreduce_grads(self.module, self.world)
        if scaler is not None:
            scaler.unscale_(opt)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), float(self.clip))
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self.sched.step()
        return float(loss.detach())

    def healthy(self, loss: float) -> bool:
        """Finite loss and finite weights after the step, agreed by every rank (so all stop
        together). Under fp16 loss scaling an inf loss is the scaler's business, not ours."""
        import torch
        ok = math.isfinite(loss) or self.scaler is not None
        params = [p.detach() for p in self.module.parameters() if p.is_floating_point()]
        if ok and params:
            ok = bool(torch.stack([torch.isfinite(p).all() for p in params]).all())
        if self.world > 1:
            import torch.distributed as dist
            flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = bool(flag.item() > 0)
        return ok


def _run(args: dict) -> dict:
    import torch

    from zoo.loading import resolve_device

    device = resolve_device(args.get("device"))
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world = _dist(device.type == "cuda")
    out = Path(args["out"])
    state_path = out / STATE
    options = dict(args.get("options") or {})
    seed = int(args.get("seed") or 0)
    restarts = _restarts()
    if restarts and not args.get("resume"):
        # a worker died and torchrun restarted the group: continue from this run's last state
        args = {**args, "resume": _agreed(rank == 0 and _state_of_run(state_path, args.get("run_id")), world)}

    loaded, train_set, dataset_name = _prepare(args, device, options)
    task, model = loaded.task, loaded.model
    plan = _Schedule.of(args, task, len(train_set), world)
    module = task.training_module(model, options)
    opt, sched = _optimiser(module, options, plan)
    step, history, curve = 0, [], []
    started_at = None
    if args.get("resume"):
        st = _read_state(state_path, loaded, rank, world)
        try:
            module.load_state_dict(st["module"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            torch.set_rng_state(st["rng"].cpu())
            step, history = int(st["step"]), list(st["history"])
            curve = list(st.get("curve") or [])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            from zoo.errors import CheckpointError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{state_path} does not fit {loaded.name} with this config "
                                  f"({first[:200]}); resume with the run's own model and options") from None
        plan.total = max(plan.total, step)
        started_at = step
    stepper = _Stepper(module, opt, sched, task, train_set, device, plan, options, world)

    saved = [step if args.get("resume") else None]   # the step of the state on disk

    def save_state():
        saved[0] = step
        if rank == 0:
            atomic_torch_save({"module": module.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                               "step": step, "history": history, "model": loaded.name,
                               "config": _config_key(loaded.config), "run_id": args.get("run_id"),
                               "curve": curve}, state_path)

    eval_every = int(options.get("eval_every") or 0)
    curve_set = _test_set(args, loaded, dataset_name, options) if eval_every and rank == 0 else None
    # the training split without augmentation beside it: the gap between the two is over-fitting
    curve_train = (_test_set(args, loaded, dataset_name, {**options, "augment": False}, split="train")
                   if curve_set is not None and options.get("curve_train") else None)

    def curve_point(final: dict | None = None) -> dict:
        point = {"step": step, "loss": last_loss}
        point.update(_numbers(final) if final is not None else
                     _evaluate_between_steps(loaded, module, model, curve_set, options))
        if curve_train is not None:
            point.update({f"train_{k}": v for k, v in
                          _evaluate_between_steps(loaded, module, model, curve_train, options).items()})
        return point

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    show = bool(args.get("progress", True)) and rank == 0
    t0, t_steps0 = time.perf_counter(), step
    module.train()
    last_loss = history[-1][1] if history else float("nan")
    with Progress(TextColumn("[bold]finetune[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), disable=not show,
                  transient=False) as bar:
        job = bar.add_task(f"{loaded.name} on {dataset_name}", total=plan.total, completed=step, loss="-")
        micro = _micro_batches(len(train_set), plan.per_rank, seed, rank, world, plan.micro_per_epoch,
                               start=step * plan.accumulate)
        while step < plan.total:
            last_loss = stepper(micro)
            if not stepper.healthy(last_loss):
                # the weights in memory are spoilt; the state on disk is the last good one
                from zoo.errors import ZooError
                kept = (f"the last good state (step {saved[0]}) is kept in {state_path}"
                        if saved[0] is not None else "no training state was saved")
                raise ZooError(f"training diverged at step {step + 1}: the loss or the weights became "
                               f"NaN/inf (loss {last_loss}); {kept}; try a smaller --lr or -o grad_clip=1")
            step += 1
            history.append([step, last_loss])
            bar.update(job, completed=step, loss=f"{last_loss:.3g}")
            if curve_set is not None and step % eval_every == 0 and step < plan.total:
                curve.append(curve_point())
            if step % plan.save_every == 0 or step == plan.total:
                save_state()
    elapsed = time.perf_counter() - t0
    if world > 1:
        # each rank's loss is of its own shard: report the mean over ranks, the global batch's loss
        import torch.distributed as dist
        mean = torch.tensor([float(last_loss)], dtype=torch.float64, device=device)
        dist.all_reduce(mean)
        last_loss = mean.item() / world

    summary = {"model": loaded.name, "dataset": dataset_name, "steps": step, "final_loss": last_loss,
               "steps_per_s": (step - t_steps0) / elapsed if elapsed > 0 else float("nan"),
               "world_size": world, "out": str(out), "rank": rank,
               **({"restarts": restarts} if restarts else {}),
               **({"resumed_from_step": started_at} if started_at is not None else {})}
    if rank != 0:
        summary["notes"] = [f"this node's first worker is rank {rank}; the node of rank 0 writes the checkpoint"]
    if rank == 0:
        final_model = module.model if hasattr(module, "model") else model
        train = {"steps": step, "final_loss": last_loss, "seed": seed, "batch_size": plan.batch, "lr": plan.lr,
                 "world_size": world}
        summary["metrics"] = _finish(args, loaded, final_model, dataset_name, options, train)
        if curve_set is not None:
            # the last point is the final evaluation itself (the same weights, evaluated once)
            curve.append(curve_point(summary["metrics"]))
            summary["curve"] = _write_curve(out, curve, history, loaded.name, dataset_name)
        save_state()   # the training state stays beside the checkpoint for --resume
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _config_key(config) -> str:
    """The builder config as one comparable string (a resumed run must use the same one)."""
    return json.dumps(config, sort_keys=True, default=str)


def _state_of_run(path: Path, run_id: str | None) -> bool:
    """Whether `path` holds a readable state saved by the run `run_id` (not an older run's)."""
    import torch
    if run_id is None or not path.is_file():
        return False
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(st, dict) and st.get("run_id") == run_id


def _agreed(value: bool, world: int) -> bool:
    """Rank 0's answer, on every rank."""
    if world == 1:
        return value
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _load_state_file(path: Path, loaded) -> tuple[dict | None, str | None]:
    """(state, None) or (None, why it cannot be resumed): unreadable or truncated, or written by a
    run of another model or config."""
    import torch
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated zip, not a torch file, unpickling refused: all one answer
        first = str(exc).strip().splitlines()[0].split(". ")[0][:120] if str(exc).strip() else type(exc).__name__
        return None, f"{path} is not a readable training state ({first}); it may be truncated"
    if not isinstance(st, dict) or not {"module", "optimizer", "scheduler", "rng", "step", "history"} <= set(st):
        return None, f"{path} is not a zoo training state (fields missing)"
    if st.get("model") is not None and st["model"] != loaded.name:
        return None, f"{path} is a run of {st['model']}, not {loaded.name}; resume it with that model"
    if st.get("config") is not None and st["config"] != _config_key(loaded.config):
        return None, (f"{path} was trained with another config of {loaded.name}; resume with the run's "
                      f"own -o config=... (or start a new --out)")
    return st, None


def _read_state(path: Path, loaded, rank: int, world: int) -> dict:
    """The state to resume from, read once on rank 0 and broadcast, so every rank starts from the
    same step (a worker reading a file that is being rewritten cannot disagree)."""
    from zoo.errors import CheckpointError
    if world == 1:
        st, why = _load_state_file(path, loaded)
    else:
        import torch.distributed as dist
        box = [_load_state_file(path, loaded) if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        st, why = box[0]
    if why:
        raise CheckpointError(why)
    return st


def _finish(args: dict, loaded, model, dataset_name, options: dict, train: dict) -> dict:
    """Evaluate on the test split (a failure is recorded, the weights are kept) and write the
    checkpoint folder. Returns the metrics."""
    import torch

    from zoo.checkpoint import save_checkpoint

    model.eval()
    metrics, eval_data = {}, None
    if not options.get("no_eval"):
        try:
            test_set = _test_set(args, loaded, dataset_name, options)
            with torch.inference_mode():
                metrics = loaded.task.evaluate(model, test_set, options)
            eval_data = f"{dataset_name or args.get('data')} {getattr(test_set, 'split', 'test')} split"
        except Exception as exc:  # the weights are still worth keeping; say why eval was skipped
            metrics, eval_data = {}, f"not evaluated: {exc}"
    meta = {"model": loaded.name, "tag": options.get("tag") or dataset_name, "task": loaded.task_name,
            "dataset": dataset_name, "config": loaded.config, "metrics": metrics, "eval_data": eval_data,
            "command": command_line(args), "license": options.get("license", "MIT"), "train": train}
    save_checkpoint(Path(args["out"]), model, meta, dtype=options.get("dtype"))
    return metrics


def _test_set(args: dict, loaded, dataset_name, options: dict, split: str = "test"):
    """The run's own data for `split` (the final evaluation and the learning curve read the same set)."""
    from zoo.loading import dataset_for
    return dataset_for(loaded, dataset_name, args.get("data"), split, options)[0]


def _evaluate_between_steps(loaded, module, model, test_set, options: dict) -> dict:
    """The test metrics of the weights as they are now; training resumes exactly as if nothing had
    run (train mode and the RNG state are restored, so a curve never changes the weights)."""
    import torch
    net = module.model if hasattr(module, "model") else model
    rng = torch.get_rng_state()
    net.eval()
    try:
        with torch.inference_mode():
            metrics = loaded.task.evaluate(net, test_set, options)
    finally:
        module.train()
        torch.set_rng_state(rng)
    return _numbers(metrics)


_COUNTS = {"samples", "images", "detections", "nodes", "edges"}   # sizes of the eval, not scores


def _numbers(metrics: dict) -> dict:
    """The scalar metrics of an evaluation, without its counts."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k not in _COUNTS}


def _write_curve(out: Path, curve: list, history: list, name: str, dataset_name) -> str:
    """curve.json (every evaluation) and curve.png (training loss, and each test metric, by step)."""
    from zoo._io import atomic_write_text, pyplot, save_figure
    from zoo.checkpoint import CURVE, CURVE_PLOT

    atomic_write_text(out / CURVE, json.dumps({"model": name, "dataset": dataset_name,
                                                      "points": curve}, indent=1))
    keys = [k for k in curve[0] if k not in ("step", "loss") and not k.startswith("train_")]
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4 * (1 + len(keys)), 3.2), squeeze=False)
    axes = axes[0]
    axes[0].plot([h[0] for h in history], [h[1] for h in history], lw=0.8)
    axes[0].set(title="training loss", xlabel="step", yscale="log" if all(h[1] > 0 for h in history) else "linear")
    for ax, k in zip(axes[1:], keys):
        ax.plot([p["step"] for p in curve], [p[k] for p in curve], marker="o", ms=3, label="test")
        if f"train_{k}" in curve[0]:
            ax.plot([p["step"] for p in curve], [p[f"train_{k}"] for p in curve], marker="s", ms=3, label="train")
            ax.legend(fontsize=7)
        ax.set(title=k, xlabel="step")
    fig.suptitle(f"{name} on {dataset_name}")
    fig.tight_layout()
    save_figure(fig, out / CURVE_PLOT)
    return str(out / CURVE)


def _allreduce_grads(module, world: int) -> None:
    import torch.distributed as dist
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def launch_distributed(args: dict, nproc: int, launch=None) -> dict:
    """Re-run this loop under torch.distributed.run with `nproc` processes on this machine, joined
    to the other nodes by torchrun's rendezvous (`launch`, a distributed.Launch); returns this
    node's first worker's summary (rank 0's on the node that writes --out)."""
    import tempfile
    import uuid

    from zoo.checkpoint import run_lock
    from zoo.training.distributed import Launch

    launch = launch or Launch()
    out = Path(args["out"])
    # marks the states this run saves: a restarted worker resumes from them, never from an older run's
    args = {**args, "run_id": uuid.uuid4().hex}
    if not launch.writes:   # node 0 owns --out; this node's files live in a temporary folder
        with tempfile.TemporaryDirectory(prefix="zoo-finetune-") as tmp:
            return _launch(args, nproc, Path(tmp), launch, None)
    _check_out(args)
    with run_lock(out):   # held for the workers, which skip their own check (LOCKED_ENV)
        _check_out(args)
        return _launch(args, nproc, out / ".train", launch, out)


def _launch(args: dict, nproc: int, spec_dir: Path, launch, locked: Path | None) -> dict:
    from zoo.errors import ZooError
    from zoo.training.distributed import torchrun
    spec = spec_dir / "launch.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(args))
    summary_path = spec_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    env = {PARENT_ENV: str(os.getpid()), **({LOCKED_ENV: str(locked.absolute())} if locked else {})}
    torchrun(launch.flags(nproc), "zoo.training.loop", [str(spec), str(summary_path)], env,
             preexec_fn=_die_with_parent)
    if not summary_path.is_file():
        raise ZooError("distributed fine-tune failed: the workers ended without a summary")
    return json.loads(summary_path.read_text())


PARENT_ENV = "ZOO_PARENT_PID"   # the `zoo finetune` process whose workers these are


def _die_with_parent() -> None:
    """In the child, before exec (Linux): the kernel sends SIGKILL when the parent dies, so a
    kill -9 of `zoo finetune` takes torchrun with it. Elsewhere the workers' watchdog does it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _watch_parent() -> None:
    """A worker ends itself as soon as the `zoo finetune` process that launched it is gone, even
    when torchrun between them was killed too: nobody else then writes the run folder."""
    import threading
    parent = int(os.environ.get(PARENT_ENV) or 0)
    if not parent:
        return
    _die_with_parent()   # the worker's own parent (torchrun's agent)

    def watch():
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)   # atomic writes leave at most a temp file behind
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, name="zoo-parent-watchdog", daemon=True).start()


def _main(argv: list[str]) -> int:
    from zoo.errors import ZooError
    _watch_parent()
    spec, summary_path = Path(argv[0]), Path(argv[1])
    args = json.loads(spec.read_text())
    try:
        summary = run(args)
    except ZooError as err:
        print(f"zoo: {err}", file=sys.stderr)
        return err.exit_code
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:   # one summary per node
        from zoo._io import atomic_write_text
        atomic_write_text(summary_path, json.dumps(summary, default=str))
    return 0


def exit_worker(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown. gloo's threads can still hold
    work objects then, and freeing them after Python is gone aborts the process (SIGABRT,
    "terminate called without an active exception"). That turned a finished run into a failed
    one at random. Everything the worker writes is written and flushed before this."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_worker(_main(sys.argv[1:]))
