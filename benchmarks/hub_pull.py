"""What the sha256 pin costs: `zoo.hub.pull` against plain `hf_hub_download` from the same server.

One run, one machine: builds a ~64 MiB checkpoint, publishes it as a folder hub, serves it with
olah on 127.0.0.1 (the tests' recipe), then measures, alternating the two clients:
  * cold-cache pull time of the whole checkpoint, zoo.hub.pull vs hf_hub_download per file
    (same files, same revision, same server) -> throughput and the ratio;
  * HTTP requests a second (warm) pull makes, counted by a proxy in front of olah;
  * sha256 cost per GB on this machine (the part of zoo's pull that hf_hub_download skips).

    OMP_NUM_THREADS=1 python benchmarks/hub_pull.py [--width 4096] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # read when huggingface_hub is imported
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4096, help="4096 -> a 64 MiB float32 weight file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(1)
    from huggingface_hub import hf_hub_download
    from hubtools import tiny
    from hubtools.olah_server import Olah
    from hubtools.proxy import CountingProxy

    import zoo.hub as hub

    work = Path(tempfile.mkdtemp(prefix="zoo-bench-hub-"))
    olah = proxy = None
    try:
        os.environ["ZOO_REGISTRY"] = str(tiny.write_registry(work / "registry.yaml"))
        ck = tiny.make_checkpoint(work / "run", width=args.width, depth=1, tag="bench")
        entry = hub.push(ck, "zoo/bench", hub=str(work / "hubdir"))["entry"]
        size = sum((work / "hubdir" / "zoo" / "bench" / n).stat().st_size for n in entry["files"])
        olah = Olah(work / "olah")
        olah.add_hub(work / "hubdir")
        olah.start()
        proxy = CountingProxy(olah.url).start()
        repo, rev, files = entry["repo"], entry["revision"], entry["files"]

        def zoo_pull(cache: Path, url: str) -> None:
            hub.pull(repo, rev, files, hub=url, progress=False, cache_dir=cache)

        def plain_pull(cache: Path, url: str) -> None:
            for name in files:
                hf_hub_download(repo, name, revision=rev, endpoint=url, cache_dir=str(cache))

        clients = {"zoo.hub.pull": zoo_pull, "hf_hub_download": plain_pull}
        times: dict[str, list[float]] = {k: [] for k in clients}
        for i in range(args.repeats):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                cache = work / f"cache-{name}-{i}"
                t0 = time.perf_counter()
                clients[name](cache, olah.url)
                times[name].append(time.perf_counter() - t0)
                shutil.rmtree(cache)

        second = {}
        for name, fn in clients.items():
            cache = work / f"warm-{name}"
            fn(cache, proxy.url)
            proxy.reset()
            fn(cache, proxy.url)
            second[name] = proxy.count()

        weights = work / "hubdir" / "zoo" / "bench" / "model.safetensors"
        hash_times = []
        for _ in range(max(3, args.repeats)):
            t0 = time.perf_counter()
            hub.sha256_file(weights)
            hash_times.append(time.perf_counter() - t0)
        sha_s_per_gb = statistics.median(hash_times) / (weights.stat().st_size / 1e9)
    finally:
        if proxy:
            proxy.stop()
        if olah:
            olah.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    result = {
        "checkpoint_bytes": size,
        "repeats": args.repeats,
        "seconds_median": med,
        "seconds_all": times,
        "throughput_MB_s": {k: size / v / 1e6 for k, v in med.items()},
        "ratio_zoo_over_plain_time": med["zoo.hub.pull"] / med["hf_hub_download"],
        "ratio_zoo_over_plain_time_best": best["zoo.hub.pull"] / best["hf_hub_download"],
        "requests_on_second_pull": second,
        "sha256_seconds_per_GB": sha_s_per_gb,
        "sha256_share_of_plain_pull": sha_s_per_gb * size / 1e9 / med["hf_hub_download"],
        "server": "olah 0.5.4 on 127.0.0.1 (offline mirror of LFS-pointer git repos)",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"checkpoint: {size / 1e6:.1f} MB, {args.repeats} cold pulls each, same olah server, same run")
    for k in clients:
        print(f"  {k:16s} median {med[k]:.2f} s  ({result['throughput_MB_s'][k]:.1f} MB/s)  "
              f"all: {', '.join(f'{t:.2f}' for t in times[k])}")
    print(f"  time ratio zoo/plain: {result['ratio_zoo_over_plain_time']:.3f} (medians), "
          f"{result['ratio_zoo_over_plain_time_best']:.3f} (best of each)")
    print(f"requests made by a second pull: {second}")
    print(f"sha256: {sha_s_per_gb:.2f} s per GB on this machine; hashing this checkpoint is "
          f"{100 * result['sha256_share_of_plain_pull']:.1f}% of the plain pull's median time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
