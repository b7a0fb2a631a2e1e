"""Inference backends: the same model run by eager PyTorch, torch.compile, onnxruntime or OpenVINO.

`prepare(loaded, task, backend)` returns a `Prepared`: an nn.Module that stands in for the model
everywhere a task uses it (same inputs, same output structure, the model's own attributes and
methods), with the heavy part of the graph run by the backend. For a model with a deploy view
(`HasDeployView`, e.g. a detector whose exported graph stops before its top-k), the backend runs
that view and the model's own Python code does the rest (`detect` = top-k of the backend's dense
output), so tasks' evaluate/predict use it unchanged.

Every non-eager path is checked for parity against eager on the task's example input before use
(each output within atol + rtol x its largest magnitude; a detector's top-k boxes too) and falls
back to eager with one line on stderr when it drifts or cannot be built. ONNX files are cached under
ZOO_CACHE (or ~/.cache/zoo)/backends, keyed by model, a hash of its weights and the input shapes.
`auto` times every available backend on the example input (interleaved, medians) and keeps the
fastest that passes parity; the choice is cached per model and machine.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo._io import atomic_path, atomic_write_text, cpu_model
from zoo._io import cache_dir as zoo_cache_dir   # `cache_dir` is a parameter name here
from zoo.errors import ConfigError, ExportError, UnknownNameError
from zoo.tasks.base import HasDeployView, Reparameterisable

BACKENDS = ("eager", "compile", "onnxruntime", "openvino", "openvino-bf16", "auto")

#: parity tolerance of fp32 backends against eager: atol + rtol x (largest magnitude of the output)
ATOL, RTOL = 1e-4, 1e-3
#: a detector's top-k: scores within this, and each confident box at IoU >= TOPK_IOU with one of the
#: backend's boxes of the same class
TOPK_SCORE_TOL, TOPK_IOU, TOPK_CHECK = 1e-3, 0.98, 20
#: reduced-precision backends and their parity tolerances (atol, rtol, top-k score, top-k IoU). bf16
#: keeps 8 bits of mantissa, so a deep network's outputs move by about 1 % of their largest magnitude
#: (MHAF-YOLO-N at 640: 0.3 %); the check still catches a broken graph, and the task's metric under
#: the backend (`zoo eval --backend openvino-bf16`) is what tells whether the precision is enough.
#: `auto` never picks one unless it is named in its candidates.
REDUCED_PRECISION = {"openvino-bf16": (1e-2, 3e-2, 3e-2, 0.9)}
#: the INFERENCE_PRECISION_HINT each OpenVINO backend compiles with
OPENVINO_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


# ---------------------------------------------------------------------------------------------
# Outputs and their comparison (export's parity check uses these too)
# ---------------------------------------------------------------------------------------------
def flatten_outputs(out) -> list:
    """Every tensor in a model's output (tensor, dict, list or tuple, nested), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def _rebuild(ref, tensors: list):
    """`ref`'s structure with its tensors replaced, in flatten_outputs order, by `tensors`."""
    it = iter(tensors)

    def walk(o):
        if isinstance(o, torch.Tensor):
            return next(it)
        if isinstance(o, dict):
            return type(o)((k, walk(v)) for k, v in o.items())
        if isinstance(o, tuple) and hasattr(o, "_fields"):
            return type(o)(*[walk(v) for v in o])
        if isinstance(o, (list, tuple)):
            return type(o)(walk(v) for v in o)
        return o
    return walk(ref)


def output_errors(ref: list, got: list) -> tuple[float, float, float]:
    """(max abs error, max error relative to each output's largest magnitude, largest magnitude)."""
    if len(ref) != len(got):
        raise ExportError(f"the backend returns {len(got)} outputs, PyTorch returns {len(ref)}")
    abs_err, rel_err, scale = 0.0, 0.0, 0.0
    for r, g in zip(ref, got):
        g = torch.as_tensor(g).to(r.device, r.dtype)
        if r.shape != g.shape:
            raise ExportError(f"backend output shape {tuple(g.shape)} != PyTorch {tuple(r.shape)}")
        if r.numel() == 0:
            continue
        d = float((r.float() - g.float()).abs().max())
        m = float(r.float().abs().max())
        abs_err, scale = max(abs_err, d), max(scale, m)
        rel_err = max(rel_err, d / max(m, 1e-12))
    return abs_err, rel_err, scale


