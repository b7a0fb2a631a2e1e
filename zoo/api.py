"""The Python API: one function per CLI verb, with the CLI's words. Thin: each function hands over to
the module that does the work (zoo.verbs.*, zoo.hub), imported on first use so that
`import zoo` stays free of torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def list_models(pattern: str | None = None, *, task: str | None = None, family: str | None = None,
                status: str | None = None, pretrained: bool = False) -> list[str]:
    """Registered model names (or `name.tag` checkpoint names with pretrained=True); `pattern` is a
    shell-style wildcard as in timm (`zoo.list_models("mhaf*")`)."""
    from zoo.catalogue import list_models as _list
    return _list(pattern, task=task, family=family, status=status, pretrained=pretrained)


def model_rows(pattern: str | None = None, *, task: str | None = None, family: str | None = None,
               pretrained: bool = False) -> list[dict]:
    """`zoo list` as data: name, family, task, status, checkpoints, paper, arXiv id per model."""
    from zoo.catalogue import list_rows
    return list_rows(pattern, task=task, family=family, pretrained=pretrained)


def info(name: str) -> dict:
    """Everything the registry says about a model (or a run folder's config.json says about the
    run), with the task's metric definitions, as plain data."""
    import zoo.registry as _reg
    from zoo.loading import is_checkpoint_dir, run_info
    from zoo.tasks import metric_definitions

    data = run_info(name) if is_checkpoint_dir(name) else _reg.info(name)
    data["metric_definitions"] = metric_definitions(data["task"])
    for row in data.get("reported", []):
        row["value"] = _count(row["metric"], row["value"])
    for ck in [data, *data.get("checkpoints", {}).values()]:
        ck["metrics"] = {k: _count(k, v) for k, v in (ck.get("metrics") or {}).items()}
    return data


# metrics that count things: integers in JSON (the registry's YAML may hold 2.2e6 as a float)
_COUNTS = {"params", "samples", "images", "detections", "tokens", "trajectories", "rollout_steps"}


def _count(metric: str, value):
    if metric in _COUNTS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def create_model(name: str, pretrained: bool = False, *, hub: str | None = None, device: str | None = None,
                 **overrides):
    """Build a model by name (`deeponet`, `deeponet.darcy`) or from a checkpoint folder.

    pretrained=True loads the checkpoint's weights (pulled and sha256-verified)."""
    from zoo.loading import load
    return load(name, pretrained=pretrained, hub=hub, overrides=overrides, require_weights=pretrained,
                device=device).model


def data_config(name: str) -> dict:
    """What a model's inputs must look like (input size, value range, normalisation, class names),
    as timm's `resolve_data_config`; the model returned by `create_model` carries it in `.zoo_cfg`."""
    from zoo.loading import data_config as _data_config
    return _data_config(name)


def transforms(name: str):
    """A callable that prepares a user's image/array/file as the model's input batch, as timm's
    `create_transform`."""
    from zoo.loading import transforms as _transforms
    return _transforms(name)


def pull(name: str, *, hub: str | None = None) -> Path:
    """Fetch and verify a checkpoint; returns its local folder."""
    from zoo.hub import pull_model
    return Path(pull_model(name, hub=hub))


def push(folder: str | Path, repo: str, *, hub: str | None = None) -> dict:
    """Publish a checkpoint folder with its model card; returns the registry entry to paste."""
    from zoo.hub import push as _push
    return _push(Path(folder), repo, hub=hub)


def convert(name: str, src: str | Path, out: str | Path) -> Path:
    """An official checkpoint file -> our checkpoint folder, without running pickled code."""
    from zoo.verbs.convert import convert as _convert
    return Path(_convert(name, src, out))


def evaluate(name: str, *, dataset: str | None = None, data: str | None = None, split: str = "test",
             hub: str | None = None, device: str | None = None, nproc_per_node: int = 1, backend: str = "eager",
             **options) -> dict:
    """Metrics of a checkpoint on a dataset (or the user's own file with `data`); nproc_per_node > 1
    shards the set over torchrun processes (the same metrics)."""
    from zoo.verbs.evaluate import evaluate as _evaluate
    return _evaluate(name, dataset=dataset, data=data, split=split, hub=hub, device=device, options=options,
                     nproc_per_node=nproc_per_node, backend=backend)


def predict(name: str, input: str | None = None, *, dataset: str | None = None, data: str | None = None,
            save: str | Path | None = None, hub: str | None = None, device: str | None = None,
            backend: str = "eager", **options) -> dict:
    """Run a checkpoint on one input and (with `save`) draw the result."""
    from zoo.verbs.predict import predict as _predict
    return _predict(name, input, dataset=dataset, data=data, save=save, hub=hub, device=device, options=options,
                    backend=backend)


