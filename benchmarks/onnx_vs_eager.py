"""Latency of a checkpoint in eager PyTorch vs onnxruntime, interleaved in one process.

    python benchmarks/onnx_vs_eager.py deeponet.darcy [--batch-size 8] [--repeats 200]

Prints medians, p90s and the ratio onnxruntime / eager (below 1: onnxruntime is faster)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    import zoo
    from zoo.loading import load

    torch.set_num_threads(args.threads)
    options = {"batch_size": args.batch_size}
    loaded = load(args.name)
    model = loaded.model.eval()
    if hasattr(model, "fuse"):
        model = model.fuse() or model
    inputs = tuple(loaded.task.example_input(model, options))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        parity = zoo.export(args.name, "onnx", out=path, batch_size=args.batch_size)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs)}

        def eager():
            with torch.inference_mode():
                model(*inputs)

        def onnx():
            sess.run(None, feeds)

        for _ in range(args.warmup):
            eager()
            onnx()
        times = {"eager": [], "onnxruntime": []}
        for _ in range(args.repeats):
            for key, fn in (("eager", eager), ("onnxruntime", onnx)):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    out = {"model": loaded.full_name, "batch_size": args.batch_size, "threads": args.threads,
           "parity_max_abs_err": parity["max_abs_err"]}
    for key, ts in times.items():
        ts.sort()
        out[f"{key}_p50_ms"] = statistics.median(ts) * 1e3
        out[f"{key}_p90_ms"] = ts[int(0.9 * (len(ts) - 1))] * 1e3
    out["ratio_onnxruntime_over_eager_p50"] = out["onnxruntime_p50_ms"] / out["eager_p50_ms"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
