"""`zoo eval`: a checkpoint's metrics on a dataset (or the user's own file)."""

from __future__ import annotations

from zoo.backends import REDUCED_PRECISION, Prepared
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
    if isinstance(model, Prepared):   # a backend that had to hand a call to eager mid-run says so
        run = model.summary()
    if run.get("backend") in REDUCED_PRECISION and data is None and not options:
        run["precision_check"] = precision_check(loaded, dataset, metrics)
    # the split the data really holds (a set without a test split says so itself)
    return {"model": loaded.full_name, "dataset": dataset or str(data), "split": getattr(ds, "split", split),
            "metrics": metrics, **run}


def precision_check(loaded, dataset: str | None, metrics: dict) -> dict | None:
    """A reduced-precision backend's metric against the card's (eager fp32, same eval data), judged
    by the task's reduced-precision tolerance (the one `zoo export --int8` uses). None when the
    checkpoint has no card metric to compare with."""
    import zoo.registry as registry
    from zoo.verbs.export import _judge
    tolerance = loaded.task.int8_tolerance
    if loaded.tag is None or not tolerance:
        return None
    ck = registry.load_registry().models[loaded.name].checkpoints.get(loaded.tag)
    metric = next(iter(tolerance))
    if ck is None or (dataset and ck.dataset != dataset) or metric not in (ck.metrics or {}) or metric not in metrics:
        return None
    metric, card, now, change, allowed, ok = _judge(tolerance, ck.metrics, metrics)
    return {"metric": metric, "card": card, "now": now, "change": change, "allowed": allowed, "ok": ok}

