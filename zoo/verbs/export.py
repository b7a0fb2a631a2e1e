"""Export to onnx / torchscript / pt2 / safetensors; every file is loaded back with its own runtime
and compared with PyTorch on the task's example input. Past the tolerance: ExportError, exit 1."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

import torch

from zoo._io import temp_path
from zoo.backends import _say, dynamic_shapes, flatten_outputs, onnx_session, output_errors, write_onnx
from zoo.errors import ConfigError, ExportError, UnknownNameError
from zoo.options import Options
from zoo.tasks.base import HasDeployView, Reparameterisable

#: --int8's accuracy search may keep at most this share of the matrix products fp32
INT8_FP32_SHARE = 0.1


class ExportOptions(Options):
    atol: float = Field(1e-4, description="absolute parity tolerance against PyTorch")
    rtol: float = Field(1e-4, description="relative parity tolerance (of each output's largest magnitude)")
    int8_fp32_share: float = Field(INT8_FP32_SHARE, ge=0.0, le=0.5,
                                   description="--int8 past the task's tolerance: at most this share of the matrix "
                                               "products may be kept fp32, the most quantisation-sensitive first "
                                               "(0: no search)")


def one_line(text: str) -> str:
    return " ".join(text.split())


FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript.pt", "pt2": ".pt2",
           "safetensors": ".safetensors"}
#: files a format writes beside its main one (OpenVINO IR: the weights beside the graph)
SIDECARS = {"openvino": ".bin"}
INT8_FORMATS = ("onnx", "openvino")
#: calibration: this many batches of the task's own data, batched as its evaluation batches
CALIBRATION_BATCHES = 32
QUANTISED_OPS = ["Conv", "MatMul", "Gemm"]


def _errors(ref, got) -> tuple[float, float, float]:
    """max abs error, max rel error (relative to each output's largest magnitude), largest magnitude."""
    try:
        return output_errors(ref, got)
    except ExportError as exc:
        raise ExportError(str(exc).replace("the backend", "the exported model").replace("backend output",
                                                                                       "exported output")) from None


def export(name: str, format: str = "onnx", *, out=None, fuse: bool = True, hub=None, pretrained: bool = True,
           device: str | None = None, options: dict | None = None, int8: bool = False) -> dict:
    from zoo.loading import load, options_for

    if format not in FORMATS:
        raise UnknownNameError("export format", format, FORMATS)
    if int8 and format not in INT8_FORMATS:
        raise ConfigError(f"--int8 is for {' and '.join(INT8_FORMATS)} exports, not {format}")
    # exported files run anywhere; the reference pass runs on `device` (CPU unless asked)
    loaded = load(name, pretrained=pretrained, hub=hub, device=device or "cpu")
    if int8 and not loaded.task.int8_tolerance:
        raise ConfigError(f"{loaded.task_name} models define no int8 tolerance (what quantisation may cost "
                          f"their metric), so --int8 is refused for {loaded.full_name}")
    if int8 and loaded.tag is None and loaded.folder is None:
        raise ConfigError(f"{loaded.full_name} has no trained weights: int8 is judged by the metric, use a checkpoint")
    opts = options_for(loaded, "export", options, ExportOptions)
    res = export_loaded(loaded, format, out=out, fuse=fuse, options=opts)
    if int8:
        res["int8"] = quantise(loaded, res, {k: v for k, v in opts.items() if k not in ExportOptions.model_fields},
                               fuse=fuse, fp32_share=float(opts.get("int8_fp32_share", INT8_FP32_SHARE)))
    return res


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
        if format in SIDECARS:   # the sidecar first: a graph file in place always has its weights
            os.replace(str(tmp) + SIDECARS[format], path.with_suffix(SIDECARS[format]))
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
    side = path.with_suffix(SIDECARS[format]) if format in SIDECARS else None
    res = {"model": loaded.full_name, "format": format, "path": str(path),
           "size_mb": (path.stat().st_size + (side.stat().st_size if side else 0)) / 2**20, "max_abs_err": abs_err, "max_rel_err": rel_err,
           "atol": atol, "rtol": rtol, "seconds": time.perf_counter() - t0, "notes": notes,
           "inputs": [list(a.shape) for a in args]}
    names = base.output_names() if callable(getattr(base, "output_names", None)) else None
    if names and len(names) == len(ref):   # a multi-head model: parity per named output
        res["per_output"] = {n: _errors([r], [g])[0] for n, r, g in zip(names, ref, got)}
    if abs_err > atol + rtol * scale:
        path.unlink(missing_ok=True)
        if format in SIDECARS:
            path.with_suffix(SIDECARS[format]).unlink(missing_ok=True)
        raise ExportError(f"{format} export of {loaded.full_name} drifts past the tolerance: max abs error "
                          f"{abs_err:.3g} > {atol:g} + {rtol:g} x {scale:.3g}; file removed")
    return res


# ---- one function per format: write `path`, load it back, return its outputs ----------------------

def _onnx(model, args, path, loaded, notes, base=None):
    import numpy as np

    write_onnx(model, args, path, loaded.task, notes)
    sess = onnx_session(path)
    feeds = {i.name: a.cpu().numpy() for i, a in zip(sess.get_inputs(), args)}
    return [torch.from_numpy(np.asarray(o)) for o in sess.run(None, feeds)]


def _openvino(model, args, path, loaded, notes, base=None):
    """ONNX first (the same exporter), then OpenVINO's IR: `path` (graph) + `path`.bin (weights, fp32)."""
    import shutil
    onnx_tmp = Path(str(path) + ".onnx")
    folder = Path(str(path) + ".d")
    try:
        write_onnx(model, args, onnx_tmp, loaded.task, notes)
        _onnx_to_ir(onnx_tmp, path)
        notes.append("OpenVINO IR converted from the ONNX export (fp32 weights)")
    finally:
        onnx_tmp.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    return _ir_outputs(path, args)


def _onnx_to_ir(onnx_path: Path, xml_path: Path) -> None:
    """Convert an ONNX file to OpenVINO IR at `xml_path` (+ `xml_path`.bin)."""
    import shutil

    import openvino as ov
    folder = Path(str(xml_path) + ".d")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"), compress_to_fp16=False)
        os.replace(folder / "model.bin", str(xml_path) + ".bin")
        os.replace(folder / "model.xml", xml_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ir_outputs(xml_path: Path, args) -> list:
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(xml_path), str(xml_path) + ".bin")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled([a.detach().cpu().numpy() for a in args])
    return [torch.from_numpy(res[o].copy()) for o in compiled.outputs]


# ---- int8: static quantisation calibrated on the task's own data, judged by its metric -----------

def int8_path(path: Path) -> Path:
    """exports/m.onnx -> exports/m.int8.onnx (the fp32 file stays)."""
    return path.with_name(path.name[: -len(path.suffix)] + ".int8" + path.suffix)


def _judge(tolerance: dict, before: dict, after: dict) -> tuple[str, float, float, float, str, bool]:
    """(metric, before, after, change, what is allowed, within it) of the task's int8 tolerance."""
    metric, (kind, limit) = next(iter(tolerance.items()))
    b, a = float(before[metric]), float(after[metric])
    if kind == "drop":
        return metric, b, a, a - b, f"a drop of at most {limit:g}", b - a <= limit + 1e-12
    if kind == "rel_increase":
        change = (a - b) / max(abs(b), 1e-12)
        return metric, b, a, change, f"a relative increase of at most {limit:.0%}", change <= limit + 1e-12
    raise ConfigError(f"unknown int8 tolerance kind {kind!r} for {metric}")


def last_products(graph, ops=None) -> list[str]:
    """Names of the quantisable nodes nearest each graph output (walking back through
    non-quantisable ops): the layers whose rounding lands in the outputs unsoftened, kept fp32."""
    ops = set(ops or QUANTISED_OPS)
    producer = {o: n for n in graph.node for o in n.output}
    found, seen = [], set()
    stack = [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ops:
            found.append(node.name)
        else:
            stack.extend(node.input)
    return found


@contextlib.contextmanager
def _quiet_root_logger():
    import logging
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def calibration_batches(loaded, options: dict, *, fuse: bool = True) -> tuple[list[tuple], str]:
    """The inputs int8 calibration sees: a few dozen batches of the task's training data (its test
    split where it has no other), as the model's exported graph receives them; and their description."""
    from zoo.backends import record_inputs
    from zoo.loading import dataset_for

    task, dataset = loaded.task, loaded.dataset
    split = "train" if "train" in task.splits_of(dataset) else "test"
    bsz = int(options.get("batch_size") or task.default_batch_size)
    calib_opts = {**options, "augment": False, "limit": CALIBRATION_BATCHES * bsz}
    calib_ds, _ = dataset_for(loaded, None, None, split, calib_opts)
    batches = record_inputs(loaded, calib_ds, calib_opts, CALIBRATION_BATCHES, fuse=fuse)
    if not batches:
        raise ExportError(f"no calibration data: the {split} split of {dataset} gave no batches")
    return batches, f"{len(batches)} batches of {dataset} {split}"


def _readers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _feed(names: list[str], items: list[tuple]):
    """`items` (tuples of arrays, in the graph's input order) as onnxruntime's quantiser reads them."""
    import onnxruntime.quantization as oq

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.items = iter([dict(zip(names, b)) for b in items])

        def get_next(self):
            return next(self.items, None)
    return Reader()


def output_tail(graph) -> list[str]:
    """The last matrix products before the outputs (`last_products`) and every node after them:
    the part of the graph whose rounding lands in the outputs unsoftened (a detector's box decode)."""
    last = set(last_products(graph))
    readers = _readers(graph)
    tail, stack = set(last), [o for n in graph.node if n.name in last for o in n.output]
    while stack:
        for node in readers.get(stack.pop(), []):
            if node.name not in tail:
                tail.add(node.name)
                stack.extend(node.output)
    return sorted(tail)


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """How the graph is quantised for one runtime: its int8 kernels want different graphs.
    Measured on MHAF-YOLO-N at 640, 2 threads, fp32 graph of the same runtime = 1.0:
    OpenVINO 0.73 with its recipe (1.52 with zero-pointed int8 activations, the single recipe before);
    onnxruntime 0.70 with its recipe (2.35 with that single recipe, 1.33 with u8 activations but only
    the matrix products quantised)."""
    ops: tuple[str, ...] | None          # None: every op the quantiser knows
    activations: str                     # "int8" | "uint8"
    symmetric: bool                      # activations without a zero point
    exclude: Callable                    # graph -> names of nodes kept fp32


INT8_RECIPES = {
    # OpenVINO runs a Conv/MatMul whose inputs are symmetric int8 on its int8 kernels directly; a zero
    # point costs a subtraction per layer. Activations between products stay fp32 (quantising them
    # too was slower: 0.85).
    "openvino": Int8Recipe(tuple(QUANTISED_OPS), "int8", True, last_products),
    # onnxruntime fuses DequantizeLinear -> op -> QuantizeLinear into one int8 kernel only where the
    # op's output is quantised again, so the activations between the products are quantised too;
    # u8 activations are what its x86 kernels take. The detector's box decode stays fp32 (with it
    # quantised, MHAF-YOLO-N's mAP50 fell to 0).
    "onnxruntime": Int8Recipe(None, "uint8", False, output_tail),
}


def quantise_onnx(src: Path, dst: Path, batches: list[tuple], runtime: str = "onnxruntime",
                  keep_fp32: tuple[str, ...] = ()) -> None:
    """Static int8 (QDQ, per-channel int8 weights) of the ONNX file `src` into `dst` with
    onnxruntime's quantiser, calibrated on `batches` (fed to the graph's inputs in order), shaped
    for `runtime`'s int8 kernels (`INT8_RECIPES`); the nodes named in `keep_fp32` stay fp32 too."""
    import onnx
    import onnxruntime.quantization as oq

    recipe = INT8_RECIPES[runtime]
    graph = onnx.load(str(src), load_external_data=False).graph
    activations = oq.QuantType.QInt8 if recipe.activations == "int8" else oq.QuantType.QUInt8
    with _quiet_root_logger():   # the quantiser logs advice on pre-processing to the root logger
        oq.quantize_static(str(src), str(dst), _feed([i.name for i in graph.input], batches),
                           quant_format=oq.QuantFormat.QDQ,
                           op_types_to_quantize=list(recipe.ops) if recipe.ops else None,
                           nodes_to_exclude=sorted({*recipe.exclude(graph), *keep_fp32}), per_channel=True,
                           activation_type=activations, weight_type=oq.QuantType.QInt8,
                           calibrate_method=oq.CalibrationMethod.MinMax,
                           extra_options={"ActivationSymmetric": recipe.symmetric})


def sensitivity_ranking(src: Path, qdq: Path, batches: list[tuple], scratch: Path) -> list[tuple[str, list[str]]]:
    """The quantised tensors of `qdq`, worst first by their signal-to-quantisation-noise ratio
    (onnxruntime's QDQ debugger, on two calibration samples), each with the nodes of `src` that read
    it: keeping those fp32 removes that tensor's rounding. Scratch graphs are `scratch`.*.onnx, removed."""
    import onnx
    import onnxruntime.quantization.qdq_loss_debug as qdq_debug

    graph = onnx.load(str(src), load_external_data=False).graph
    names = [i.name for i in graph.input]
    # every intermediate tensor of both graphs is kept, so two samples, not the calibration batches
    samples = [tuple(a[i:i + 1] for a in batches[0]) for i in range(min(2, len(batches[0][0])))]
    activations = {}
    with _quiet_root_logger():
        for side, path in (("fp32", src), ("int8", qdq)):
            augmented = Path(f"{scratch}.{side}.all-tensors.onnx")
            qdq_debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
            try:
                activations[side] = qdq_debug.collect_activations(str(augmented), _feed(names, samples))
            except Exception:   # a graph whose inputs are not batched on the first axis: one whole batch
                activations[side] = qdq_debug.collect_activations(str(augmented), _feed(names, batches[:1]))
            finally:
                augmented.unlink(missing_ok=True)
        errors = qdq_debug.compute_activation_error(
            qdq_debug.create_activation_matching(activations["int8"], activations["fp32"]))
    ranked = sorted(errors.items(), key=lambda kv: float(kv[1]["qdq_err"]))
    readers = _readers(graph)
    return [(tensor, [n.name for n in readers[tensor]]) for tensor, _ in ranked if readers.get(tensor)]


def _keep_sensitive_fp32(loaded, src, q_onnx, batches, runtime, eval_ds, options, fuse, before, fp32_share,
                         search, scratch):
    """Past the tolerance: requantise with the readers of the 1, 2, 4, ... most quantisation-sensitive
    tensors kept fp32, until the metric is within the tolerance or more than `fp32_share` of the
    graph's matrix products would be fp32. Returns the last (model, metrics, fp32 nodes, search) tried,
    or None where nothing could be."""
    import onnx

    from zoo.backends import from_file
    task = loaded.task
    graph = onnx.load(str(src), load_external_data=False).graph
    products = {n.name for n in graph.node if n.op_type in QUANTISED_OPS}
    limit = int(fp32_share * len(products))
    ranked = sensitivity_ranking(src, q_onnx, batches, scratch)
    model = after = None
    kept: list[str] = []
    k = 1
    while k <= len(ranked):
        nodes = sorted({n for _, readers in ranked[:k] for n in readers})
        n_products = len(products & set(nodes))
        if n_products > limit:
            break
        metric = next(iter(task.int8_tolerance))
        _say(f"int8: {metric} {before[metric]:.4g} -> {search[-1][metric]:.4g} is past the {task.name} task's "
             f"tolerance; quantising again with the readers of the {k} most sensitive tensors kept fp32 "
             f"({n_products} of {len(products)} matrix products)")
        quantise_onnx(src, q_onnx, batches, runtime, keep_fp32=tuple(nodes))
        model = from_file(loaded, q_onnx, runtime, options=options, fuse=fuse)
        with torch.inference_mode():
            after = task.evaluate(model, eval_ds, options)
        kept = nodes
        metric, *_, ok = _judge(task.int8_tolerance, before, after)
        search.append({"sensitive_tensors": k, "fp32_products": n_products, metric: after[metric]})
        if ok:
            break
        k *= 2
    if model is None:   # not even the first tensor's readers fit in the share: nothing tried
        return None
    return model, after, kept, search


def judge_int8(loaded, src, q_onnx, batches, runtime, eval_ds, options, fuse, before, fp32_share, scratch):
    """The int8 file `q_onnx`'s metric on the eval set, judged against `before` (fp32 eager) by the
    task's tolerance; past it, the accuracy search (`_keep_sensitive_fp32`) rewrites `q_onnx` and the
    last file it tried is judged. Returns (int8 model, metrics, `_judge`'s verdict, nodes kept fp32, search)."""
    from zoo.backends import from_file
    task = loaded.task
    model = from_file(loaded, q_onnx, runtime, options=options, fuse=fuse)
    with torch.inference_mode():
        after = task.evaluate(model, eval_ds, options)
    judged = _judge(task.int8_tolerance, before, after)
    metric, *_, ok = judged
    search, kept = [{"sensitive_tensors": 0, "fp32_products": 0, metric: after[metric]}], []
    if not ok and fp32_share > 0:
        found = _keep_sensitive_fp32(loaded, src, q_onnx, batches, runtime, eval_ds, options, fuse, before,
                                     fp32_share, search, scratch)
        if found:
            model, after, kept, search = found
            judged = _judge(task.int8_tolerance, before, after)
    return model, after, judged, kept, search


def quantise(loaded, res: dict, options: dict, *, fuse: bool = True, fp32_share: float = INT8_FP32_SHARE) -> dict:
    """Static int8 (QDQ, per-channel weights) of the exported model with onnxruntime's quantiser,
    calibrated on a few dozen batches of the task's training data; the eval set's metric is measured
    before (fp32 eager) and after (the int8 file in its runtime). Past the task's tolerance, the most
    quantisation-sensitive layers are kept fp32, up to `fp32_share` of the matrix products; past it
    still: ExportError, the fp32 file kept and no int8 file left."""
    from zoo.backends import Reference, from_file, time_backends
    from zoo.loading import dataset_for

    task, fmt = loaded.task, res["format"]
    path = Path(res["path"])
    final = int8_path(path)
    if final.exists():
        raise ExportError(f"{final}: exists; remove it or choose another --out (nothing is overwritten)")
    eval_ds, _ = dataset_for(loaded, None, None, "test", options)
    batches, calibration = calibration_batches(loaded, options, fuse=fuse)
    base = Reference(loaded, None, options, fuse)
    src = base.onnx_file(None) if fmt == "openvino" else path   # the fp32 graph to quantise
    tmp = temp_path(final)
    q_onnx = Path(str(tmp) + ".q.onnx")
    runtime = "onnxruntime" if fmt == "onnx" else "openvino"
    t0 = time.perf_counter()
    try:
        quantise_onnx(src, q_onnx, batches, runtime)
        with torch.inference_mode():
            before = task.evaluate(base.model, eval_ds, options)
        int8_model, after, judged, kept, search = judge_int8(loaded, src, q_onnx, batches, runtime, eval_ds,
                                                             options, fuse, before, fp32_share, tmp)
        metric, b, a, change, allowed, ok = judged
        # latency on the example input, interleaved: fp32 eager, the fp32 graph and int8 in the same runtime
        fp32_runtime = from_file(loaded, src, runtime, options=options, fuse=fuse)
        latency = time_backends({"fp32 eager": base.eager(), f"fp32 {runtime}": fp32_runtime,
                                 f"int8 {runtime}": int8_model}, base.args, base.method, budget_s=4.0)
        out = {"path": str(final), "runtime": runtime, "metric": metric, "before": b, "after": a,
               "change": change, "allowed": allowed, "calibration": calibration,
               "parity_max_abs": int8_model.parity, "metrics_fp32": before, "metrics_int8": after,
               "latency_ms": {k: round(v, 3) for k, v in latency.items()},
               "example_input": [list(x.shape) for x in base.args],
               "speedup": latency[f"fp32 {runtime}"] / latency[f"int8 {runtime}"], "notes": [],
               "kept_fp32": kept, "search": search}
        if out["speedup"] < 1.0:   # small or FFT-bound graphs: the Q/DQ around each product costs more than it saves
            out["notes"].append(f"int8 {runtime} is slower than fp32 {runtime} here ({latency[f'int8 {runtime}']:.3g} vs "
                                f"{latency[f'fp32 {runtime}']:.3g} ms on the example input): it saves size, not time")
        if not ok:
            tried = (f", also with up to {search[-1]['fp32_products']} of the most sensitive matrix products "
                     f"kept fp32" if len(search) > 1 else "")
            raise ExportError(f"int8 {loaded.full_name} refused: {metric} {b:.4g} -> {a:.4g} on the eval set "
                              f"({change:+.4g}; the {task.name} task allows {allowed}{tried}); fp32 file kept at {path}, "
                              f"no int8 file written (latency ms: "
                              + ", ".join(f"{k} {v:.3g}" for k, v in latency.items()) + ")")
        if fmt == "openvino":
            _onnx_to_ir(q_onnx, tmp)
            os.replace(str(tmp) + ".bin", final.with_suffix(".bin"))
        else:
            os.replace(q_onnx, tmp)
        os.replace(tmp, final)
    finally:
        for extra in [tmp, q_onnx, *tmp.parent.glob(tmp.name + "*")]:
            if extra.is_file():
                extra.unlink(missing_ok=True)
    out["size_mb"] = final.stat().st_size / 2**20 + (final.with_suffix(".bin").stat().st_size / 2**20
                                                      if fmt == "openvino" else 0.0)
    out["seconds"] = time.perf_counter() - t0
    return out


def _dynamic_shapes(loaded, args):
    return dynamic_shapes(loaded.task, args)


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


_EXPORTERS = {"onnx": _onnx, "openvino": _openvino, "torchscript": _torchscript, "pt2": _pt2, "safetensors": _safetensors}

