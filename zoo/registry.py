"""The registry: `registry.yaml` validated by a pydantic schema. Imports no torch."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoo.errors import ConfigError, NotReadyError, UnknownNameError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paper(_Strict):
    title: str
    arxiv: Optional[str] = None
    venue: Optional[str] = None
    code: Optional[str] = None          # official code URL, or null when none exists
    code_license: Optional[str] = None  # licence of the official code ("none" when it has no LICENSE)


class Reported(_Strict):
    """A number the paper (or its official README/config) reports. Never ours."""
    metric: str
    value: float | str
    dataset: Optional[str] = None
    source: str                         # e.g. "paper Table 3", "official README"
    note: Optional[str] = None


class EvalRecord(_Strict):
    """What `zoo verify` needs to re-measure a checkpoint's metrics: the same eval, on the same data,
    compared within a stated tolerance. All optional but the dataset, so entries without it stay valid."""
    dataset: str
    split: str = "test"
    options: dict[str, Any] = Field(default_factory=dict)     # the -o options of that `zoo eval`
    data: Optional[str] = None          # the data's identity in words: generator parameters and seed, or source
    data_sha256: Optional[str] = None   # sha256 of the eval set's tensors as loaded (zoo.verbs.verify.fingerprint)
    files: dict[str, str] = Field(default_factory=dict)       # shipped files the eval reads ($ZOO_DATA-relative) -> sha256
    rtol: float = 1e-3                  # |now - card| <= atol + rtol * |card|
    atol: float = 0.0
    tolerance: dict[str, float] = Field(default_factory=dict)  # per-metric absolute tolerance, overrides the above
    seconds: Optional[float] = None     # how long the eval took when recorded (CI runs the fast ones)

    @field_validator("data_sha256")
    @classmethod
    def _hex(cls, value):
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise ValueError(f"needs a 64-hex sha256, got '{value}'")
        return value


class Checkpoint(_Strict):
    dataset: str
    repo: str                           # hub repo id, org/name
    revision: str                       # pinned commit sha (or tag for folder hubs)
    files: dict[str, str]               # file name -> sha256
    license: str
    made_by: str                        # the exact command that produced the weights
    config: dict[str, Any] = Field(default_factory=dict)   # overrides of the entry config
    metrics: dict[str, float] = Field(default_factory=dict)  # measured by our own `zoo eval`
    eval_data: Optional[str] = None     # what the metrics were measured on
    eval: Optional[EvalRecord] = None   # how to re-measure the metrics (`zoo verify`)
    note: Optional[str] = None

    @field_validator("files")
    @classmethod
    def _sha256(cls, files):
        for name, digest in files.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"file '{name}' needs a 64-hex sha256, got '{digest}'")
        return files


class ModelEntry(_Strict):
    family: str
    task: str
    status: Literal["ready", "planned"]
    description: str
    paper: Paper
    builder: Optional[str] = None       # "zoo.models.deeponet:deeponet"
    config: dict[str, Any] = Field(default_factory=dict)
    # builder overrides for training on a dataset from scratch (e.g. DeepONet's CNN branch for darcy)
    dataset_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    datasets: list[str] = Field(default_factory=list)
    reported: list[Reported] = Field(default_factory=list)
    checkpoints: dict[str, Checkpoint] = Field(default_factory=dict)
    default_checkpoint: Optional[str] = None
    weights_note: Optional[str] = None  # why there are no (official) weights
    ours: bool = False                  # a size config of ours, not a paper variant

    @field_validator("builder")
    @classmethod
    def _builder(cls, value):
        if value is not None and value.count(":") != 1:
            raise ValueError("builder must look like 'zoo.models.module:function'")
        return value


class Family(_Strict):
    """What every variant of a family shares; a model entry may override any of it."""
    task: Optional[str] = None
    builder: Optional[str] = None
    converter: Optional[str] = None     # "zoo.converters.<family>:convert_state_dict" for official weights
    paper: Optional[Paper] = None
    # builder overrides that make every variant small for the generic contract test (tests only)
    test_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("builder", "converter")
    @classmethod
    def _ref(cls, value):
        if value is not None and value.count(":") != 1:
            raise ValueError("must look like 'zoo.module:function'")
        return value


class PaperWithoutModel(_Strict):
    title: str
    arxiv: Optional[str] = None
    reason: str


class Registry(_Strict):
    version: int
    hub_org: str
    families: dict[str, Family] = Field(default_factory=dict)
    models: dict[str, ModelEntry]
    papers_without_model: list[PaperWithoutModel] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, raw):
        """Fill each model entry's task, builder and paper from its family block."""
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
            return raw
        families = raw.get("families") or {}
        models = {}
        for name, entry in raw["models"].items():
            fam = families.get(entry.get("family")) if isinstance(entry, dict) else None
            if isinstance(fam, dict):
                entry = {**{k: v for k, v in fam.items() if k in ("task", "builder", "paper")}, **entry}
            models[name] = entry
        return {**raw, "models": models}