def topk_parity(ref: torch.Tensor, got: torch.Tensor, k: int = TOPK_CHECK, score_tol: float = TOPK_SCORE_TOL,
                min_iou_allowed: float = TOPK_IOU, tie: float | None = None) -> dict:
    """Compare two (B, n, 6) [x1, y1, x2, y2, score, label] detection sets, best first: the sorted
    scores must agree, and each of the top `k` reference boxes whose score is clear of its
    neighbours (near-equal scores may swap places across runtimes) must have a box of the same
    class at IoU >= TOPK_IOU among the backend's top 2k. Returns the worst numbers and `ok`."""
    from torchvision.ops import box_iou
    ref, got = ref.float().cpu(), got.float().cpu()
    if ref.shape != got.shape:
        return {"ok": False, "why": f"top-k shape {tuple(got.shape)} != {tuple(ref.shape)}"}
    score_err, min_iou, checked = 0.0, 1.0, 0
    for r, g in zip(ref, got):
        rs, gs = r[:, 4].sort(descending=True).values, g[:, 4].sort(descending=True).values
        if len(rs):
            score_err = max(score_err, float((rs - gs).abs().max()))
        n = min(k, len(r))
        for i in range(n):
            s = float(r[i, 4])
            gaps = [abs(s - float(r[j, 4])) for j in (i - 1, i + 1) if 0 <= j < len(r)]
            if gaps and min(gaps) <= (2 * score_tol if tie is None else tie):
                continue   # a near tie: its rank is not defined across runtimes
            cand = g[:2 * k]
            cand = cand[cand[:, 5] == r[i, 5]]
            iou = float(box_iou(r[i:i + 1, :4], cand[:, :4]).max()) if len(cand) else 0.0
            min_iou, checked = min(min_iou, iou), checked + 1
    ok = score_err <= score_tol and min_iou >= min_iou_allowed
    return {"ok": ok, "score_err": score_err, "min_iou": min_iou, "boxes_checked": checked,
            **({} if ok else {"why": f"top-k drifts: score error {score_err:.3g} (tol {score_tol}), "
                                     f"worst IoU {min_iou:.3f} (min {min_iou_allowed})"})}


# ---------------------------------------------------------------------------------------------
# ONNX: writing (zoo export uses this exporter) and onnxruntime sessions
# ---------------------------------------------------------------------------------------------
def dynamic_shapes(task, args):
    """Batch is dynamic for every input; a task may name more axes (e.g. query points)."""
    axes = task.dynamic_axes(args)
    dims: dict[str, object] = {}
    return tuple({ax: dims.setdefault(name, torch.export.Dim(name, min=1, max=1 << 20)) for ax, name in spec.items()}
                 for spec in axes)


def write_onnx(model: nn.Module, args: tuple, path: str | Path, task, notes: list | None = None) -> None:
    """Export `model` on `args` to `path` (dynamo exporter, dynamic axes from the task; the
    TorchScript-based exporter when dynamo cannot take the graph)."""
    notes = notes if notes is not None else []
    names = [f"input{i}" for i in range(len(args))]
    dynamic = dynamic_shapes(task, args)
    try:
        prog = torch.onnx.export(model, args, dynamo=True, input_names=names, dynamic_shapes=dynamic,
                                 optimize=True, verbose=False)
        prog.save(str(path))
        notes.append("exported with the dynamo ONNX exporter, dynamic batch axis")
    except Exception as exc:  # some graphs only go through the TorchScript-based exporter
        notes.append(f"dynamo exporter failed ({type(exc).__name__}); used the TorchScript exporter")
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=names,
                          dynamic_axes={n: {ax: str(d) for ax, d in spec.items()}
                                        for n, spec in zip(names, task.dynamic_axes(args))},
                          opset_version=17)


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session with this process's thread count and thread spinning off (spinning
    threads burn the cores other work needs: at 2 threads it cost MHAF-YOLO-N 80 vs 58 ms)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _numpy(t: torch.Tensor):
    return t.detach().cpu().contiguous().numpy()


