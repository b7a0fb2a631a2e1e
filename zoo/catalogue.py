"""`zoo list` without pydantic or YAML: a summary of the registry (names, family, task, status,
checkpoint tags, paper) cached as JSON after the registry was last validated.

The cache is keyed by the registry file's path, size, mtime and inode, by the schema's source and
by the zoo version, so any edit invalidates it; a cache that cannot be read or written is skipped.
On a miss the registry is validated in full (zoo.registry) and the summary written again."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from zoo._io import registry_file
from zoo._version import __version__
from zoo.errors import UnknownNameError


def _cache_dir() -> Path:
    from zoo._io import cache_dir
    return cache_dir("registry")


def _key(path: Path) -> str | None:
    try:
        st = path.stat()
        schema = (Path(__file__).resolve().parent / "registry.py").stat()
    except OSError:
        return None
    where = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    raw = f"{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{schema.st_mtime_ns}|{__version__}"
    return f"{where}-{hashlib.sha1(raw.encode()).hexdigest()[:16]}"


def _build() -> dict:
    import zoo.registry as registry
    reg = registry.load_registry()
    return {name: {"family": e.family, "task": e.task, "status": e.status, "checkpoints": list(e.checkpoints),
                   "paper": e.paper.title, "arxiv": e.paper.arxiv} for name, e in reg.models.items()}


def summary() -> dict:
    """name -> {family, task, status, checkpoints, paper, arxiv}, in registry order."""
    path = registry_file()
    key = _key(path) if path is not None else None   # missing: the full load below says so in one line
    cached = _cache_dir() / f"{key}.json" if key else None
    if cached is not None and cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    data = _build()
    if cached is not None:
        try:
            from zoo._io import atomic_write_text
            atomic_write_text(cached, json.dumps(data))
            for stale in cached.parent.glob(f"{key.split('-')[0]}-*.json"):   # older versions of this registry
                if stale != cached:
                    stale.unlink(missing_ok=True)
        except OSError:
            pass   # a read-only home: answer without caching
    return data


def list_models(pattern: str | None = None, *, task: str | None = None, family: str | None = None,
                status: str | None = None, pretrained: bool = False) -> list[str]:
    """Names filtered by task/family/status and a shell-style `pattern` (`mhaf*`), as timm does."""
    models = summary()
    tasks = {e["task"] for e in models.values()}
    if task and task not in tasks:
        raise UnknownNameError("task", task, tasks)
    families = {e["family"] for e in models.values()}
    if family and family not in families:
        raise UnknownNameError("family", family, families)
    out = []
    for name, e in models.items():
        if (task and e["task"] != task) or (family and e["family"] != family) or (status and e["status"] != status):
            continue
        out += [f"{name}.{t}" for t in e["checkpoints"]] if pretrained else [name]
    if pattern:
        out = [n for n in out if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern)]
    return out


def list_rows(pattern: str | None = None, *, task: str | None = None, family: str | None = None,
              pretrained: bool = False) -> list[dict]:
    """One row per name for `zoo list` (plain data; the CLI renders it)."""
    models = summary()
    rows = []
    for n in list_models(pattern, task=task, family=family, pretrained=pretrained):
        base = n.split(".")[0]
        e = models[base]
        rows.append({"name": n, "family": e["family"], "task": e["task"], "status": e["status"],
                     "checkpoints": [f"{base}.{t}" for t in e["checkpoints"]] if "." not in n else [n],
                     "paper": e["paper"], "arxiv": e["arxiv"]})
    return rows
