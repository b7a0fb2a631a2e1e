"""`zoo compare A B ...`: models of one task measured side by side in one process on the same data:
parameters, FLOPs, latency p50/p90 per backend (interleaved, so machine drift hits all alike), peak
memory and the task's metrics; a Markdown table and a self-contained HTML report with plots."""

from __future__ import annotations

import base64
import copy
import html
import io
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import Field

import zoo.registry as reg
from zoo._io import atomic_write_text, pyplot
from zoo.errors import ConfigError, UnknownNameError, ZooError
from zoo.options import Options

#: backend -> what it runs
BACKENDS = {
    "eager": "PyTorch eager, inference mode",
    "fused": "eager after .fuse() (re-parameterised branches merged), where the model has one",
    "onnxruntime": "ONNX export run by onnxruntime (CPU provider), parity-checked against PyTorch",
    "compile": "torch.compile (inductor), where it compiles",
}
DEFAULT_BACKENDS = ("eager", "fused", "onnxruntime")


class CompareOptions(Options):
    repeats: int = Field(20, description="timed repetitions per model and backend (interleaved)")
    warmup: int = Field(3, description="untimed repetitions first")
    eval_batches: int = Field(0, description="evaluate on only the first N items of the eval set (0: all)")


def _task_of(name: str) -> str:
    from zoo.loading import is_checkpoint_dir, run_info
    if is_checkpoint_dir(name):
        return run_info(name)["task"]
    return reg.resolve(name)[1].task


def check_request(names: list[str], backends: list[str] | None) -> list[str]:
    """Refusals that need no model: fewer than two models, mixed tasks, unknown backends."""
    if len(names) < 2:
        raise ZooError(f"compare needs at least two models, got {len(names)}: "
                       f"{', '.join(names) or 'none'} (`zoo bench NAME` measures one)")
    if len(set(names)) != len(names):
        raise ZooError("compare got the same model twice: " + ", ".join(n for n in names if names.count(n) > 1))
    tasks = {n: _task_of(n) for n in names}
    if len(set(tasks.values())) > 1:
        raise ConfigError("cannot compare models of different tasks: "
                          + ", ".join(f"{n} ({t})" for n, t in tasks.items()))
    backends = list(backends or DEFAULT_BACKENDS)
    for b in backends:
        if b not in BACKENDS:
            raise UnknownNameError("backend", b, BACKENDS)
    return backends


def _subset(ds, n: int):
    if not n or n >= len(ds):
        return ds
    import torch.utils.data as tud
    sub = tud.Subset(ds, range(n))
    for attr in ("split", "name"):   # what tasks read off a dataset besides its items
        if hasattr(ds, attr):
            setattr(sub, attr, getattr(ds, attr))
    return sub


class _Entry:
    """One model: built once, its callables per backend, its metrics on the shared dataset."""

    def __init__(self, name, dataset, hub, dev, raw_options, backends, tmp, notes):
        import torch

        from zoo.loading import dataset_for, load, options_for
        from zoo.verbs.bench import count_flops
        from zoo.tasks.base import to_device
        self.loaded = load(name, dataset=dataset, hub=hub, device=dev)
        self.name = self.loaded.full_name
        self.notes = []
        opts = options_for(self.loaded, "compare", raw_options, CompareOptions)
        self.repeats, self.warmup = int(opts.pop("repeats", 20)), int(opts.pop("warmup", 3))
        eval_batches = int(opts.pop("eval_batches", 0))
        model, task = self.loaded.model.eval(), self.loaded.task
        if self.loaded.tag is None and self.loaded.folder is None:
            self.notes.append("no checkpoint: random weights, its metrics mean nothing")
        self.params = sum(p.numel() for p in model.parameters())
        # latency of one sample unless asked; the same seed gives every model the same example draw
        lat_opts = {**opts, "batch_size": opts.get("batch_size") or 1}
        torch.manual_seed(0)
        self.args = tuple(to_device(tuple(task.example_input(model, lat_opts)), dev))
        self.inputs = [list(a.shape) for a in self.args if hasattr(a, "shape")]
        self.flops = count_flops(model, self.args)
        self.metrics, self.dataset = {}, None
        ds, self.dataset = dataset_for(self.loaded, dataset, None, "test", opts)
        ds = _subset(ds, eval_batches)
        self.eval_items = len(ds)
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.metrics = task.evaluate(model, ds, opts)
        self.eval_seconds = time.perf_counter() - t0
        self.run = {}
        for b in backends:
            try:
                fn = self._backend(b, model, dev, tmp, opts)
            except Exception as exc:  # a backend that cannot take this model: say so, keep the others
                fn, why = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
                self.notes.append(f"{b}: not available ({why})")
            if fn is not None:
                self.run[b] = fn

    def _backend(self, b, model, dev, tmp, opts):
        import torch
        if b == "eager":
            return lambda: model(*self.args)
        if b == "fused":
            if not hasattr(model, "fuse"):
                self.notes.append("fused: the model has no re-parameterisable branches (same as eager)")
                return None
            fused = copy.deepcopy(model)
            fused = fused.fuse() or fused
            fused.eval()
            return lambda: fused(*self.args)
        if b == "compile":
            compiled = torch.compile(model)
            with torch.inference_mode():
                compiled(*self.args)   # compile now, so a failure is a note, not a crash mid-timing
            return lambda: compiled(*self.args)
        if b == "onnxruntime":
            from zoo.backends import onnx_session
            from zoo.verbs.export import export_loaded
            path = Path(tmp) / f"{len(list(Path(tmp).iterdir()))}.onnx"
            cpu = copy.copy(self.loaded)
            cpu.model = copy.deepcopy(model).cpu()
            export_loaded(cpu, "onnx", out=path, fuse=True, options={**opts, "batch_size": self.args[0].shape[0]})
            sess = onnx_session(path)   # this process's threads, spinning off (zoo.backends)
            feeds = {i.name: a.detach().cpu().numpy() for i, a in zip(sess.get_inputs(), self.args)}
            return lambda: sess.run(None, feeds)
        raise UnknownNameError("backend", b, BACKENDS)