def registry_path() -> Path:
    """The wheel carries zoo/registry.yaml; a source checkout keeps it at the repository root."""
    from zoo._io import registry_file
    path = registry_file()
    if path is None:
        raise ConfigError("registry.yaml not found next to the zoo package")
    return path


def _one_line(err: ValidationError, raw: dict) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc)
    if len(loc) >= 2 and loc[0] == "models":
        where = f"entry '{loc[1]}', field '{'.'.join(loc[2:]) or '?'}'"
    return f"registry: {where}: {first['msg']}"


def parse_registry(text: str, source: str = "registry.yaml") -> Registry:
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 15x faster
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{line} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        reg = Registry.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_one_line(err, raw)) from None
    for name, entry in reg.models.items():
        if entry.status == "ready" and not entry.builder:
            raise ConfigError(f"registry: entry '{name}', field 'builder': a ready model needs a builder")
        if entry.default_checkpoint and entry.default_checkpoint not in entry.checkpoints:
            raise ConfigError(f"registry: entry '{name}', field 'default_checkpoint': "
                              f"'{entry.default_checkpoint}' is not one of its checkpoints")
    _check_references(reg)
    return reg


def _module_file(module: str) -> Path | None:
    """The source file of a `zoo.*` module, found without importing it (keeps `zoo list` torch-free)."""
    parts = module.split(".")
    if parts[0] != "zoo":   # a test's or a user's own registry may point outside the package
        import importlib.util
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        return Path(spec.origin) if spec and spec.origin else None
    base = Path(__file__).resolve().parent.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _check_references(reg: Registry) -> None:
    """Every task a ready model names has its file, and every builder/converter module exists.
    Planned entries may name a task that is not written yet."""
    tasks_dir = Path(__file__).resolve().parent / "tasks"
    tasks = sorted(p.stem.replace("_", "-") for p in tasks_dir.glob("*.py") if p.stem not in ("__init__", "base"))
    for name, entry in reg.models.items():
        if entry.status == "ready" and entry.task not in tasks:
            raise ConfigError(f"registry: entry '{name}', field 'task': no task '{entry.task}' "
                              f"(tasks: {', '.join(tasks)})")
        if entry.status == "ready" and entry.builder and _module_file(entry.builder.split(":")[0]) is None:
            raise ConfigError(f"registry: entry '{name}', field 'builder': no module "
                              f"'{entry.builder.split(':')[0]}'")
    for fname, fam in reg.families.items():
        if fam.converter and _module_file(fam.converter.split(":")[0]) is None:
            raise ConfigError(f"registry: family '{fname}', field 'converter': no module "
                              f"'{fam.converter.split(':')[0]}'")


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple) -> Registry:
    return parse_registry(Path(path).read_text(encoding="utf-8"), source=Path(path).name)


def load_registry() -> Registry:
    path = registry_path()
    st = path.stat()
    return _load(str(path), (st.st_mtime_ns, st.st_size, st.st_ino))


# ---- name resolution ------------------------------------------------------------------------

def all_names(reg: Registry | None = None) -> list[str]:
    reg = reg or load_registry()
    names = list(reg.models)
    for name, entry in reg.models.items():
        names += [f"{name}.{tag}" for tag in entry.checkpoints]
    return names


