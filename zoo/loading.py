"""Name -> ready model: resolve a registry name, `name.tag` or checkpoint folder, build the
architecture, pull and load its weights, and place it on a device. Every verb starts here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zoo.registry as reg
from zoo.errors import CheckpointError, ConfigError, DataError, NotReadyError, UnknownNameError


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
    run: bool = False           # loaded from a run/checkpoint folder the user named

    @property
    def task(self):
        from zoo.tasks import get_task
        return get_task(self.task_name)

    @property
    def full_name(self) -> str:
        # a run folder is reported under its path, never under the official checkpoint's name
        if self.run and self.folder is not None:
            return str(self.folder)
        if self.tag:
            return f"{self.name}.{self.tag}"
        return str(self.folder) if self.folder is not None else self.name


def is_checkpoint_dir(name: str) -> bool:
    p = Path(name)
    return ("/" in name or name.startswith(".")) and p.is_dir()


def run_info(folder: str) -> dict:
    """`zoo info RUN_FOLDER`: what the folder's config.json says (model, dataset, config, metrics,
    the command that made it), reported under the folder's path. Reads no weights, imports no torch."""
    from zoo.checkpoint import read_config

    meta = read_config(folder)
    mname = meta.get("model")
    entry = reg.load_registry().models.get(mname)
    if entry is None:
        raise CheckpointError(f"{folder}: config.json names model '{mname}', which the registry does not know")
    return {"name": str(folder), "run": True, "model": mname, "family": entry.family,
            "task": meta.get("task") or entry.task, "tag": meta.get("tag"), "dataset": meta.get("dataset"),
            "config": {**entry.config, **(meta.get("config") or {})}, "metrics": meta.get("metrics") or {},
            "eval_data": meta.get("eval_data"), "made_by": meta.get("command"), "train": meta.get("train") or {},
            "license": meta.get("license"), "zoo_version": meta.get("zoo_version")}


def resolve_device(device: str | None = None):
    """`None`/`auto`: CUDA when available, else CPU. An unavailable device is one clear line."""
    import torch
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for, but no CUDA device is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}' does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device '{device}' is not supported; use cpu, cuda or cuda:N")
    return dev


def build(name: str, entry, cfg: dict):
    """Call the registry builder with `cfg`; check the result fulfils its task's Protocol."""
    builder = reg.import_builder(entry, name)
    try:
        model = builder(**cfg)
    except TypeError as exc:
        raise CheckpointError(f"config does not fit the '{name}' builder: {exc}") from None
    except (ValueError, RuntimeError, ArithmeticError, IndexError, KeyError) as exc:
        # a value the builder cannot build with (negative sizes, ...): torch's reason, one line
        if isinstance(exc, ConfigError) or type(exc).__module__.startswith("zoo"):
            raise
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"config does not fit the '{name}' builder: {why}") from None
    from zoo.tasks import get_task
    protocol = get_task(entry.task).model_protocol
    if not isinstance(model, protocol):
        missing = [m for m in _protocol_members(protocol) if not hasattr(model, m)]
        raise ConfigError(f"'{name}' does not fulfil the {entry.task} task's contract "
                          f"({protocol.__name__}): missing {', '.join(missing) or '?'}")
    return model


def _protocol_members(protocol) -> list[str]:
    return sorted(getattr(protocol, "__protocol_attrs__", ()) or
                  [k for k in vars(protocol) if not k.startswith("_")])


