"""`zoo` verbs. The CLI holds no logic: it parses, calls one zoo function and renders the result.
Errors a user can cause (zoo.errors.ZooError) print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
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


def _metrics_table(title: str, metrics: dict) -> Table:
    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    return t


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
    t = Table(title=f"zoo models ({len(rows)})")
    for col in ("name", "task", "family", "status", "checkpoints"):
        t.add_column(col)
    for r in rows:
        status = "[green]ready[/]" if r["status"] == "ready" else "[yellow]planned[/]"
        t.add_row(r["name"], r["task"], r["family"], status, ", ".join(c.split(".", 1)[1] for c in r["checkpoints"]) or "-")
    out.print(t)


@app.command()
def info(name: str, as_json: bool = JsonOpt):
    """Paper, licence, checkpoints, datasets; the paper's numbers and ours side by side."""
    data = api.info(name)
    if as_json:
        _print_json(data)
        return
    p = data["paper"]
    out.print(f"[bold]{data['name']}[/]  ({data['family']}, task {data['task']}, {data['status']})")
    out.print(data["description"])
    out.print(f"paper: {p['title']}" + (f"  arXiv:{p['arxiv']}" if p.get("arxiv") else "")
              + (f"  {p['venue']}" if p.get("venue") else ""))
    out.print(f"official code: {p.get('code') or 'none published'}  (licence: {p.get('code_license') or 'unknown'})")
    if data.get("ours"):
        out.print("[italic]a size configuration of ours, not a paper variant[/]")
    if data.get("datasets"):
        out.print("datasets: " + ", ".join(data["datasets"]))
    if data.get("weights_note"):
        out.print(f"weights: {data['weights_note']}")
    t = Table(title="reported (paper) vs measured (ours)")
    for col in ("metric", "dataset", "paper", "source", "ours", "checkpoint"):
        t.add_column(col)
    ours = {}
    for tag, ck in data["checkpoints"].items():
        for m, v in ck["metrics"].items():
            ours.setdefault((m, ck["dataset"]), (v, tag))
    shown = set()
    for r in data["reported"]:
        key = (r["metric"], r.get("dataset"))
        mine = ours.get(key)
        shown.add(key)
        t.add_row(r["metric"], r.get("dataset") or "-", str(r["value"]), r["source"],
                  f"{mine[0]:.4g}" if mine else "-", mine[1] if mine else "-")
    for (m, ds), (v, tag) in ours.items():
        if (m, ds) not in shown:
            t.add_row(m, ds, "-", "-", f"{v:.4g}", tag)
    if t.row_count:
        out.print(t)
    if data["checkpoints"]:
        c = Table(title="checkpoints")
        for col in ("name", "dataset", "repo@revision", "licence", "made by"):
            c.add_column(col, overflow="fold")
        for tag, ck in data["checkpoints"].items():
            star = " (default)" if tag == data.get("default_checkpoint") else ""
            c.add_row(f"{data['name']}.{tag}{star}", ck["dataset"], f"{ck['repo']}@{ck['revision'][:12]}",
                      ck["license"], ck["made_by"])
        out.print(c)


# ---- eval / predict ------------------------------------------------------------------------------