def finetune(name: str, *, dataset: str | None = None, out: str | Path | None = None, data: str | None = None,
             steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
             lr: float | None = None, seed: int = 0, resume: bool = False, nproc_per_node: int = 1,
             save_every: int | None = None, pretrained: bool | None = None, hub: str | None = None,
             progress: bool = True, device: str | None = None, accumulate: int = 1, launch: dict | None = None,
             **options) -> dict:
    """Train into a checkpoint folder (`out`, default runs/finetune/<name>-N). pretrained=None starts
    from the checkpoint when the model has one for `dataset`, else from random init; False: scratch.
    `launch`: torchrun's rendezvous past one machine ({"nnodes": 2, "node_rank": 0, "master_addr": ...,
    "master_port": ...}, or "rdzv_endpoint"; "max_restarts" for elastic restarts)."""
    from zoo.verbs.finetune import finetune as _finetune
    return _finetune(name, dataset=dataset, out=out, data=data, steps=steps, epochs=epochs,
                     batch_size=batch_size, lr=lr, seed=seed, resume=resume, nproc_per_node=nproc_per_node,
                     save_every=save_every, pretrained=pretrained, hub=hub, progress=progress, device=device,
                     accumulate=accumulate, launch=launch, options=options)


def export(name: str, format: str = "onnx", *, out: str | Path | None = None, fuse: bool = True,
           hub: str | None = None, pretrained: bool = True, device: str | None = None, int8: bool = False,
           **options) -> dict:
    """Write `format`, load it back with its own runtime and check parity with PyTorch (int8: quantise,
    calibrated on the task's data, and refuse past the task's metric tolerance)."""
    from zoo.verbs.export import export as _export
    return _export(name, format, out=out, fuse=fuse, hub=hub, pretrained=pretrained, device=device,
                   options=options, int8=int8)


def bench(name: str, *, compare: str | None = None, train: bool = False, hub: str | None = None,
          device: str | None = None, fuse: bool = True, backend: str | list[str] = "eager", refresh_peak: bool = False,
          **options) -> dict:
    """Params, FLOPs, latency, throughput, peak memory and the fraction of the machine's peak FLOP
    rate, per backend (`"eager,onnxruntime"` or a list: all in one interleaved run), and ratios
    against `compare`; `refresh_peak` measures the machine's peak again instead of reading the cache."""
    from zoo.verbs.bench import bench as _bench
    return _bench(name, compare=compare, train=train, hub=hub, device=device, fuse=fuse, options=options,
                  backend=backend, refresh_peak=refresh_peak)


def verify(name: str | None = None, *, all: bool = False, hub: str | None = None, device: str | None = None,
           max_seconds: float | None = None, record: bool = False) -> dict:
    """Re-run a checkpoint's recorded eval and compare with its card (PASS/FAIL per metric within the
    recorded tolerance); `all=True`: every checkpoint (`max_seconds`: only the quick ones)."""
    from zoo.verbs import verify as _verify
    if all:
        return _verify.verify_all(hub=hub, device=device, max_seconds=max_seconds, pattern=name)
    if not name:
        raise ZooError("give a checkpoint (NAME or NAME.TAG) or --all")
    return _verify.verify(name, hub=hub, device=device, record=record)


def model_index(name: str, metrics: dict | None = None) -> list[dict]:
    """The Hugging Face `model-index` block for a checkpoint's card: our measured metrics."""
    from zoo.verbs.verify import model_index as _model_index
    return _model_index(name, metrics)


def compare(names: list[str], *, dataset: str | None = None, report: str | Path | None = None,
            backends: list[str] | None = None, hub: str | None = None, device: str | None = None,
            overwrite: bool = False, **options) -> dict:
    """Measure models side by side in one process on the same data: params, FLOPs, latency per
    backend, peak memory and the task's metrics; `report` writes HTML (+ Markdown beside it)."""
    from zoo.verbs.compare import compare as _compare
    return _compare(names, dataset=dataset, report=report, backends=backends, hub=hub, device=device,
                    options=options, overwrite=overwrite)


def site_build(out: str | Path) -> dict:
    """A static catalogue of the zoo (index + one page per family) in `out`; no server needed."""
    from zoo.verbs.site import build as _build
    return _build(out)


__all__ = ["ZooError", "bench", "convert", "create_model", "data_config", "transforms", "evaluate", "export", "finetune", "info",
           "list_models", "model_index", "predict", "pull", "push", "site_build", "verify", "compare"]
