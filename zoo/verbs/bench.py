"""`zoo bench`: params, FLOPs, latency p50/p90, throughput and peak memory of a model, and of a
reference model measured in the same run (interleaved, medians, ratios), so that numbers survive
the 15-25% drift of a shared machine."""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from pydantic import Field

from zoo.errors import ConfigError
from zoo.options import Options
from zoo.tasks.base import Reparameterisable


class BenchOptions(Options):
    repeats: int = Field(30, ge=1, description="timed repetitions (interleaved with --compare)")
    warmup: int = Field(5, ge=0, description="untimed repetitions first")
    data: bool = Field(True, description="--train: fetch each step's batch from the training set, as the "
                                         "fine-tune loop does, and report the data's share of the step")


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


def count_step_flops(step) -> float | None:
    """FLOPs of one call of `step` with autograd on (a training step: forward + backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    try:
        with FlopCounterMode(display=False) as counter:
            step()
        return float(counter.get_total_flops())
    except Exception:
        return None


#: config keys (by name fragment) that set a model's scale or its input: when two models differ in
#: one of these, a latency/params ratio mixes that difference into the comparison
_SCALE_KEYS = ("size", "resolution", "imgsz", "grid", "dim", "width", "hidden", "depth", "expert", "top_k",
               "heads", "patch", "channels", "layers", "modes", "waves")


def effective_config(loaded) -> dict:
    """The arguments the model was built with: the class's and the builder's defaults under the
    registry/checkpoint config (the registry stores only what differs from the defaults)."""
    import inspect

    import zoo.registry as reg
    out: dict = {}
    fns = [type(loaded.model).__init__]
    try:
        _, entry, _ = reg.resolve(loaded.name)
        fns.append(reg.import_builder(entry, loaded.name))
    except Exception:   # a run folder of a model the registry renamed: its config alone
        pass
    for fn in fns:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        out.update({p.name: p.default for p in params
                    if p.default is not inspect.Parameter.empty and p.name != "self"})
    out.update(loaded.config or {})
    return out


def config_mismatch(a: dict, b: dict, shapes_a=None, shapes_b=None) -> list[str]:
    """What makes A and B not like for like: different input shapes, or a scale key both configs
    have with different values. Keys only one side has are the architectures' own business."""
    diffs = []
    if shapes_a is not None and shapes_b is not None and shapes_a != shapes_b:
        diffs.append(f"input {shapes_a} vs {shapes_b}")
    for k in sorted(set(a) & set(b)):
        if any(f in k.lower() for f in _SCALE_KEYS) and a[k] != b[k] and _plain(a[k]) and _plain(b[k]):
            diffs.append(f"{k} {a[k]!r} vs {b[k]!r}")
    return diffs


def _plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, tuple, list))


def _shapes(args) -> list:
    return [list(a.shape) for a in args if hasattr(a, "shape")]


