"""MTO-PINN's claim, checked in one run: on lwr (traffic density on a ring road with loop
detectors), does multi-task training (our interpretation, see zoo/models/mto_pinn.py) beat the
plain PINN of the same trunk at the same budget?

Both train from the same seeds, for the same number of full-batch Adam steps (cosine decay, same
lr) on the same collocation grid, and are evaluated (relative L2) on the 256 x 100 grid against
the Godunov reference. The budget is steps, not seconds: an MTO-PINN step costs about three plain
steps (three heads, two extra gradients for the transfer weights); the seconds are reported.

    python benchmarks/pinn_mto_vs_plain.py --steps 600 --seeds 0 1 2 --out runs/pinn-mto-vs-plain
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pinn_failure_modes import solve   # the same training routine as the failure-mode benchmark

from zoo._io import atomic_write_text
from zoo.models.mto_pinn import mto_pinn
from zoo.models.pinn import pinn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--grid", type=int, nargs=2, default=(32, 16), help="training collocation grid N M")
    ap.add_argument("--out", default="runs/pinn-mto-vs-plain")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        for name, builder in (("pinn", pinn), ("mto-pinn", mto_pinn)):
            res = solve(builder, "lwr", {}, args.steps, args.lr, seed, tuple(args.grid))
            row[name], row[f"{name}_s"] = res["rel_l2"], res["train_s"]
        rows.append(row)
        print(f"seed {seed}: pinn {row['pinn']:.4e} ({row['pinn_s']:.0f} s)  "
              f"mto-pinn {row['mto-pinn']:.4e} ({row['mto-pinn_s']:.0f} s)", flush=True)
    table = ["| seed | pinn rel. L2 | mto-pinn rel. L2 | pinn s | mto-pinn s |", "|---|---|---|---|---|"]
    table += [f"| {r['seed']} | {r['pinn']:.4e} | {r['mto-pinn']:.4e} | {r['pinn_s']:.0f} | {r['mto-pinn_s']:.0f} |"
              for r in rows]
    def mean_sd(name):
        vals = [r[name] for r in rows]
        return f"{statistics.mean(vals):.4e} ± {statistics.stdev(vals) if len(vals) > 1 else 0.0:.1e}"
    table.append(f"| mean ± sd | {mean_sd('pinn')} | {mean_sd('mto-pinn')} | | |")
    wins = sum(r["mto-pinn"] < r["pinn"] for r in rows)
    note = (f"\nlwr (v_max 1.5, 4 detectors); {args.steps} full-batch Adam steps each (cosine decay, lr {args.lr:g}), "
            f"training grid {args.grid[0]}x{args.grid[1]}, evaluated on 256x100 against the Godunov reference. "
            f"mto-pinn lower in {wins} of {len(rows)} seeds. Sizes: pinn 10,451, mto-pinn 10,553 parameters.\n")
    atomic_write_text(out / "table.md", "\n".join(table) + note)
    atomic_write_text(out / "results.json", json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print("\n".join(table) + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
