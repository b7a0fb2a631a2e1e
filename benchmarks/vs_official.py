"""zoo against the official implementations: same weights, outputs checked, every path timed in one
process, interleaved call by call (so the load of a shared machine hits all alike), medians.

    python benchmarks/vs_official.py                                   # zoo's own paths alone
    python benchmarks/vs_official.py --official-sinenet ~/src/AIRS --official-drift ~/src/DRIFT-Net \\
        --official-mhaf ~/src/MHAF-YOLO --threads 2 --repeats 20

The official code never ships with zoo: each --official-* flag names a user's checkout (the repo
root, or any folder above the file named below), imported from there for this run only:
- SineNet: github.com/divelab/AIRS, OpenPDE/SineNet/pdearena/pdearena/modules/sinenet_dual.py
- DRIFT-Net: github.com/cruiseresearchgroup/DRIFT-Net, driftnet/model.py (ScOT, use_spectral=True)
- MHAF-YOLO: github.com/yang-0201/MHAF-YOLO, its `ultralytics` package and the MAF-YOLOv2 yamls
  (needs that fork's own dependencies, e.g. opencv, pandas, thop).
Our weights (the registry checkpoint when there is one, else a seeded random init) are copied into
the official model, parameter for parameter; both sides then get the same normalisation our models
apply inside, so the comparison is of the networks. Per backend the table gives ours, official and
ours / official (below 1: zoo is faster), and a last row compares the best path of each side.
Backends: eager (fused where the model has re-parameterisable branches), onnxruntime (both sides
exported by the same exporter, sessions with the same settings), openvino where installed, compile
with --compile (slow to build), and openvino-bf16 where asked for (both sides' graphs in bf16, on a
CPU with bf16 arithmetic). The "best" row compares fp32 paths only; with openvino-bf16 a last row
sets our bf16 path against the official best fp32 one (a precision change: `zoo eval --backend
openvino-bf16` says what it costs the metric). With --int8 both sides' graphs are also quantised by
`zoo export --int8`'s quantiser on the same calibration batches, with each runtime's own recipe, and
timed in each fp32 runtime asked for, in their own rows, never in the "best" one; the int8 lines under
the table give what each runtime's int8 graph costs our metric on the eval set, judged by the task's
int8 tolerance. Every path's output is checked against the official eager output (or ours, without
the official code) before timing; "max abs" is that check.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo.backends import (OPENVINO_PRECISION, REDUCED_PRECISION, _OpenVinoRunner, _OrtRunner,  # noqa: E402
                          available_backends)

DEFAULT_MODELS = ("mhaf-yolo-n", "mhaf-yolo-s", "drift-net-t", "sinenet-8")
GOALS = {"mhaf-yolo-n": 0.7, "mhaf-yolo-s": 0.7, "drift-net-t": 0.8, "sinenet-8": 0.8}


def _find(root: str, rel: str) -> Path:
    root_p = Path(root).expanduser()
    hits = [root_p / rel] if (root_p / rel).is_file() else sorted(root_p.rglob(Path(rel).name))
    hits = [h for h in hits if h.as_posix().endswith(rel)]
    if not hits:
        raise SystemExit(f"error: no {rel} under {root}")
    return hits[0]


def _import_file(name: str, path: Path, package_dir: Path | None = None):
    """Import one file of a checkout without running its package's __init__ (which may pull in
    training frameworks the network does not need)."""
    if package_dir is not None:
        pkg = types.ModuleType(name.rpartition(".")[0])
        pkg.__path__ = [str(package_dir)]
        sys.modules.setdefault(pkg.__name__, pkg)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(mod)
    return mod


def _copy_in_order(dst_params: list, src_params: list, what: str) -> None:
    if len(dst_params) != len(src_params):
        raise SystemExit(f"error: {what}: {len(dst_params)} official parameters vs {len(src_params)} of ours")
    import torch
    with torch.no_grad():
        for (dn, d), (sn, s) in zip(dst_params, src_params):
            if d.shape != s.shape or d.dtype != s.dtype:
                raise SystemExit(f"error: {what}: official {dn} {tuple(d.shape)} does not line up with our {sn} "
                                 f"{tuple(s.shape)}")
            d.copy_(s)


# ---- the official models, built on our weights --------------------------------------------------

def official_sinenet(root: str, ours):
    import torch
    path = _find(root, "pdearena/modules/sinenet_dual.py")
    _import_file("zoo_official_sinenet.activations", path.parent / "activations.py", path.parent)
    mod = _import_file("zoo_official_sinenet.sinenet_dual", path, path.parent)
    n_fields = ours.num_fields
    waves = len(ours.waves)
    with contextlib.redirect_stdout(io.StringIO()):
        net = mod.sinenet(n_input_scalar_components=n_fields, n_input_vector_components=0,
                          n_output_scalar_components=n_fields, n_output_vector_components=0,
                          time_history=ours.time_history, time_future=ours.time_future,
                          hidden_channels=ours.lift.out_channels, padding_mode=ours.lift.padding_mode,
                          num_waves=waves, mult=_sinenet_mult(ours), num_blocks=len(ours.waves[0].down[0].blocks),
                          disentangle=ours.waves[0].down[0].disentangle, wave_residual=ours.wave_residual)
    net.eval()
    # official order: image_proj, down[w][*] for all w, up[w][*] for all w, final; ours wave by wave
    src = list(ours.lift.named_parameters())
    dst = list(net.image_proj.named_parameters())
    for w in range(waves):
        src += list(ours.waves[w].down.named_parameters()) + list(ours.waves[w].up.named_parameters())
        dst += list(net.down[w].named_parameters()) + list(net.up[w].named_parameters())
    src += list(ours.project.named_parameters())
    dst += list(net.final.named_parameters())
    _copy_in_order(dst, src, "SineNet")

    class Official(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("field_mean", ours.field_mean.clone())
            self.register_buffer("field_std", ours.field_std.clone())

        def forward(self, x):
            y = self.net((x - self.field_mean) / self.field_std)
            return y * self.field_std + self.field_mean
    return Official().eval()


def _sinenet_mult(ours) -> float:
    from zoo.models.sinenet import VARIANTS
    hidden = ours.lift.out_channels
    chans = [lvl.shortcut.out_channels for lvl in ours.waves[0].down]
    for v in VARIANTS.values():   # the official multiplier that gives these widths
        if [int(hidden * v["mult"] ** (i + 1)) for i in range(len(chans))] == chans:
            return v["mult"]
    return chans[0] / hidden


def official_drift(root: str, ours):
    import torch
    for missing in ("pywt", "pytorch_wavelets"):   # imported at the top of model.py, unused by ScOT
        try:
            __import__(missing)
        except ImportError:
            stub = types.ModuleType(missing)
            stub.DWTForward = stub.DWTInverse = None
            sys.modules[missing] = stub
    mod = _import_file("zoo_official_driftnet_model", _find(root, "driftnet/model.py"))
    if not hasattr(mod.ScOT, "get_head_mask"):   # removed from newer transformers' PreTrainedModel
        mod.ScOT.get_head_mask = lambda self, head_mask, n, *a, **k: [None] * n if head_mask is None else head_mask
    dims = ours.patch_embed.out_channels
    depths = [len(stage.layers) for stage in ours.encoder]
    cfg = mod.ScOTConfig(
        image_size=ours.image_size, patch_size=ours.patch_size, num_channels=ours.in_channels,
        num_out_channels=ours.out_channels, embed_dim=dims, depths=depths,
        num_heads=[3, 6, 12, 24][: len(depths)], skip_connections=[len(s) for s in ours.skips], window_size=16,
        mlp_ratio=4.0, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
        hidden_act="gelu", use_absolute_embeddings=False, initializer_range=0.02, layer_norm_eps=1e-5, p=1,
        channel_slice_list_normalized_loss=None, residual_model="convnext", use_conditioning=ours.conditional,
        learn_residual=False, use_spectral=True)
    with contextlib.redirect_stdout(io.StringIO()):
        net = mod.ScOT(cfg).eval()
    # official order: embeddings, encoder, decoder, patch recovery, residual (skip) blocks
    order = ["patch_embed", "embed_norm", "encoder", "decoder", "patch_recovery", "recovery_mix", "skips"]
    ours_named = list(ours.named_parameters())
    src = [p for g in order for p in ours_named if p[0].split(".")[0] == g]
    _copy_in_order(list(net.named_parameters()), src, "DRIFT-Net")

    class Official(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("field_mean", ours.field_mean.clone())
            self.register_buffer("field_std", ours.field_std.clone())

        def forward(self, x, time):
            y = self.net(pixel_values=(x - self.field_mean) / self.field_std, time=time).output
            oc = y.shape[1]
            return y * self.field_std[:, :oc] + self.field_mean[:, :oc]
    return Official().eval()


def official_mhaf(root: str, ours, variant: str):
    """The fork's YOLOv10DetectionModel from its MAF-YOLOv2 yaml, our state dict loaded as is (the
    release layout is ours: see zoo/converters/mhaf_yolo.py). Runs the one-to-one dense head."""
    import torch
    base = _find(root, f"ultralytics/cfg/models/mafv2/MAF-YOLOv2-{variant}.yaml").parents[4]
    sys.path.insert(0, str(base))
    try:
        from ultralytics.nn.tasks import YOLOv10DetectionModel   # the fork's, from the user's checkout
    except ImportError as exc:
        raise SystemExit(f"error: the MHAF-YOLO checkout at {base} needs {exc.name or exc} "
                         f"(install its requirements.txt, e.g. pip install {exc.name or ''})") from None
    yaml_path = base / f"ultralytics/cfg/models/mafv2/MAF-YOLOv2-{variant}.yaml"
    with contextlib.redirect_stdout(io.StringIO()):
        net = YOLOv10DetectionModel(str(yaml_path), nc=ours.num_classes, verbose=False)
    missing, unexpected = net.load_state_dict(ours.state_dict(), strict=False)
    if unexpected or [k for k in missing if "one2one" not in k and "cv2" not in k and "cv3" not in k]:
        raise SystemExit(f"error: MHAF-YOLO layouts differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    net.eval()
    return net


# ---- paths and timing ---------------------------------------------------------------------------

_T0 = time.perf_counter()


def _log(msg: str) -> None:
    """Progress on stderr: exports of the official graphs can take minutes on a loaded machine."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_EXPORT_FAILED: dict = {}
