"""`zoo` verbs. The CLI holds no logic: it parses, calls one zoo function and renders the result.
Errors a user can cause (zoo.errors.ZooError) print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from zoo import api
from zoo.errors import ZooError

from .common import DeviceOpt, HubOpt, JsonOpt, OptionList, err, out, parse_options as _options, print_json as _print_json


def _version(value: bool):
    if value:
        from zoo._version import __version__
        out.print(f"zoo {__version__}")
        raise typer.Exit()


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="A model zoo of multi-branch research architectures: one set of verbs for every model.")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """A model zoo of multi-branch research architectures: one set of verbs for every model."""


def _table(*cols: str, right: tuple[str, ...] = (), wrap: tuple[str, ...] = ()) -> Table:
    """A table that fits 80 columns: names are never cut (no_wrap), only the columns in `wrap` wrap
    (at word boundaries), and a light box leaves the width to the content."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in cols:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=c not in wrap,
                     overflow="fold" if c in wrap else "ellipsis")
    return t


from contextlib import contextmanager


@contextmanager
def _working(text: str, quiet: bool = False):
    """A long step shows it is alive on stderr: a rich spinner on a terminal, one plain line when
    stderr is a file or a pipe (stdout stays clean for --json)."""
    if quiet:
        yield
    elif err.is_terminal:
        with err.status(text):
            yield
    else:
        err.print(text, highlight=False, soft_wrap=True)
        yield


def _heading(text: str) -> None:
    # a plain line instead of a centred table title, which rich breaks anywhere on a narrow terminal
    out.print(f"[bold]{text}[/]", highlight=False)


def _metrics_table(title: str, metrics: dict) -> Table:
    _heading(title)
    t = _table("metric", "value", right=("value",))
    for k, v in metrics.items():
        t.add_row(k, _number(k, v))
    return t


_COUNTS = ("params", "samples", "images", "detections", "tokens", "trajectories", "rollout_steps")