class _OrtRunner:
    """Calls an onnxruntime session with torch tensors; returns torch tensors on the inputs' device."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self.session = onnx_session(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args):
        outs = self.session.run(None, {n: _numpy(a) for n, a in zip(self.names, args)})
        device = args[0].device if args and isinstance(args[0], torch.Tensor) else torch.device("cpu")
        return [torch.from_numpy(o).to(device) for o in outs]

    def __deepcopy__(self, memo):   # a session is shared, never copied
        return self


class _OpenVinoRunner:
    """The same ONNX file compiled by OpenVINO for the CPU: fp32 unless asked (OpenVINO would
    otherwise downcast to bf16 by itself on CPUs with AMX), or bf16 (`precision="bf16"`).

    The file has a dynamic batch axis; OpenVINO runs a graph compiled for static shapes about 7 %
    faster (MHAF-YOLO-N, fp32, measured side by side). So each new set of input shapes gets its own
    static compile, up to `STATIC_SHAPES` of them (an eval sees one or two: the batch and the last,
    smaller one); past that, or where a graph will not take static shapes, the dynamic compile runs."""

    STATIC_SHAPES = 4

    def __init__(self, path: Path, threads: int | None = None, precision: str = "f32"):
        import openvino as ov
        self.core = ov.Core()
        self.config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self.path = Path(path)
        self.by_shape: dict[tuple, tuple] = {}
        self._dynamic = None

    def _compile(self, shapes: tuple | None):
        model = self.core.read_model(str(self.path))
        if shapes is not None:
            model.reshape({port: list(shape) for port, shape in zip(model.inputs, shapes)})
        compiled = self.core.compile_model(model, "CPU", self.config)
        return compiled, compiled.create_infer_request()

    def _for(self, shapes: tuple):
        hit = self.by_shape.get(shapes)
        if hit is not None:
            return hit
        if len(self.by_shape) < self.STATIC_SHAPES:
            try:
                hit = self._compile(shapes)
            except RuntimeError:   # a graph whose shape arithmetic needs the dynamic form
                hit = None
        if hit is None:
            if self._dynamic is None:
                self._dynamic = self._compile(None)
            hit = self._dynamic
        if len(self.by_shape) < self.STATIC_SHAPES:
            self.by_shape[shapes] = hit
        return hit

    def __call__(self, *args):
        arrays = [_numpy(a) for a in args]
        compiled, request = self._for(tuple(a.shape for a in arrays))
        res = request.infer(arrays)
        device = args[0].device if args and isinstance(args[0], torch.Tensor) else torch.device("cpu")
        return [torch.from_numpy(res[o].copy()).to(device) for o in compiled.outputs]

    def __deepcopy__(self, memo):
        return self


# ---------------------------------------------------------------------------------------------
# The stand-in module
# ---------------------------------------------------------------------------------------------
class Prepared(nn.Module):
    """The model, with `method` (its forward, or the method its deploy view computes) run by a
    backend. Everything else (attributes, other methods, parameters) is the model's own; the model's
    methods run with `self` = this module, so their inner calls of `method` go through the backend."""

    def __init__(self, model: nn.Module, backend: str, runner: Callable, method: str = "forward", *,
                 parity: float | None = None, fallback_reason: str | None = None, detail: dict | None = None):
        super().__init__()
        self._zoo_inner = model
        self.__dict__["_zoo_runner"] = runner
        self.__dict__["_zoo_method"] = method
        self.backend = backend
        self.parity = parity
        self.fallback_reason = fallback_reason
        self.detail = dict(detail or {})
        self.training = model.training

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        inner = self._modules["_zoo_inner"]
        if name == self.__dict__.get("_zoo_method"):
            return self.__dict__["_zoo_runner"]
        attr = inspect.getattr_static(type(inner), name, None)
        if isinstance(attr, types.FunctionType) and not hasattr(nn.Module, name):
            return types.MethodType(attr, self)   # the model's own method, on this stand-in
        return getattr(inner, name)

    def forward(self, *args, **kwargs):
        if self.__dict__["_zoo_method"] == "forward":
            return self.__dict__["_zoo_runner"](*args, **kwargs)
        return type(self._modules["_zoo_inner"]).forward(self, *args, **kwargs)

    def unwrap(self) -> nn.Module:
        """The eager model underneath."""
        return self._modules["_zoo_inner"]

    def summary(self) -> dict:
        """What a verb's JSON reports: backend, parity and why it fell back (if it did)."""
        ran_eager = getattr(self.__dict__.get("_zoo_runner"), "failed", None)
        return {"backend": self.backend, "parity": self.parity,
                **({"fallback_reason": self.fallback_reason} if self.fallback_reason else {}),
                **({"ran_eager_after": ran_eager} if ran_eager else {}),
                **{k: v for k, v in self.detail.items() if k in ("topk", "build_seconds", "auto", "requested")}}


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------
def available_backends() -> list[str]:
    """The concrete backends this installation can run (eager and compile always)."""
    out = ["eager", "compile"]
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    if "openvino" in out and "BF16" in openvino_capabilities():
        out.append("openvino-bf16")
    return out