_KEEP_DIR: Path | None = None


def _onnx_file(model, args, task, tmp, name) -> Path:
    """One export per side, shared by onnxruntime and OpenVINO (the same graph for both); with
    --onnx-dir, a file an earlier run wrote there is reused (exports take minutes on a busy machine;
    delete the file after changing the model's export code)."""
    from zoo.backends import write_onnx
    path = Path(tmp) / f"{name}.onnx"
    if path.exists() and _KEEP_DIR is not None:
        _log(f"{name}: reusing {path}")
    if path in _EXPORT_FAILED:   # one failed export is enough to know
        raise _EXPORT_FAILED[path]
    if not path.exists():
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                write_onnx(copy.deepcopy(model).cpu().eval(), args, path, task)
        except Exception as exc:
            _EXPORT_FAILED[path] = exc
            raise
        finally:
            _log(f"{name}: export took {time.perf_counter() - t0:.0f} s")
    return path


def _ort(model, args, task, tmp, name, threads):
    from zoo.backends import onnx_session
    sess = onnx_session(_onnx_file(model, args, task, tmp, name), threads)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return lambda: sess.run(None, feeds)


def _ov(model, args, task, tmp, name, threads, precision="f32"):
    # zoo's own OpenVINO runner for both sides: the same compile settings and shape handling
    runner = _OpenVinoRunner(_onnx_file(model, args, task, tmp, name), threads, precision)
    return lambda: runner(*args)


