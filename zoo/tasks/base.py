"""The contract every task kind fulfils.

The verbs (eval, predict, finetune, export, bench) talk to a model only through its task, and a
task talks to its models only through the `typing.Protocol` it declares (`model_protocol`): the
methods a model of this kind must have (an example input, a grid rule, a loss, ...). A task never
branches on a family name or a builder-config key, so a new family in an existing task is one
model file plus a registry block.

A task declares:
- `DATASETS`: name -> `DatasetEntry(description, load)`; `load(split, model, options)` returns a
  torch Dataset. A user's own file (`--data`) goes through `read_data`.
- `Options`: a pydantic model of the `-o KEY=VALUE` options it understands (typed, typos refused).
- `model_protocol`: the runtime-checkable Protocol its models implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset, default_collate

from zoo.errors import DataError, UnknownNameError
from zoo.options import Options


#: the splits a dataset has unless it declares others (`--split` takes only these)
DEFAULT_SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetEntry:
    """One named dataset of a task: a one-line description, its loader and the split names it
    accepts (a split never reaches a file path unless it is one of these)."""
    description: str
    load: Callable[..., Dataset]   # load(split, model, options) -> Dataset
    splits: tuple[str, ...] = DEFAULT_SPLITS


class TaskOptions(Options):
    """Options every task understands."""
    batch_size: Optional[int] = Field(None, gt=0, description="evaluation/inference batch size")
    data_seed: int = Field(0, description="seed of generated data")
    size: Optional[int] = Field(None, gt=0, description="number of samples of generated data (default: the recipe's)")
    limit: Optional[int] = Field(None, gt=0, description="read at most this many samples")


@runtime_checkable
class ZooModel(Protocol):
    """What every model provides: a plain nn.Module forward."""
    def forward(self, *args, **kwargs): ...


@runtime_checkable
class Reparameterisable(Protocol):
    """Optional, any task: a model with training-time branches it folds into single ops for
    deployment (same outputs). export and bench fuse such models unless told not to."""
    fused: bool

    def fuse(self) -> nn.Module: ...


@runtime_checkable
class HasDeployView(Protocol):
    """Optional, any task: what export writes when it is not the model itself (e.g. one head's
    dense output, leaving a post-processing step out of the graph)."""
    def export_model(self) -> nn.Module: ...


class LossModule(nn.Module):
    """Default training wrapper: forward(batch) -> (loss, logs). Methods that run their own
    backward (local learning) return a module with ``runs_backward = True`` instead."""

    runs_backward = False

    def __init__(self, model: nn.Module, task: "Task"):
        super().__init__()
        self.model = model
        self._task = task

    def forward(self, batch):
        return self._task.loss(self.model, batch)


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def seeded_images(model: nn.Module, batch: int, channels: int, size: int) -> torch.Tensor:
    """(batch, channels, size, size) values in [0, 1], the same on every call, on the model's device:
    the example input of image tasks (export parity and bench compare like with like)."""
    images = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    return images.to(device_of(model))


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor in a (nested) batch to `device`; no copy when it is already there."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(moved) if isinstance(obj, list) or type(obj) is tuple else type(obj)(*moved)
    return obj


def shard_ranges(n: int, batch: int, world: int) -> list[range]:
    """Contiguous runs of whole evaluation batches, one per rank (possibly empty): every batch
    is the one a single process would form, so per-batch results match it exactly."""
    batches = -(-n // batch) if n else 0
    per, extra = divmod(batches, world)
    out, b = [], 0
    for r in range(world):
        k = per + (1 if r < extra else 0)
        out.append(range(min(b * batch, n), min((b + k) * batch, n)))
        b += k
    return out


def evaluate_sharded(task, model, dataset, options: dict, rank: int = 0, world: int = 1):
    """This rank's statistics; on rank 0 of a group, the gathered metrics (None on other ranks).
    One process (world 1) is the same code with one shard."""
    indices = shard_ranges(len(dataset), task.eval_batch_size(options), world)[rank]
    state = task.evaluate_shard(model, dataset, indices, options)
    if world == 1:
        return task.merge_eval(dataset, [state], options)
    import torch.distributed as dist
    states = [None] * world if rank == 0 else None
    dist.gather_object(state, states, dst=0)
    return task.merge_eval(dataset, states, options) if rank == 0 else None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Task:
    name: str = ""
    DATASETS: dict[str, DatasetEntry] = {}
    Options: type[Options] = TaskOptions
    model_protocol: type = ZooModel
    default_batch_size = 32
    default_lr = 1e-3
    default_steps = 1000
    #: the metric `finetune` reports as its headline and lower-is-better flag
    main_metric = "loss"
    lower_is_better = True
    #: what `zoo export --int8` may cost, per metric: ("drop", most it may fall, in the metric's units)
    #: or ("rel_increase", largest relative rise of a lower-is-better metric); empty: --int8 refused
    int8_tolerance: dict[str, tuple[str, float]] = {}
    #: file types `predict` takes as INPUT; a folder or a glob of them predicts each file
    input_suffixes: tuple[str, ...] = ()
    #: how each metric is defined (shown by `zoo info` and written into model cards)
    metric_definitions: dict[str, str] = {}
    #: the splits a user's own file (`--data`) can be cut into; "all" is the whole file
    data_splits: tuple[str, ...] = DEFAULT_SPLITS + ("all",)

    def splits_of(self, dataset: str | None) -> tuple[str, ...]:
        """The split names `--split` accepts for a named dataset (None: the user's own file)."""
        entry = self.DATASETS.get(dataset) if dataset else None
        return tuple(entry.splits) if entry is not None else tuple(self.data_splits)

    @property
    def datasets(self) -> dict[str, str]:
        """dataset name -> one-line description (the names `--dataset` accepts)."""
        return {name: entry.description for name, entry in self.DATASETS.items()}

    # ---- data -------------------------------------------------------------------------
    def load_dataset(self, dataset: str | None, split: str, data_path: str | None,
                     model: nn.Module, options: dict) -> Dataset:
        """A named dataset, or the user's own file read exactly as the named set of its format."""
        if data_path:
            return self.read_data(data_path, dataset, split, model, options)
        if dataset is None:
            raise DataError(f"which data? give --dataset (one of: {', '.join(self.DATASETS)}) or --data PATH")
        if dataset not in self.DATASETS:
            raise UnknownNameError(f"dataset for {self.name} models", dataset, self.DATASETS)
        return self.DATASETS[dataset].load(split, model, options)

    def read_data(self, path: str, dataset: str | None, split: str, model: nn.Module, options: dict) -> Dataset:
        raise DataError(f"{self.name} models read no user files yet; use --dataset")

    def collate(self, items: list) -> Any:
        return default_collate(items)

    # ---- training ---------------------------------------------------------------------
    def prepare(self, model: nn.Module, dataset: Dataset, options: dict) -> None:
        """Fit data-dependent state (normalisation statistics) before training; default: nothing."""

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def training_module(self, model: nn.Module, options: dict) -> nn.Module:
        return LossModule(model, self)

    def example_batch(self, model: nn.Module, options: dict):
        """A small training batch (for `bench --train` and the generic contract test)."""
        raise NotImplementedError

    # ---- inference --------------------------------------------------------------------
    def evaluate(self, model: nn.Module, dataset: Dataset, options: dict) -> dict[str, float]:
        raise NotImplementedError

    # ---- sharded evaluation (optional: `zoo eval --nproc-per-node N`) -------------------------
    def eval_batch_size(self, options: dict) -> int:
        """The evaluation batch size: shards are cut on these batch boundaries."""
        return int(options.get("batch_size") or 256)

    def evaluate_shard(self, model: nn.Module, dataset: Dataset, indices: range, options: dict) -> Any:
        """Picklable statistics of the samples `indices` (a contiguous run of whole evaluation
        batches, possibly empty) from which `merge_eval` computes exactly evaluate's metrics."""
        raise NotImplementedError

    def merge_eval(self, dataset: Dataset, states: list, options: dict) -> dict[str, float]:
        """The metrics of the whole set from every shard's statistics, in shard order."""
        raise NotImplementedError

    @classmethod
    def shards_eval(cls) -> bool:
        """Whether this task implements the shard/merge contract."""
        return cls.evaluate_shard is not Task.evaluate_shard and cls.merge_eval is not Task.merge_eval

    def predict(self, model: nn.Module, input: str | None, dataset: Dataset | None,
                save: Path | None, options: dict) -> dict:
        raise NotImplementedError

    def data_config(self, model: nn.Module) -> dict:
        """What a user's data must look like for this model (timm's resolve_data_config): input size,
        value range/normalisation, class names, ... Plain JSON-able data."""
        return {}

    def transform(self, model: nn.Module, data_config: dict):
        """A callable that prepares one of the user's own inputs (a path, a PIL image, an array) as
        the model's input tensor with a batch axis (timm's create_transform)."""
        raise NotImplementedError(f"{self.name} models take no single-file input; use their datasets")

    def example_input(self, model: nn.Module, options: dict) -> tuple[torch.Tensor, ...]:
        """Inputs for export and bench (batch dimension first)."""
        raise NotImplementedError

    def dynamic_axes(self, args: tuple) -> list[dict]:
        """ONNX dynamic axes of each example input (default: the batch axis)."""
        return [{0: "batch"} for _ in args]

    def graph_inputs(self, args: tuple) -> tuple:
        """A call's inputs in the layout the exported graph takes (default: as they are). A task
        whose models also accept a shorter form (inputs shared by the batch) expands it here."""
        return args
