"""Official MHAF-YOLO (MAF-YOLOv2) release files -> our state dict.

The release files (`MAF-YOLOv2-{Lite-N,N,S,M}.pt`) are ultralytics checkpoints: a dict whose
`model` (or `ema`) is a pickled `ultralytics.nn.tasks.YOLOv10DetectionModel`, fp16, unfused, with
both heads. Its state-dict keys are `model.<yaml layer index>.<submodule path>`, which is exactly
our layout, so the map is the identity; what this module adds is telling which variant (and how
many classes) a file holds, so that a file for another variant fails with one clear line."""

from __future__ import annotations

from typing import Any

from zoo.converters import strip_prefix
from zoo.errors import CheckpointError

# module paths the release pickles name (the repo keeps the package name "ultralytics")
OFFICIAL_MODULES = ("ultralytics",)


def _signature(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    import torch

    from zoo.models.mhaf_yolo import mhaf_yolo
    with torch.device("meta"):
        model = mhaf_yolo(variant, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def identify(state: dict[str, Any]) -> tuple[str, int] | None:
    """(variant, num_classes) of an official state dict, or None when it is no MHAF-YOLO detector."""
    from zoo.models.mhaf_yolo import VARIANTS
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for variant, (_, _, layers) in VARIANTS.items():
        head = f"model.{len(layers) - 1}.cv3.0.2.bias"
        if head not in shapes:
            continue
        if shapes == _signature(variant, shapes[head][0]):
            return variant, shapes[head][0]
    return None


def convert_state_dict(raw: dict[str, Any], model: str, config: dict) -> dict[str, Any]:
    """`raw`: every tensor of the file (`model.model.0.conv.weight`, or `ema.model...` when the
    file still carries its EMA, which ultralytics prefers when loading)."""
    state = strip_prefix(raw, "ema.model.") or strip_prefix(raw, "model.model.")
    if not state:
        raise CheckpointError("not an ultralytics checkpoint: no 'model' (or 'ema') module with "
                              "'model.<idx>' layers in it")
    state = {f"model.{k}": v for k, v in state.items()}
    variant, num_classes = config.get("variant", "n"), int(config.get("num_classes", 80))
    want = _signature(variant, num_classes)
    have = {k: tuple(v.shape) for k, v in state.items()}
    if have != want:
        found = identify(state)
        if found is None:
            missing = sorted(set(want) - set(have))
            why = f"e.g. '{missing[0]}' is missing" if missing else "the tensor shapes differ"
            raise CheckpointError(f"this file is not an MHAF-YOLO {variant} detector ({why})")
        other, nc = found
        if other != variant:
            raise CheckpointError(f"this file holds MHAF-YOLO {other} weights ({nc} classes), not {model} "
                                  f"(variant {variant}); convert it with `zoo convert mhaf-yolo-{other} ...`")
        raise CheckpointError(f"this file's head predicts {nc} classes; {model} is configured for {num_classes}")
    return state