def _number(metric: str, v) -> str:
    """Counts as integers (parameters as 7.1M), other numbers with 4-6 significant digits."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and metric in _COUNTS:
        if metric == "params":
            return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}K" if v >= 1e3 else f"{int(v)}"
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---- list / info ---------------------------------------------------------------------------------

@app.command("list")
def list_(pattern: Optional[str] = typer.Argument(None, help="shell-style wildcard, e.g. 'mhaf*'"),
          task: Optional[str] = typer.Option(None, "--task", help="only this task kind"),
          family: Optional[str] = typer.Option(None, "--family"),
          pretrained: bool = typer.Option(False, "--pretrained", help="list checkpoints (name.tag)"),
          as_json: bool = JsonOpt):
    """Every model of every family; planned ones marked."""
    rows = api.model_rows(pattern, task=task, family=family, pretrained=pretrained)
    if as_json:
        _print_json(rows)
        return
    _heading(f"zoo models ({len(rows)})")
    # the family is in --json and `zoo info`; without it every name fits 80 columns uncut
    t = _table("name", "task", "status", "checkpoints", wrap=("checkpoints",))
    for r in rows:
        status = "[green]ready[/]" if r["status"] == "ready" else "[yellow]planned[/]"
        t.add_row(r["name"], r["task"], status, ", ".join(c.split(".", 1)[1] for c in r["checkpoints"]) or "-")
    out.print(t)


def _say(text: str) -> None:
    """Prose wrapped at word boundaries; long tokens (URLs, paths) are never cut."""
    out.print(text, highlight=False)


@app.command()
def info(name: str, as_json: bool = JsonOpt):
    """Paper, licence, checkpoints, datasets; the paper's numbers and ours side by side. A run folder
    shows its config, metrics and the command that made it."""
    data = api.info(name)
    if as_json:
        _print_json(data)
        return
    if data.get("run"):
        _run_info(data)
    else:
        _model_info(data)
    _definitions(data)


def _run_info(data: dict) -> None:
    _say(f"[bold]{data['name']}[/]  (a run of {data['model']}: {data['family']}, task {data['task']})")
    if data.get("dataset"):
        _say(f"trained on: {data['dataset']}")
    if data.get("made_by"):
        _say(f"made by: {data['made_by']}")
    if data.get("train"):
        _say("training: " + ", ".join(f"{k} {_number(k, v)}" for k, v in data["train"].items()))
    cfg = ", ".join(f"{k}={v}" for k, v in data["config"].items())
    _say(f"config: {cfg or '(the architecture defaults)'}")
    if data.get("metrics"):
        out.print(_metrics_table(f"metrics ({data.get('eval_data') or 'measured at the end of the run'})",
                                 data["metrics"]))


def _model_info(data: dict) -> None:
    p = data["paper"]
    _say(f"[bold]{data['name']}[/]  ({data['family']}, task {data['task']}, {data['status']})")
    _say(data["description"])
    _say(f"paper: {p['title']}" + (f"  arXiv:{p['arxiv']}" if p.get("arxiv") else "")
         + (f"  {p['venue']}" if p.get("venue") else ""))
    _say(f"official code: {p.get('code') or 'none published'}  (licence: {p.get('code_license') or 'unknown'})")
    if data.get("ours"):
        _say("[italic]a size configuration of ours, not a paper variant[/]")
    if data.get("datasets"):
        _say("datasets: " + ", ".join(data["datasets"]))
    if data.get("weights_note"):
        _say(f"weights: {data['weights_note']}")
    ours = {}
    for tag, ck in data["checkpoints"].items():
        for m, v in ck["metrics"].items():
            ours.setdefault((m, ck["dataset"]), (v, tag))
    t = _table("metric", "dataset", "paper", "ours", right=("paper", "ours"))
    sources, shown = [], set()
    for r in data["reported"]:
        key = (r["metric"], r.get("dataset"))
        mine = ours.get(key)
        shown.add(key)
        sources.append(f"[{len(sources) + 1}] {r['source']}" + (f"; {r['note']}" if r.get("note") else ""))
        t.add_row(r["metric"], r.get("dataset") or "-", f"{_number(r['metric'], r['value'])} [{len(sources)}]",
                  _number(r["metric"], mine[0]) if mine else "-")
    for (m, ds), (v, tag) in ours.items():
        if (m, ds) not in shown:
            t.add_row(m, ds, "-", _number(m, v))
    if t.row_count:
        out.print()
        _heading("reported (paper) vs measured (ours, by the checkpoint trained on that dataset)")
        out.print(t)
        for line in sources:
            _say(line)
    if data["checkpoints"]:
        out.print()
        _heading("checkpoints")
        for tag, ck in data["checkpoints"].items():
            star = " (default)" if tag == data.get("default_checkpoint") else ""
            _say(f"{data['name']}.{tag}{star}: dataset {ck['dataset']}, {ck['repo']}@{ck['revision'][:12]}, "
                 f"licence {ck['license']}")
            _say(f"  made by: {ck['made_by']}")
            if ck.get("note"):   # how it was trained and what its learning curve says
                _say(f"  note: {ck['note']}")


def _definitions(data: dict) -> None:
    defs = data.get("metric_definitions") or {}
    if defs:
        out.print()
        _heading(f"metrics of the {data['task']} task")
        for k, v in defs.items():
            _say(f"{k}: {v}")


# ---- eval / predict ------------------------------------------------------------------------------

@app.command("eval")
def eval_(name: str,
          dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
          data: Optional[str] = typer.Option(None, "--data", help="your own data file or folder"),
          split: str = typer.Option("test", "--split"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
          conf: Optional[float] = typer.Option(None, "--conf", help="detection: score threshold"),
          iou: Optional[float] = typer.Option(None, "--iou", help="detection: NMS IoU threshold (with --nms)"),
          imgsz: Optional[int] = typer.Option(None, "--imgsz", help="detection: square input size"),
          max_det: Optional[int] = typer.Option(None, "--max-det", help="detection: boxes kept per image"),
          nms: bool = typer.Option(False, "--nms", help="detection: remove near-duplicate boxes with NMS"),
          labels: Optional[str] = typer.Option(None, "--labels", help="segmentation: the label file of --data"),
          nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="shard the set over this many processes "
                                             "(torchrun; the same metrics as one)"),
          backend: str = typer.Option("eager", "--backend", help="eager, compile, onnxruntime, openvino, openvino-bf16 "
                                      "(AMX/AVX512-BF16 CPUs; read its metric), or auto (the fastest fp32 path "
                                      "measured here, cached); parity-checked, falls back to eager"),
          device: Optional[str] = DeviceOpt,
          hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Evaluate a checkpoint with the task's standard metrics."""
    res = api.evaluate(name, dataset=dataset, data=data, split=split, hub=hub, device=device,
                       nproc_per_node=nproc_per_node, backend=backend,
                       **_options(option, batch_size=batch_size, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det,
                                  nms=nms, labels=labels))
    if as_json:
        _print_json(res)
    else:
        out.print(_metrics_table(f"{res['model']} on {res['dataset']} ({res['split']})", res["metrics"]))
        if backend != "eager":
            _backend_line(res)