def _pct(ts: list[float], q: float) -> float:
    ts = sorted(ts)
    return ts[min(len(ts) - 1, int(round(q * (len(ts) - 1))))]


def compare(names: list[str], *, dataset: str | None = None, report=None, backends=None, hub=None,
            device: str | None = None, options: dict | None = None, overwrite: bool = False) -> dict:
    backends = check_request(list(names), backends)
    html_path = md_path = None
    if report is not None:
        html_path = Path(report)
        if html_path.suffix.lower() not in (".html", ".htm"):
            raise ZooError(f"--report {report}: give an .html path (the Markdown goes beside it as .md)")
        md_path = html_path.with_suffix(".md")
        for p in (html_path, md_path):
            if p.is_dir():
                raise ZooError(f"--report: {p} is a folder")
            if p.exists() and not overwrite:
                raise ZooError(f"{p} exists; pass --overwrite to replace it")
    import torch

    from zoo.loading import resolve_device
    from zoo.verbs.bench import _device_name, peak_memory_mb
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="zoo-compare-") as tmp:
        # no --dataset: the data the first model was trained on, for all of them
        entries = [_Entry(names[0], dataset, hub, dev, options, backends, tmp, [])]
        dataset = dataset or entries[0].dataset
        entries += [_Entry(n, dataset, hub, dev, options, backends, tmp, []) for n in names[1:]]
        repeats, warmup = entries[0].repeats, entries[0].warmup
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        pairs = [(e, b) for b in backends for e in entries if b in e.run]
        times = {(e.name, b): [] for e, b in pairs}
        with torch.inference_mode():
            for e, b in pairs:
                for _ in range(warmup):
                    e.run[b]()
            for _ in range(repeats):   # interleaved: every (model, backend) once per round
                for e, b in pairs:
                    sync()
                    t0 = time.perf_counter()
                    e.run[b]()
                    sync()
                    times[(e.name, b)].append(time.perf_counter() - t0)
        rows = []
        for e in entries:
            def eager(e=e):
                with torch.inference_mode():
                    e.run["eager"]() if "eager" in e.run else e.loaded.model(*e.args)
            rows.append({
                "model": e.name, "params": e.params, "gflops": e.flops / 1e9 if e.flops is not None else None,
                "peak_mb": peak_memory_mb(eager, dev), "inputs": e.inputs, "metrics": e.metrics,
                "eval_items": e.eval_items, "eval_seconds": round(e.eval_seconds, 2), "notes": e.notes,
                "latency": {b: ({"p50_ms": statistics.median(times[(e.name, b)]) * 1e3,
                                 "p90_ms": _pct(times[(e.name, b)], 0.9) * 1e3} if (e.name, b) in times else None)
                            for b in backends}})
    task = entries[0].loaded.task
    res = {"task": task.name, "dataset": entries[0].dataset, "device": _device_name(dev),
           "threads": torch.get_num_threads(), "repeats": repeats, "backends": backends,
           "main_metric": task.main_metric, "lower_is_better": bool(task.lower_is_better), "models": rows}
    if html_path is not None:
        md = markdown(res)
        atomic_write_text(md_path, md)
        atomic_write_text(html_path, render_html(res, md))
        res["report"] = {"html": str(html_path), "markdown": str(md_path)}
    return res


# ---- rendering -----------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _metric_names(res) -> list[str]:
    names: list[str] = []
    for r in res["models"]:
        names += [k for k in r["metrics"] if k not in names]
    return names


