"""What makes DeepONet's time to accuracy short: a batch is gathered in one index per array (not one
item dict per sample), and `-o fused=true` selects AdamW's fused kernel. The wall-clock comparison
with DeepXDE lives in benchmarks/deeponet_time_to_accuracy.py, not here."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import run_zoo
from zoo.errors import ConfigError
from zoo.tasks.operator import ArrayDataset, collate_operator
from zoo.training import loop


@pytest.mark.parametrize("points_shape,mask", [((9, 3, 2), None), ((3, 2), None), ((9, 3, 2), "1d"), ((3, 2), "2d")])
def test_take_gathers_the_same_batch_as_collating_items(points_shape, mask):
    rng = np.random.default_rng(0)
    masks = {None: None, "1d": (rng.random(3) > 0.5).astype(np.float32),
             "2d": (rng.random((9, 3)) > 0.5).astype(np.float32)}
    ds = ArrayDataset(rng.random((9, 5)), rng.random(points_shape), rng.random((9, 3)), masks[mask])
    idx = [4, 0, 4, 8]
    got, want = ds.take(idx), collate_operator([ds[i] for i in idx])
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k


def _plan(total=10):
    return loop._Schedule(batch=4, accumulate=1, per_rank=4, micro_per_epoch=1, total=total, save_every=5, lr=1e-3)


@pytest.mark.parametrize("fused", [True, False, None])
def test_fused_option_reaches_adamw(fused):
    net = torch.nn.Linear(3, 2)
    opt, _ = loop._optimiser(net, {"fused": fused}, _plan())
    assert opt.defaults["fused"] is fused
    x = torch.randn(5, 3)
    net(x).square().mean().backward()
    before = net.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, net.weight)


def test_fused_kernel_takes_the_same_step_as_the_default():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opts = [loop._optimiser(m, {"fused": f}, _plan())[0] for m, f in ((a, None), (b, True))]
    x = torch.randn(8, 4)
    for _ in range(3):
        for m, o in zip((a, b), opts):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and not torch.equal(a.weight, torch.zeros_like(a.weight))


def test_a_fused_kernel_torch_refuses_is_one_config_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices\nmore")
    monkeypatch.setattr(torch.optim, "AdamW", refuse)
    with pytest.raises(ConfigError) as exc:
        loop._optimiser(torch.nn.Linear(2, 2), {"fused": True}, _plan())
    assert "\n" not in str(exc.value) and "fused" in str(exc.value)


@pytest.mark.parametrize("option,word", [("fused=maybe", "boolean"), ("fuse=true", "fused")])
def test_cli_refuses_a_bad_fused_option_in_one_line(tmp_path, option, word):
    r = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", "--scratch", "--steps", "1",
                "-o", option, "--out", str(tmp_path / "run"))
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_full_batch_finetune_with_fused_adamw_never_builds_items(tmp_path, monkeypatch):
    """A full-batch run (batch >= the set) with the fused optimiser trains, and every batch comes
    from take(): the per-item path, 10k dicts a step, is never used."""
    from zoo.verbs.finetune import finetune

    def no_items(self, i):
        raise AssertionError("the loop built a batch item by item")
    monkeypatch.setattr(ArrayDataset, "__getitem__", no_items)
    res = finetune("deeponet", dataset="antiderivative", out=tmp_path / "run", steps=3, batch_size=400, lr=1e-3,
                   pretrained=False, progress=False, options={"size": 300, "fused": True, "no_eval": True})
    assert res["steps"] == 3 and np.isfinite(res["final_loss"])
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_cli_full_batch_fused_run(tmp_path):
    r = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", "--scratch", "--steps", "4", "-b", "10000",
                "-o", "fused=true", "-o", "size=500", "-o", "no_eval=true", "--out", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["steps"] == 4 and res["final_loss"] > 0


@pytest.mark.slow
def test_benchmark_prints_the_curve_and_saves_the_png(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    png = tmp_path / "curve.png"
    r = subprocess.run([sys.executable, "benchmarks/deeponet_time_to_accuracy.py", "--no-deepxde", "--zoo-steps", "30",
                        "--target", "1", "--threads", "1", "--png", str(png), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["zoo"][0]["steps"] == 30 and res["zoo_time_to_target_s"] is not None
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_deepxdes_own_prints_do_not_reach_the_benchmarks_stdout(monkeypatch, capsys):
    """DeepXDE prints "Compiling model..." to stdout; with --json that broke the JSON."""
    import importlib.util
    import sys
    import types

    from tests.conftest import ROOT
    spec = importlib.util.spec_from_file_location("tta", ROOT / "benchmarks" / "deeponet_time_to_accuracy.py")
    tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tta)

    class Model:   # the few calls the benchmark makes, each printing as DeepXDE does
        def __init__(self, data, net):
            print("Model built")

        def compile(self, *a, **k):
            print("Compiling model...")

        def train(self, **k):
            print("Training model...")

        def predict(self, x):
            return np.zeros((len(x[0]), 1), np.float32)

    fake = types.SimpleNamespace(data=types.SimpleNamespace(Triple=lambda **k: None),
                                 nn=types.SimpleNamespace(DeepONet=lambda *a: None), Model=Model)
    monkeypatch.setitem(sys.modules, "deepxde", fake)
    n = 4
    split = {"u": np.zeros((n, 100), np.float32), "y": np.zeros((n, 1), np.float32), "s": np.zeros((n, 1), np.float32)}
    points = tta.deepxde_curve((split, split), target=1.0, every=1, max_s=5.0, log=lambda m: None)
    out = capsys.readouterr()
    assert points[0]["mse"] == 0.0 and out.out == "" and "Compiling model..." in out.err