def _judge_ours(loaded, task, src, dst, batches, rt, eval_ds, opts, before) -> dict:
    """Our int8 graph judged as `zoo export --int8` judges it (its accuracy search may rewrite `dst`)."""
    from zoo.verbs.export import INT8_FP32_SHARE, judge_int8
    _log(f"{loaded.name}: evaluating our int8 {rt} on the eval set")
    _, _, (metric, b, a, change, allowed, ok), kept, search = judge_int8(
        loaded, src, dst, batches, rt, eval_ds, opts, True, before, INT8_FP32_SHARE, dst.with_suffix(".scratch"))
    return {"metric": metric, "fp32_eager": b, "int8": a, "change": change, "allowed": allowed, "within": ok,
            "fp32_products": search[-1]["fp32_products"], "kept_fp32": kept, "search": search}


def _int8_paths(loaded, sides, inputs, task, onnx_dir, args_ns, backends, ref_side, paths, checks, res) -> list[str]:
    """`--int8`: each side's graph quantised by `zoo export --int8`'s own quantiser on the same
    calibration batches, in each fp32 runtime asked for; our int8 file's metric on the eval set
    against our fp32 eager one, judged by the task's int8 tolerance after export's accuracy search
    (the official graph is timed fully quantised). Returns the backend names added."""
    import torch

    from zoo.loading import dataset_for, options_for
    from zoo.verbs.export import calibration_batches, quantise_onnx
    if not loaded.tag or not task.int8_tolerance:
        res["notes"].append("int8: needs a checkpoint and a task with an int8 tolerance; not measured")
        return []
    runtimes = [b for b in backends if b in ("onnxruntime", "openvino")]
    opts = options_for(loaded, "eval", None)
    batches, calibration = calibration_batches(loaded, opts)
    # one sample per batch: min/max calibration sees the same values, and a graph exported with a
    # fixed batch of 1 (the official side's) takes them
    singles = [tuple(a[i:i + 1] for a in b) for b in batches for i in range(len(b[0]))]
    added, files, judged = [], {}, {}
    eval_ds, dataset = dataset_for(loaded, None, None, "test", opts)
    with torch.inference_mode():
        before = task.evaluate(loaded.model, eval_ds, opts)
    for side, module in sides:
        src = Path(_onnx_file(module, inputs, task, onnx_dir, side))
        for rt in runtimes:   # each runtime gets the graph its int8 kernels want (INT8_RECIPES)
            dst = src.with_name(f"{side}.int8-{rt}.onnx")
            if side == "ours" or not dst.exists():   # ours may be rewritten by the search: always afresh
                _log(f"{loaded.name}: quantising {side} for {rt} ({calibration})")
                quantise_onnx(src, dst, singles, rt)
            if side == "ours":   # judged as `zoo export --int8` judges it, with its search on the same batches
                judged[rt] = _judge_ours(loaded, task, src, dst, batches, rt, eval_ds, opts, before)
            files[side, rt] = dst
            runner = (_OrtRunner if rt == "onnxruntime" else _OpenVinoRunner)(dst, args_ns.threads)
            fn = (lambda r=runner: r(*inputs))
            with torch.inference_mode():
                checks[(side, f"int8 {rt}")] = _max_abs(ref_side[side], fn())
            paths[(side, f"int8 {rt}")] = fn
            if f"int8 {rt}" not in added:
                added.append(f"int8 {rt}")
    res["int8"] = [{"runtime": rt, "dataset": dataset, "calibration": calibration, **judged[rt]} for rt in runtimes]
    return added


