"""Per-zone MASD of pirads-dual-path against the single-branch U-Net baseline, in one run, on the
prostate-phantom test split (both our checkpoints: same data, same steps, same batch size).
The paper reports MASD improvements of 7.56% (PZ), 11.00% (TZ), 58.43% (DPU), 19.67% (AFS) on
real MRI; ours are on a generated phantom, so only the direction is comparable.

    python benchmarks/pirads_dual_vs_single.py [--json]
"""

from __future__ import annotations

import json
import sys

import torch

from zoo.loading import dataset_for, load

PAPER = {"PZ": 7.56, "TZ": 11.00, "DPU": 58.43, "AFS": 19.67}


def main(as_json: bool = False) -> dict:
    rows = {}
    results = {}
    for name in ("pirads-dual-path", "pirads-single-unet"):
        loaded = load(name, dataset="prostate-phantom", device="cpu")
        ds, _ = dataset_for(loaded, "prostate-phantom", None, "test", {})
        with torch.inference_mode():
            results[name] = loaded.task.evaluate(loaded.model, ds, {})
    dual, single = results["pirads-dual-path"], results["pirads-single-unet"]
    for zone, paper in PAPER.items():
        d, s = dual[f"masd_{zone}"], single[f"masd_{zone}"]
        rows[zone] = {"masd_single": s, "masd_dual": d, "improvement_percent": 100 * (s - d) / s if s else float("nan"),
                      "paper_improvement_percent": paper}
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'zone':5} {'single MASD':>12} {'dual MASD':>10} {'ours %':>8} {'paper %':>8}")
        for zone, r in rows.items():
            print(f"{zone:5} {r['masd_single']:12.4f} {r['masd_dual']:10.4f} {r['improvement_percent']:8.2f} "
                  f"{r['paper_improvement_percent']:8.2f}")
    return rows


if __name__ == "__main__":
    main("--json" in sys.argv[1:])
