"""MHAF-YOLO inference latency at 640: eager unfused vs eager fused (re-parameterised, one-to-one
head only) vs onnxruntime (the fused graph exported to ONNX), measured in one run, interleaved
call by call so that load on the machine hits all three alike. Reports medians and ratios against
eager unfused; absolute times depend on the machine, the ratios are the result.

    OMP_NUM_THREADS=1 python benchmarks/mhaf_yolo_latency.py --variant n --repeats 20
    python benchmarks/mhaf_yolo_latency.py --variant s --checkpoint mhaf-yolo-s.trees --json

All three return the same (B, 300, 6) detections (top-k, no NMS); the script checks that the fused
and ONNX graphs agree with eager before timing (pre-top-k predictions, max abs error)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _model(args):
    import torch

    import zoo
    from zoo.models.mhaf_yolo import mhaf_yolo
    if args.checkpoint:
        return zoo.create_model(args.checkpoint, pretrained=True).eval(), args.checkpoint
    torch.manual_seed(0)
    return mhaf_yolo(args.variant).eval(), f"mhaf-yolo-{args.variant} (random weights)"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="n", choices=["lite-n", "n", "s", "m"])
    parser.add_argument("--checkpoint", help="a zoo checkpoint name or folder instead of random weights")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    unfused, name = _model(args)
    fused = copy.deepcopy(unfused).fuse()
    x = torch.rand(args.batch, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        torch.onnx.export(fused, (x,), str(path), dynamo=True, input_names=["images"], verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        with torch.inference_mode():
            ref_dense = unfused.dense(x)
            fused_dense = fused.dense(x)
            ref = unfused(x)
        onnx_out = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        # top-k order over near-equal scores is not reproducible, so compare what it selects from
        parity = {"fused_vs_eager_dense_max_abs": float((fused_dense - ref_dense).abs().max()),
                  "onnx_vs_eager_sorted_scores_max_abs": float(
                      (onnx_out[..., 4].sort(-1).values - ref[..., 4].sort(-1).values).abs().max())}

        runners = {
            "eager unfused": lambda: unfused(x),
            "eager fused": lambda: fused(x),
            "onnxruntime fused": lambda: session.run(None, {"images": x.numpy()}),
        }
        times = {k: [] for k in runners}
        with torch.inference_mode():
            for i in range(args.warmup + args.repeats):
                for key, run in runners.items():  # interleaved: one call of each per round
                    t0 = time.perf_counter()
                    run()
                    dt = time.perf_counter() - t0
                    if i >= args.warmup:
                        times[key].append(dt)

    base = statistics.median(times["eager unfused"])
    rows = {k: {"median_ms": 1e3 * statistics.median(v), "p90_ms": 1e3 * float(np.percentile(v, 90)),
                "speedup_vs_eager_unfused": base / statistics.median(v)} for k, v in times.items()}
    result = {"model": name, "imgsz": args.imgsz, "batch": args.batch, "threads": args.threads,
              "repeats": args.repeats, "onnx_export_s": export_s, "parity": parity, "latency": rows,
              "torch": torch.__version__, "onnxruntime": ort.__version__}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{name} at {args.imgsz}x{args.imgsz}, batch {args.batch}, {args.threads} thread(s), "
              f"{args.repeats} interleaved rounds")
        print(f"{'':20s} {'median ms':>10s} {'p90 ms':>10s} {'vs eager unfused':>17s}")
        for k, r in rows.items():
            print(f"{k:20s} {r['median_ms']:10.1f} {r['p90_ms']:10.1f} {r['speedup_vs_eager_unfused']:16.2f}x")
        print("parity: " + ", ".join(f"{k} {v:.2e}" for k, v in parity.items()))
    return result


if __name__ == "__main__":
    main()