def _flat(out):
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    import numpy as np
    if isinstance(out, np.ndarray):
        return [torch.from_numpy(out)]
    if hasattr(out, "values") and callable(out.values):   # an OpenVINO result
        return [torch.from_numpy(np.asarray(v)) for v in out.values()]
    return []


def _max_abs(ref, got) -> float | None:
    r, g = _flat(ref), _flat(got)
    if not r or len(r) > len(g):
        return None
    return max(float((a.float() - b.float().reshape(a.shape)).abs().max()) for a, b in zip(r, g))


def measure(name: str, official_root: str | None, args_ns) -> dict:
    import torch

    from zoo.loading import load
    from zoo.tasks.base import Reparameterisable
    torch.manual_seed(0)
    loaded = load(name)   # the default checkpoint when the registry has one
    ours, task = loaded.model.eval(), loaded.task
    weights = loaded.full_name if loaded.tag else f"{name} (seeded random init: no checkpoint)"
    opts = {"batch_size": 1}
    # --resolution for models that take any grid, or a convolutional one (SineNet) whose weights
    # here are a random init; trained weights tied to a grid, and DRIFT-Net (which resamples any
    # other grid spectrally to its own, so a smaller input is not a smaller network), keep it
    if args_ns.resolution and "detection" not in task.name and not hasattr(ours, "image_size"):
        if getattr(ours, "native_grid", None) is None or not loaded.tag:
            opts["resolution"] = args_ns.resolution
    if args_ns.imgsz and task.name == "detection":
        opts["imgsz"] = args_ns.imgsz
    torch.manual_seed(1)
    inputs = tuple(task.example_input(ours, opts))
    res = {"model": name, "weights": weights, "inputs": [list(a.shape) for a in inputs],
           "threads": args_ns.threads, "rows": [], "notes": []}

    official = None
    if official_root:
        if name.startswith("sinenet"):
            official = official_sinenet(official_root, ours)
        elif name.startswith("drift"):
            official = official_drift(official_root, ours)
        elif name.startswith("mhaf"):
            variant = name.split("mhaf-yolo-")[1]
            official = official_mhaf(official_root, ours, variant)
    ours_fused = ours
    if isinstance(ours, Reparameterisable):
        ours_fused = copy.deepcopy(ours).fuse() or ours
        ours_fused.eval()
    # the module whose forward every backend runs: the deploy view where a model has one
    view = ours_fused.export_model().eval() if hasattr(ours_fused, "export_model") else ours_fused
    off_view = official
    if official is not None and name.startswith("mhaf"):
        off_view = _official_dense(official)

    paths: dict[tuple[str, str], object] = {}
    with torch.inference_mode():
        ref_ours = view(*inputs)
        ref = off_view(*inputs) if off_view is not None else ref_ours
    if official is not None and hasattr(official, "fuse") and name.startswith("mhaf"):
        # the official side's own deploy form (conv+BN and RepConv fused, as its exporter does),
        # checked against its unfused output like every other path
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            off_view = _official_dense(copy.deepcopy(official).fuse(verbose=False))
        res["notes"].append("official: its own fuse() (conv+BN, RepConv) for every path")
    ref_side = {"ours": ref, "official": ref}
    if off_view is not None and name.startswith("mhaf"):
        # the fork decodes boxes to xywh outside its export mode; ours (and its export) give xyxy
        from torchvision.ops import box_convert
        boxes = box_convert(ref[:, :4].transpose(1, 2), "cxcywh", "xyxy").transpose(1, 2)   # (B, 4, N)
        ref = ref_side["ours"] = torch.cat((boxes, ref[:, 4:]), 1)
        res["notes"].append("official boxes converted xywh -> xyxy for the check (fp32 rounding: not bit-exact)")
    if off_view is not None:
        err = _max_abs(ref, ref_ours)
        res["eager_equal"] = {"max_abs": err, "bit_exact": err == 0.0}
    tmp = tempfile.TemporaryDirectory(prefix="zoo-vs-official-")
    onnx_dir = tmp.name
    if _KEEP_DIR is not None:
        shape = "x".join(str(d) for d in inputs[0].shape)
        onnx_dir = str(_KEEP_DIR / f"{name}-{shape}")
        Path(onnx_dir).mkdir(parents=True, exist_ok=True)
    sides = [("ours", view)] + ([("official", off_view)] if off_view is not None else [])
    backends = [b for b in args_ns.backends.split(",") if b]
    for b in [b for b in backends if b in OPENVINO_PRECISION]:
        if b not in available_backends():
            backends.remove(b)
            res["notes"].append(f"{b}: not available here (openvino not installed, or no bf16 arithmetic)")
    if args_ns.compile and "compile" not in backends:
        backends.append("compile")
    checks = {}
    for side, module in sides:
        for b in backends:
            if f"{side}:{b}" in args_ns.skip:
                res["notes"].append(f"{side} {b}: skipped (--skip)")
                continue
            _log(f"{name}: building {side} {b}")
            try:
                if b == "eager":
                    fn = (lambda m=module: m(*inputs))
                elif b == "onnxruntime":
                    fn = _ort(module, inputs, task, onnx_dir, side, args_ns.threads)
                elif b in OPENVINO_PRECISION:
                    fn = _ov(module, inputs, task, onnx_dir, side, args_ns.threads, OPENVINO_PRECISION[b])
                else:
                    compiled = torch.compile(module)
                    fn = (lambda m=compiled: m(*inputs))
                with torch.inference_mode():
                    checks[(side, b)] = _max_abs(ref_side[side], fn())
                paths[(side, b)] = fn
            except Exception as exc:   # a path that cannot take this model: say so, time the others
                res["notes"].append(f"{side} {b}: not available ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:140]})")
    int8_backends = []
    if args_ns.int8:
        int8_backends = _int8_paths(loaded, sides, inputs, task, onnx_dir, args_ns, backends, ref_side,
                                    paths, checks, res)
    times = {k: [] for k in paths}
    _log(f"{name}: timing {len(paths)} paths, {args_ns.repeats} interleaved rounds")
    with torch.inference_mode():
        for fn in paths.values():
            for _ in range(args_ns.warmup):
                fn()
        for _ in range(args_ns.repeats):   # interleaved: one call of every path per round
            for k, fn in paths.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    tmp.cleanup()
    p50 = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for b in backends + int8_backends:
        o, f = p50.get(("ours", b)), p50.get(("official", b))
        if o is None and f is None:
            continue
        res["rows"].append({"backend": b + (" (fused)" if b == "eager" and ours_fused is not ours else ""),
                            "ours_ms": o, "official_ms": f, "ratio": (o / f) if o and f else None,
                            "ours_max_abs": checks.get(("ours", b)), "official_max_abs": checks.get(("official", b))})
    # the "best" row is fp32 only
    fp32 = {k: v for k, v in p50.items() if k[1] not in REDUCED_PRECISION and k[1] not in int8_backends}
    best_o = min(((v, k[1]) for k, v in fp32.items() if k[0] == "ours"), default=None)
    best_f = min(((v, k[1]) for k, v in fp32.items() if k[0] == "official"), default=None)
    if best_o:
        # the same comparison round by round (both calls a few ms apart, under the same load):
        # the median of these ratios is the figure least moved by other work on a shared machine
        paired = (statistics.median(o / f for o, f in zip(times[("ours", best_o[1])], times[("official", best_f[1])]))
                  if best_f else None)
        res["rows"].append({"backend": f"best: ours {best_o[1]}" + (f" vs official {best_f[1]}" if best_f else ""),
                            "ours_ms": best_o[0], "official_ms": best_f[0] if best_f else None,
                            "ratio": best_o[0] / best_f[0] if best_f else None, "paired_ratio": paired,
                            "goal": GOALS.get(name)})
    for b in [*REDUCED_PRECISION, *int8_backends]:
        if ("ours", b) in p50 and best_f:
            paired = statistics.median(o / f for o, f in zip(times[("ours", b)], times[("official", best_f[1])]))
            res["rows"].append({"backend": f"ours {b} vs official best fp32 ({best_f[1]})", "ours_ms": p50[("ours", b)],
                                "official_ms": best_f[0], "ratio": p50[("ours", b)] / best_f[0],
                                "paired_ratio": paired,
                                "precision": ("int8" if b in int8_backends else "bf16") + " vs fp32"})
    res["spread_ms"] = {f"{k[0]} {k[1]}": [round(statistics.quantiles(v, n=10)[0] * 1e3, 1),
                                           round(statistics.quantiles(v, n=10)[-1] * 1e3, 1)]
                        for k, v in times.items() if len(v) >= 2}
    res["load_average"] = list(os.getloadavg())
    return res


