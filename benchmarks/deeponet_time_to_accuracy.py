"""DeepONet on the antiderivative operator: wall seconds to a test MSE, zoo against DeepXDE, in one run.

Both train the paper's net (branch [100, 40, 40], trunk [1, 40, 40], ReLU) from random init on the
same generated data (zoo.data.antiderivative: 10,000 train triplets; the test MSE is over all
100,000 test triplets) with the same number of torch threads.

* zoo: each point of its curve is one complete `zoo finetune deeponet --dataset antiderivative
  --scratch --steps N ...` command (its cosine schedule ends at N), timed from launch to exit
  (imports, data load, training and the final test evaluation included): the time a user waits
  for that MSE. Runs go up the --zoo-steps list until one reaches --target.
* DeepXDE (when installed; `pip install deepxde`): its antiderivative example's recipe (Adam, lr
  1e-3, full batch, Glorot normal), trained in segments of --dde-every iterations; only the
  `model.train` calls are timed (its own per-segment test runs on 1,000 triplets), the 100k test
  MSE is taken between segments, untimed. Stops at --target or after --dde-max-s seconds.

The data are generated (and cached) first, untimed. Prints both curves and the times to --target,
and saves the curve as a PNG (--png).

    python benchmarks/deeponet_time_to_accuracy.py [--target 1e-5] [--zoo-steps 8000,11000,14000]
        [--batch-size 1000] [--lr 0.003] [--threads 2] [--png runs/benchmarks/deeponet_time_to_accuracy.png] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def zoo_curve(steps_list, batch_size, lr, target, threads, fused, extra, log) -> list[dict]:
    """One `zoo finetune` per step budget, smallest first, until one reaches the target."""
    points = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="zoo-tta-") as tmp:
        for steps in steps_list:
            cmd = [sys.executable, "-m", "zoo", "finetune", "deeponet", "--dataset", "antiderivative", "--scratch",
                   "--steps", str(steps), "--batch-size", str(batch_size), "--lr", str(lr), "--seed", "0",
                   "--out", str(Path(tmp) / f"run-{steps}"), "--json", *extra]
            if fused is not None:
                cmd += ["-o", f"fused={str(fused).lower()}"]
            cpu0, t0 = _children_cpu(), time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
            if done.returncode != 0:
                raise SystemExit(f"zoo finetune failed: {done.stderr.strip().splitlines()[-1:]}")
            res = json.loads(done.stdout)
            train_s = res["steps"] / res["steps_per_s"]
            point = {"steps": steps, "wall_s": wall, "cpu_s": cpu, "train_s": train_s,
                     "mse": res["metrics"]["mse"], "rel_l2": res["metrics"]["rel_l2"]}
            points.append(point)
            log(f"zoo   {steps:6d} steps: test mse {point['mse']:.3g} in {wall:.1f} s wall "
                f"({train_s:.1f} s in the loop, {cpu:.1f} CPU s)")
            if point["mse"] <= target:
                break
    points[-1]["command"] = " ".join(["zoo", *cmd[3:]]).replace(tmp, "TMP")
    return points


def deepxde_curve(data, target, every, max_s, log) -> list[dict] | None:
    """DeepXDE's antiderivative recipe, timed per segment; None when DeepXDE is not installed.
    DeepXDE prints to stdout ("Compiling model..."): that goes to stderr, so --json stays JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        return _deepxde_curve(data, target, every, max_s, log)


