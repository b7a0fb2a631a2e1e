"""Latency of a model in eager PyTorch vs onnxruntime, interleaved in one process.

    python benchmarks/onnx_vs_eager.py deeponet.darcy [--batch-size 8] [--repeats 200]
    python benchmarks/onnx_vs_eager.py sinenet-8 --batch-size 1 --threads 2 --baseline --profile

Prints medians, p90s and the ratio onnxruntime / eager (below 1: onnxruntime is faster).
`--baseline` also exports the plain graph, without the models' export-only formulations
(`_exporting()` in zoo/models/*.py: SineNet's bicubic upsampling and DRIFT-Net's DFT as matmuls),
and times it in the same rounds, so before/after is one run. `--profile` runs each onnxruntime
session once more with its profiler and prints the share of time per op type."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pkgutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path


@contextlib.contextmanager
def plain_export():
    """Switch the export-only formulations off (the graph as it was before them)."""
    import zoo.models as models
    saved = []
    for info in pkgutil.iter_modules(models.__path__):
        mod = importlib.import_module(f"zoo.models.{info.name}")
        if hasattr(mod, "_exporting"):
            saved.append((mod, mod._exporting))
            mod._exporting = lambda: False
    try:
        yield
    finally:
        for mod, fn in saved:
            mod._exporting = fn


def session(path, threads, profile_prefix=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # spinning threads burn the cores the other side of an interleaved run needs
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def op_shares(profile_json: str, top: int = 6) -> list[tuple[str, float]]:
    """Share of node time per op type in an onnxruntime profile (the last run only)."""
    events = json.loads(Path(profile_json).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per = defaultdict(float)
    for e in nodes:
        per[e.get("args", {}).get("op_name", "?")] += e["dur"]
    total = sum(per.values()) or 1.0
    return sorted(((k, v / total) for k, v in per.items()), key=lambda kv: -kv[1])[:top]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resolution", type=int, default=None, help="grid of the example input (PDE models)")
    ap.add_argument("--baseline", action="store_true", help="also time the plain export (before the fast path)")
    ap.add_argument("--profile", action="store_true", help="print each session's time per op type")
    args = ap.parse_args(argv)

    import torch

    import zoo
    from zoo.loading import load

    torch.set_num_threads(args.threads)
    options = {"batch_size": args.batch_size}
    if args.resolution:
        options["resolution"] = args.resolution
    loaded = load(args.name)
    model = loaded.model.eval()
    if hasattr(model, "fuse"):
        model = model.fuse() or model
    torch.manual_seed(0)
    inputs = tuple(loaded.task.example_input(model, options))
    out = {"model": loaded.full_name, "batch_size": args.batch_size, "threads": args.threads,
           "resolution": args.resolution,
           "inputs": [list(a.shape) for a in inputs]}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"onnxruntime": Path(tmp) / "fast.onnx"}
        parity = zoo.export(args.name, "onnx", out=graphs["onnxruntime"], **options)
        out["parity_max_abs_err"] = parity["max_abs_err"]
        if args.baseline:
            graphs["onnxruntime_plain"] = Path(tmp) / "plain.onnx"
            with plain_export():
                base = zoo.export(args.name, "onnx", out=graphs["onnxruntime_plain"], **options)
            out["plain_parity_max_abs_err"] = base["max_abs_err"]
        sessions = {k: session(p, args.threads) for k, p in graphs.items()}
        feeds = {k: {i.name: a.numpy() for i, a in zip(s.get_inputs(), inputs)} for k, s in sessions.items()}

        def eager():
            with torch.inference_mode():
                model(*inputs)

        fns = {"eager": eager, **{k: (lambda s=s, f=feeds[k]: s.run(None, f)) for k, s in sessions.items()}}
        for _ in range(args.warmup):
            for fn in fns.values():
                fn()
        times = {k: [] for k in fns}
        for _ in range(args.repeats):   # interleaved: machine drift hits every path alike
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        if args.profile:
            out["profile_op_share"] = {}
            for k, p in graphs.items():
                s = session(p, args.threads, profile_prefix=str(Path(tmp) / k))
                s.run(None, feeds[k])
                out["profile_op_share"][k] = {op: round(sh, 3) for op, sh in op_shares(s.end_profiling())}
    for key, ts in times.items():
        ts.sort()
        out[f"{key}_p50_ms"] = statistics.median(ts) * 1e3
        out[f"{key}_p90_ms"] = ts[int(0.9 * (len(ts) - 1))] * 1e3
    for key in graphs:
        out[f"ratio_{key}_over_eager_p50"] = out[f"{key}_p50_ms"] / out["eager_p50_ms"]
    if args.baseline:
        out["ratio_fast_over_plain_p50"] = out["onnxruntime_p50_ms"] / out["onnxruntime_plain_p50_ms"]
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