@app.command("eval")
def eval_(name: str,
          dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
          data: Optional[str] = typer.Option(None, "--data", help="your own data file or folder"),
          split: str = typer.Option("test", "--split"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
          device: Optional[str] = DeviceOpt,
          hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Evaluate a checkpoint with the task's standard metrics."""
    res = api.evaluate(name, dataset=dataset, data=data, split=split, hub=hub, device=device,
                       **_options(option, batch_size=batch_size))
    if as_json:
        _print_json(res)
    else:
        out.print(_metrics_table(f"{res['model']} on {res['dataset']} ({res['split']})", res["metrics"]))


@app.command()
def predict(name: str, input: Optional[str] = typer.Argument(None, help="an image path, a prompt, ..."),
            dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
            data: Optional[str] = typer.Option(None, "--data"),
            save: Optional[Path] = typer.Option(None, "--save", help="write the picture here"),
            steps: Optional[int] = typer.Option(None, "--steps"),
            max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
            device: Optional[str] = DeviceOpt,
            hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Run a checkpoint on one input and draw the result."""
    res = api.predict(name, input, dataset=dataset, data=data, save=save, hub=hub, device=device,
                      **_options(option, steps=steps, max_new_tokens=max_new_tokens))
    if as_json:
        _print_json(res)
        return
    text = res.pop("text", None)
    if text is not None:
        out.print(text)
    for k, v in res.items():
        out.print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")


# ---- finetune ------------------------------------------------------------------------------------

@app.command()
def finetune(name: str,
             dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
             out_dir: Path = typer.Option(..., "--out", help="the run folder (a checkpoint folder at the end)"),
             data: Optional[str] = typer.Option(None, "--data"),
             steps: Optional[int] = typer.Option(None, "--steps"),
             epochs: Optional[int] = typer.Option(None, "--epochs"),
             batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
             lr: Optional[float] = typer.Option(None, "--lr"),
             seed: int = typer.Option(0, "--seed"),
             resume: bool = typer.Option(False, "--resume", help="continue the run in --out after a crash"),
             nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="processes (DDP via torch.distributed.run)"),
             save_every: Optional[int] = typer.Option(None, "--save-every"),
             pretrained: bool = typer.Option(False, "--pretrained/--scratch", help="start from the checkpoint's weights"),
             method: Optional[str] = typer.Option(None, "--method", help="training method (classification: bp, man, auglocal)"),
             local_blocks: Optional[int] = typer.Option(None, "--local-blocks"),
             aux_depth: Optional[int] = typer.Option(None, "--aux-depth"),
             imgsz: Optional[int] = typer.Option(None, "--imgsz"),
             accumulate: int = typer.Option(1, "--accumulate", help="micro-batches per optimiser step"),
             device: Optional[str] = DeviceOpt,
             hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Train a model on a dataset into a checkpoint folder; resumable, seeded, DDP-ready."""
    res = api.finetune(name, dataset=dataset, out=out_dir, data=data, steps=steps, epochs=epochs,
                       batch_size=batch_size, lr=lr, seed=seed, resume=resume, nproc_per_node=nproc_per_node,
                       save_every=save_every, pretrained=pretrained, hub=hub, progress=not as_json,
                       device=device, accumulate=accumulate,
                       **_options(option, method=method, local_blocks=local_blocks, aux_depth=aux_depth, imgsz=imgsz))
    if as_json:
        _print_json(res)
        return
    out.print(f"[green]done[/]: {res['steps']} steps, final loss {res['final_loss']:.4g}, "
              f"{res['steps_per_s']:.1f} steps/s x {res['world_size']} process(es) -> {res['out']}")
    if res.get("metrics"):
        out.print(_metrics_table("test metrics", res["metrics"]))


# ---- export / bench ------------------------------------------------------------------------------

@app.command()
def export(name: str,
           format: str = typer.Option("onnx", "--format", "-f", help="onnx, torchscript, pt2 or safetensors"),
           out_path: Optional[Path] = typer.Option(None, "--out"),
           no_fuse: bool = typer.Option(False, "--no-fuse", help="keep re-parameterisable branches"),
           imgsz: Optional[int] = typer.Option(None, "--imgsz"),
           resolution: Optional[int] = typer.Option(None, "--resolution"),
           device: Optional[str] = DeviceOpt,
           hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Export, load back with the format's own runtime, and check parity."""
    res = api.export(name, format, out=out_path, fuse=not no_fuse, hub=hub, device=device,
                     **_options(option, imgsz=imgsz, resolution=resolution))
    if as_json:
        _print_json(res)
        return
    out.print(f"[green]exported[/] {res['model']} -> {res['path']} ({res['format']}, {res['size_mb']:.2f} MB)")
    out.print(f"parity vs PyTorch: max abs {res['max_abs_err']:.3g}, max rel {res['max_rel_err']:.3g} "
              f"(tolerance atol {res['atol']:g} + rtol {res['rtol']:g})")
    for note in res.get("notes", []):
        out.print(f"note: {note}")


@app.command()
def bench(name: str,
          compare: Optional[str] = typer.Option(None, "--compare", help="a reference model measured in the same run"),
          train: bool = typer.Option(False, "--train", help="measure a training step instead of inference"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
          imgsz: Optional[int] = typer.Option(None, "--imgsz"),
          resolution: Optional[int] = typer.Option(None, "--resolution"),
          repeats: Optional[int] = typer.Option(None, "--repeats"),
          no_fuse: bool = typer.Option(False, "--no-fuse", help="keep re-parameterisable branches"),
          device: Optional[str] = DeviceOpt,
          hub: Optional[str] = HubOpt, as_json: bool = JsonOpt, option: Optional[List[str]] = OptionList):
    """Params, FLOPs, latency p50/p90, throughput and peak memory (and ratios with --compare)."""
    res = api.bench(name, compare=compare, train=train, hub=hub, device=device, fuse=not no_fuse,
                    **_options(option, batch_size=batch_size, imgsz=imgsz, resolution=resolution, repeats=repeats))
    if as_json:
        _print_json(res)
        return
    rows = res["results"]
    t = Table(title=f"bench ({res['mode']}, batch {res['batch_size']}, {res['device']}, {res['threads']} threads)")
    cols = ["model", "params", "GFLOPs", "p50 ms", "p90 ms", "samples/s", "peak MB"]
    for c in cols:
        t.add_column(c, justify="right" if c != "model" else "left")
    for r in rows:
        t.add_row(r["model"], f"{r['params']:,}", f"{r['gflops']:.4g}" if r["gflops"] is not None else "-",
                  f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['throughput']:.1f}",
                  f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "-")
    out.print(t)
    for k, v in res.get("ratios", {}).items():
        out.print(f"{k}: {v:.3f}")


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
        raise


if __name__ == "__main__":
    main()
