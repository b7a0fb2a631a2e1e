"""Peak training memory, step time and accuracy of MAN, AugLocal and end-to-end bp, side by side.

The local-learning papers claim roughly 40-45% less training memory than end-to-end training at
similar accuracy. This script measures that claim on this machine, in one run:

* the same backbone (ResNet-32 by default, built from the registry entry for the dataset) starts
  from the same initial weights for every method;
* every method trains for the same number of steps on the same batches, steps interleaved
  (bp, man, auglocal, then rotated) so that drift of a shared machine hits all of them alike;
* step time = median wall time of a full optimizer step (forward, all backward passes, step);
* peak memory = median over repeats of the peak bytes allocated by torch during one step above what
  was live before it (CUDA: max_memory_allocated; CPU: the profiler's allocator events replayed in
  time order, see zoo.bench.peak_memory_mb). Gradients are freed before each step, so the peak
  counts them, as training does; weights and optimizer moments live before the step and are not;
* test top-1 of the plain backbone after training (the auxiliary networks are dropped).

Run: OMP_NUM_THREADS=1 python benchmarks/local_learning_memory.py [--steps 30] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo.registry as registry  # noqa: E402
from zoo.verbs.bench import peak_memory_mb  # noqa: E402
from zoo.layers.local_learning import training_method  # noqa: E402
from zoo.models.resnet_cifar import resnet_cifar  # noqa: E402
from zoo.tasks.classification import ClassificationTask  # noqa: E402

RECIPES = {  # the registry entries' recipes, by method
    32: {"bp": "resnet32", "man": "man-resnet32", "auglocal": "auglocal-resnet32"},
    110: {"bp": "resnet110", "auglocal": "auglocal-resnet110"},
}


def build(name: str, dataset: str) -> tuple[torch.nn.Module, dict]:
    reg = registry.load_registry()
    entry = reg.models[name]
    cfg = registry.model_config(entry, None, None, dataset)
    return resnet_cifar(**cfg), cfg


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=32, choices=sorted(RECIPES))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data", default=None, help="dataset folder/file (default: the dataset's own location)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="training steps per method (same batches for all)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--memory-repeats", type=int, default=3)
    ap.add_argument("--eval-subset", type=int, default=2000, help="test images for the accuracy column (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = ClassificationTask()
    methods = RECIPES[args.depth]
    reference, _ = build(methods["bp"], args.dataset)
    train = task.load_dataset(args.dataset, "train", args.data, reference, {"augment": False})
    test = task.load_dataset(args.dataset, "test", args.data, reference, {"augment": False})
    if args.eval_subset:
        test = test.subset(args.eval_subset, seed=args.seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
    batches = []
    for i in range(args.steps):
        idx = order[(i * args.batch_size) % len(train):][:args.batch_size]
        items = [train[j] for j in idx.tolist()]
        batches.append([t.to(device) for t in task.collate(items)])

    runs = {}
    for method, name in methods.items():
        torch.manual_seed(args.seed)            # the same backbone initialisation for every method
        model, _ = build(name, args.dataset)
        model.to(device)
        module = training_method(model, {"method": method}).to(device).train()
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=args.lr,
                                weight_decay=1e-4)
        runs[method] = {"name": name, "model": model, "module": module, "opt": opt, "times": [], "losses": [],
                        "aux_params": sum(p.numel() for p in module.parameters()) -
                        sum(p.numel() for p in model.parameters())}

    def step(run, batch):
        run["opt"].zero_grad(set_to_none=True)
        loss, _ = run["module"](batch)
        if not run["module"].runs_backward:
            loss.backward()
        run["opt"].step()
        return float(loss.detach())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(runs)
    for i, batch in enumerate(batches):
        for method in names[i % len(names):] + names[:i % len(names)]:     # rotate who goes first
            run = runs[method]
            sync()
            t0 = time.perf_counter()
            run["losses"].append(step(run, batch))
            sync()
            run["times"].append(time.perf_counter() - t0)

    for run in runs.values():
        run["model"].eval()
        with torch.inference_mode():
            run["metrics"] = task.evaluate(run["model"], test, {"batch_size": 256})
        run["model"].train()

    peaks = {m: [] for m in runs}
    for _ in range(args.memory_repeats):     # after the accuracy is taken: these steps also train
        for method, run in runs.items():
            peaks[method].append(peak_memory_mb(lambda: step(run, batches[0]), device))

    timed = lambda r: r["times"][1:] or r["times"]  # noqa: E731  (the first step warms up allocators)
    bp_mem = statistics.median(peaks["bp"])
    bp_time = statistics.median(timed(runs["bp"]))
    rows = []
    for method, run in runs.items():
        mem, t = statistics.median(peaks[method]), statistics.median(timed(run))
        rows.append({"method": method, "entry": run["name"], "aux_params": run["aux_params"],
                     "peak_mb": mem, "peak_vs_bp": mem / bp_mem, "step_ms": t * 1e3, "step_vs_bp": t / bp_time,
                     "train_loss_last": run["losses"][-1], "test_top1": run["metrics"]["top1"]})
    result = {"device": str(device), "threads": torch.get_num_threads(), "depth": args.depth,
              "dataset": args.dataset, "batch_size": args.batch_size, "steps": args.steps,
              "eval_images": len(test), "memory_repeats": args.memory_repeats, "rows": rows}

    print(f"ResNet-{args.depth} on {args.dataset}, batch {args.batch_size}, {args.steps} steps per method on the "
          f"same batches, {device} ({torch.get_num_threads()} threads); test top-1 on {len(test)} images")
    header = ("method", "aux params", "peak MB", "vs bp", "step ms", "vs bp", "top-1 %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['method']} | {r['aux_params']:,} | {r['peak_mb']:.1f} | {r['peak_vs_bp']:.2f} | "
              f"{r['step_ms']:.0f} | {r['step_vs_bp']:.2f} | {r['test_top1']:.2f} |")
    for r in rows:
        if r["method"] != "bp":
            print(f"{r['method']}: {100 * (1 - r['peak_vs_bp']):.0f}% less peak training memory than bp, "
                  f"{r['step_vs_bp']:.2f}x its step time")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
