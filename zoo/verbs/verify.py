"""`zoo verify`: pull a checkpoint, re-run the eval its registry entry records (same dataset, split,
options and data), and compare every metric with the card within the recorded tolerance.

The card's numbers are only as good as the last time someone measured them; this re-measures them
and says PASS or FAIL per metric, with the paper's number beside ours where the registry has one."""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from pathlib import Path

import zoo.registry as reg
from zoo.errors import CheckpointError, DataError, ZooError

PASS, FAIL, MISSING, SKIP = "PASS", "FAIL", "MISSING", "SKIP"


# ---- the eval data's identity ------------------------------------------------------------------------

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _feed(h, obj) -> None:
    """Hash tensors by dtype, shape and bytes; containers in order; anything else by its repr."""
    import numpy as np
    import torch
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"[{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        # an object's default repr carries its memory address (a problem's callables): not part of the data
        h.update(_ADDRESS.sub("", repr(obj)).encode())


def fingerprint(dataset) -> str:
    """sha256 of every item of an eval set as the task loads it: the same generator seed and
    parameters, or the same shipped file, give the same digest; any change in the data does not."""
    h = hashlib.sha256()
    n = len(dataset)
    h.update(f"n={n}".encode())
    for i in range(n):
        _feed(h, dataset[i])
    return h.hexdigest()


def data_root() -> Path:
    from zoo.data import cache_dir
    return cache_dir()


def _check_files(full: str, record) -> None:
    """Shipped files the eval reads must be there and be the recorded bytes; a one-line error otherwise."""
    from zoo._io import sha256_file
    root = data_root()
    for rel, digest in record.files.items():
        path = Path(rel) if os.path.isabs(rel) else root / rel
        if not path.is_file():
            raise DataError(f"cannot re-measure {full}: its eval data is missing: {path} (sha256 {digest[:12]}...); "
                            f"`zoo eval {full}` fetches it where it can")
        got = sha256_file(path)
        if got != digest:
            raise DataError(f"cannot re-measure {full}: {path} is not the recorded eval data "
                            f"(sha256 {got[:12]}... != {digest[:12]}...)")


# ---- one checkpoint ------------------------------------------------------------------------------------

def _checkpoint(name: str):
    """`name` or `name.tag` -> (full name, entry, tag, checkpoint); a model without one is an error."""
    mname, entry, tag = reg.resolve(name)
    if tag is None:
        why = entry.weights_note or "none has been trained or converted yet"
        raise CheckpointError(f"'{mname}' has no checkpoint to verify: {why}")
    return f"{mname}.{tag}", entry, tag, entry.checkpoints[tag]


def _paper(entry, metric: str, dataset: str):
    for r in entry.reported:
        if r.metric == metric and r.dataset in (None, dataset) and isinstance(r.value, (int, float)):
            return {"value": float(r.value), "source": r.source}
    return None


def _tolerance(record, metric: str, card: float) -> float:
    if metric in record.tolerance:
        return float(record.tolerance[metric])
    return record.atol + record.rtol * abs(card)


def compare_metrics(card: dict, now: dict, record, entry=None, dataset: str | None = None) -> list[dict]:
    """One row per card metric: card | now | delta | tolerance | pass; then metrics the card lacks (info)."""
    rows = []
    for metric, value in card.items():
        got = now.get(metric)
        tol = _tolerance(record, metric, value)
        row = {"metric": metric, "card": value, "now": got, "tolerance": tol,
               "paper": _paper(entry, metric, dataset) if entry is not None else None}
        if (isinstance(got, (int, float)) and isinstance(value, (int, float)) and math.isnan(float(got))
                and math.isnan(float(value))):
            row.update(delta=None, status=PASS, note="undefined on this data, as on the card")
        elif got is None or not isinstance(got, (int, float)) or math.isnan(float(got)):
            row.update(delta=None, status=FAIL, note="the eval no longer reports it")
        else:
            row["delta"] = float(got) - float(value)
            row["status"] = PASS if abs(row["delta"]) <= tol else FAIL
        rows.append(row)
    for metric, got in now.items():
        if metric not in card and isinstance(got, (int, float)):
            rows.append({"metric": metric, "card": None, "now": got, "delta": None, "tolerance": None,
                         "paper": None, "status": "info", "note": "not on the card"})
    return rows


