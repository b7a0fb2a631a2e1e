"""`zoo bench`: params, FLOPs, latency p50/p90, throughput and peak memory of a model, and of a
reference model measured in the same run (interleaved, medians, ratios), so that numbers survive
the 15-25% drift of a shared machine."""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from pydantic import Field

from zoo.options import Options
from zoo.tasks.base import Reparameterisable


class BenchOptions(Options):
    repeats: int = Field(30, ge=1, description="timed repetitions (interleaved with --compare)")
    warmup: int = Field(5, ge=0, description="untimed repetitions first")


@contextlib.contextmanager
def _quiet_fd2():
    """The profiler's C++ side prints status lines on fd 2; keep the terminal clean."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory_mb(fn, device) -> float:
    """Peak tensor memory allocated while `fn()` runs, above what was live when it started.

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocation events (+bytes on
    malloc, -bytes on free) replayed in time order; the running sum's maximum is the peak."""
    import torch
    if device.type == "cuda":   # where the model really runs, not whether a GPU exists
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with _quiet_fd2():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    run, peak = 0, 0
    for _, nbytes in events:
        run += nbytes
        peak = max(peak, run)
    return peak / 2**20


def count_flops(model, args) -> float | None:
    """FLOPs of one forward pass (torch.utils.flop_counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(*args)
        return float(counter.get_total_flops())
    except Exception:  # ops the counter does not know: report no number rather than a wrong one
        return None


class _Subject:
    def __init__(self, name, train, hub, raw_options, device, fuse):
        import torch

        from zoo.loading import load, options_for
        self.loaded = load(name, pretrained=True, hub=hub, device=device)
        options = options_for(self.loaded, "bench", raw_options, BenchOptions)
        if not train:
            options.setdefault("batch_size", 1)   # latency of one sample unless asked
        self.options = options
        self.name = self.loaded.full_name
        self.model = self.loaded.model
        task = self.loaded.task
        if not train and fuse and isinstance(self.model, Reparameterisable):
            self.model = self.model.fuse() or self.model
        self.params = sum(p.numel() for p in self.model.parameters())
        if train:
            self.module = task.training_module(self.model, options)
            self.module.train()
            from zoo.tasks.base import to_device
            self.batch = to_device(task.example_batch(self.model, options), device)
            groups = [p for p in self.module.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(groups, lr=1e-4)
            self.runs_backward = bool(getattr(self.module, "runs_backward", False))
            self.n = _batch_len(self.batch)
            self.flops = None
        else:
            self.model.eval()
            from zoo.tasks.base import to_device
            self.args = tuple(to_device(tuple(task.example_input(self.model, options)), device))
            self.n = int(self.args[0].shape[0])
            self.flops = count_flops(self.model, self.args)

    def step(self):
        import torch
        if hasattr(self, "module"):
            self.opt.zero_grad(set_to_none=True)
            loss, _ = self.module(self.batch)
            if not self.runs_backward:
                loss.backward()
            self.opt.step()
        else:
            with torch.inference_mode():
                self.model(*self.args)


def _batch_len(batch) -> int:
    import torch
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0])
    return 1


def bench(name: str, *, compare: str | None = None, train: bool = False, hub=None, device: str | None = None,
          fuse: bool = True, options: dict | None = None) -> dict:
    import torch

    from zoo.loading import resolve_device
    dev = resolve_device(device)
    subjects = [_Subject(name, train, hub, options, dev, fuse)]
    if compare:
        subjects.append(_Subject(compare, train, hub, options, dev, fuse))
    repeats = int(subjects[0].options.get("repeats", 30))
    warmup = int(subjects[0].options.get("warmup", 5))
    for s in subjects:
        for _ in range(warmup):
            s.step()
    times = {s.name: [] for s in subjects}
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(repeats):  # interleaved: drift hits both sides alike
        for s in subjects:
            sync()
            t0 = time.perf_counter()
            s.step()
            sync()
            times[s.name].append(time.perf_counter() - t0)
    results = []
    for s in subjects:
        ts = sorted(times[s.name])
        p50 = statistics.median(ts)
        p90 = ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        results.append({"model": s.name, "params": s.params,
                        "gflops": s.flops / 1e9 if s.flops is not None else None,
                        "p50_ms": p50 * 1e3, "p90_ms": p90 * 1e3, "throughput": s.n / p50,
                        "peak_mb": peak_memory_mb(s.step, dev), "batch": s.n})
    ratios = {}
    if compare:
        a, b = results
        ratios[f"latency {a['model']} / {b['model']} (p50)"] = a["p50_ms"] / b["p50_ms"]
        ratios[f"params {a['model']} / {b['model']}"] = a["params"] / b["params"]
        if a["peak_mb"] and b["peak_mb"]:
            ratios[f"peak memory {a['model']} / {b['model']}"] = a["peak_mb"] / b["peak_mb"]
    return {"mode": "train step" if train else "inference", "batch_size": results[0]["batch"],
            "device": _device_name(dev), "threads": torch.get_num_threads(),
            "repeats": repeats, "results": results, "ratios": ratios}



def _device_name(dev) -> str:
    import torch
    return f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"