@functools.cache
def openvino_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says this processor can compute (BF16 where it has AVX512-BF16 or
    AMX; without them a bf16 hint would silently run fp32, so the backend is not offered)."""
    import openvino as ov
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _unavailable(backend: str) -> str:
    if backend == "openvino-bf16":
        try:
            caps = openvino_capabilities()
        except ImportError:
            return "openvino is not installed (pip install openvino)"
        return f"this CPU has no bf16 arithmetic (OpenVINO CPU capabilities: {', '.join(caps)})"
    return f"{backend} is not installed (pip install {backend})"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return zoo_cache_dir("backends")


def weights_sha(model: nn.Module) -> str:
    """sha256 of the model's state (names, shapes and bytes): the checkpoint's identity, also for a
    fine-tuned or bare model."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def machine_id(threads: int | None = None) -> str:
    """CPU model string and thread count: what a timing depends on."""
    return f"{cpu_model()}|threads={threads or torch.get_num_threads()}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Reference:
    """What every backend of one prepare() call shares: the (fused) model, the view the backend
    runs, the model method it replaces, the example input and eager's reference outputs."""

    def __init__(self, loaded, task, options: dict, fuse: bool):
        from zoo.loading import Loaded
        if isinstance(loaded, Prepared):
            loaded = loaded.unwrap()
        if isinstance(loaded, nn.Module):
            cfg = getattr(loaded, "zoo_cfg", {}) or {}
            task = task or cfg.get("task")
            if task is None:
                raise ConfigError("prepare(model, task, ...): name the task of a bare model")
            loaded = Loaded(loaded, str(cfg.get("name") or type(loaded).__name__), None,
                            task if isinstance(task, str) else task.name, dict(cfg.get("config") or {}))
        if task is None or isinstance(task, str):
            from zoo.tasks import get_task
            task = get_task(task or loaded.task_name)
        self.loaded, self.task, self.options = loaded, task, dict(options or {})
        model = loaded.model
        if fuse and isinstance(model, Reparameterisable) and not model.fused:
            with torch.inference_mode(False), torch.no_grad():
                model = copy.deepcopy(model).fuse() or model   # the caller's model stays as it was
        self.model = model.eval()
        self.args = tuple(task.example_input(self.model, self.options))
        self.view, self.method, self.ref_out = self._view_and_method()
        self.ref = flatten_outputs(self.ref_out)
        self.name = loaded.full_name
        self.sha = weights_sha(self.model)

    def _view_and_method(self):
        """The module the backend runs and the model method it stands for. For a model with a deploy
        view the method is found by running the view once and seeing which of the model's own
        methods it calls first (MHAF-YOLO's view calls `dense`)."""
        model = self.model
        if not isinstance(model, HasDeployView):
            with torch.inference_mode():
                return model, "forward", model(*self.args)
        view = model.export_model().eval()
        called: list[str] = []
        names = [n for n, a in inspect.getmembers(type(model)) if isinstance(inspect.getattr_static(type(model), n, None),
                 types.FunctionType) and not n.startswith("_") and not hasattr(nn.Module, n)]
        for n in names:
            bound = getattr(model, n)

            def spy(*a, _n=n, _f=bound, **k):
                called.append(_n)
                return _f(*a, **k)
            model.__dict__[n] = spy
        try:
            with torch.inference_mode():
                out = view(*self.args)
        finally:
            for n in names:
                model.__dict__.pop(n, None)
        if not called:
            raise ExportError("the deploy view computes none of the model's own methods; "
                              "a backend could not stand in for it")
        return view, called[0], out

    def eager(self) -> Prepared:
        return Prepared(self.model, "eager", getattr(self.model, self.method), self.method, parity=0.0)

    # ---- the backends ----------------------------------------------------------------------------
    def onnx_file(self, cache_dir) -> Path:
        shapes = "_".join("x".join(map(str, a.shape)) for a in self.args)
        key = hashlib.sha256(f"{self.name}|{self.sha}|{shapes}|{torch.__version__}|{_source_sha(self.view)}"
                             .encode()).hexdigest()[:16]
        stem = "".join(c if c.isalnum() or c in "-._" else "_" for c in self.name)[-80:]
        path = cache_root(cache_dir) / "onnx" / f"{stem}-{key}-{shapes}.onnx"
        if not path.is_file():
            view = copy.deepcopy(self.view).cpu() if self.args[0].device.type != "cpu" else self.view
            args = tuple(a.cpu() for a in self.args)
            with atomic_path(path) as tmp:
                try:
                    write_onnx(view, args, tmp, self.task)
                finally:
                    for extra in tmp.parent.glob(tmp.name + "?*"):
                        extra.unlink(missing_ok=True)
        return path

    def build(self, backend: str, cache_dir) -> tuple[Callable, dict]:
        detail: dict[str, Any] = {}
        t0 = time.perf_counter()
        if backend == "compile":
            runner = _Tensors(torch.compile(self.view))
            with torch.inference_mode():
                got = runner(*self.args)   # the compile happens here, once
        elif backend == "onnxruntime" or backend in OPENVINO_PRECISION:
            path = self.onnx_file(cache_dir)
            runner = (_OrtRunner(path) if backend == "onnxruntime"
                      else _OpenVinoRunner(path, precision=OPENVINO_PRECISION[backend]))
            got = runner(*self.args)
            detail["onnx"] = str(path)
        else:
            raise UnknownNameError("backend", backend, BACKENDS)
        detail["build_seconds"] = round(time.perf_counter() - t0, 2)
        return runner, {**detail, "got": got}

    def _check_other_batch(self, runner: Callable, atol: float, rtol: float) -> None:
        """The same parity on a batch one larger: a graph that fixed the example's batch size somewhere
        (a reshape traced with a constant, an input held over from an earlier call) answers the
        example right and any other batch wrong."""
        args = _with_one_more(self.args, self.task.dynamic_axes(self.args))
        if all(a is b for a, b in zip(args, self.args)):
            return
        try:
            with torch.inference_mode():
                ref = flatten_outputs(self.view(*args))
        except Exception:   # inputs whose first axis is not a batch (a graph's edge list): no second check
            return
        try:
            abs_err, _, scale = output_errors(ref, runner(*args))
        except ExportError as exc:
            raise ExportError(f"at batch {args[0].shape[0]}: {exc}") from None
        if abs_err > atol + rtol * scale:
            raise ExportError(f"output drifts from eager at batch {args[0].shape[0]}: max abs error {abs_err:.3g}")

    def check(self, backend: str, runner: Callable, got: list, detail: dict) -> Prepared:
        """Parity against eager (raw outputs, then a detector's top-k) within the backend's
        tolerance (fp32's, or its own for a reduced precision); ExportError when it drifts."""
        atol, rtol, score_tol, iou = REDUCED_PRECISION.get(backend, (ATOL, RTOL, TOPK_SCORE_TOL, TOPK_IOU))
        abs_err, rel_err, scale = output_errors(self.ref, got)
        if abs_err > atol + rtol * scale:
            raise ExportError(f"output drifts from eager: max abs error {abs_err:.3g} > {atol:g} + {rtol:g} x {scale:.3g}")
        if backend != "compile":   # torch.compile guards shapes itself; a second shape would recompile
            self._check_other_batch(runner, atol, rtol)
        graph_inputs = self.task.graph_inputs if backend != "compile" else (lambda args: args)
        prepared = Prepared(self.model, backend, _Structured(runner, self.ref_out, getattr(self.model, self.method),
                                                             f"backend {backend} for {self.name}", len(self.args),
                                                             graph_inputs),
                            self.method, parity=abs_err, detail=detail)
        if callable(getattr(type(self.model), "detect", None)) and "detect" in _protocol_members(self.task):
            with torch.inference_mode():
                ref_k, got_k = self.model.detect(*self.args), prepared.detect(*self.args)
            # a reduced precision moves scores more, yet a box it keeps still lands among the backend's
            # top 2k: the near-tie window stays fp32's, so the IoU check covers the boxes that matter
            top = topk_parity(ref_k, got_k, score_tol=score_tol, min_iou_allowed=iou, tie=2 * TOPK_SCORE_TOL)
            prepared.detail["topk"] = {k: v for k, v in top.items() if k != "why"}
            if not top["ok"]:
                raise ExportError(top["why"])
        return prepared


