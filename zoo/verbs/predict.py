"""`zoo predict`: run a checkpoint on one input (or one sample of a dataset) and draw the result."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from zoo.loading import dataset_for, is_checkpoint_dir, load, options_for
from zoo.options import Options


class PredictOptions(Options):
    split: str = Field("test", description="split of --dataset/--data to draw the sample from")


def predict(name: str, input: str | None = None, *, dataset: str | None = None, data: str | None = None,
            save: str | Path | None = None, hub: str | None = None, device: str | None = None,
            options: dict | None = None) -> dict:
    loaded = load(name, dataset=dataset, hub=hub, require_weights=not is_checkpoint_dir(name), device=device)
    opts = options_for(loaded, "predict", options, PredictOptions)
    ds = None
    if dataset or data or (input is None and loaded.dataset):
        ds, _ = dataset_for(loaded, dataset, data, opts.pop("split", "test"), opts)
    out = loaded.task.predict(loaded.model, input, ds, Path(save) if save else None, opts)
    return {"model": loaded.full_name, **out, **({"saved": str(save)} if save else {})}
