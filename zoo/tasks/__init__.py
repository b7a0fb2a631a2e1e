"""Task kinds: one file each, found by name (`pde-rollout` -> zoo/tasks/pde_rollout.py), so a new
task is one file and nothing else to edit. Imported lazily: `zoo list` never imports torch."""

from __future__ import annotations

import importlib
from pathlib import Path

from zoo.errors import UnknownNameError

_HERE = Path(__file__).resolve().parent
_NOT_TASKS = {"__init__", "base"}


def module_for(name: str) -> str:
    return f"zoo.tasks.{name.replace('-', '_')}"


def task_names() -> list[str]:
    """Every task kind that has a file here (no import: the file names are the table)."""
    return sorted(p.stem.replace("_", "-") for p in _HERE.glob("*.py") if p.stem not in _NOT_TASKS)


def get_task(name: str):
    """An instance of the task class whose `name` is `name`."""
    if name not in task_names():
        raise UnknownNameError("task", name, task_names())
    from zoo.tasks.base import Task
    module = importlib.import_module(module_for(name))
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Task) and obj is not Task and obj.name == name:
            return obj()
    raise UnknownNameError("task", name, task_names())
