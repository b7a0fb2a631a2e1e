"""A tiny model, a checkpoint of it, and a registry naming it: what the hub tests publish."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

MODEL = "tiny-mlp"


@functools.lru_cache(maxsize=1)
def _tiny_class():
    """An nn.Sequential (state-dict keys `0.weight`, ...) that also provides what the operator task
    asks of its models; the extra members add no parameters and no persistent buffers."""
    import torch
    import torch.nn as nn

    class TinyMLP(nn.Sequential):
        branch_input = "sensors"
        input_grid = None

        def __init__(self, width: int, layers: list):
            super().__init__(*layers)
            self.width = width
            self.register_buffer("out_mean", torch.zeros(()), persistent=False)
            self.register_buffer("out_std", torch.ones(()), persistent=False)

        def forward(self, x, points=None):
            return super().forward(x)

        def example_input(self, batch: int = 8):
            return torch.randn(batch, self.width), torch.rand(batch, 1, 1)

        def fit_output_stats(self, values):
            self.out_mean.fill_(float(values.mean()))
            self.out_std.fill_(float(values.std()))

        def output_stats(self):
            return None

    return TinyMLP


def tiny_mlp(width: int = 8, depth: int = 2):
    """A stack of Linear layers; width=4096, depth=1 gives a ~64 MiB float32 file."""
    import torch.nn as nn

    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return _tiny_class()(width, layers[:-1] or [nn.Identity()])


def make_checkpoint(folder: str | Path, *, width: int = 8, depth: int = 2, seed: int = 0, tag: str = "toy",
                    metrics: dict | None = None) -> Path:
    """A real checkpoint folder written by the lead's zoo.checkpoint.save_checkpoint."""
    import torch

    from zoo.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = tiny_mlp(width=width, depth=depth)
    meta = {"model": MODEL, "tag": tag, "task": "operator", "dataset": "toy",
            "config": {"width": width, "depth": depth},
            "metrics": metrics if metrics is not None else {"rel_l2": 0.0123},
            "eval_data": "toy test split (seed 0)",
            "command": f"zoo finetune {MODEL} --dataset toy --steps 10 --seed {seed} --out runs/{tag}",
            "license": "MIT"}
    return save_checkpoint(folder, model, meta)


def registry_text(checkpoints: dict[str, dict] | None = None, *, width: int = 8, depth: int = 2,
                  converter: str | None = None) -> str:
    """A registry with the tiny model; `checkpoints` are {tag: checkpoint entry} (as `zoo push`
    prints them); `converter` ("hubtools.tiny:convert_state_dict") goes into the family block."""
    family = {
        "task": "operator",
        "builder": "hubtools.tiny:tiny_mlp",
        "paper": {"title": "A Tiny Test Network", "arxiv": "0000.00000", "code": None},
    }
    if converter:
        family["converter"] = converter
    entry = {
        "family": "tiny",
        "status": "ready",
        "description": "A tiny MLP the hub tests publish and pull.",
        "config": {"width": width, "depth": depth},
        "datasets": ["toy"],
        "reported": [{"metric": "rel_l2", "value": 0.5, "dataset": "toy", "source": "paper Table 1"}],
        "checkpoints": checkpoints or {},
    }
    if checkpoints:
        entry["default_checkpoint"] = next(iter(checkpoints))
    return yaml.safe_dump({"version": 1, "hub_org": "zoo", "families": {"tiny": family},
                           "models": {MODEL: entry}}, sort_keys=False)


def write_registry(path: str | Path, checkpoints: dict[str, dict] | None = None, **kw) -> Path:
    import zoo.registry as registry

    path = Path(path)
    path.write_text(registry_text(checkpoints, **kw))
    registry._load.cache_clear()  # the registry cache is keyed by mtime, which may not have ticked
    return path


# ---- an "official" checkpoint of the tiny model, for the convert tests ---------------------------
# The official code keeps its layers in `self.layers` of a class in module `official_tiny.nets`;
# its checkpoints pickle the whole model object, which torch.load(weights_only=True) refuses.
OFFICIAL_MODULES = ("official_tiny",)

OFFICIAL_SOURCE = '''
import torch.nn as nn

class TinyNet(nn.Module):
    def __init__(self, width=8, depth=2):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.Tanh()]
        self.layers = nn.Sequential(*layers[:-1])
        self.register_buffer("calls", __import__("torch").zeros(1), persistent=False)
'''


def convert_state_dict(raw: dict, model: str, config: dict) -> dict:
    """official `model.layers.N.*` (or `ema.layers.N.*`) -> our `N.*`."""
    from zoo.converters import pick_prefix, rename

    return rename(pick_prefix(raw, ("ema.", "model.")), [(r"^layers\.", "")])
