"""DRIFT-Net vs SineNet on the same generated Navier-Stokes test set, and their throughput, in one run.

Accuracy: our two checkpoints (`drift-net.navier-stokes`, `sinenet.navier-stokes`, or folders given
with --drift/--sine) on the generated 64x64 vorticity test set (FNO recipe, 32 trajectories x 21
frames), both started from the same frame (--start, default 4 = SineNet's history), so both are
scored on exactly the same target frames:
  * one-step relative L2 (PDEArena's scaled L2, mean over every frame t >= start, from true inputs);
  * 10-step autoregressive rollout relative L2 (mean over the 10 steps) and the last step's.

Throughput: samples per second of forward passes (inference_mode, one thread), each model
in our laptop size and in the paper size (DRIFT-Net-T and SineNet-8, random weights), at 64x64 and
128x128 grids (DRIFT-Net built for the grid it is fed, so it does not resample). Timings alternate
the two models (drift of a shared machine hits both alike); medians; the ratio is DRIFT / SineNet.
Batch --batch-size (--paper-batch-size for the paper sizes, whose SineNet-8 forward at 128^2 takes
seconds on one core).

    OMP_NUM_THREADS=1 python benchmarks/operators_throughput.py [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load(name_or_folder: str):
    from zoo.loading import load
    return load(name_or_folder, pretrained=True, require_weights=not Path(name_or_folder).is_dir())


def accuracy(drift, sine, start: int, steps: int) -> dict:
    from zoo.tasks import get_task

    task = get_task("pde-rollout")
    out = {}
    for label, loaded in (("drift-net", drift), ("sinenet", sine)):
        ds = task.load_dataset("navier-stokes", "test", None, loaded.model, {"start": start})
        m = task.evaluate(loaded.model, ds, {"start": start, "steps": steps})
        out[label] = {"model": loaded.full_name, "one_step_rel_l2": m["one_step_rel_l2"],
                      f"rollout{steps}_rel_l2": m["rollout_rel_l2"], "final_rel_l2": m["final_rel_l2"],
                      "start_frame": m["start_frame"], "trajectories": m["trajectories"],
                      "params": sum(p.numel() for p in loaded.model.parameters())}
    return out


def throughput(pairs, resolutions) -> list[dict]:
    import torch

    rows = []
    for label, build_drift, build_sine, batch, repeats in pairs:
        for n in resolutions:
            models = {"drift-net": build_drift(n).eval(), "sinenet": build_sine(n).eval()}
            inputs = {k: m.example_input(batch, n) for k, m in models.items()}
            times = {k: [] for k in models}
            with torch.inference_mode():
                for k, m in models.items():  # warm-up
                    m(*inputs[k])
                for _ in range(repeats):
                    for k, m in models.items():
                        t0 = time.perf_counter()
                        m(*inputs[k])
                        times[k].append(time.perf_counter() - t0)
            per_s = {k: batch / statistics.median(v) for k, v in times.items()}
            rows.append({"size": label, "resolution": n, "batch": batch,
                         "drift_net_samples_per_s": per_s["drift-net"], "sinenet_samples_per_s": per_s["sinenet"],
                         "ratio_drift_over_sine": per_s["drift-net"] / per_s["sinenet"],
                         "params_drift": sum(p.numel() for p in models["drift-net"].parameters()),
                         "params_sine": sum(p.numel() for p in models["sinenet"].parameters())})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drift", default="drift-net.navier-stokes")
    parser.add_argument("--sine", default="sinenet.navier-stokes")
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--paper-batch-size", type=int, default=1)
    parser.add_argument("--paper-repeats", type=int, default=3)
    parser.add_argument("--no-paper-sizes", action="store_true", help="skip DRIFT-Net-T vs SineNet-8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from zoo.models.drift_net import drift_net
    from zoo.models.sinenet import sinenet

    drift, sine = _load(args.drift), _load(args.sine)
    acc = accuracy(drift, sine, args.start, args.steps)

    dcfg, scfg = dict(drift.config), dict(sine.config)
    pairs = [("ours", lambda n: drift_net(**{**dcfg, "image_size": n}),
              lambda n: sinenet(**{**scfg, "resolution": n}), args.batch_size, args.repeats)]
    if not args.no_paper_sizes:
        pairs.append(("paper (T vs 8)", lambda n: drift_net("t", image_size=n, fields=["u", "v"]),
                      lambda n: sinenet(8, fields=["smoke", "u", "v"], time_history=4),
                      args.paper_batch_size, args.paper_repeats))
    speed = throughput(pairs, (64, 128))

    result = {"accuracy": acc, "throughput": speed, "torch_threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"accuracy on the generated NS test set (64x64 vorticity, start frame {args.start}, {args.steps} steps)")
    for k, v in acc.items():
        print(f"  {k:10s} {v['model']:28s} params {v['params']:>9,d}  one-step rel L2 {v['one_step_rel_l2']:.4f}  "
              f"{args.steps}-step rollout rel L2 {v[f'rollout{args.steps}_rel_l2']:.4f}  "
              f"last step {v['final_rel_l2']:.4f}")
    print("throughput (samples/s, forward, 1 thread; ratio = DRIFT-Net / SineNet)")
    for r in speed:
        print(f"  {r['size']:15s} {r['resolution']:>4d}^2  DRIFT-Net {r['drift_net_samples_per_s']:8.2f}  "
              f"SineNet {r['sinenet_samples_per_s']:8.2f}  ratio {r['ratio_drift_over_sine']:.2f}  "
              f"(params {r['params_drift']:,} vs {r['params_sine']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
