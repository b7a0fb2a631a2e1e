"""`zoo convert mhaf-yolo-* --from MAF-YOLOv2-*.pt`: the official release format (an ultralytics
checkpoint dict whose `model` is a pickled YOLOv10DetectionModel, fp16, unfused, both heads) is
read without importing or running the official code, mapped key for key, and loads strictly.

The official files cannot be downloaded here, so a subprocess writes one in that format: our
modules re-classed under the official module paths and class names (ultralytics.nn.tasks.
YOLOv10DetectionModel, ultralytics.nn.modules.mafyolo.RepHMS, ...), the layers in an
nn.Sequential under `model`, the trainer's metadata beside it."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import importlib

zconvert = importlib.import_module("zoo.converters")
convert_verb = importlib.import_module("zoo.verbs.convert")
from zoo.errors import CheckpointError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

WRITER = r'''
import datetime, sys, types
import torch
from torch import nn
from zoo.layers.conv import ConvBnAct
from zoo.layers.rep import DilatedReparamBlock, UniRepLKNetBlock
from zoo.models import mhaf_yolo as M

_made = {}

def official(module_path, name, base):
    """A class named as the official code names it, importable from that module path here only."""
    if (module_path, name) not in _made:
        parts = module_path.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the parents too
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        mod = sys.modules[module_path]
        cls = type(name, (base,), {"__module__": module_path})
        setattr(mod, name, cls)
        _made[(module_path, name)] = cls
    return _made[(module_path, name)]

def write(variant, out, ref):
    torch.manual_seed(0)
    model = M.mhaf_yolo(variant)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # trained-looking statistics, so a mix-up of tensors would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.num_batches_tracked.fill_(12345)
    model = model.half()  # the release files are the stripped fp16 EMA
    torch.save(model.state_dict(), ref)

    inside_rephms = {id(m) for r in model.modules() if isinstance(r, M.RepHMS) for m in r.modules()}
    names = {M.RepHMS: ("mafyolo", "RepHMS"), M.DepthBottleneck: ("mafyolo", "DepthBottleneckUniv2"),
             UniRepLKNetBlock: ("mafyolo", "UniRepLKNetBlock"), DilatedReparamBlock: ("mafyolo", "DilatedReparamBlock"),
             M.AVG: ("mafyolo", "AVG"), M.SCDown: ("block", "SCDown"), M.SPPF: ("block", "SPPF"),
             M.PSA: ("block", "PSA"), M.Attention: ("block", "Attention"), M.DFL: ("block", "DFL"),
             M.Concat: ("conv", "Concat"), M.V10Detect: ("head", "v10Detect")}
    for m in list(model.modules()):
        kind = type(m)
        if kind is ConvBnAct:  # the repo has two Conv classes: its own inside RepHMS, ultralytics' elsewhere
            m.__class__ = official("ultralytics.nn.modules." + ("mafyolo" if id(m) in inside_rephms else "conv"),
                                   "Conv", ConvBnAct)
        elif kind is M.Upsample:
            m.__class__ = nn.Upsample
        elif kind in names:
            file, name = names[kind]
            m.__class__ = official(f"ultralytics.nn.modules.{file}", name, kind)
    model.model = nn.Sequential(*model.model)
    model.__class__ = official("ultralytics.nn.tasks", "YOLOv10DetectionModel", M.MHAFYOLO)
    torch.save({"date": datetime.datetime.now().isoformat(), "version": "8.1.34", "epoch": -1,
                "best_fitness": None, "model": model, "ema": None, "updates": None, "optimizer": None,
                "train_args": {"model": f"MAF-YOLOv2-{variant}.yaml", "data": "coco.yaml", "imgsz": 640}}, out)

for i in range(1, len(sys.argv), 3):
    write(*sys.argv[i:i + 3])
'''


@pytest.fixture(scope="module")
def official_files(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """variant -> (release-format file, the state dict it holds), written in one subprocess."""
    tmp = tmp_path_factory.mktemp("official")
    args = []
    for variant in ("s", "n"):
        args += [variant, str(tmp / f"MAF-YOLOv2-{variant.upper()}.pt"), str(tmp / f"reference-{variant}.pt")]
    subprocess.run([sys.executable, "-c", WRITER, *args], check=True, cwd=ROOT,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return {v: (tmp / f"MAF-YOLOv2-{v.upper()}.pt", torch.load(tmp / f"reference-{v}.pt", weights_only=True))
            for v in ("s", "n")}


def test_official_release_file_converts_and_loads_strictly(tmp_path, official_files):
    import zoo

    src, reference = official_files["s"]
    assert "ultralytics" not in sys.modules  # the official code is never imported here
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src, weights_only=True)  # a whole pickled model: why the restricted reader exists
    out = convert_verb.convert("mhaf-yolo-s", src, tmp_path / "converted")
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"] == "mhaf-yolo-s" and meta["converted_from"]["file"] == src.name
    assert meta["weights_dtype"] == "float16"
    model = zoo.create_model(str(out))  # strict load from the checkpoint folder
    state = model.state_dict()
    assert sorted(state) == sorted(reference)  # every official key, nothing else
    assert all(torch.equal(state[k].to(v.dtype), v) for k, v in reference.items())
    assert int(state["model.8.conv1.bn.num_batches_tracked"]) == 12345


def test_a_file_for_another_variant_is_one_clear_line(tmp_path, official_files):
    src, _ = official_files["n"]
    with pytest.raises(CheckpointError, match=r"holds MHAF-YOLO n weights \(80 classes\), not mhaf-yolo-s"):
        convert_verb.convert("mhaf-yolo-s", src, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


@pytest.mark.slow
def test_cli_convert_of_another_variant_exits_with_one_line(tmp_path, official_files):
    src, _ = official_files["n"]
    done = subprocess.run([sys.executable, "-m", "zoo", "convert", "mhaf-yolo-lite-n", "--from", str(src),
                           "--out", str(tmp_path / "wrong2")], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "holds MHAF-YOLO n weights" in lines[0] and "Traceback" not in done.stderr


def test_unrelated_state_dicts_are_refused():
    from zoo.converters.mhaf_yolo import convert_state_dict
    with pytest.raises(CheckpointError, match="not an ultralytics checkpoint"):
        convert_state_dict({"state_dict.fc.weight": torch.zeros(2, 2)}, "mhaf-yolo-n", {"variant": "n"})
    with pytest.raises(CheckpointError, match="not an MHAF-YOLO n detector"):
        convert_state_dict({"model.model.0.conv.weight": torch.zeros(16, 3, 3, 3)}, "mhaf-yolo-n", {"variant": "n"})
