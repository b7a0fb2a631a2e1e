"""Export to onnx / torchscript / pt2 / safetensors; every file is loaded back with its own runtime
and compared with PyTorch on the task's example input. Past the tolerance: ExportError, exit 1."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import Field

from zoo._io import temp_path
from zoo.errors import ExportError, UnknownNameError
from zoo.options import Options
from zoo.tasks.base import HasDeployView, Reparameterisable

class ExportOptions(Options):
    atol: float = Field(1e-4, description="absolute parity tolerance against PyTorch")
    rtol: float = Field(1e-4, description="relative parity tolerance (of each output's largest magnitude)")


def one_line(text: str) -> str:
    return " ".join(text.split())


FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2", "safetensors": ".safetensors"}


def flatten_outputs(out) -> list:
    """Every tensor in a model's output (tensor, dict, list or tuple, nested), in order."""
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def _errors(ref, got) -> tuple[float, float, float]:
    """max abs error, max rel error (relative to each output's largest magnitude), largest magnitude."""
    import torch
    if len(ref) != len(got):
        raise ExportError(f"the exported model returns {len(got)} outputs, PyTorch returns {len(ref)}")
    abs_err, rel_err, scale = 0.0, 0.0, 0.0
    for r, g in zip(ref, got):
        g = torch.as_tensor(g).to(r.dtype)
        if r.shape != g.shape:
            raise ExportError(f"exported output shape {tuple(g.shape)} != PyTorch {tuple(r.shape)}")
        if r.numel() == 0:
            continue
        d = float((r - g).abs().max())
        m = float(r.abs().max())
        abs_err, scale = max(abs_err, d), max(scale, m)
        rel_err = max(rel_err, d / max(m, 1e-12))
    return abs_err, rel_err, scale


def export(name: str, format: str = "onnx", *, out=None, fuse: bool = True, hub=None, pretrained: bool = True,
           device: str | None = None, options: dict | None = None) -> dict:
    import torch

    from zoo.loading import load, options_for

    if format not in FORMATS:
        raise UnknownNameError("export format", format, FORMATS)
    # exported files run anywhere; the reference pass runs on `device` (CPU unless asked)
    loaded = load(name, pretrained=pretrained, hub=hub, device=device or "cpu")
    return export_loaded(loaded, format, out=out, fuse=fuse, options=options_for(loaded, "export", options, ExportOptions))


def export_loaded(loaded, format: str, *, out=None, fuse: bool = True, options: dict | None = None) -> dict:
    """Export an already built model (the generic contract test calls this with small configs)."""
    import torch

    options = dict(options or {})
    if format not in FORMATS:
        raise UnknownNameError("export format", format, FORMATS)
    model = loaded.model.eval()
    notes = []
    if loaded.tag is None and loaded.folder is None:
        notes.append("no checkpoint for this model: exported with random weights (architecture only)")
    if fuse and isinstance(model, Reparameterisable):
        model = model.fuse() or model
        notes.append("re-parameterisable branches fused (use --no-fuse to keep them)")
    base = model
    task = loaded.task
    # the example input comes from the model itself, not from its deploy view (a plain wrapper)
    args = tuple(task.example_input(base, options))
    if isinstance(model, HasDeployView):  # a deploy view (e.g. one head) when the model has one
        model = model.export_model()
    with torch.inference_mode():
        ref = flatten_outputs(model(*args))
    path = Path(out) if out else Path("exports") / f"{loaded.full_name}{FORMATS[format]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    t0 = time.perf_counter()
    try:
        got = _EXPORTERS[format](model, args, tmp, loaded, notes, base=base)
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        # the whole message on one line: its first line often ends at a colon with the cause below
        raise ExportError(f"{format} export of {loaded.full_name} failed: {type(exc).__name__}: "
                          f"{one_line(str(exc))}") from None
    finally:
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(tmp.name + "*"):
            extra.unlink(missing_ok=True)
    abs_err, rel_err, scale = _errors(ref, got)
    atol = float(options.get("atol", 1e-4))
    rtol = float(options.get("rtol", 1e-4))
    res = {"model": loaded.full_name, "format": format, "path": str(path),
           "size_mb": path.stat().st_size / 2**20, "max_abs_err": abs_err, "max_rel_err": rel_err,
           "atol": atol, "rtol": rtol, "seconds": time.perf_counter() - t0, "notes": notes,
           "inputs": [list(a.shape) for a in args]}
    if abs_err > atol + rtol * scale:
        path.unlink(missing_ok=True)
        raise ExportError(f"{format} export of {loaded.full_name} drifts past the tolerance: max abs error "
                          f"{abs_err:.3g} > {atol:g} + {rtol:g} x {scale:.3g}; file removed")
    return res