def load(name: str, *, pretrained: bool = True, dataset: str | None = None, hub: str | None = None,
         overrides: dict | None = None, require_weights: bool = False, device=None) -> Loaded:
    """Resolve `name` (`model`, `model.tag` or a checkpoint folder) and build the model on `device`."""
    from zoo.checkpoint import load_weights, read_config

    if is_checkpoint_dir(name):
        meta = read_config(name)
        mname = meta["model"]
        entry = reg.load_registry().models.get(mname)
        if entry is None:
            raise CheckpointError(f"{name}: config.json names model '{mname}', which the registry does not know")
        cfg = {**meta["config"], **(overrides or {})}
        model = build(mname, entry, cfg)
        load_weights(model, name)
        loaded = Loaded(model, mname, meta.get("tag"), meta.get("task", entry.task), cfg,
                        meta.get("dataset"), Path(name), meta, run=True)
        return _placed(loaded, device)
    mname, entry, tag = reg.resolve(name, dataset)
    if entry.status != "ready":
        raise NotReadyError(f"model '{mname}' is planned, not built yet (see `zoo info {mname}`)")
    if pretrained and tag is None and require_weights:
        why = entry.weights_note or "none has been trained or converted yet"
        raise CheckpointError(f"model '{mname}' has no checkpoint"
                              + (f" for dataset '{dataset}'" if dataset else "") + f": {why}")
    use_tag = tag if pretrained else None
    cfg = reg.model_config(entry, use_tag, overrides, dataset)
    model = build(mname, entry, cfg)
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
    return _placed(Loaded(model, mname, use_tag, entry.task, cfg, ds, folder, meta), device)


def _architecture(name: str):
    """The model `name` names, built with its checkpoint's config but without pulling weights."""
    if is_checkpoint_dir(name):
        return load(name).model
    mname, entry, tag = reg.resolve(name)
    return _placed(Loaded(build(mname, entry, reg.model_config(entry, tag)), mname, tag, entry.task,
                          reg.model_config(entry, tag)), None).model


def data_config(name: str) -> dict:
    """timm's resolve_data_config for a zoo name: what the model's inputs must look like."""
    return _architecture(name).zoo_cfg["data"]


def transforms(name: str):
    """timm's create_transform for a zoo name: a callable that turns a user's file, PIL image or
    array into the model's input batch."""
    model = _architecture(name)
    from zoo.tasks import get_task
    return get_task(model.zoo_cfg["task"]).transform(model, model.zoo_cfg["data"])


def _placed(loaded: Loaded, device) -> Loaded:
    if device is not None:
        loaded.model = loaded.model.to(resolve_device(device) if not hasattr(device, "type") else device)
    # the model carries what it is and what its inputs look like, as timm's pretrained_cfg
    loaded.model.zoo_cfg = {"name": loaded.full_name, "task": loaded.task_name, "config": dict(loaded.config),
                            "dataset": loaded.dataset, "data": loaded.task.data_config(loaded.model)}
    return loaded


def options_for(loaded: Loaded, verb: str, raw: dict | None, verb_options=None) -> dict:
    """Validate `-o` options against the verb's and the task's declared options."""
    from zoo.options import combine, validate
    schema = combine(loaded.task.Options, verb_options, name=f"{verb}-options")
    return validate(raw, schema, f"`zoo {verb}` of {loaded.task_name} models")


def dataset_for(loaded: Loaded, dataset: str | None, data: str | None, split: str, options: dict):
    """The dataset a verb runs on: `dataset` by name, the user's `data` file, or the one the weights
    were trained on. Returns (torch Dataset, the name reported)."""
    task = loaded.task
    if data is not None:
        p = Path(data)
        if not p.exists():
            raise DataError(f"{data}: no such file or folder")
    dataset = dataset or (None if data else loaded.dataset)
    if dataset is None and data is None:
        raise DataError(f"which data? give --dataset (one of: {', '.join(task.datasets)}) or --data PATH")
    if dataset and dataset not in task.datasets:
        raise UnknownNameError(f"dataset for {loaded.task_name} models", dataset, task.datasets)
    # checked here, once for every verb: a split names a part of the data, and readers build
    # cache file names from it, so anything else (`../../x`, an absolute path) stops here
    valid = task.splits_of(None if data else dataset)
    if not isinstance(split, str) or split not in valid:
        raise DataError(f"unknown split {split!r} of {dataset or data}; choose from {', '.join(valid)}")
    return task.load_dataset(dataset, split, data, loaded.model, options), dataset
