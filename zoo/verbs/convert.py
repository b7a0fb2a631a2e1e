"""`zoo convert`: an official checkpoint file -> our checkpoint folder, loaded strictly into the
registered architecture. Reading the file (without running its code) is zoo.converters' job; the
family's key map is named by `converter:` in its registry `families:` block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo._io import sha256_file
from zoo.converters import converter_for, read_official


def _fit(model, state: dict[str, Any], name: str) -> None:
    from zoo.checkpoint import fit_state_dict
    model.load_state_dict(fit_state_dict(model, state, f"converted weights for '{name}'"), strict=True)


def convert(name: str, src: str | Path, out: str | Path) -> Path:
    """Official checkpoint `src` -> our checkpoint folder `out` for model `name` (or `name.tag`)."""
    import torch

    import zoo.registry as registry
    from zoo.checkpoint import save_checkpoint
    from zoo.loading import load

    model_name, entry, _ = registry.resolve(name)
    tag = name.partition(".")[2] or None  # a bare name is the architecture, not its default checkpoint
    fn, official_modules = converter_for(entry.family)
    src = Path(src)
    raw = read_official(src, official_modules)
    config = registry.model_config(entry, tag)
    state = fn(raw, model_name, config)
    model = load(f"{model_name}.{tag}" if tag else model_name, pretrained=False).model
    _fit(model, state, model_name)
    half = all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    checkpoint = entry.checkpoints.get(tag) if tag else None
    meta = {
        "model": model_name,
        "tag": tag,
        "task": entry.task,
        "dataset": checkpoint.dataset if checkpoint else None,
        "config": config,
        "metrics": {},
        "eval_data": None,
        "command": f"zoo convert {name} --from {src.name} --out {Path(out).name}",
        "license": checkpoint.license if checkpoint else entry.paper.code_license,
        "converted_from": {"file": src.name, "sha256": sha256_file(src), "code": entry.paper.code},
    }
    return save_checkpoint(out, model, meta, dtype="float16" if half else None)