# ---- one function per format: write `path`, load it back, return its outputs ----------------------

def _onnx(model, args, path, loaded, notes, base=None):
    import numpy as np
    import onnxruntime as ort
    import torch

    names = [f"input{i}" for i in range(len(args))]
    dynamic = _dynamic_shapes(loaded, args)
    try:
        prog = torch.onnx.export(model, args, dynamo=True, input_names=names, dynamic_shapes=dynamic,
                                 optimize=True, verbose=False)
        prog.save(str(path))
        notes.append("exported with the dynamo ONNX exporter, dynamic batch axis")
    except Exception as exc:  # some graphs only go through the TorchScript-based exporter
        notes.append(f"dynamo exporter failed ({type(exc).__name__}); used the TorchScript exporter")
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=names,
                          dynamic_axes={n: {ax: str(d) for ax, d in spec.items()} for n, spec in zip(names, dynamic)},
                          opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.cpu().numpy() for i, a in zip(sess.get_inputs(), args)}
    return [torch.from_numpy(np.asarray(o)) for o in sess.run(None, feeds)]


def _dynamic_shapes(loaded, args):
    """Batch is dynamic for every input; a task may name more axes (e.g. query points)."""
    import torch
    axes = loaded.task.dynamic_axes(args)
    dims: dict[str, object] = {}
    return tuple({ax: dims.setdefault(name, torch.export.Dim(name, min=1, max=1 << 20)) for ax, name in spec.items()}
                 for spec in axes)


def _torchscript(model, args, path, loaded, notes, base=None):
    import torch
    with torch.inference_mode():
        traced = torch.jit.trace(model, args, check_trace=False)
    torch.jit.save(traced, str(path))
    back = torch.jit.load(str(path))
    with torch.inference_mode():
        return flatten_outputs(back(*args))


def _pt2(model, args, path, loaded, notes, base=None):
    import torch
    try:
        prog = torch.export.export(model, args, dynamic_shapes=_dynamic_shapes(loaded, args))
    except Exception:
        prog = torch.export.export(model, args)
        notes.append("pt2: static batch size (the graph does not allow a symbolic batch)")
    torch.export.save(prog, str(path))
    back = torch.export.load(str(path)).module()
    with torch.inference_mode():
        return flatten_outputs(back(*args))


def _safetensors(model, args, path, loaded, notes, base=None):
    """The weights of the model itself (not of its deploy view, whose keys carry a wrapper prefix),
    loaded back strictly into a freshly built model put in the same state (fused or not)."""
    import torch
    from safetensors.torch import load_file, save_file

    import zoo.registry as registry
    from zoo.loading import build

    base = model if base is None else base
    state = {k: v.detach().contiguous().clone() for k, v in base.state_dict().items()}
    save_file(state, str(path))
    fresh = build(loaded.name, registry.load_registry().models[loaded.name], loaded.config)
    if isinstance(base, Reparameterisable) and base.fused and isinstance(fresh, Reparameterisable):
        fresh = fresh.fuse() or fresh
        notes.append("safetensors: the fused (deploy) weights; load them into a model after .fuse(), "
                     "or export with --no-fuse for the training layout")
    fresh.load_state_dict(load_file(str(path)), strict=True)
    fresh.eval()
    if model is not base and isinstance(fresh, HasDeployView):
        fresh = fresh.export_model()
    with torch.inference_mode():
        return flatten_outputs(fresh(*args))


_EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2, "safetensors": _safetensors}