def _source_sha(module: nn.Module) -> str:
    """sha256 of the files that define the module's classes (the model file, its layers): a cached
    export is rebuilt when the code that writes the graph changes, not only the weights."""
    h = hashlib.sha256()
    for path in sorted({inspect.getsourcefile(type(m)) or "" for m in module.modules()}):
        if path and "site-packages" not in path and Path(path).is_file():
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def _with_one_more(args: tuple, axes: list[dict]) -> tuple:
    """The example input with its first sample repeated at the end, on every input whose batch axis is dynamic."""
    return tuple(torch.cat([a, a[:1]]) if isinstance(a, torch.Tensor) and 0 in spec else a
                 for a, spec in zip(args, axes))


class _Tensors:
    """A compiled module's output as the flat tensor list the other runners return."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return flatten_outputs(self.fn(*args))

    def __deepcopy__(self, memo):
        return self


class _Structured:
    """A runner's flat tensors put back into the structure eager returns (dicts, tuples, ...). An
    input the backend cannot take (a shape its graph was not exported for) runs eager from then on,
    said once in one line."""

    def __init__(self, runner, ref_out, eager: Callable, label: str, n_inputs: int | None = None,
                 graph_inputs: Callable = lambda args: args):
        self.runner, self.ref_out, self.eager, self.label = runner, ref_out, eager, label
        self.n_inputs, self.graph_inputs = n_inputs, graph_inputs
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                if kwargs or (self.n_inputs is not None and len(args) != self.n_inputs):
                    # a call that leaves an input to the model's default (or names it) is not the
                    # graph's call: OpenVINO would silently reuse the previous call's tensor there
                    raise ExportError(f"called with {len(args)} inputs{' and keywords' if kwargs else ''}, "
                                      f"the graph takes {self.n_inputs}")
                return _rebuild(self.ref_out, self.runner(*self.graph_inputs(args)))
            except Exception as exc:   # never a traceback mid-evaluation: eager gives the same answer
                self.failed = " ".join(str(exc).split())[:200] or type(exc).__name__
                _say(f"{self.label}: input {[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]} "
                     f"failed on the backend ({self.failed}); running eager from here")
        return self.eager(*args, **kwargs)

    def __deepcopy__(self, memo):
        return self


def _protocol_members(task) -> set:
    proto = task.model_protocol
    return set(getattr(proto, "__protocol_attrs__", ()) or [k for k in vars(proto) if not k.startswith("_")])


def from_file(loaded, path: str | Path, runtime: str = "onnxruntime", *, options: dict | None = None,
              fuse: bool = True) -> Prepared:
    """The model with its deploy method run from an existing ONNX file (an int8 one, say) by
    onnxruntime or OpenVINO. Parity against eager is measured and reported (`.parity`), not enforced:
    the caller judges the file by the task's metric."""
    base = Reference(loaded, None, options or {}, fuse)
    runner = (_OrtRunner if runtime == "onnxruntime" else _OpenVinoRunner)(Path(path))
    abs_err, _, _ = output_errors(base.ref, runner(*base.args))
    return Prepared(base.model, runtime, _Structured(runner, base.ref_out, getattr(base.model, base.method),
                                                     f"{runtime} {Path(path).name}", len(base.args),
                                                     base.task.graph_inputs),
                    base.method, parity=abs_err, detail={"onnx": str(path)})


