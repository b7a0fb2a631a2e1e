"""MoFME, its FFN-MoE and ViT baselines, the restoration task and the All-Weather data (issue 18)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import allweather as aw
from zoo.errors import DataError
from zoo.models.mofme import Router, moe, mofme, vit
from zoo.tasks.restoration import RestorationTask, restore
from tests.conftest import ROOT, assert_eval_reproduces_registry, registry_checkpoints, run_zoo

SMALL = dict(img_size=32, embed_dim=32, heads=2, dim_head=16, head_channels=8)


def _params(m):
    return sum(p.numel() for p in m.parameters())


# spec vision.md G [calc]: the official models instantiated at 240x240 (pos-emb included)
@pytest.mark.parametrize("kind, n, millions", [
    ("mofme", 4, 11.68), ("mofme", 8, 14.05), ("mofme", 16, 18.80),
    ("moe", 4, 15.81), ("moe", 8, 25.27), ("moe", 16, 44.19), ("vit", 0, 8.71)])
def test_parameter_counts_match_the_official_code(kind, n, millions):
    build = {"mofme": mofme, "moe": moe, "vit": vit}[kind]
    m = build(num_experts=n, top_k=2) if n else build()
    assert round(_params(m) / 1e6, 2) == millions


def test_top_k_does_not_change_parameters_and_mofme_saves_over_72_percent_at_n16():
    assert _params(mofme(num_experts=8, top_k=2)) == _params(mofme(num_experts=8, top_k=4))
    # the paper's ">72% fewer parameters" holds for the MoE *layers*, not whole networks
    saving = 1 - _params(mofme(num_experts=16)) / _params(moe(num_experts=16))
    assert 0.55 < saving < 0.60


def test_router_keeps_top_k_and_code_mode_degenerates_to_zero_weights():
    torch.manual_seed(0)
    r = Router(16, 8, 2, "plain")
    w = r(torch.randn(3, 5, 16))
    assert torch.allclose(w.sum(-1), torch.ones(3, 5)) and ((w > 0).sum(-1) == 2).all()
    code = Router(16, 8, 2, "code")
    code.load_state_dict(r.state_dict())
    code.train()
    wc = code(torch.randn(3, 5, 16))   # the official whitening of identical samples: zeros, or round-off noise
    assert (wc.abs() < 1e-3).float().mean() > 0.8 and not torch.allclose(wc.sum(-1), torch.ones(3, 5))
    mc = Router(16, 8, 2, "mc").train()
    assert torch.allclose(mc(torch.randn(3, 5, 16)).sum(-1), torch.ones(3, 5), atol=1e-5)


def test_global_residual_modes():
    """off: the released runs (sigmoid output); code: the official residual, sigmoid + the input
    normalised to [-1, 1]; centred (ours): input + a signed correction, the identity untrained."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    off = mofme(num_experts=4, **SMALL).eval()
    code, centred = (mofme(num_experts=4, residual=r, **SMALL).eval() for r in ("code", "centred"))
    assert _params(off) == _params(code) == _params(centred)
    code.load_state_dict(off.state_dict())
    y = off(x)
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.allclose(code(x), y + 2 * x - 1, atol=1e-6)
    assert torch.equal(centred(x), x)
    with pytest.raises(ValueError, match="residual must be one of"):
        mofme(residual="on", **SMALL)


def test_tiled_restore_equals_whole_image_for_a_patchwise_model_and_handles_odd_sizes():
    class Half(torch.nn.Module):
        tile_size, patch_size, in_chans = 32, 8, 3

        def forward(self, x):
            return x * 0.5
    x = torch.rand(1, 3, 75, 101)
    y = restore(Half(), x)
    assert y.shape == x.shape and torch.allclose(y, x * 0.5, atol=1e-6)
    with pytest.raises(DataError, match="smaller than one 8x8 patch"):
        restore(Half(), torch.rand(1, 3, 5, 40))


def test_synthetic_weather_is_seeded_and_split_by_photograph():
    a, b = aw.SynthWeather("test"), aw.SynthWeather("test")
    assert torch.equal(a[3][0], b[3][0]) and not torch.equal(a[3][0], a[3][1])
    assert set(aw.TRAIN_SOURCES).isdisjoint(aw.TEST_SOURCES)
    assert {w for _, _, w in (a[i] for i in range(len(a)))} == {0, 1, 2}