def _deepxde_curve(data, target, every, max_s, log) -> list[dict] | None:
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    try:
        import deepxde as dde
    except ImportError:
        log("DeepXDE is not installed (pip install deepxde): measuring zoo alone")
        return None
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    tr, te = data
    x_train = (tr["u"], tr["y"])
    x_test_small = (te["u"][:1000], te["y"][:1000])
    ds = dde.data.Triple(X_train=x_train, y_train=tr["s"], X_test=x_test_small, y_test=te["s"][:1000])
    net = dde.nn.DeepONet([100, 40, 40], [1, 40, 40], "relu", "Glorot normal")
    model = dde.Model(ds, net)
    model.compile("adam", lr=1e-3)
    points, trained, cpu, its = [], 0.0, 0.0, 0
    while trained < max_s:
        t0, c0 = time.perf_counter(), time.process_time()
        model.train(iterations=every, display_every=every, verbose=0)
        trained += time.perf_counter() - t0
        cpu += time.process_time() - c0
        its += every
        pred = model.predict((te["u"], te["y"]))
        mse = float(np.mean((pred - te["s"]) ** 2))
        points.append({"steps": its, "wall_s": trained, "cpu_s": cpu, "mse": mse})
        log(f"dde   {its:6d} iterations: test mse {mse:.3g} at {trained:.1f} s ({cpu:.1f} CPU s)")
        if mse <= target:
            break
    return points


def first_at(points, target, key="wall_s"):
    hit = [p for p in points or [] if p["mse"] <= target]
    return hit[0][key] if hit else None


def plot(zoo_pts, dde_pts, target, path: Path) -> Path:
    from zoo._io import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([p["wall_s"] for p in zoo_pts], [p["mse"] for p in zoo_pts], "o-",
            label="zoo finetune (one full run per point)")
    if dde_pts:
        ax.plot([p["wall_s"] for p in dde_pts], [p["mse"] for p in dde_pts], ".-", label="DeepXDE 1.15 (PyTorch)")
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("wall seconds")
    ax.set_ylabel("test MSE (100k triplets)")
    ax.set_title("DeepONet, antiderivative: time to accuracy")
    ax.legend()
    return save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=1e-5)
    ap.add_argument("--zoo-steps", default="8000,11000,14000")
    # batches of 1000 beat full batch here: a 10k step costs ~6x a 1k step on 2 CPU cores
    ap.add_argument("--batch-size", type=int, default=1000, help="zoo's batch (10000 = full batch)")
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--fused", choices=["true", "false", "default"], default="true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dde-every", type=int, default=1000)
    ap.add_argument("--dde-max-s", type=float, default=300.0)
    ap.add_argument("--no-deepxde", action="store_true")
    ap.add_argument("--png", type=Path, default=ROOT / "runs" / "benchmarks" / "deeponet_time_to_accuracy.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from zoo.data import antiderivative

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    data = (antiderivative.load("train"), antiderivative.load("test"))
    log(f"data ready in {time.perf_counter() - t0:.1f} s (10k train / 100k test triplets)")
    fused = None if args.fused == "default" else args.fused == "true"
    steps = [int(s) for s in args.zoo_steps.split(",")]
    load0 = os.getloadavg()[0]
    dde = None if args.no_deepxde else deepxde_curve(data, args.target, args.dde_every, args.dde_max_s, log)
    zoo_pts = zoo_curve(steps, args.batch_size, args.lr, args.target, args.threads, fused, [], log)
    result = {"target": args.target, "threads": args.threads, "load_average": [load0, os.getloadavg()[0]],
              "zoo": zoo_pts, "deepxde": dde,
              "zoo_time_to_target_s": first_at(zoo_pts, args.target),
              "deepxde_time_to_target_s": first_at(dde, args.target),
              "png": str(plot(zoo_pts, dde, args.target, args.png))}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    z, d = result["zoo_time_to_target_s"], result["deepxde_time_to_target_s"]
    print(f"time to test MSE {args.target:g} ({args.threads} threads, load average "
          f"{load0:.1f} -> {result['load_average'][1]:.1f}):")
    print(f"  zoo     : {'%.1f s' % z if z is not None else 'not reached'}   ({zoo_pts[-1]['command']})")
    if dde is not None:
        print(f"  DeepXDE : {'%.1f s' % d if d is not None else 'not reached in %g s' % args.dde_max_s}")
        if z and d:
            print(f"  ratio zoo / DeepXDE: {z / d:.2f}")
    print(f"curve: {result['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
