"""This machine's peak fp32 FLOP rate, the yardstick `zoo bench` divides by.

Measured once with a large square GEMM (torch.mm: the best-tuned kernel there is, so the closest
to the hardware limit a program can observe), at the current thread count: warm-up, then the best
of a few timed runs. The number is cached as JSON under ZOO_CACHE (or ~/.cache/zoo), keyed by CPU
model + threads (+ GPU name on CUDA), because it is a property of the machine, not of a model."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from zoo._io import atomic_write_text, cache_dir, cpu_model

#: square GEMM side: large enough that BLAS runs at its peak, small enough to take ~1 s on 2 cores
CPU_SIZE = 1024
CUDA_SIZE = 8192


def cache_file() -> Path:
    return cache_dir("machine", "peak_flops.json")


def machine_key(device=None, threads: int | None = None) -> str:
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    threads = torch.get_num_threads() if threads is None else int(threads)
    key = f"{platform.node()}|{cpu_model()}|threads={threads}"
    if dev.type == "cuda":
        key += f"|cuda={torch.cuda.get_device_name(dev)}"
    return key


def measure_peak_flops(device=None, size: int | None = None, repeats: int = 10) -> float:
    """Best-of-`repeats` FLOP/s of an fp32 (size x size) @ (size x size) product on `device`."""
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n = size or (CUDA_SIZE if dev.type == "cuda" else CPU_SIZE)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev)
    b = torch.randn(n, n, generator=g).to(dev)
    out = torch.empty(n, n, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(2):   # warm-up: thread pool start, page faults, clock ramp
            torch.mm(a, b, out=out)
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            sync()
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def peak_flops(device=None, *, refresh: bool = False) -> dict:
    """{"flops": peak FLOP/s, "key", "measured_at", "size", "cached": bool}; measured on first use
    per machine key, read from the cache afterwards (refresh=True measures again)."""
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = machine_key(dev)
    path = cache_file()
    table: dict = {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    hit = table.get(key)
    if not refresh and isinstance(hit, dict) and isinstance(hit.get("flops"), (int, float)) and hit["flops"] > 0:
        return {**hit, "key": key, "cached": True}
    size = CUDA_SIZE if dev.type == "cuda" else CPU_SIZE
    entry = {"flops": measure_peak_flops(dev, size), "size": size, "threads": torch.get_num_threads(),
             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__}
    table[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))
    except OSError:   # a read-only cache costs a re-measure next time, not an error
        pass
    return {**entry, "key": key, "cached": False}


__all__ = ["peak_flops", "measure_peak_flops", "machine_key", "cache_file", "cpu_model"]