class _Subject:
    def __init__(self, name, train, hub, raw_options, device, fuse, backend: str = "eager", loaded=None):
        import torch

        from zoo.loading import load, options_for
        self.loaded = loaded or load(name, pretrained=True, hub=hub, device=device)
        options = options_for(self.loaded, "bench", raw_options, BenchOptions)
        if not train:
            options.setdefault("batch_size", 1)   # latency of one sample unless asked
        self.options = options
        self.name = self.loaded.full_name
        self.model = self.loaded.model
        task = self.loaded.task
        # eager fuses here; other backends get the unfused model and fuse a copy in zoo.backends
        fused = not train and fuse and backend == "eager" and isinstance(self.model, Reparameterisable)
        if fused and not getattr(self.model, "fused", False):
            self.model = self.model.fuse() or self.model
        self.params = sum(p.numel() for p in self.model.parameters())
        self.config = effective_config(self.loaded)
        self.notes: list[str] = []
        self.device, self.task = device, task
        self.train_set, self.data_name = None, None
        self.data_times: list[float] = []
        self.backend = "fused" if fused else "eager"
        from zoo.tasks.base import to_device
        if train:
            self.module = task.training_module(self.model, options)
            self.module.train()
            self.batch = to_device(task.example_batch(self.model, options), device)
            if options.get("data", True):
                self._open_train_set(options)
            groups = [p for p in self.module.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(groups, lr=1e-4)
            self.runs_backward = bool(getattr(self.module, "runs_backward", False))
            self.n = _batch_len(self.batch)
            self.inputs = None
            self.flops = count_step_flops(self._train_step)
        else:
            self.model.eval()
            self.args = tuple(to_device(tuple(task.example_input(self.model, options)), device))
            self.inputs = _shapes(self.args)
            self.n = int(self.args[0].shape[0])
            self.flops = count_flops(self.model, self.args)   # the graph's FLOPs, whoever runs it
            self.parity = None
            if backend != "eager":
                import zoo.backends as backends
                task_opts = {k: v for k, v in options.items() if k not in ("repeats", "warmup", "data")}
                prepared = backends.prepare(self.loaded, backend=backend, options=task_opts, fuse=fuse, quiet=True)
                self.model, self.backend, self.parity = prepared, prepared.backend, prepared.parity
                if prepared.fallback_reason:
                    self.notes.append(f"{backend} fell back to eager: {prepared.fallback_reason}")
                elif backend == "auto":
                    self.notes.append(f"auto picked {prepared.backend}")
                if prepared.backend in backends.REDUCED_PRECISION:
                    self.notes.append(f"{prepared.backend}: bf16 arithmetic, so its fraction is of the fp32 GEMM "
                                      "peak (the CPU's bf16 peak is higher); `zoo eval` gives its metric")

    def _open_train_set(self, options):
        """The training set the fine-tune loop would read; without one, the example batch alone."""
        from zoo.loading import dataset_for
        try:
            opts = {k: v for k, v in options.items() if k not in ("repeats", "warmup", "data")}
            ds, self.data_name = dataset_for(self.loaded, None, None, "train", opts)
            if len(ds) == 0:
                raise ValueError("empty training set")
            self.train_set = ds
            self._bs = int(_batch_len(self.batch))
            self._cursor = 0
        except Exception as exc:   # no training data named for this model: compute alone, said so
            self.notes.append(f"data share not measured ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]})")

    def _fetch(self):
        """One batch the way zoo.training.loop does it: items indexed in the main process, the
        task's collate, moved to the device (no DataLoader workers there either)."""
        from zoo.tasks.base import to_device
        n = len(self.train_set)
        idx = [(self._cursor + j) % n for j in range(self._bs)]
        self._cursor = (self._cursor + self._bs) % n
        return to_device(self.task.collate([self.train_set[j] for j in idx]), self.device)

    def _train_step(self):
        self.opt.zero_grad(set_to_none=True)
        loss, _ = self.module(self.batch)
        if not self.runs_backward:
            loss.backward()
        self.opt.step()

    def step(self, timed: bool = False):
        import torch
        if hasattr(self, "module"):
            if self.train_set is not None:
                t0 = time.perf_counter()
                self.batch = self._fetch()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if timed:
                    self.data_times.append(time.perf_counter() - t0)
            self._train_step()
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


def backend_list(backend) -> list[str]:
    """`eager`, `onnxruntime,openvino` or a list of names -> checked names, in order, no repeats."""
    import zoo.backends as backends
    names = backend if isinstance(backend, (list, tuple)) else str(backend or "eager").split(",")
    out = []
    for b in (n.strip() for n in names):
        if b and b not in out:
            out.append(backends.check_name(b))
    return out or ["eager"]


def bench(name: str, *, compare: str | None = None, train: bool = False, hub=None, device: str | None = None,
          fuse: bool = True, options: dict | None = None, backend="eager", refresh_peak: bool = False) -> dict:
    import torch

    from zoo.loading import resolve_device
    blist = backend_list(backend)
    if train and blist != ["eager"]:
        raise ConfigError("--train measures PyTorch training steps; --backend is for inference")
    dev = resolve_device(device)
    subjects: list[_Subject] = []
    for n in [name] + ([compare] if compare else []):
        loaded = None
        for b in blist:   # one load per model; each backend a subject of its own, all interleaved
            subjects.append(_Subject(n, train, hub, options, dev, fuse, backend=b, loaded=loaded))
            loaded = subjects[-1].loaded
    repeats = int(subjects[0].options.get("repeats", 30))
    warmup = int(subjects[0].options.get("warmup", 5))
    for s in subjects:
        for _ in range(warmup):
            s.step()
    times = [[] for _ in subjects]   # by position: `A --compare A` is two subjects of one name
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(repeats):  # interleaved: drift hits both sides alike
        for i, s in enumerate(subjects):
            sync()
            t0 = time.perf_counter()
            s.step(timed=True)
            sync()
            times[i].append(time.perf_counter() - t0)
    import zoo.machine as machine
    peak = machine.peak_flops(dev, refresh=refresh_peak)
    results = []
    for s, ts in zip(subjects, times):
        ts = sorted(ts)
        p50 = statistics.median(ts)
        p90 = ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]
        in_torch = s.backend in ("eager", "fused", "compile")
        row = {"model": s.name, "backend": s.backend, "params": s.params,
               "gflops": s.flops / 1e9 if s.flops is not None else None,
               "p50_ms": p50 * 1e3, "p90_ms": p90 * 1e3, "throughput": s.n / p50,
               # another runtime's allocations are invisible to torch's counters: no number, not 0
               "peak_mb": peak_memory_mb(s.step, dev) if in_torch else None, "batch": s.n}
        if getattr(s, "parity", None) is not None:
            row["parity_max_abs"] = s.parity
        # the yardstick: the time this many FLOPs take at the machine's measured GEMM peak
        row["peak_ms"] = s.flops / peak["flops"] * 1e3 if s.flops is not None else None
        row["fraction_of_peak"] = row["peak_ms"] / row["p50_ms"] if row["peak_ms"] is not None else None
        if train:
            row["samples_per_s"] = s.n / p50
            if s.data_times:
                data = statistics.median(s.data_times)
                row["data_ms"] = data * 1e3
                row["compute_ms"] = max(p50 - data, 0.0) * 1e3
                row["data_share"] = data / p50
                row["data"] = s.data_name
        if s.notes:
            row["notes"] = list(s.notes)
        results.append(row)
    ratios, warnings = {}, []
    k = len(blist)
    for i in range(1, k):   # each backend against the first one asked for, same model, same run
        for j in range(0, len(results), k):
            base, other = results[j], results[j + i]
            ratios[f"latency {other['model']} {other['backend']} / {base['backend']} (p50)"] = \
                other["p50_ms"] / base["p50_ms"]
    if compare:
        for i in range(k):
            a, b = results[i], results[k + i]
            tail = f", {a['backend']}" if k > 1 else ""
            ratios[f"latency {a['model']} / {b['model']} (p50{tail})"] = a["p50_ms"] / b["p50_ms"]
        a, b = results[0], results[k]
        ratios[f"params {a['model']} / {b['model']}"] = a["params"] / b["params"]
        if a["peak_mb"] and b["peak_mb"]:
            ratios[f"peak memory {a['model']} / {b['model']}"] = a["peak_mb"] / b["peak_mb"]
        diffs = config_mismatch(subjects[0].config, subjects[k].config, subjects[0].inputs, subjects[k].inputs)
        if diffs:
            warnings.append(f"{a['model']} and {b['model']} differ in " + "; ".join(diffs)
                            + ": the ratios measure that difference too, not the method alone")
    return {"mode": "train step" if train else "inference", "batch_size": results[0]["batch"],
            "device": _device_name(dev), "threads": torch.get_num_threads(),
            "repeats": repeats, "results": results, "ratios": ratios, "warnings": warnings,
            "machine": {"peak_gflops_per_s": peak["flops"] / 1e9, "measured_with": f"fp32 GEMM {peak['size']}^2",
                        "key": peak["key"], "cached": peak["cached"]}}



def _device_name(dev) -> str:
    import torch
    return f"{dev} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"