class _Enough(Exception):
    pass


def record_inputs(loaded, dataset, options: dict, batches: int = 32, fuse: bool = True) -> list[tuple]:
    """The inputs (numpy arrays) the backend would see in the task's own evaluation of `dataset`,
    up to `batches` calls: calibration data for static quantisation, batched as the task batches."""
    import numpy as np
    base = Reference(loaded, None, options, fuse)
    eager = getattr(base.model, base.method)
    seen: list[tuple] = []

    def record(*args):
        seen.append(tuple(np.ascontiguousarray(_numpy(a)) for a in args))
        if len(seen) >= batches:
            raise _Enough
        return eager(*args)
    stand_in = Prepared(base.model, "eager", record, base.method)
    try:
        with torch.inference_mode():
            base.task.evaluate(stand_in, dataset, options)
    except _Enough:
        pass
    return seen


def check_name(backend: str) -> str:
    """An unknown backend is refused in one line with the closest names (exit 2)."""
    if backend not in BACKENDS:
        raise UnknownNameError("backend", str(backend), BACKENDS)
    return backend


def for_verb(loaded, backend: str, options: dict):
    """(the model as `backend` runs it, what a verb's JSON reports about it) for eval and predict.
    Eager, or a backend that fell back, is the loaded model itself, untouched."""
    check_name(backend)
    if backend == "eager":
        return loaded.model, {"backend": "eager", "parity": 0.0}
    prepared = prepare(loaded, loaded.task, backend, options=options, fuse=bool(options.get("fuse", True)))
    return (loaded.model if prepared.backend == "eager" else prepared), prepared.summary()


