"""`zoo eval`: a checkpoint's metrics on a dataset (or the user's own file)."""

from __future__ import annotations

from zoo.loading import dataset_for, is_checkpoint_dir, load, options_for


def evaluate(name: str, *, dataset: str | None = None, data: str | None = None, split: str = "test",
             hub: str | None = None, device: str | None = None, options: dict | None = None,
             nproc_per_node: int = 1, backend: str = "eager") -> dict:
    import torch

    from zoo.backends import check_name, for_verb
    from zoo.errors import ConfigError
    check_name(backend)
    if nproc_per_node != 1 and backend != "eager":
        raise ConfigError("--backend runs in one process; drop --nproc-per-node or use --backend eager")
    if nproc_per_node != 1:   # shards over torchrun workers; the same metrics, reduced exactly
        from zoo.training.distributed import evaluate_distributed
        return evaluate_distributed(dict(name=str(name), dataset=dataset, data=data, split=split, hub=hub,
                                         device=device, options=options), nproc_per_node)

    loaded = load(name, dataset=dataset, hub=hub, require_weights=not is_checkpoint_dir(name), device=device)
    opts = options_for(loaded, "eval", options)
    ds, dataset = dataset_for(loaded, dataset, data, split, opts)
    model, run = for_verb(loaded, backend, opts)
    with torch.inference_mode():
        metrics = loaded.task.evaluate(model, ds, opts)
    # the split the data really holds (a set without a test split says so itself)
    return {"model": loaded.full_name, "dataset": dataset or str(data), "split": getattr(ds, "split", split),
            "metrics": metrics, **run}

