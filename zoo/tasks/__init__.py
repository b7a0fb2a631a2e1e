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


def metric_definitions(name: str) -> dict[str, str]:
    """The task's `metric_definitions`, read from its file's source without importing it (the task
    modules import torch; `zoo info` must stay light). The value is a dict literal in the class or a
    module-level name bound to one; anything else reads as no definitions."""
    import ast

    if name not in task_names():
        return {}
    tree = ast.parse((_HERE / f"{module_for(name).rsplit('.', 1)[1]}.py").read_text())
    top = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
           for t in node.targets if isinstance(t, ast.Name)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        body = {t.id: node.value for node in cls.body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
        named = body.get("name")
        if not (isinstance(named, ast.Constant) and named.value == name) or "metric_definitions" not in body:
            continue
        value = body["metric_definitions"]
        if isinstance(value, ast.Name):
            value = top.get(value.id)
        try:
            found = ast.literal_eval(value) if value is not None else {}
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}