def prepare(loaded_or_model, task=None, backend: str = "eager", *, device=None, cache_dir=None,
            options: dict | None = None, fuse: bool = True, candidates: list[str] | None = None,
            quiet: bool = False) -> Prepared:
    """The model ready to run on `backend` (eager | compile | onnxruntime | openvino | auto).

    `loaded_or_model`: a `zoo.loading.Loaded` or a built model (then `task` names its task).
    `options`: the task options the example input is made with (batch_size, imgsz, ...).
    Non-eager backends are checked for parity against eager on the task's example input; a backend
    that drifts or cannot be built falls back to eager, with one line on stderr and the reason in
    `.fallback_reason`. `auto` times `candidates` (default: every available backend) and caches the
    fastest that passes parity per model and machine."""
    check_name(backend)
    if device is not None:
        from zoo.loading import resolve_device
        dev = resolve_device(device)
        target = loaded_or_model.model if hasattr(loaded_or_model, "task_name") else loaded_or_model
        target.to(dev)
    if backend == "eager":
        return Reference(loaded_or_model, task, options or {}, fuse).eager()
    try:
        base = Reference(loaded_or_model, task, options or {}, fuse)
    except ExportError as exc:   # no method for a backend to stand in for: the model as it is
        model = loaded_or_model.model if hasattr(loaded_or_model, "task_name") else loaded_or_model
        if not quiet:
            _say(f"backend {backend}: falling back to eager ({exc})")
        return Prepared(model, "eager", model.forward, parity=0.0, fallback_reason=str(exc),
                        detail={"requested": backend})
    if backend == "auto":
        return _auto(base, cache_dir, candidates, quiet)
    return _one(base, backend, cache_dir, quiet)


def _one(base: Reference, backend: str, cache_dir, quiet: bool = False) -> Prepared:
    if backend not in available_backends():
        reason = _unavailable(backend)
    else:
        try:
            runner, detail = base.build(backend, cache_dir)
            got = detail.pop("got")
            return base.check(backend, runner, got, detail)
        except Exception as exc:   # any failure to build or to match falls back: never a wrong answer
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            if not isinstance(exc, ExportError):
                reason = f"{type(exc).__name__}: {reason}"
    if not quiet:
        _say(f"backend {backend} for {base.name}: falling back to eager ({reason})")
    prepared = base.eager()
    prepared.fallback_reason = reason
    prepared.detail["requested"] = backend
    return prepared


