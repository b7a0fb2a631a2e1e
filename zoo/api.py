"""The Python API: one function per CLI verb, with the CLI's words. Heavy imports stay inside."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, DataError, ZooError
from zoo import registry as _reg


@dataclass
class Loaded:
    """A model ready for a verb: the module plus everything needed to pick its task and data."""
    model: Any
    name: str                   # registry model name
    tag: str | None             # checkpoint tag, when weights came from the registry
    task_name: str
    config: dict
    dataset: str | None = None  # what the weights were trained on
    folder: Path | None = None  # where the weights came from
    meta: dict = field(default_factory=dict)

    @property
    def task(self):
        from zoo.tasks import get_task
        return get_task(self.task_name)

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.tag}" if self.tag else self.name


def _is_checkpoint_dir(name: str) -> bool:
    p = Path(name)
    return ("/" in name or name.startswith(".")) and p.is_dir()


def load(name: str, *, pretrained: bool = True, dataset: str | None = None, hub: str | None = None,
         overrides: dict | None = None, require_weights: bool = False) -> Loaded:
    """Resolve `name` (`model`, `model.tag` or a checkpoint folder) and build the model."""
    from zoo.checkpoint import load_weights, read_config

    if _is_checkpoint_dir(name):
        meta = read_config(name)
        mname = meta["model"]
        entry = _reg.load_registry().models.get(mname)
        if entry is None:
            raise CheckpointError(f"{name}: config.json names model '{mname}', which the registry does not know")
        cfg = {**meta["config"], **(overrides or {})}
        model = _build(mname, entry, cfg)
        load_weights(model, name)
        return Loaded(model, mname, meta.get("tag"), meta.get("task", entry.task), cfg,
                      meta.get("dataset"), Path(name), meta)
    mname, entry, tag = _reg.resolve(name, dataset)
    if entry.status != "ready":
        raise _reg.NotReadyError(f"model '{mname}' is planned, not built yet (see `zoo info {mname}`)")
    if pretrained and tag is None and require_weights:
        why = entry.weights_note or "none has been trained or converted yet"
        raise CheckpointError(f"model '{mname}' has no checkpoint"
                              + (f" for dataset '{dataset}'" if dataset else "") + f": {why}")
    use_tag = tag if pretrained else None
    cfg = _reg.model_config(entry, use_tag, overrides, dataset)
    model = _build(mname, entry, cfg)
    folder, meta = None, {}
    if use_tag:
        from zoo.hub import pull_model
        folder = Path(pull_model(f"{mname}.{use_tag}", hub=hub))
        meta = read_config(folder)
        if meta.get("config") and {**meta["config"], **(overrides or {})} != cfg:
            raise CheckpointError(f"{mname}.{use_tag}: the checkpoint's config.json does not match the registry "
                                  f"config for this architecture")
        load_weights(model, folder)
    ds = entry.checkpoints[use_tag].dataset if use_tag else None
    return Loaded(model, mname, use_tag, entry.task, cfg, ds, folder, meta)


def _build(name: str, entry, cfg: dict):
    builder = _reg.import_builder(entry, name)
    try:
        return builder(**cfg)
    except TypeError as exc:
        raise CheckpointError(f"config does not fit the '{name}' builder: {exc}") from None


# ---- verbs ---------------------------------------------------------------------------------------

def list_models(task: str | None = None, family: str | None = None, status: str | None = None,
                pretrained: bool = False) -> list[str]:
    """Registered model names (or `name.tag` checkpoint names with pretrained=True)."""
    return _reg.list_models(task=task, family=family, status=status, pretrained=pretrained)


def info(name: str) -> dict:
    """Everything the registry says about a model, as plain data."""
    mname, entry, tag = _reg.resolve(name)
    out = {"name": mname, **entry.model_dump(mode="json")}
    out["default_checkpoint"] = entry.default_checkpoint
    return out


def create_model(name: str, pretrained: bool = False, *, hub: str | None = None, **overrides):
    """Build a model by name (`deeponet`, `deeponet.darcy`) or from a checkpoint folder.

    pretrained=True loads the checkpoint's weights (pulled and sha256-verified)."""
    return load(name, pretrained=pretrained, hub=hub, overrides=overrides,
                require_weights=pretrained).model