def resolve(name: str, dataset: str | None = None) -> tuple[str, ModelEntry, Optional[str]]:
    """`name` or `name.tag` -> (model name, entry, checkpoint tag or None).

    A bare name with `dataset` picks the checkpoint trained on that dataset; otherwise the
    entry's default checkpoint."""
    reg = load_registry()
    model, _, tag = name.partition(".")
    if model not in reg.models:
        raise UnknownNameError("model", name, all_names(reg) if tag else list(reg.models))
    entry = reg.models[model]
    if tag:
        if tag not in entry.checkpoints:
            if not entry.checkpoints:
                from zoo.errors import CheckpointError
                why = entry.weights_note or "none has been trained or converted yet"
                raise CheckpointError(f"unknown checkpoint '{name}': '{model}' has no checkpoints ({why})")
            raise UnknownNameError("checkpoint", name, [f"{model}.{t}" for t in entry.checkpoints])
        return model, entry, tag
    if dataset:
        for t, ck in entry.checkpoints.items():
            if ck.dataset == dataset:
                return model, entry, t
    return model, entry, entry.default_checkpoint


def info(name: str) -> dict:
    """Everything the registry says about a model, as plain data."""
    mname, entry, _ = resolve(name)
    out = {"name": mname, **entry.model_dump(mode="json")}
    out["default_checkpoint"] = entry.default_checkpoint
    return out


def converter_ref(entry: ModelEntry) -> str | None:
    """The family's official-weights converter (`module:function`), if it has one."""
    fam = load_registry().families.get(entry.family)
    return fam.converter if fam else None


def import_builder(entry: ModelEntry, name: str):
    if entry.status != "ready":
        raise NotReadyError(f"model '{name}' is planned, not built yet (see `zoo info {name}`)")
    module, fn = entry.builder.split(":")
    return getattr(importlib.import_module(module), fn)


def model_config(entry: ModelEntry, tag: str | None, overrides: dict | None = None,
                 dataset: str | None = None) -> dict:
    cfg = dict(entry.config)
    if tag:
        cfg.update(entry.checkpoints[tag].config)
    elif dataset:
        cfg.update(entry.dataset_config.get(dataset, {}))
    cfg.update(overrides or {})
    return cfg


# ---- the README's table of papers ------------------------------------------------------------

def markdown_table(reg: Registry | None = None) -> str:
    """Every paper the zoo covers, its models and their state; papers without an architecture last."""
    reg = reg or load_registry()
    papers: dict[str, list[tuple[str, ModelEntry]]] = {}
    for name, e in reg.models.items():
        papers.setdefault(e.paper.title, []).append((name, e))
    lines = ["| paper | arXiv | official code (licence) | models | state |", "|---|---|---|---|---|"]
    for title, models in papers.items():
        p = models[0][1].paper
        code = f"[code]({p.code}) ({p.code_license or '?'})" if p.code else "none published"
        names = ", ".join(f"`{n}`" + (" (ours)" if e.ours else "") for n, e in models)
        ready = sum(e.status == "ready" for _, e in models)
        ckpts = sum(len(e.checkpoints) for _, e in models)
        state = ("ready" if ready == len(models) else f"{ready}/{len(models)} ready" if ready else "planned")
        if ckpts:
            state += f", {ckpts} checkpoint{'s' * (ckpts > 1)}"
        lines.append(f"| {title} | {p.arxiv or '-'} | {code} | {names} | {state} |")
    for p in reg.papers_without_model:
        lines.append(f"| {p.title} | {p.arxiv or '-'} | - | not registered | no neural architecture: {p.reason} |")
    return "\n".join(lines)


def sync_readme(path: str | Path) -> bool:
    """Rewrite the table between the README's papers-table markers; True when it changed."""
    path = Path(path)
    text = path.read_text()
    start, end = "<!-- papers-table", "<!-- /papers-table -->"
    i, j = text.index(start), text.index(end)
    i = text.index("\n", i) + 1
    new = text[:i] + markdown_table() + "\n" + text[j:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--markdown"]:
        print(markdown_table())
    elif sys.argv[1:2] == ["--sync-readme"]:
        print("README updated" if sync_readme(sys.argv[2]) else "README already in sync")
