"""Does NOBLE reach the baseline's loss in fewer steps and less wall-clock? Measured here, in one run.

Trains `gpt-mini` (baseline) and `noble-gpt-mini` (the same model with a CosNet NOBLE branch on every
block projection) on the Shakespeare train split with the same seed, initial weights of the shared
parts drawn the same way, the same batches in the same order, AdamW + warm-up + cosine, and the
same evaluation windows of the validation plays. Training steps alternate between the two models
(and which goes first alternates every step), so both see the same machine load; step times are
medians of those interleaved measurements.

Reported:
* parameter overhead (%) of NOBLE;
* step-time overhead (%) = median NOBLE step / median baseline step - 1;
* the baseline's final eval loss, and the first evaluation step at which NOBLE's eval loss is at or
  below it (resolution: --eval-every), as a step speed-up (baseline steps / NOBLE steps);
* wall-clock speed-up = baseline training time for all its steps / NOBLE training time up to the
  step where it reaches that loss (evaluation time excluded for both).
The paper (arXiv 2603.06492) reports up to 1.47x fewer steps, +4 % parameters and +7 % step time at
best, up to 1.22x wall-clock, for LLMs of 250M and 1.5B on GPUs; this is a 1M-parameter
character model on a CPU, so expect different numbers -- the script reports whatever it measures.

    OMP_NUM_THREADS=1 python benchmarks/noble_speedup.py --steps 500 --json runs/noble_speedup.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default="gpt-mini")
    p.add_argument("--noble", default="noble-gpt-mini")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-windows", type=int, default=128, help="validation windows (128 chars each) per eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the full result (curves included) here")
    return p.parse_args(argv)


class Run:
    """One model under training: its optimizer, schedule, step times and eval curve."""

    def __init__(self, name: str, args, task):
        import torch

        import zoo

        torch.manual_seed(args.seed)
        self.name = name
        self.model = zoo.create_model(name)
        self.module = task.training_module(self.model, {})
        self.opt = torch.optim.AdamW(self.module.param_groups(args.lr), lr=args.lr, weight_decay=args.weight_decay)
        total, warmup = args.steps, args.warmup

        def lr_at(step):  # the same schedule as `zoo finetune`
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_at)
        self.step_times: list[float] = []
        self.curve: list[tuple[int, float]] = []
        self.params = sum(p.numel() for p in self.model.parameters())

    def train_step(self, batch, clip: float) -> float:
        import torch

        self.model.train()
        start = time.perf_counter()
        loss, _ = self.module(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()
        self.sched.step()
        self.step_times.append(time.perf_counter() - start)
        return float(loss.detach())

    def evaluate(self, step: int, task, windows) -> float:
        loss = task.evaluate(self.model, windows, {"batch_size": 64, "progress": False})["loss"]
        self.curve.append((step, loss))
        return loss


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    from torch.utils.data import Subset

    from zoo.tasks.language_model import LanguageModelTask

    torch.set_num_threads(args.threads)
    task = LanguageModelTask()
    runs = [Run(args.baseline, args, task), Run(args.noble, args, task)]
    train = task.load_dataset("shakespeare", "train", None, runs[0].model, {})
    val = task.load_dataset("shakespeare", "val", None, runs[0].model, {})
    stride = max(1, len(val) // args.eval_windows)
    val_windows = Subset(val, list(range(0, len(val), stride))[:args.eval_windows])

    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    per_epoch = len(train) // args.batch_size
    wall0 = time.perf_counter()
    for run in runs:
        run.evaluate(0, task, val_windows)
    for step in range(args.steps):
        epoch_step = step % per_epoch
        idx = order[epoch_step * args.batch_size:(epoch_step + 1) * args.batch_size].tolist()
        batch = task.collate([train[i] for i in idx])
        for run in (runs if step % 2 == 0 else runs[::-1]):
            run.train_step(batch, args.grad_clip)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            for run in runs:
                run.evaluate(step + 1, task, val_windows)
            base_loss, noble_loss = runs[0].curve[-1][1], runs[1].curve[-1][1]
            print(f"step {step + 1:5d}  eval loss  {args.baseline} {base_loss:.4f}  {args.noble} {noble_loss:.4f}"
                  f"  ({time.perf_counter() - wall0:.0f}s)", file=sys.stderr, flush=True)
    result = summarise(args, runs)
    result["total_wall_s"] = time.perf_counter() - wall0
    render(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def summarise(args, runs) -> dict:
    base, noble = runs
    target = base.curve[-1][1]
    reached = next(((s, loss) for s, loss in noble.curve if s > 0 and loss <= target), None)
    base_time = sum(base.step_times)
    med_base, med_noble = statistics.median(base.step_times), statistics.median(noble.step_times)
    out = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "params": {base.name: base.params, noble.name: noble.params,
                   "overhead_pct": 100 * (noble.params / base.params - 1)},
        "step_time_s": {base.name: med_base, noble.name: med_noble,
                        "overhead_pct": 100 * (med_noble / med_base - 1)},
        "baseline_final_eval_loss": target,
        "noble_final_eval_loss": noble.curve[-1][1],
        "curves": {base.name: base.curve, noble.name: noble.curve},
    }
    if reached is None:
        out.update(noble_steps_to_target=None, steps_speedup=None, wallclock_speedup=None)
    else:
        step = reached[0]
        noble_time = sum(noble.step_times[:step])
        out.update(noble_steps_to_target=step, baseline_steps=args.steps, steps_speedup=args.steps / step,
                   noble_wall_s_to_target=noble_time, baseline_wall_s=base_time,
                   wallclock_speedup=base_time / noble_time)
    return out


def render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    setup = result["setup"]
    base, noble = setup["baseline"], setup["noble"]
    table = Table(title=f"NOBLE speed-up, {setup['steps']} steps x batch {setup['batch_size']} x 128 chars, "
                        f"seed {setup['seed']} (measured here)")
    table.add_column("quantity")
    table.add_column("ours", justify="right")
    table.add_column("paper (best case)", justify="right")
    p, t = result["params"], result["step_time_s"]
    table.add_row("params", f"{p[base]:,} -> {p[noble]:,} (+{p['overhead_pct']:.1f} %)", "+4 %")
    table.add_row("median step time", f"{t[base] * 1e3:.1f} -> {t[noble] * 1e3:.1f} ms "
                  f"({t['overhead_pct']:+.1f} %)", "+7 %")
    table.add_row("baseline final eval loss", f"{result['baseline_final_eval_loss']:.4f}", "2.51 (1.5B)")
    table.add_row("NOBLE final eval loss", f"{result['noble_final_eval_loss']:.4f}", "-")
    if result["noble_steps_to_target"] is None:
        table.add_row("NOBLE steps to baseline loss", "not reached", "143-154k of 196k")
        table.add_row("step speed-up", "-", "1.47x")
        table.add_row("wall-clock speed-up", "-", "1.22x")
    else:
        table.add_row("NOBLE steps to baseline loss", f"{result['noble_steps_to_target']} of {setup['steps']}",
                      "143-154k of 196k")
        table.add_row("step speed-up", f"{result['steps_speedup']:.2f}x", "1.47x")
        table.add_row("wall-clock speed-up", f"{result['wallclock_speedup']:.2f}x "
                      f"({result['noble_wall_s_to_target']:.0f}s vs {result['baseline_wall_s']:.0f}s)", "1.22x")
    Console().print(table)


if __name__ == "__main__":
    main()
