"""ForwardGNN's claim, measured: forward learning is on par with or better than backpropagation in
accuracy, with less training memory. Accuracy, peak training memory and step time of each procedure
(bp, sf, sf-top2loss, ff-la) on the same backbone and graph, in one run:

* every procedure starts from the same initial weights (same seed) on the same graph (citation-sbm
  by default, Cora_ML's size) and trains for the same number of epochs (one step = one epoch of the
  whole graph), steps interleaved (bp, sf, ...) so drift of a shared machine hits all alike;
* layer-wise procedures split the epochs evenly over the layers (`--epochs` / layers each, no
  early stopping here, so the budget is the same for every procedure);
* step time = median wall time of one training step (forward, every backward, optimiser steps); no
  validation passes here (the fine-tune runs validate every second epoch for early stopping);
* peak memory = the largest, over `--repeats` steps early in every layer's share of the epochs, of
  the peak bytes torch allocates during one step above what was live before it (CUDA: max_memory_allocated; CPU: the profiler's allocator events,
  zoo.verbs.bench.peak_memory_mb), after one unmeasured warm-up step (Adam moments, SF's augmented
  input built once per graph). A layer-wise step only keeps one layer's activations alive;
* accuracy on the test nodes after training.

Where the memory goes: every step of either procedure builds one layer's transient E x hidden
message tensor (gather, scale, scatter), and that transient sets the peak of a shallow GCN. What BP
keeps for its backward per GCN layer is small (N x hidden inputs and ReLU masks: the edge weights
carry no gradient, so the messages are not saved), so BP's peak grows with depth, not with the
graph; SF keeps one layer's but its augmented graph has ~20% more edges (training nodes <-> class
virtual nodes), hence SF ~1.05x BP at 4 layers. GAT saves its E x hidden messages for the attention
gradient, so there the activations dominate already at 4 layers. Measured on CPU (2 shared cores),
gcn unless said, hidden 128, SF/BP peak:

    --nodes 2995 (16,110 directed edges)  --layers 4            27.4 / 28.6 MB -> 1.04
    --nodes 20000 (108,862 edges)         --layers 4            184.5 / 192.8 MB -> 1.05 (same with --features 500)
    --nodes 2995                          --layers 8            34.7 / 28.6 MB -> 0.82
    --nodes 2995                          --layers 16           49.3 / 28.6 MB -> 0.58
    --nodes 20000                         --layers 8            233.4 / 192.8 MB -> 0.83
    --backbone gat --nodes 2995           --layers 4            81.7 / 51.3 MB -> 0.63
    (each: --procedures bp,sf --epochs 2*layers --json)

With few `--epochs` the accuracy column is not meaningful (it is there for the long runs).

Run: OMP_NUM_THREADS=1 python benchmarks/forwardgnn_memory.py [--backbone gcn] [--epochs 200] [--nodes N]
     [--features F] [--layers L] [--procedures bp,sf] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.data import graphs  # noqa: E402
from zoo.layers.graph_forward_learning import LayerwiseGraphTraining  # noqa: E402
from zoo.models.forwardgnn import ForwardGNN  # noqa: E402
from zoo.verbs.bench import peak_memory_mb  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="gcn", choices=["gcn", "sage", "gat"])
    ap.add_argument("--procedures", default="bp,sf,sf-top2loss,ff-la")
    ap.add_argument("--dataset", default="citation-sbm", choices=["citation-sbm", "drosophila", "karate"])
    ap.add_argument("--nodes", type=int, default=2995)
    ap.add_argument("--features", type=int, default=2879, help="citation-sbm: bag-of-words width")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    dev = torch.device(a.device)
    g = (graphs.citation_sbm(num_nodes=a.nodes, num_features=a.features) if a.dataset == "citation-sbm"
         else getattr(graphs, a.dataset)())
    g = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in g.items()}
    n, f = g["x"].shape
    procs = a.procedures.split(",")
    subjects = {}
    for p in procs:
        torch.manual_seed(0)
        m = ForwardGNN(in_channels=f, num_classes=graphs.num_classes(g), num_nodes=n, hidden=a.hidden,
                       layers=a.layers, backbone=a.backbone, procedure=p).to(dev)
        m.bind(g)
        # bp and the top-down procedures train the whole stack every epoch: one phase of all the epochs
        per_layer = a.epochs if p in ("bp", "sf-top2loss", "sf-top2input") else max(1, a.epochs // a.layers)
        mod = LayerwiseGraphTraining(m, {"epochs_per_layer": per_layer, "patience": 10**9,
                                          "val_every": 10**9})   # no early stopping: same budget for all
        subjects[p] = {"model": m, "module": mod, "times": [], "mem": []}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # memory: a few steps inside every layer's share of the epochs (the peak of a run is the max)
    share = max(1, a.epochs // a.layers)
    mem_at = {k * share + 1 + r for k in range(a.layers) for r in range(a.repeats)} - {0}
    for epoch in range(a.epochs):
        order = procs[epoch % len(procs):] + procs[:epoch % len(procs)]   # rotate: fair to drift
        for p in order:
            s = subjects[p]
            if epoch == 0:           # warm-up: optimiser moments and SF's cached augmented input appear
                s["module"](g)
                continue
            if epoch in mem_at:
                s["mem"].append(peak_memory_mb(lambda: s["module"](g), dev))
                continue
            sync()
            t0 = time.perf_counter()
            s["module"](g)
            sync()
            s["times"].append(time.perf_counter() - t0)

    rows = []
    for p in procs:
        s = subjects[p]
        m = s["model"].eval()
        with torch.no_grad():
            pred = m(g["x"], g["edge_index"]).argmax(-1)
        t = g["test_mask"]
        acc = 100.0 * float((pred[t] == g["y"][t]).float().mean())
        times = s["times"] or [float("nan")]
        rows.append({"procedure": p, "accuracy": acc, "peak_mb": max(s["mem"]),
                     "step_ms": 1000 * statistics.median(times),
                     "params": sum(q.numel() for q in m.parameters())})
    bp = next((r for r in rows if r["procedure"] == "bp"), None)
    for r in rows:
        if bp:
            r["memory_vs_bp"] = r["peak_mb"] / bp["peak_mb"] if bp["peak_mb"] else float("nan")
            r["time_vs_bp"] = r["step_ms"] / bp["step_ms"]
    result = {"backbone": a.backbone, "dataset": a.dataset, "nodes": n, "edges": int(g["edge_index"].shape[1]),
              "features": f, "epochs": a.epochs, "layers": a.layers,
              "hidden": a.hidden, "device": str(dev), "rows": rows}
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{a.backbone} {a.layers}x{a.hidden} on {a.dataset} ({n} nodes, {result['edges']} directed edges, "
              f"{f} features), {a.epochs} epochs each, {dev}")
        print(f"{'procedure':<13}{'test acc %':>11}{'peak MB':>10}{'x bp':>7}{'step ms':>10}{'x bp':>7}")
        for r in rows:
            print(f"{r['procedure']:<13}{r['accuracy']:>11.2f}{r['peak_mb']:>10.1f}{r.get('memory_vs_bp', 1):>7.2f}"
                  f"{r['step_ms']:>10.1f}{r.get('time_vs_bp', 1):>7.2f}")
    return result


if __name__ == "__main__":
    main()