def time_backends(prepared: dict[str, Prepared], args: tuple, method: str, budget_s: float = 8.0,
                  warmup: int = 2) -> dict[str, float]:
    """Median milliseconds per call of each prepared backend on `args`: warm-up, then rounds in which
    every backend runs once in turn (interleaved, so a busy neighbour slows all of them alike)."""
    calls = {name: getattr(p, method) for name, p in prepared.items()}
    with torch.inference_mode():
        for fn in calls.values():
            for _ in range(warmup):
                fn(*args)
        t0 = time.perf_counter()
        for fn in calls.values():
            fn(*args)
        one_round = time.perf_counter() - t0
        rounds = max(3, min(25, int(budget_s / max(one_round, 1e-6))))
        times: dict[str, list[float]] = {n: [] for n in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                t = time.perf_counter()
                fn(*args)
                times[name].append(time.perf_counter() - t)
    return {n: 1000 * statistics.median(v) for n, v in times.items()}


def _auto(base: Reference, cache_dir, candidates: list[str] | None, quiet: bool) -> Prepared:
    machine = machine_id()
    shapes = [list(a.shape) for a in base.args]
    key = hashlib.sha256(f"{base.name}|{base.sha}|{shapes}|{machine}".encode()).hexdigest()[:20]
    path = cache_root(cache_dir) / "auto" / f"{key}.json"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            choice = cached["choice"]
        except (OSError, ValueError, KeyError):
            cached, choice = None, None
        if choice in BACKENDS and choice != "auto":
            prepared = base.eager() if choice == "eager" else _one(base, choice, cache_dir, quiet)
            if prepared.fallback_reason is None:
                prepared.detail["auto"] = {**cached, "cached": True, "file": str(path)}
                if not quiet:
                    _say(f"backend auto for {base.name}: {choice} (cached choice: {cached.get('why', '')})")
                return prepared
    names = [b for b in (candidates or available_backends()) if b != "auto"]
    skipped = {}
    on_cpu = all(a.device.type == "cpu" for a in base.args if isinstance(a, torch.Tensor))
    if candidates is None and on_cpu and "compile" in names:
        # torch.compile's first build on a CPU takes minutes (about 30 min for MHAF-YOLO-N on a busy
        # 2-core machine): auto must not make a first eval that slow; `--backend compile` still works
        names.remove("compile")
        skipped["compile"] = "not tried by auto on a CPU (its build takes minutes); ask with --backend compile"
    for reduced in REDUCED_PRECISION:
        if candidates is None and reduced in names:   # a precision change is the user's call, never auto's
            names.remove(reduced)
            skipped[reduced] = f"reduced precision: not chosen by auto; ask with --backend {reduced} and read its metric"
    ready: dict[str, Prepared] = {"eager": base.eager()}
    failed: dict[str, str] = dict(skipped)
    for b in names:
        if b == "eager":
            continue
        p = _one(base, b, cache_dir, quiet=True)
        if p.fallback_reason:
            failed[b] = p.fallback_reason
        else:
            ready[b] = p
    medians = time_backends(ready, base.args, base.method)
    choice = min(medians, key=medians.get)
    others = ", ".join(f"{n} {m:.1f}" for n, m in sorted(medians.items(), key=lambda kv: kv[1]) if n != choice)
    why = (f"fastest median on the example input {shapes}: {medians[choice]:.1f} ms"
           + (f" vs {others} ms" if others else "") + (f"; left out: {', '.join(failed)}" if failed else ""))
    record = {"choice": choice, "why": why, "medians_ms": {k: round(v, 3) for k, v in medians.items()},
              "failed": failed, "machine": machine, "model": base.name, "shapes": shapes,
              "build_seconds": {n: p.detail.get("build_seconds") for n, p in ready.items() if n != "eager"},
              "parity": {n: {"max_abs": p.parity, **({"topk": p.detail["topk"]} if "topk" in p.detail else {})}
                         for n, p in ready.items() if n != "eager"},
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(path, json.dumps(record, indent=1))
    prepared = ready[choice]
    prepared.detail["auto"] = {**record, "cached": False, "file": str(path)}
    if not quiet:
        _say(f"backend auto for {base.name}: {choice} ({why})")
    return prepared
