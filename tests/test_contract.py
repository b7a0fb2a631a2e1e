"""The family contract, for every `ready` registry entry at once: build it from a small test config
(the family's `test_config`), check it fulfils its task's Protocol, run the task's example input,
take one training step on the task's example batch, round-trip the weights through a safetensors
checkpoint folder, refuse a state dict that does not fit, and export to one format with parity.
A new family that passes this needs no verb code of its own."""

from __future__ import annotations

import math

import pytest
import torch

import zoo.registry as reg
from zoo.checkpoint import fit_state_dict, load_weights, save_checkpoint
from zoo.errors import CheckpointError
from zoo.loading import build, load
from zoo.tasks.base import to_device
from zoo.verbs.export import flatten_outputs

READY = [n for n, e in reg.load_registry().models.items() if e.status == "ready"]


def _small(name: str):
    entry = reg.load_registry().models[name]
    fam = reg.load_registry().families.get(entry.family)
    overrides = dict(fam.test_config) if fam else {}
    return load(name, pretrained=False, overrides=overrides or None, device="cpu")


@pytest.mark.parametrize("name", READY)
def test_every_ready_model_fulfils_its_task_contract(name, tmp_path):
    torch.manual_seed(0)
    loaded = _small(name)
    task, model = loaded.task, loaded.model
    assert isinstance(model, task.model_protocol), f"{name} does not implement {task.model_protocol.__name__}"

    # the task's example input runs and gives finite outputs
    model.eval()
    # small inputs keep the test fast; detectors take any multiple of their stride
    small = {"batch_size": 2, **({"imgsz": 128} if task.name == "detection" else {})}
    args = tuple(task.example_input(model, small))
    with torch.inference_mode():
        ref = flatten_outputs(model(*args))
    assert ref and all(torch.isfinite(t).all() for t in ref if t.is_floating_point())

    # one training step on the task's example batch
    model.train()
    module = task.training_module(model, {})
    batch = to_device(task.example_batch(model, small), "cpu")
    loss, logs = module(batch)
    assert math.isfinite(float(loss)) and isinstance(logs, dict)
    if not getattr(module, "runs_backward", False):
        loss.backward()
    assert any(p.grad is not None for p in model.parameters())

    # safetensors round trip through a checkpoint folder gives the same outputs
    model.eval()
    with torch.inference_mode():
        ref = flatten_outputs(model(*args))   # the step moved normalisation statistics
    folder = save_checkpoint(tmp_path / "ck", model, {"model": name, "task": loaded.task_name,
                                                      "config": loaded.config}, card=False)
    fresh = build(name, reg.load_registry().models[name], loaded.config)
    load_weights(fresh, folder)
    fresh.eval()
    with torch.inference_mode():
        again = flatten_outputs(fresh(*args))
    assert len(again) == len(ref) and all(torch.equal(a, b) for a, b in zip(again, ref))

    # a state dict that does not fit is refused with a clear error
    state = dict(model.state_dict())
    state.pop(next(iter(state)))
    with pytest.raises(CheckpointError, match="missing"):
        fit_state_dict(fresh, state, "test weights")

    # export to one format, loaded back by its runtime, within tolerance
    from zoo.verbs.export import export_loaded
    res = export_loaded(loaded, "torchscript", out=tmp_path / f"{name}.pt", fuse=True, options=small)
    assert res["max_abs_err"] <= res["atol"] + res["rtol"] * max(float(t.abs().max()) for t in ref)