def _backend_line(res: dict) -> None:
    """Which backend ran, how close it is to eager, and why it fell back if it did."""
    line = f"backend: {res.get('backend')} (parity vs eager: max abs {res.get('parity') or 0:.3g})"
    if res.get("fallback_reason"):
        line += f"; {res.get('requested')} fell back: {res['fallback_reason']}"
    out.print(line, highlight=False, soft_wrap=True)
    check = res.get("precision_check")
    if check:
        verdict = "within" if check["ok"] else "OUTSIDE"
        out.print(f"{res['backend']}: {check['metric']} {check['card']:.4g} on the card (fp32) -> {check['now']:.4g} "
                  f"({check['change']:+.3g}); {verdict} the task's tolerance ({check['allowed']})",
                  highlight=False, soft_wrap=True)


@app.command()
def predict(name: str, input: Optional[str] = typer.Argument(None, help="an image path, a prompt, ..."),
            dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
            data: Optional[str] = typer.Option(None, "--data"),
            save: Optional[Path] = typer.Option(None, "--save", help="write the picture here (a folder for several "
                                                "inputs; default for image inputs: runs/predict/NAME-N)"),
            no_save: bool = typer.Option(False, "--no-save", help="draw nothing"),
            steps: Optional[int] = typer.Option(None, "--steps"),
            max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
            conf: Optional[float] = typer.Option(None, "--conf", help="detection: score threshold"),
            iou: Optional[float] = typer.Option(None, "--iou", help="detection: NMS IoU threshold (with --nms)"),
            imgsz: Optional[int] = typer.Option(None, "--imgsz", help="detection: square input size"),
            max_det: Optional[int] = typer.Option(None, "--max-det", help="detection: boxes kept per image"),
            nms: bool = typer.Option(False, "--nms", help="detection: remove near-duplicate boxes with NMS"),
            task_id: Optional[str] = typer.Option(None, "--task-id", help="multi-task: which sub-task's head"),
            pair: Optional[str] = typer.Option(None, "--pair", help="text classification: a second text; prints "
                                               "each preference head's P(second preferred)"),
            backend: str = typer.Option("eager", "--backend", help="eager, compile, onnxruntime, openvino, openvino-bf16 "
                                        "(AMX/AVX512-BF16 CPUs), or auto (the fastest fp32 path measured here, "
                                        "cached); parity-checked, falls back to eager"),
            device: Optional[str] = DeviceOpt,
            hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Run a checkpoint on one input and draw the result."""
    from zoo.verbs.predict import AUTO
    res = api.predict(name, input, dataset=dataset, data=data, save=None if no_save else (save or AUTO), hub=hub,
                      device=device, backend=backend,
                      **_options(option, steps=steps, max_new_tokens=max_new_tokens, conf=conf, iou=iou,
                                 imgsz=imgsz, max_det=max_det, nms=nms, task_id=task_id, pair=pair))
    if as_json:
        _print_json(res)
        return
    text = res.pop("text", None)
    if text is not None:
        out.print(text)
    _print_prediction(res)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(_cell(x) for x in v) + "]"
    return str(v)


def _print_prediction(res: dict) -> None:
    """Scalars as `key: value` lines; lists of records (detections, top-5, per-input results) as
    tables, so nobody reads Python dict reprs."""
    results = res.pop("results", None)
    saved = res.pop("saved", None)
    lists = {k: v for k, v in res.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    for k, v in res.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out.print(f"{k}.{sub}: {_cell(x)}", highlight=False, soft_wrap=True)
        elif k not in lists:
            out.print(f"{k}: {_cell(v)}", highlight=False, soft_wrap=True)
    for k, rows in lists.items():
        _heading(f"{k} ({len(rows)})")
        cols = list(dict.fromkeys(c for r in rows for c in r))
        t = _table(*cols, wrap=tuple(cols))   # long texts fold onto more lines, never cut
        for r in rows:
            t.add_row(*(_cell(r.get(c, "")) for c in cols))
        out.print(t)
    if results:
        def records(v):
            return isinstance(v, list) and all(isinstance(x, dict) for x in v)
        scalar_cols = list(dict.fromkeys(c for r in results for c, v in r.items() if not records(v)
                                         and not isinstance(v, dict)))
        count_cols = list(dict.fromkeys(c for r in results for c, v in r.items() if records(v)))
        t = _table(*scalar_cols, *count_cols, wrap=tuple(scalar_cols[:1]))   # a long path folds, never cut
        for r in results:
            t.add_row(*(_cell(r.get(c, "")) for c in scalar_cols), *(str(len(r.get(c) or [])) for c in count_cols))
        out.print(t)
    if saved:
        out.print(f"pictures saved to {saved}", highlight=False, soft_wrap=True)


# ---- finetune ------------------------------------------------------------------------------------

@app.command()
def finetune(name: str,
             dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
             out_dir: Optional[Path] = typer.Option(None, "--out", help="the run folder, a checkpoint folder at the "
                                                    "end (default: runs/finetune/NAME-N, the next free N)"),
             data: Optional[str] = typer.Option(None, "--data"),
             steps: Optional[int] = typer.Option(None, "--steps"),
             epochs: Optional[int] = typer.Option(None, "--epochs"),
             batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
             lr: Optional[float] = typer.Option(None, "--lr"),
             seed: int = typer.Option(0, "--seed"),
             resume: bool = typer.Option(False, "--resume", help="continue the run in --out after a crash"),
             nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="processes (DDP via torch.distributed.run)"),
             save_every: Optional[int] = typer.Option(None, "--save-every"),
             pretrained: Optional[bool] = typer.Option(None, "--pretrained/--scratch",
                                                       help="start from the checkpoint's weights, or from random "
                                                            "init (default: pretrained when the model has a "
                                                            "checkpoint for --dataset)"),
             method: Optional[str] = typer.Option(None, "--method", help="training method (classification: bp, man, auglocal)"),
             local_blocks: Optional[int] = typer.Option(None, "--local-blocks"),
             aux_depth: Optional[int] = typer.Option(None, "--aux-depth"),
             imgsz: Optional[int] = typer.Option(None, "--imgsz"),
             accumulate: int = typer.Option(1, "--accumulate", help="micro-batches per optimiser step"),
             nnodes: Optional[str] = typer.Option(None, "--nnodes", help="machines in the job (MIN:MAX with "
                                                  "--rdzv-endpoint for an elastic one)"),
             node_rank: Optional[int] = typer.Option(None, "--node-rank", help="this machine's rank (0 writes --out)"),
             master_addr: Optional[str] = typer.Option(None, "--master-addr", help="node 0's address (static "
                                                       "rendezvous)"),
             master_port: Optional[int] = typer.Option(None, "--master-port", help="a free port on node 0"),
             rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT of an elastic "
                                                         "rendezvous"),
             rdzv_backend: Optional[str] = typer.Option(None, "--rdzv-backend", help="c10d (default with "
                                                        "--rdzv-endpoint), static, etcd"),
             rdzv_id: Optional[str] = typer.Option(None, "--rdzv-id", help="job id, the same on every node"),
             max_restarts: Optional[int] = typer.Option(None, "--max-restarts", help="restart failed workers this "
                                                        "often; they resume from the last saved state"),
             device: Optional[str] = DeviceOpt,
             hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Train a model on a dataset into a checkpoint folder; resumable, seeded, DDP-ready."""
    launch = dict(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                  rdzv_endpoint=rdzv_endpoint, rdzv_backend=rdzv_backend, rdzv_id=rdzv_id, max_restarts=max_restarts)
    res = api.finetune(name, dataset=dataset, out=out_dir, data=data, steps=steps, epochs=epochs,
                       batch_size=batch_size, lr=lr, seed=seed, resume=resume, nproc_per_node=nproc_per_node,
                       save_every=save_every, pretrained=pretrained, hub=hub, progress=not as_json,
                       device=device, accumulate=accumulate, launch={k: v for k, v in launch.items() if v is not None},
                       **_options(option, method=method, local_blocks=local_blocks, aux_depth=aux_depth, imgsz=imgsz))
    if as_json:
        _print_json(res)
        return
    start = "from the checkpoint" if res.get("pretrained") else "from random init"
    out.print(f"[green]done[/]: {res['steps']} steps {start}, final loss {res['final_loss']:.4g}, "
              f"{res['steps_per_s']:.1f} steps/s x {res['world_size']} process(es)", highlight=False)
    out.print(f"run saved to {res['out']}", highlight=False, soft_wrap=True)
    for note in res.get("notes", []):
        err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if res.get("metrics"):
        out.print(_metrics_table("test metrics", res["metrics"]))


# ---- export / bench ------------------------------------------------------------------------------

@app.command()
def export(name: str,
           format: str = typer.Option("onnx", "--format", "-f", help="onnx, openvino, torchscript, pt2 or safetensors"),
           int8: bool = typer.Option(False, "--int8", help="onnx/openvino: static int8 quantisation calibrated on the "
                                     "task's data; refused past the task's metric tolerance"),
           out_path: Optional[Path] = typer.Option(None, "--out"),
           no_fuse: bool = typer.Option(False, "--no-fuse", help="keep re-parameterisable branches"),
           imgsz: Optional[int] = typer.Option(None, "--imgsz"),
           resolution: Optional[int] = typer.Option(None, "--resolution"),
           device: Optional[str] = DeviceOpt,
           hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Export, load back with the format's own runtime, and check parity."""
    with _working(f"exporting {name} to {format}, then loading it back for the parity check ..."):
        res = api.export(name, format, out=out_path, fuse=not no_fuse, hub=hub, device=device, int8=int8,
                         **_options(option, imgsz=imgsz, resolution=resolution))
    if as_json:
        _print_json(res)
        return
    out.print(f"[green]exported[/] {res['model']} -> {res['path']} ({res['format']}, {res['size_mb']:.2f} MB)")
    out.print(f"parity vs PyTorch: max abs {res['max_abs_err']:.3g}, max rel {res['max_rel_err']:.3g} "
              f"(tolerance atol {res['atol']:g} + rtol {res['rtol']:g})")
    for head, err in res.get("per_output", {}).items():
        out.print(f"  {head}: max abs {err:.3g}", highlight=False)
    for note in res.get("notes", []):
        out.print(f"note: {note}")
    q = res.get("int8")
    if q:
        out.print(f"int8 -> {q['path']} ({q['size_mb']:.2f} MB): {q['metric']} fp32 eager {q['before']:.4g}, "
                  f"int8 {q['runtime']} {q['after']:.4g} (change {q['change']:+.4g}, allowed {q['allowed']})",
                  highlight=False, soft_wrap=True)
        out.print("latency ms: " + ", ".join(f"{k} {v:.3g}" for k, v in q["latency_ms"].items()), highlight=False)
        if len(q.get("search", [])) > 1:
            last = q["search"][-1]
            out.print(f"accuracy search: {len(q['search']) - 1} tries; the readers of the {last['sensitive_tensors']} most "
                      f"sensitive tensors kept fp32 ({last['fp32_products']} matrix products)", highlight=False,
                      soft_wrap=True)
        for note in q.get("notes", []):
            out.print(f"note: {note}", highlight=False)


@app.command()
def bench(name: str,
          compare: Optional[str] = typer.Option(None, "--compare", help="a reference model measured in the same run"),
          train: bool = typer.Option(False, "--train", help="measure a training step instead of inference"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
          imgsz: Optional[int] = typer.Option(None, "--imgsz"),
          resolution: Optional[int] = typer.Option(None, "--resolution"),
          repeats: Optional[int] = typer.Option(None, "--repeats"),
          no_fuse: bool = typer.Option(False, "--no-fuse", help="keep re-parameterisable branches"),
          backend: str = typer.Option("eager", "--backend", help="eager, compile, onnxruntime, openvino, openvino-bf16 or auto; "
                                      "several with commas (eager,onnxruntime) are timed in one interleaved run"),
          refresh_peak: bool = typer.Option(False, "--refresh-peak", help="measure this machine's peak FLOP rate "
                                            "again (it is cached after the first run; a busy machine gives a low one)"),
          device: Optional[str] = DeviceOpt,
          hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Params, FLOPs, latency p50/p90, throughput, peak memory and the fraction of this machine's peak
    FLOP rate, per backend (and ratios with --compare)."""
    with _working(f"benchmarking {name}" + (f" against {compare}" if compare else "") + " ..."):
        res = api.bench(name, compare=compare, train=train, hub=hub, device=device, fuse=not no_fuse,
                        backend=backend, refresh_peak=refresh_peak,
                        **_options(option, batch_size=batch_size, imgsz=imgsz, resolution=resolution,
                                   repeats=repeats))
    if as_json:
        _print_json(res)
        return
    rows = res["results"]
    _heading(f"bench ({res['mode']}, batch {res['batch_size']}, {res['device']}, {res['threads']} threads)")
    t = _table("model", "params", "GFLOPs", "p50 ms", "p90 ms", "samples/s", "peak MB",
               right=("params", "GFLOPs", "p50 ms", "p90 ms", "samples/s", "peak MB"))
    several = len({r.get("backend") for r in rows}) > 1
    long_names = max((len(r["model"]) + several * (len(r.get("backend", "")) + 3) for r in rows), default=0) > 24
    for i, r in enumerate(rows):
        # a long name (a run folder's path) goes on its own line above the numbers, never cut
        label = f"[{i + 1}]" if long_names else r["model"] + (f" ({r.get('backend')})" if several else "")
        t.add_row(label, _number("params", r["params"]), f"{r['gflops']:.4g}" if r["gflops"] is not None else "-",
                  f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['throughput']:.1f}",
                  f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "-")
    if long_names:
        for i, r in enumerate(rows):
            _say(f"[{i + 1}] {r['model']}" + (f" ({r.get('backend')})" if several else ""))
    out.print(t)
    peak = res.get("machine", {}).get("peak_gflops_per_s")
    for i, r in enumerate(rows):
        label = f"[{i + 1}]" if long_names else r["model"]
        if r.get("fraction_of_peak") is not None and peak:
            _say(f"{label} ({r.get('backend', 'eager')}): {r['peak_ms']:.3g} ms at this machine's peak of "
                 f"{peak:.0f} GFLOP/s (fp32 GEMM) -> {r['fraction_of_peak']:.1%} of peak")
        if r.get("data_share") is not None:
            _say(f"{label}: {r['samples_per_s']:.1f} samples/s; data {r['data_ms']:.3g} ms "
                 f"({r['data_share']:.0%} of the step, {r.get('data')} fetched + collated as the fine-tune "
                 f"loop does), compute {r['compute_ms']:.3g} ms")
        for note in r.get("notes", []):
            err.print(f"note: {label}: {note}", highlight=False, soft_wrap=True)
    for k, v in res.get("ratios", {}).items():
        out.print(f"{k}: {v:.3f}")
    for w in res.get("warnings", []):
        err.print(f"[yellow]warning[/]: {w}", highlight=False, soft_wrap=True)


# ---- verify / compare / site (issue 19) ---------------------------------------------------------------

def _v(metric: str, v) -> str:
    return "-" if v is None else _number(metric, v)


def _status(s: str) -> str:
    colour = {"PASS": "green", "FAIL": "red", "MISSING": "red", "SKIP": "yellow"}.get(s, "white")
    return f"[{colour}]{s}[/]"


def _verify_table(res: dict) -> None:
    _heading(f"{res['checkpoint']} on {res['dataset']} ({res['split']}): {res['status']} in {res['seconds']:.1f} s")
    t = _table("metric", "card", "now", "Δ", "tol", "paper", "result", right=("card", "now", "Δ", "tol", "paper"))
    for r in res["metrics"]:
        paper = r.get("paper")
        t.add_row(r["metric"], _v(r["metric"], r["card"]), _v(r["metric"], r["now"]),
                  "-" if r["delta"] is None else f"{r['delta']:+.2g}",
                  "-" if r["tolerance"] is None else f"{r['tolerance']:.2g}",
                  _number(r["metric"], paper["value"]) if paper else "-",
                  _status(r["status"]) if r["status"] != "info" else "[dim]info[/]")
    d = res["data_sha256"]
    if d["card"]:
        t.add_row("data sha256", d["card"][:8], (d["now"] or "-")[:8], "", "exact", "-", _status(d["status"]))
    out.print(t)
    if any(r.get("paper") for r in res["metrics"]):
        _say("paper: the paper's own number (" + "; ".join(sorted({r["paper"]["source"] for r in res["metrics"]
                                                                    if r.get("paper")})) + "), never re-measured")


@app.command()
def verify(name: Optional[str] = typer.Argument(None, help="NAME.TAG (a bare NAME: its default checkpoint); "
                                                "with --all, a wildcard"),
           all_: bool = typer.Option(False, "--all", help="every checkpoint"),
           max_seconds: Optional[float] = typer.Option(None, "--max-seconds",
                                                       help="with --all: only checkpoints whose recorded eval is quicker"),
           record: bool = typer.Option(False, "--record", help="also print the registry `eval:` block of this run"),
           device: Optional[str] = DeviceOpt, hub: Optional[str] = HubOpt, as_json: bool = JsonOpt):
    """Pull a checkpoint, re-run the card's own eval on the card's data, compare: exit 1 on FAIL."""
    with _working(f"re-measuring {'every checkpoint' if all_ else name} ...", quiet=as_json):
        res = api.verify(name, all=all_, hub=hub, device=device, max_seconds=max_seconds, record=record)
    if as_json:
        _print_json(res)
    elif all_:
        t = _table("checkpoint", "status", "seconds", "note", right=("seconds",), wrap=("note",))
        for r in res["results"]:
            bad = [m["metric"] for m in r["metrics"] if m["status"] == "FAIL"]
            notes = [f"off: {', '.join(bad)}"] if bad else []
            if (r.get("data_sha256") or {}).get("status") == "FAIL":
                notes.append("eval data is not the recorded data (sha256)")
            note = r.get("reason") or "; ".join(notes)
            t.add_row(r["checkpoint"], _status(r["status"]), f"{r['seconds']:.1f}" if "seconds" in r else "-", note)
        _heading("zoo verify --all: " + ", ".join(f"{n} {k}" for k, n in res["counts"].items() if n))
        out.print(t)
    else:
        _verify_table(res)
        if record:
            import yaml
            out.print("registry `eval:` block of this run:", highlight=False)
            out.print(yaml.safe_dump({"eval": res["record"]}, sort_keys=False, width=1000).rstrip(), highlight=False)
    ok = res["ok"] if all_ else res["status"] == "PASS"
    if not ok:
        raise typer.Exit(1)


@app.command()
def compare(names: List[str] = typer.Argument(..., help="two or more models of one task (NAME, NAME.TAG or a run folder)"),
            dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="default: the first model's"),
            report: Optional[Path] = typer.Option(None, "--report", help="write this HTML report and a .md beside it"),
            backend: Optional[List[str]] = typer.Option(None, "--backend", help="eager, fused, onnxruntime, compile "
                                                        "(repeatable; default eager, fused, onnxruntime)"),
            batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
            repeats: Optional[int] = typer.Option(None, "--repeats"),
            overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report"),
            device: Optional[str] = DeviceOpt, hub: Optional[str] = HubOpt, as_json: bool = JsonOpt,
            option: Optional[List[str]] = OptionList):
    """Models side by side, one process, same data: params, FLOPs, latency per backend, memory, metrics."""
    with _working(f"comparing {', '.join(names)} ...", quiet=as_json):
        res = api.compare(list(names), dataset=dataset, report=report, backends=backend, hub=hub, device=device,
                          overwrite=overwrite, **_options(option, batch_size=batch_size, repeats=repeats))
    if as_json:
        _print_json(res)
        return
    from zoo.verbs.compare import markdown
    out.print(markdown(res), highlight=False, markup=False, soft_wrap=True)
    if res.get("report"):
        _say(f"report: {res['report']['html']} (+ {res['report']['markdown']})")


site_app = typer.Typer(no_args_is_help=True, help="A static catalogue of the zoo (HTML, no server needed).")
app.add_typer(site_app, name="site")


@site_app.command("build")
def site_build(out_dir: Path = typer.Argument(..., help="an empty or new folder, or a previous site"),
               as_json: bool = JsonOpt):
    """Index (search, task filter) and one page per family, from the registry and the cards."""
    res = api.site_build(out_dir)
    if as_json:
        _print_json(res)
        return
    _say(f"[green]built[/] {res['pages']} pages ({res['families']} families, {res['models']} models): "
         f"open {res['index']}")


def _register_extras() -> None:
    """pull / push / cache / convert live with the hub code."""
    from .hub_commands import register
    register(app)


_register_extras()


def main() -> None:
    import warnings
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    warnings.filterwarnings("ignore")  # library deprecation chatter is not for the user's terminal
    try:
        rv = app(standalone_mode=False)  # in this mode click returns Exit codes instead of raising them
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except ZooError as e:
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # usage errors (typer vendors click, so match on behaviour, not class)
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("ZOO_DEBUG", "").strip() not in ("", "0"):
            raise
        # the last line of defence (issue 13): whatever a verb did not turn into a ZooError still
        # reaches the user as one line and a non-zero exit, never a traceback
        err.print(f"[red]error:[/] {_one_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _one_line(e: BaseException) -> str:
    """A one-line account of an exception no verb caught: the file and the OS's reason for I/O
    errors, the library's own message otherwise (first line), and how to see the traceback."""
    if isinstance(e, OSError) and e.filename is not None:
        what = f"{e.filename}: {e.strerror or e}"
    elif isinstance(e, RecursionError):
        what = "the input is nested too deeply to read"
    elif isinstance(e, MemoryError):
        what = "out of memory (the input asks for more than this machine has)"
    else:
        text = str(e).strip()
        first = text.splitlines()[0].strip() if text else ""
        what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    if len(what) > 300:
        what = what[:297] + "..."
    return f"{what} (ZOO_DEBUG=1 shows the traceback)"


if __name__ == "__main__":
    main()