def table_rows(res) -> tuple[list[str], list[list[str]]]:
    head = ["model", "params", "GFLOPs", "peak MB"] + [f"{b} p50/p90 ms" for b in res["backends"]]
    metrics = _metric_names(res)
    head += metrics
    body = []
    for r in res["models"]:
        row = [r["model"], _fmt(r["params"]), _fmt(r["gflops"]), _fmt(r["peak_mb"])]
        for b in res["backends"]:
            lat = r["latency"].get(b)
            row.append(f"{lat['p50_ms']:.3f} / {lat['p90_ms']:.3f}" if lat else "n/a")
        row += [_fmt(r["metrics"].get(m)) for m in metrics]
        body.append(row)
    return head, body


def markdown(res) -> str:
    head, body = table_rows(res)
    lines = [f"# zoo compare: {', '.join(r['model'] for r in res['models'])}", "",
             f"Task {res['task']}, dataset {res['dataset']} (test split), {res['device']}, {res['threads']} threads, "
             f"{res['repeats']} interleaved repeats; latency of one example input "
             f"(shapes {res['models'][0]['inputs']}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    notes = [f"- {r['model']}: {n}" for r in res["models"] for n in r["notes"]]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", f"Main metric: {res['main_metric']} ({'lower' if res['lower_is_better'] else 'higher'} is better)."]
    return "\n".join(lines) + "\n"


def _png(fig) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def pareto(points: list[tuple[float, float, str]], lower_is_better: bool) -> list[str]:
    """Names on the front of (latency, metric): nothing else is both faster and at least as good."""
    front = []
    for x, y, name in points:
        better = (lambda a, b: a <= b) if lower_is_better else (lambda a, b: a >= b)
        dominated = any(x2 <= x and better(y2, y) and (x2, y2) != (x, y) for x2, y2, _ in points)
        if not dominated:
            front.append(name)
    return front


def plots(res) -> dict[str, str]:
    """base64 PNGs: metric vs latency with its Pareto front, and latency per backend."""
    plt = pyplot()
    out = {}
    m = res["main_metric"]
    pts = [(r["latency"]["eager"]["p50_ms"], float(r["metrics"][m]), r["model"]) for r in res["models"]
           if r["latency"].get("eager") and isinstance(r["metrics"].get(m), (int, float))]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        front = set(pareto(pts, res["lower_is_better"]))
        for x, y, name in pts:
            ax.scatter([x], [y], s=40, color="tab:red" if name in front else "tab:blue")
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        fp = sorted((x, y) for x, y, n in pts if n in front)
        ax.plot([p[0] for p in fp], [p[1] for p in fp], "--", color="tab:red", lw=1, label="Pareto front")
        ax.set_xlabel("eager latency p50 (ms)")
        ax.set_ylabel(f"{m} ({'lower' if res['lower_is_better'] else 'higher'} is better)")
        ax.legend(fontsize=8)
        ax.set_title(f"{m} vs latency")
        out["pareto"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    n, width = len(res["models"]), 0.8 / max(1, len(res["models"]))
    for i, r in enumerate(res["models"]):
        vals = [r["latency"][b]["p50_ms"] if r["latency"].get(b) else 0.0 for b in res["backends"]]
        xs = [j + i * width for j in range(len(res["backends"]))]
        ax.bar(xs, vals, width, label=r["model"])
    ax.set_xticks([j + width * (n - 1) / 2 for j in range(len(res["backends"]))], res["backends"])
    ax.set_ylabel("latency p50 (ms)")
    ax.set_title("latency per backend (0: not available)")
    ax.legend(fontsize=8)
    out["backends"] = _png(fig)
    return out


def render_html(res, md: str | None = None) -> str:
    """One file, no external assets: the table, the notes and the plots inlined as base64 PNG."""
    head, body = table_rows(res)
    e = html.escape
    cells = "".join(f"<th>{e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
    notes = "".join(f"<li>{e(r['model'])}: {e(n)}</li>" for r in res["models"] for n in r["notes"])
    imgs = "".join(f'<figure><img alt="{e(k)}" src="data:image/png;base64,{v}"><figcaption>{e(k)}</figcaption>'
                   f"</figure>" for k, v in plots(res).items())
    title = "zoo compare: " + ", ".join(r["model"] for r in res["models"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}</style></head>
<body><h1>{e(title)}</h1>
<p>Task {e(res['task'])}, dataset {e(str(res['dataset']))} (test split), {e(res['device'])}, {res['threads']} threads,
{res['repeats']} interleaved repeats; latency of one example input (shapes {e(str(res['models'][0]['inputs']))}).
Main metric: {e(res['main_metric'])} ({'lower' if res['lower_is_better'] else 'higher'} is better).</p>
<table><thead><tr>{cells}</tr></thead><tbody>{trs}</tbody></table>
{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}
<h2>Plots</h2>{imgs}
</body></html>
"""