def test_allweather_layout_round_trip_and_bad_pairs(tmp_path):
    ds = torch.utils.data.Subset(aw.SynthWeather("test"), [0, 6, 12, 18, 24, 30])   # every weather type
    root = aw.write_allweather(ds, tmp_path / "aw")
    assert (root / "test_raindrop" / "gt").is_dir() and any((root / "test_raindrop" / "gt").glob("*_clean.png"))
    back = aw.read_allweather(root)
    assert len(back) == 6
    assert sorted(int(back[i][2]) for i in range(6)) == sorted(int(ds[i][2]) for i in range(6))
    # a clean image of another size is refused
    gt = next((root / "test_rain" / "gt").glob("*.png"))
    Image.new("RGB", (10, 12)).save(gt)
    bad = aw.read_allweather(root)
    with pytest.raises(DataError, match="must have one size"):
        [bad[i] for i in range(len(bad))]
    # a grey image is converted, and said so
    grey = tmp_path / "g" / "test_snow"
    (grey / "input").mkdir(parents=True)
    (grey / "gt").mkdir()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(grey / "input" / "a.png")
    Image.fromarray(np.full((16, 16, 3), 80, np.uint8)).save(grey / "gt" / "a.png")
    g = aw.read_allweather(tmp_path / "g")
    assert g[0][0].shape == (3, 16, 16) and any("converted to RGB" in n for n in g.notes)
    with pytest.raises(DataError, match="no image pairs"):
        aw.read_allweather(tmp_path / "g", split="train")


def test_task_evaluates_per_weather_and_predict_draws(tmp_path):
    torch.manual_seed(0)
    task = RestorationTask()
    m = mofme(num_experts=4, **SMALL).eval()
    ds = aw.SynthWeather("test", size=18, test_crop=48)
    out = task.evaluate(m, ds, {})
    assert {"psnr", "ssim", "psnr_rain", "psnr_raindrop", "psnr_snow", "psnr_input"} <= set(out)
    assert out["samples"] == 18 and np.isfinite(out["psnr"])
    # a small grey file: converted, restored whole, picture written
    Image.fromarray(np.full((20, 28), 128, np.uint8)).save(tmp_path / "grey.png")
    res = task.predict(m, str(tmp_path / "grey.png"), None, tmp_path / "out.png", {})
    assert (tmp_path / "out.png").is_file() and any("converted to RGB" in n for n in res["notes"])
    assert any("smaller than one 32x32 tile" in n for n in res["notes"])


def test_cli_bench_compare_and_a_bad_path(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((40, 72, 3)) * 255).astype(np.uint8)).save(tmp_path / "r.png")
    r = run_zoo("bench", "mofme-n4-k2", "--compare", "moe-n4-k2", "-o", "repeats=2", "-o", "warmup=1", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "mofme" in json.dumps(data) and "moe" in json.dumps(data)
    bad = run_zoo("eval", "mofme-n4-k2", "--data", str(tmp_path / "nowhere"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def _registry_checkpoints():
    return registry_checkpoints("mofme")


def test_the_headline_checkpoint_is_listed():
    assert "mofme-n8-k2.allweather-synth" in _registry_checkpoints()


@pytest.mark.slow
@pytest.mark.parametrize("full", _registry_checkpoints())
def test_registry_metrics_are_reproduced(full):
    """Re-run `zoo eval NAME.TAG --json` and compare with the metrics pinned in registry.yaml."""
    assert_eval_reproduces_registry(full)


@pytest.mark.slow
def test_cli_bench_compares_the_two_trained_checkpoints_like_for_like():
    """With both checkpoints published, bare names resolve to them: same small config, so the
    parameter ratio is the MoFME saving at that config (1.79M vs 3.03M), not 1.8M vs the 25.3M default."""
    r = run_zoo("bench", "mofme-n8-k2", "--compare", "moe-n8-k2", "-o", "repeats=2", "-o", "warmup=1", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert [x["model"] for x in res] == ["mofme-n8-k2.allweather-synth", "moe-n8-k2.allweather-synth"]
    assert res[0]["params"] == 1785811 and res[1]["params"] == 3034835


@pytest.mark.slow
def test_two_process_finetune_matches_one_process_and_its_weights_evaluate(tmp_path):
    """`--nproc-per-node 2` on the restoration task: the MoE layers (and the official model's
    never-used parameters) under DDP. Without dropout the two shards' averaged gradients are the
    one-process batch's, so the weights match a one-process run of the same global batch."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file
    cfg = json.dumps({**SMALL, "router": "plain", "dropout": 0})
    common = ["finetune", "mofme-n4-k2", "--dataset", "allweather-synth", "--scratch", "--steps", "3", "-b", "4",
              "-o", f"config={cfg}", "-o", "size=16", "-o", "no_eval=true", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {k: subprocess.Popen([sys.executable, "-m", "zoo", *common, *extra, "--out", str(tmp_path / k)], cwd=ROOT,
                                env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for k, extra in (("two", ["--nproc-per-node", "2"]), ("one", []))}
    done = {}
    for k, p in runs.items():
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        done[k] = json.loads(out)
    assert done["two"]["world_size"] == 2 and done["one"]["world_size"] == 1 and done["two"]["steps"] == 3
    two, one = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    assert two.keys() == one.keys()
    assert max(float((two[k].double() - one[k].double()).abs().max()) for k in two) < 1e-5
    ev = run_zoo("eval", str(tmp_path / "two"), "--dataset", "allweather-synth", "-o", "size=3", "--json")
    assert ev.returncode == 0, ev.stderr[-2000:]
    m = json.loads(ev.stdout)["metrics"]
    assert m["samples"] == 3 and np.isfinite(m["psnr"])
