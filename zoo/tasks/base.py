"""The contract every task kind fulfils; the verbs (eval, predict, finetune, export, bench) only
talk to a model through its task, so a new model of an existing kind needs no new verb code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate


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


class Task:
    name: str = ""
    #: dataset name -> one-line description (the names `--dataset` accepts)
    datasets: dict[str, str] = {}
    default_batch_size = 32
    default_lr = 1e-3
    default_steps = 1000
    #: the metric `finetune` reports as its headline and lower-is-better flag
    main_metric = "loss"
    lower_is_better = True

    # ---- data -------------------------------------------------------------------------
    def load_dataset(self, dataset: str | None, split: str, data_path: str | None,
                     model_config: dict, options: dict) -> Dataset:
        raise NotImplementedError

    def collate(self, items: list) -> Any:
        return default_collate(items)

    # ---- training ---------------------------------------------------------------------
    def prepare(self, model: nn.Module, dataset: Dataset, options: dict) -> None:
        """Fit data-dependent state (normalisation statistics) before training; default: nothing."""

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def training_module(self, model: nn.Module, options: dict) -> nn.Module:
        return LossModule(model, self)

    def example_batch(self, model: nn.Module, model_config: dict, options: dict):
        """A small training batch (for `bench --train`)."""
        raise NotImplementedError

    # ---- inference --------------------------------------------------------------------
    def evaluate(self, model: nn.Module, dataset: Dataset, options: dict) -> dict[str, float]:
        raise NotImplementedError

    def predict(self, model: nn.Module, input: str | None, dataset: Dataset | None,
                save: Path | None, options: dict) -> dict:
        raise NotImplementedError

    def example_input(self, model: nn.Module, model_config: dict, options: dict) -> tuple[torch.Tensor, ...]:
        """Inputs for export and bench (batch dimension first)."""
        raise NotImplementedError
