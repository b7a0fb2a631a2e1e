"""`zoo bench`: params, FLOPs, latency p50/p90, throughput and peak memory of a model, and of a
reference model measured in the same run (interleaved, medians, ratios), so that numbers survive
the 15-25% drift of a shared machine."""

from __future__ import annotations

import contextlib
import os
import statistics
import time


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


def peak_memory_mb(fn) -> float:
    """Peak tensor memory allocated while `fn()` runs, above what was live when it started.

    CUDA: the caching allocator's peak counter. CPU: the profiler's allocation events (+bytes on
    malloc, -bytes on free) replayed in time order; the running sum's maximum is the peak."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
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
    def __init__(self, name, train, hub, options):
        import torch

        from zoo.api import load
        self.loaded = load(name, pretrained=True, hub=hub)
        self.name = self.loaded.full_name
        self.model = self.loaded.model
        task = self.loaded.task
        if not train and options.get("fuse", True) and hasattr(self.model, "fuse"):
            self.model = self.model.fuse() or self.model
        self.params = sum(p.numel() for p in self.model.parameters())
        if train:
            self.module = task.training_module(self.model, options)
            self.module.train()
            self.batch = task.example_batch(self.model, self.loaded.config, options)
            groups = [p for p in self.module.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(groups, lr=1e-4)
            self.runs_backward = bool(getattr(self.module, "runs_backward", False))
            self.n = _batch_len(self.batch)
            self.flops = None
        else:
            self.model.eval()
            self.args = tuple(task.example_input(self.model, self.loaded.config, options))
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


def bench(name: str, *, compare: str | None = None, train: bool = False, hub=None, options: dict | None = None) -> dict:
    import torch

    options = dict(options or {})
    options.setdefault("batch_size", 1 if not train else None)
    if options["batch_size"] is None:
        options.pop("batch_size")
    repeats = int(options.get("repeats", 30))
    warmup = int(options.get("warmup", 5))
    subjects = [_Subject(name, train, hub, options)]
    if compare:
        subjects.append(_Subject(compare, train, hub, options))
    for s in subjects:
        for _ in range(warmup):
            s.step()
    times = {s.name: [] for s in subjects}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
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
                        "peak_mb": peak_memory_mb(s.step), "batch": s.n})
    ratios = {}
    if compare:
        a, b = results
        ratios[f"latency {a['model']} / {b['model']} (p50)"] = a["p50_ms"] / b["p50_ms"]
        ratios[f"params {a['model']} / {b['model']}"] = a["params"] / b["params"]
        if a["peak_mb"] and b["peak_mb"]:
            ratios[f"peak memory {a['model']} / {b['model']}"] = a["peak_mb"] / b["peak_mb"]
    return {"mode": "train step" if train else "inference", "batch_size": results[0]["batch"],
            "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
            "repeats": repeats, "results": results, "ratios": ratios}


from zoo._callable import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "bench")
