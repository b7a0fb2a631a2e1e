"""HiH, the gait-recognition task and the OpenGait data (issue 18)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from zoo.data import gait as gd
from zoo.errors import DataError
from tests.conftest import assert_eval_reproduces_registry, registry_checkpoints
from zoo.models.hih import hih
from zoo.tasks.gait_recognition import GaitRecognitionTask, retrieval_metrics, triplet_loss


# spec vision.md D [calc]: backbone (without the BNNeck classifier) / total, official configs
@pytest.mark.parametrize("variant, backbone, total", [
    ("gait3d", 9.96, 22.26), ("grew", 9.65, 91.58), ("oumvlp", 10.36, 31.48), ("casiab", 5.66, 6.28)])
def test_parameter_counts_match_the_official_configs(variant, backbone, total):
    m = hih(variant)
    assert round(m.backbone_parameters() / 1e6, 2) == backbone
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == total


def test_pose_branch_is_off_by_default_and_selectable():
    small = dict(channels=4, num_classes=5, frame_size=(32, 22), bins=8)
    plain, posed = hih("gait3d", **small), hih("gait3d", pose=True, **small)
    assert not plain.uses_pose and posed.uses_pose
    assert sum(p.numel() for p in posed.parameters()) > sum(p.numel() for p in plain.parameters())
    e, logits = posed.eval()(torch.rand(2, 7, 32, 22), torch.rand(2, 7, 32, 22))
    assert e.shape == (2, 16, 8) and logits.shape == (2, 5, 8)


def test_retrieval_metrics_and_triplet_loss():
    dist = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.1, 0.3]])
    m = retrieval_metrics(dist, ["a", "b"], ["a", "a", "b"])
    assert m["rank1"] == 50.0 and m["rank5"] == 100.0
    assert m["map"] == pytest.approx(100 * (1.0 + 1 / 3) / 2)
    assert m["minp"] == pytest.approx(100 * (2 / 2 + 1 / 3) / 2)
    # plain floats: a numpy scalar broke the model card's YAML at the end of `zoo finetune`
    assert all(type(v) is float for v in m.values())
    import yaml
    assert yaml.safe_load(yaml.safe_dump(m)) == m
    with pytest.raises(DataError, match="no sequence in the gallery"):
        retrieval_metrics(dist, ["z"], ["a", "a", "b"])
    emb = torch.tensor([[[0.0]], [[0.1]], [[5.0]], [[5.1]]])
    assert float(triplet_loss(emb, torch.tensor([0, 0, 1, 1]), 0.2)) == 0.0
    assert float(triplet_loss(emb, torch.tensor([0, 1, 0, 1]), 0.2)) > 0


def test_opengait_reader_refuses_code_and_empty_sequences(tmp_path):
    root = gd.write_gait_synth(tmp_path / "g", n_ids=3, n_train=1, frames=6)
    ds = gd.GaitSequences(root, "test", (32, 22))
    assert len(ds) == 2 * 4 * 3 and ds[0]["sils"].shape[1:] == (32, 22)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    target = next((root / "002").rglob("*sils.pkl"))
    target.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(gd.UnsafePickle, match="refusing global"):
        ds[len(ds) - 1] if str(ds.seqs[-1][3][-1]) == str(target) else [ds[i] for i in range(len(ds))]
    assert not (tmp_path / "pwned").exists()
    target.write_bytes(pickle.dumps(np.zeros((0, 64, 64), np.uint8)))
    with pytest.raises(DataError, match="zero frames"):
        [ds[i] for i in range(len(ds))]


def test_task_evaluates_gallery_probe_and_refuses_a_missing_gallery_identity(tmp_path):
    root = gd.write_gait_synth(tmp_path / "g", n_ids=3, n_train=1, frames=6, pose=False)
    task = GaitRecognitionTask()
    m = hih("casiab", channels=4, num_classes=3, frame_size=(32, 22), bins=8)
    ds = task.read_data(str(root), None, "test", m, {})
    out = task.evaluate(m, ds, {})
    assert out["probes"] == 2 * 3 * 3 and out["gallery"] == 2 * 3 and 0 <= out["rank1"] <= 100
    for f in (root / "002" / "nm-01").rglob("*.pkl"):
        f.unlink()
    with pytest.raises(DataError, match="no sequence in the gallery"):
        task.evaluate(m, task.read_data(str(root), None, "test", m, {}), {})


def test_cli_finetune_resumes(tmp_path):
    """`zoo finetune hih-casiab --dataset gait-synth ... --resume` continues the step count."""
    import json

    from tests.conftest import run_zoo
    out = tmp_path / "run"
    cfg = json.dumps({"channels": 4, "frame_size": [32, 22], "bins": 8, "num_classes": 16})
    common = ["hih-casiab", "--dataset", "gait-synth", "--scratch", "--batch-size", "2", "-o", f"config={cfg}",
              "-o", "frames=4", "-o", "no_eval=true", "--out", str(out)]
    r = run_zoo("finetune", *common, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert int(torch.load(out / ".train" / "state.pt", weights_only=True)["step"]) == 2
    r = run_zoo("finetune", *common, "--steps", "3", "--resume")
    assert r.returncode == 0, r.stderr
    assert int(torch.load(out / ".train" / "state.pt", weights_only=True)["step"]) == 3


def _registry_checkpoints():
    return registry_checkpoints("hih")


def test_the_casiab_checkpoint_is_listed():
    assert "hih-casiab.gait-synth" in _registry_checkpoints()


@pytest.mark.slow
@pytest.mark.parametrize("full", _registry_checkpoints())
def test_registry_metrics_are_reproduced(full):
    """Re-run `zoo eval NAME.TAG --json` and compare with the metrics pinned in registry.yaml."""
    assert_eval_reproduces_registry(full)

@pytest.mark.slow
def test_two_process_finetune_trains_every_weight_and_its_checkpoint_evaluates(tmp_path):
    """`zoo finetune hih-casiab --nproc-per-node 2` on gait-synth: both processes finish, every
    trainable tensor of the saved weights moved from the seeded initialisation (the all-reduced
    steps reached all of them; BatchNorm keeps per-process batch statistics, so unlike a model
    without BatchNorm the weights are not those of a one-process run) and the folder evaluates."""
    import json

    from safetensors.torch import load_file

    from tests.conftest import run_zoo
    from zoo.loading import load
    cfg = {"channels": 4, "frame_size": [32, 22], "bins": 8, "num_classes": 16}
    out = tmp_path / "two"
    r = run_zoo("finetune", "hih-casiab", "--dataset", "gait-synth", "--scratch", "--batch-size", "4", "--steps", "3",
                "-o", f"config={json.dumps(cfg)}", "-o", "frames=4", "-o", "no_eval=true", "--nproc-per-node", "2",
                "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    torch.manual_seed(0)   # the loop's seeded initialisation (--seed 0)
    init = load("hih-casiab", pretrained=False, overrides=cfg, device="cpu").model
    trained = load_file(str(out / "model.safetensors"))
    trainable = {n for n, p in init.named_parameters() if p.requires_grad}
    assert trainable and trainable <= trained.keys()
    still = [n for n in trainable if torch.equal(trained[n].float(), init.state_dict()[n].float())]
    assert not still, still
    # ... by a few optimiser steps (lr 1e-3), not from some other initialisation
    assert max(float((trained[n].float() - init.state_dict()[n].float()).abs().max()) for n in trainable) < 0.05
    ev = run_zoo("eval", str(out), "--dataset", "gait-synth", "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    m = json.loads(ev.stdout)["metrics"]
    assert m["probes"] > 0 and 0 <= m["rank1"] <= 100
