"""The family contract's dependency direction, checked on the source (every import statement, also
those inside functions): bottom `errors`/`_io` <- `registry`/`checkpoint` <- `data`/`layers` <-
`models` <- `tasks` <- `hub`/`loading` <- `training`/`convert` <- `verbs` <- `api` <- `cli`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the lowest rung first; a module may import only rungs below its own (or its own group)
RUNGS = [
    {"zoo.errors", "zoo._version"},
    {"zoo._io", "zoo.options", "zoo.progress"},
    {"zoo.machine"},
    {"zoo.registry"},
    {"zoo.catalogue", "zoo.card"},
    {"zoo.checkpoint"},
    {"zoo.data", "zoo.layers"},
    {"zoo.models"},
    {"zoo.tasks"},
    {"zoo.hub"},
    {"zoo.loading"},
    {"zoo.training", "zoo.converters", "zoo.backends"},
    {"zoo.verbs"},
    {"zoo.api", "zoo"},
    {"cli"},
]
# the launcher behind `python -m zoo` and the console script is the one module that reaches the CLI
LAUNCHER = "zoo.__main__"
HUB_MAY_IMPORT = {"zoo.registry", "zoo.checkpoint", "zoo.card", "zoo._io", "zoo.errors", "zoo._version", "zoo.hub"}


def _group(module: str) -> str:
    """The rung member a module belongs to: the longest listed prefix."""
    best = ""
    for rung in RUNGS:
        for g in rung:
            if (module == g or module.startswith(g + ".")) and len(g) > len(best):
                best = g
    return best


def _rung(group: str) -> int:
    return next(i for i, rung in enumerate(RUNGS) if group in rung)


def _modules():
    for base in ("zoo", "cli"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(module: str, path: Path):
    """(imported module, line) for every import of zoo/cli code in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "zoo":   # `from zoo import x`: the package itself is imported
                yield "zoo", node.lineno, True
            else:
                yield target, node.lineno, False


def _edges():
    for module, path in _modules():
        for target, line, _ in _imports(module, path):
            if target.split(".")[0] in ("zoo", "cli"):
                yield module, target, f"{path.relative_to(ROOT)}:{line}"


def test_dependencies_point_one_way():
    bad = []
    for src, dst, where in _edges():
        if src in (LAUNCHER, "zoo"):   # the launcher; the package re-exporting its api
            continue
        gs, gd = _group(src), _group(dst)
        if gs == gd and gs not in ("zoo", "zoo.api"):
            continue   # inside one group (models among models, a verb's helpers)
        if src.startswith("zoo") and dst in ("zoo", "zoo.api"):
            bad.append(f"{where}: {src} imports {dst} (nothing under zoo/ imports the package or its api)")
            continue
        if src.startswith("zoo.hub") and _group(dst) not in HUB_MAY_IMPORT:
            bad.append(f"{where}: {src} imports {dst} (the hub depends only on registry, checkpoint, _io)")
            continue
        if _rung(gd) >= _rung(gs):
            bad.append(f"{where}: {src} imports {dst}, which is not below it")
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_models_and_tasks_keep_to_their_side():
    bad = []
    for src, dst, where in _edges():
        if src.startswith("zoo.models") and dst.split(".")[:2] in (["zoo", "tasks"], ["zoo", "data"]):
            bad.append(f"{where}: a model imports {dst}")
        if src.startswith("zoo.tasks") and dst.startswith("zoo.models"):
            bad.append(f"{where}: a task imports the concrete model {dst}")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_an_upward_edge(tmp_path, monkeypatch):
    """The rule is real: a model importing a task is reported."""
    fake = tmp_path / "zoo" / "models"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from zoo.tasks.operator import OperatorTask\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="zoo.models.bad imports zoo.tasks.operator"):
        test_dependencies_point_one_way()


def test_no_module_is_both_a_function_and_a_module_of_the_package():
    """`zoo.export(...)` and friends stay plain functions: no submodule shares a verb's name."""
    import zoo
    for verb in zoo.__all__:
        if verb.startswith("_"):
            continue
        assert not (ROOT / "zoo" / f"{verb}.py").exists() and not (ROOT / "zoo" / verb / "__init__.py").exists(), verb
        assert callable(getattr(zoo, verb)) and type(getattr(zoo, verb)).__name__ == "function"