def verify(name: str, *, hub: str | None = None, device: str | None = None, record: bool = False) -> dict:
    """Re-measure one checkpoint. `record=True` also returns the `eval:` block to paste into the
    registry (data fingerprint and time of this run), for a checkpoint that has none yet."""
    full, entry, tag, ck = _checkpoint(name)
    rec = ck.eval
    if rec is None:
        if not record:
            raise CheckpointError(f"{full} has no recorded eval (its registry entry has no `eval:` block), so its "
                                  f"metrics cannot be re-measured; `zoo verify {full} --record` prints one")
        rec = reg.EvalRecord(dataset=ck.dataset)
    if not ck.metrics and not record:
        raise CheckpointError(f"{full} has no metrics on its card to verify")
    _check_files(full, rec)
    import torch

    from zoo.loading import dataset_for, load, options_for
    t0 = time.perf_counter()
    loaded = load(full, hub=hub, require_weights=True, device=device)
    opts = options_for(loaded, "eval", dict(rec.options))
    try:
        ds, _ = dataset_for(loaded, rec.dataset, None, rec.split, opts)
    except DataError as exc:
        raise DataError(f"cannot re-measure {full}: its eval data is missing: {exc}") from None
    with torch.inference_mode():
        now = loaded.task.evaluate(loaded.model, ds, opts)
    seconds = time.perf_counter() - t0
    digest = fingerprint(ds) if (rec.data_sha256 or record) else None
    rows = compare_metrics(ck.metrics, now, rec, entry, ck.dataset)
    data_ok = rec.data_sha256 is None or digest == rec.data_sha256
    status = PASS if data_ok and all(r["status"] != FAIL for r in rows) else FAIL
    res = {"checkpoint": full, "dataset": rec.dataset, "split": getattr(ds, "split", rec.split),
           "options": dict(rec.options), "data": rec.data, "status": status, "seconds": round(seconds, 2),
           "data_sha256": {"card": rec.data_sha256, "now": digest, "status": PASS if data_ok else FAIL},
           "metrics": rows}
    if record:
        block = {"dataset": rec.dataset, "split": rec.split}
        if rec.options:
            block["options"] = dict(rec.options)
        block["data_sha256"] = digest
        block["seconds"] = round(seconds, 1)
        res["record"] = block
    return res


def verify_all(*, hub: str | None = None, device: str | None = None, max_seconds: float | None = None,
               pattern: str | None = None) -> dict:
    """Every checkpoint (or those matching `pattern`); ones without a record, or whose recorded eval
    takes longer than `max_seconds`, are listed as SKIP; missing data is MISSING, not a crash."""
    results = []
    from zoo.catalogue import list_models
    for full in list_models(pattern, pretrained=True):
        mname, tag = full.split(".", 1)
        ck = reg.load_registry().models[mname].checkpoints[tag]
        if ck.eval is None:
            results.append({"checkpoint": full, "status": SKIP, "reason": "no recorded eval", "metrics": []})
            continue
        if max_seconds is not None and (ck.eval.seconds is None or ck.eval.seconds > max_seconds):
            results.append({"checkpoint": full, "status": SKIP, "metrics": [],
                            "reason": f"recorded eval takes {ck.eval.seconds or '?'} s > {max_seconds:g} s"})
            continue
        t0 = time.perf_counter()
        try:
            results.append(verify(full, hub=hub, device=device))
        except DataError as exc:
            results.append({"checkpoint": full, "status": MISSING, "reason": str(exc), "metrics": []})
        except ZooError as exc:   # weights that no longer load, a hub that fails: this one FAILs, the rest run
            results.append({"checkpoint": full, "status": FAIL, "reason": str(exc), "metrics": [],
                            "seconds": round(time.perf_counter() - t0, 2)})
    counts = {s: sum(r["status"] == s for r in results) for s in (PASS, FAIL, MISSING, SKIP)}
    return {"results": results, "counts": counts, "ok": counts[FAIL] == 0 and counts[MISSING] == 0}


# ---- Hugging Face model-index ----------------------------------------------------------------------------

def model_index(name: str, metrics: dict | None = None) -> list[dict]:
    """The `model-index` block of a checkpoint's model card (Hugging Face's schema): our measured
    metrics on the recorded eval data, marked as not verified by the Hub. `metrics` (e.g. a fresh
    `verify` run's) replaces the registry's numbers. The same builder (zoo.card.model_index) writes
    the card's block at push; this one reads the registry's record. Imports no torch."""
    from zoo.card import model_index as card_model_index

    full, entry, tag, ck = _checkpoint(name)
    rec = ck.eval
    return card_model_index(full, task=entry.task, dataset=ck.dataset,
                            metrics=metrics if metrics is not None else ck.metrics,
                            split=rec.split if rec else "test", options=dict(rec.options) if rec and rec.options else None)