def _official_dense(net):
    """The official detector's one-to-one dense predictions, the tensor our deploy view returns (a
    module, so the exporters take it)."""
    import torch

    class OfficialDense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            if isinstance(out, dict):
                out = out.get("one2one", out)
            return out[0] if isinstance(out, (list, tuple)) else out
    return OfficialDense().eval()


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-mhaf", metavar="PATH")
    ap.add_argument("--official-drift", metavar="PATH")
    ap.add_argument("--official-sinenet", metavar="PATH")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=None, help="grid of the PDE models' input (default: native)")
    ap.add_argument("--imgsz", type=int, default=640, help="detector input size")
    ap.add_argument("--backends", default="eager,onnxruntime,openvino",
                    help="comma-separated: eager, onnxruntime, openvino, openvino-bf16, compile")
    ap.add_argument("--skip", default="", help="side:backend pairs not to build, e.g. official:onnxruntime")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to build)")
    ap.add_argument("--int8", action="store_true",
                    help="also time both sides quantised to int8 (zoo export --int8's quantiser, same calibration) "
                         "and measure what int8 costs our metric on the eval set")
    ap.add_argument("--onnx-dir", metavar="DIR", help="keep each side's ONNX export here and reuse it next run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", metavar="FILE.json", help="also write the results here (exporters print to stdout)")
    a = ap.parse_args(argv)
    global _KEEP_DIR
    _KEEP_DIR = Path(a.onnx_dir).expanduser() if a.onnx_dir else None
    a.skip = {x.strip() for x in a.skip.split(",") if x.strip()}

    import torch
    torch.set_num_threads(a.threads)
    roots = {"mhaf": a.official_mhaf, "drift": a.official_drift, "sinenet": a.official_sinenet}
    out = {"threads": a.threads, "torch": torch.__version__, "models": []}
    for name in [m.strip() for m in a.models.split(",") if m.strip()]:
        root = next((v for k, v in roots.items() if name.startswith(k)), None)
        out["models"].append(measure(name, root, a))
        if a.out:   # after every model, so a later model's failure keeps the earlier ones
            Path(a.out).write_text(json.dumps(out, indent=2))
    if a.json:
        print(json.dumps(out, indent=2))
        return out
    for m in out["models"]:
        eq = m.get("eager_equal")
        eq_s = ("" if eq is None else "; eager outputs " + ("bit-exact" if eq["bit_exact"]
                                                           else f"differ by max abs {eq['max_abs']:.3g}"))
        print(f"\n{m['model']} ({m['weights']}), input {m['inputs']}{eq_s}")
        print(f"{'backend':34} | threads | ours ms | official ms | ratio | max abs vs ref")
        for r in m["rows"]:
            goal = f" (goal <= {r['goal']})" if r.get("goal") and r["ratio"] is not None else ""
            paired = f" (paired {r['paired_ratio']:.3f})" if r.get("paired_ratio") is not None else ""
            print(f"{r['backend']:34} | {m['threads']:7} | {_fmt(r['ours_ms']):>7} | {_fmt(r['official_ms']):>11} | "
                  f"{_fmt(r['ratio'], '.3f'):>5}{paired}{goal} | {_fmt(r.get('ours_max_abs'), '.2g')}")
        for q in m.get("int8") or []:
            print(f"  int8 accuracy ({q['runtime']}, {q['dataset']} eval set): {q['metric']} fp32 eager {q['fp32_eager']:.4g} "
                  f"-> int8 {q['int8']:.4g} ({q['change']:+.4g}; allowed {q['allowed']}: "
                  + ("within" if q["within"] else "OUTSIDE") + ")"
                  + (f", {q['fp32_products']} matrix products kept fp32 by the search" if q.get("fp32_products") else ""))
        print(f"  10th-90th percentile ms: {m['spread_ms']}; load average {m['load_average']}")
        for n in m["notes"]:
            print(f"  note: {n}")
    return out


if __name__ == "__main__":
    main()
