"""MoFME vs the conventional FFN-expert MoE at N in {4, 8, 16}: parameters and inference time,
measured in one run with the pairs interleaved (medians), so the ratios survive a shared machine.
The paper's claim (abstract): >72% fewer parameters and 39% less inference time than the MoE.

    python benchmarks/mofme_efficiency.py [--size 240] [--repeats 10] [--device cpu]

PSNR at equal budget comes from trained checkpoints of both (mofme-nN-k2 / moe-nN-k2 .allweather-synth,
our small config, the same steps and data): the column shows the metric their registry card pins
(measured by `zoo eval`, re-checked by `zoo verify` and the slow tests), "-" where none exists.
Both layers compute every expert densely and zero the weights outside the top-k (no sparse
dispatch), so the time ratio is a dense-compute ratio. Parameters and time are at --size with the
official dims; the PSNR columns are of our small trained config (see each card's note)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import zoo.registry as registry
from zoo.models.mofme import moe, mofme


def card_psnr(name: str) -> str:
    """The PSNR pinned on NAME.allweather-synth in registry.yaml, or '-'."""
    entry = registry.load_registry().models.get(name)
    ck = entry.checkpoints.get("allweather-synth") if entry else None
    return f"{ck.metrics['psnr']:.2f}" if ck and "psnr" in ck.metrics else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    x = torch.rand(1, 3, a.size, a.size, device=dev)
    print(f"{'N':>3} {'MoFME params':>13} {'MoE params':>11} {'saved':>6} {'MoFME ms':>9} {'MoE ms':>8} {'saved':>6} {'MoFME PSNR':>10} {'MoE PSNR':>8}")
    for n in (4, 8, 16):
        models = {k: f(num_experts=n, top_k=a.top_k, img_size=a.size).to(dev).eval() for k, f in (("mofme", mofme), ("moe", moe))}
        times = {k: [] for k in models}
        with torch.inference_mode():
            for m in models.values():
                m(x)
            for _ in range(a.repeats):
                for k, m in models.items():   # interleaved
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t = time.perf_counter()
                    m(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    times[k].append(time.perf_counter() - t)
        p = {k: sum(q.numel() for q in m.parameters()) for k, m in models.items()}
        t = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{n:>3} {p['mofme'] / 1e6:>12.2f}M {p['moe'] / 1e6:>10.2f}M {1 - p['mofme'] / p['moe']:>6.1%} "
              f"{t['mofme']:>9.1f} {t['moe']:>8.1f} {1 - t['mofme'] / t['moe']:>6.1%} "
              f"{card_psnr(f'mofme-n{n}-k{a.top_k}'):>10} {card_psnr(f'moe-n{n}-k{a.top_k}'):>8}")


if __name__ == "__main__":
    main()