def pull(name: str, *, hub: str | None = None) -> Path:
    """Fetch and verify a checkpoint; returns its local folder."""
    from zoo.hub import pull_model
    return Path(pull_model(name, hub=hub))


def push(folder: str | Path, repo: str, *, hub: str | None = None) -> dict:
    from zoo.hub import push as _push
    return _push(Path(folder), repo, hub=hub)


def convert(name: str, src: str | Path, out: str | Path) -> Path:
    from zoo.convert import convert as _convert
    return Path(_convert(name, src, out))


def _dataset_for(loaded: Loaded, dataset: str | None, data: str | None, split: str, options: dict):
    task = loaded.task
    dataset = dataset or (None if data else loaded.dataset)
    if dataset is None and data is None:
        raise DataError(f"which data? give --dataset (one of: {', '.join(task.datasets)}) or --data PATH")
    if dataset and dataset not in task.datasets:
        from zoo.errors import UnknownNameError
        raise UnknownNameError(f"dataset for {loaded.task_name} models", dataset, task.datasets)
    return task.load_dataset(dataset, split, data, loaded.config, options), dataset


def evaluate(name: str, *, dataset: str | None = None, data: str | None = None, split: str = "test",
             hub: str | None = None, **options) -> dict:
    """Metrics of a checkpoint on a dataset (or the user's own file with `data`)."""
    import torch

    loaded = load(name, dataset=dataset, hub=hub, require_weights=not _is_checkpoint_dir(name))
    ds, dataset = _dataset_for(loaded, dataset, data, split, options)
    with torch.inference_mode():
        metrics = loaded.task.evaluate(loaded.model, ds, options)
    return {"model": loaded.full_name, "dataset": dataset or str(data), "split": split, "metrics": metrics}


def predict(name: str, input: str | None = None, *, dataset: str | None = None, data: str | None = None,
            save: str | Path | None = None, hub: str | None = None, **options) -> dict:
    loaded = load(name, dataset=dataset, hub=hub, require_weights=not _is_checkpoint_dir(name))
    ds = None
    if dataset or data or (input is None and loaded.dataset):
        ds, _ = _dataset_for(loaded, dataset, data, options.pop("split", "test"), options)
    out = loaded.task.predict(loaded.model, input, ds, Path(save) if save else None, options)
    return {"model": loaded.full_name, **out, **({"saved": str(save)} if save else {})}


def finetune(name: str, *, dataset: str | None = None, out: str | Path, data: str | None = None,
             steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
             lr: float | None = None, seed: int = 0, resume: bool = False, nproc_per_node: int = 1,
             save_every: int | None = None, pretrained: bool = False, hub: str | None = None,
             progress: bool = True, **options) -> dict:
    """Train (from scratch, or from the checkpoint with pretrained=True) into a checkpoint folder."""
    from zoo import train
    args = dict(name=name, dataset=dataset, out=str(out), data=data, steps=steps, epochs=epochs,
                batch_size=batch_size, lr=lr, seed=seed, resume=resume, save_every=save_every,
                pretrained=pretrained, hub=hub, progress=progress, options=options)
    if nproc_per_node > 1:
        return train.launch_distributed(args, nproc_per_node)
    return train.run(args)


def export(name: str, format: str = "onnx", *, out: str | Path | None = None, fuse: bool = True,
           hub: str | None = None, pretrained: bool = True, **options) -> dict:
    from zoo.export import export as _export
    return _export(name, format, out=out, fuse=fuse, hub=hub, pretrained=pretrained, options=options)


def bench(name: str, *, compare: str | None = None, train: bool = False, hub: str | None = None,
          **options) -> dict:
    from zoo.bench import bench as _bench
    return _bench(name, compare=compare, train=train, hub=hub, options=options)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


__all__ = ["ZooError", "bench", "convert", "create_model", "evaluate", "export", "finetune", "info",
           "list_models", "load", "predict", "pull", "push"]
