"""Task kinds. Each maps to one file; imported lazily so `zoo list` never imports torch."""

from __future__ import annotations

import importlib

from zoo.errors import UnknownNameError

# task name -> "module:Class"
TASKS = {
    "operator": "zoo.tasks.operator:OperatorTask",
    "pde-rollout": "zoo.tasks.pde_rollout:RolloutTask",
    "detection": "zoo.tasks.detection:DetectionTask",
    "classification": "zoo.tasks.classification:ClassificationTask",
    "language-model": "zoo.tasks.language_model:LanguageModelTask",
}

# tasks that appear only on planned entries (no task file yet)
PLANNED_TASKS = {"pinn", "node-classification", "multi-task-vision", "segmentation", "gait-recognition",
                 "restoration", "text-classification"}


def get_task(name: str):
    if name not in TASKS:
        raise UnknownNameError("task", name, list(TASKS))
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
