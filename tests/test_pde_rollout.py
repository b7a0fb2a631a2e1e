"""The pde-rollout task and the Navier-Stokes generator: physics checks of the solver, the cache,
the metrics' definitions, rollout, the animation, bad input, and a short fine-tune end to end."""

import math

import numpy as np
import pytest
import torch

from zoo.data import navier_stokes as ns
from zoo.errors import DataError
from zoo.tasks import get_task
from zoo.tasks.pde_rollout import RolloutDataset

SMALL = {"size": 3, "resolution": 32, "frames": 7, "dt": 1e-2}


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    return tmp_path


def test_single_mode_decays_at_the_viscous_rate():
    # w0 = sin(2 pi x) has zero advection (u.grad w = 0), so without forcing w(t) = e^{-4 pi^2 nu t} w0
    s, nu = 32, 1e-2
    x = np.linspace(0, 1, s + 1)[:-1]
    w0 = np.sin(2 * np.pi * x)[:, None] * np.ones((1, s))
    w = ns.solve_vorticity(w0[None], nu=nu, dt=1e-3, record_every=0.5, frames=5, f=np.zeros((s, s)))
    for k in range(5):
        expected = math.exp(-4 * math.pi**2 * nu * 0.5 * k)
        assert abs(float(w[0, k, 3, 5] / w0[3, 5]) - expected) < 1e-5


def test_initial_field_statistics_and_velocity():
    w0 = ns.initial_vorticity(64, 64, seed=1)
    assert abs(w0.mean()) < 1e-8                 # the mean mode is zero
    # variance of N(0, 7^1.5 (-Lap + 49)^-2.5): sum over k of 2 sigma^2 (4 pi^2 |k|^2 + 49)^-2.5, k != 0
    k = np.fft.fftfreq(64, 1 / 64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    spec = 2 * 7.0**3 * (4 * np.pi**2 * k2 + 49) ** -2.5
    spec[0, 0] = 0
    assert abs(w0.var() / spec.sum() - 1) < 0.1
    # drop the Nyquist modes, which a spectral derivative cannot carry, then check u, v
    spec_w = np.fft.fft2(w0[:2])
    spec_w[:, 32, :] = 0
    spec_w[:, :, 32] = 0
    w = np.fft.ifft2(spec_w).real
    u, v = ns.velocity_from_vorticity(w)
    kx = 2j * np.pi * np.fft.fftfreq(64, 1 / 64)[:, None]
    ky = 2j * np.pi * np.fft.fftfreq(64, 1 / 64)[None, :]
    U, V = np.fft.fft2(u), np.fft.fft2(v)
    scale = np.abs(w).max()
    assert np.abs(np.fft.ifft2(kx * U + ky * V)).max() < 1e-4 * scale             # divergence-free
    assert np.abs(np.fft.ifft2(kx * V - ky * U).real - w).max() < 1e-4 * scale     # curl = w


def test_generated_sets_are_seeded_and_cached(data_dir):
    a = ns.load_generated("test", seed=0, **SMALL)
    files = list((data_dir / "navier_stokes").glob("*.npz"))
    assert len(files) == 1 and a.frames.shape == (3, 7, 1, 32, 32) and a.fields == ["w"]
    b = ns.load_generated("test", seed=0, **SMALL)
    assert np.array_equal(a.frames, b.frames)
    c = ns.load_generated("train", seed=0, **SMALL)
    assert not np.allclose(a.frames[:, 0], c.frames[:, 0])  # splits use different seeds
    uv = ns.load_generated("test", seed=0, fields=["u", "v"], **SMALL)
    assert uv.fields == ["u", "v"] and uv.frames.shape[2] == 2
    assert len(list((data_dir / "navier_stokes").glob("*.npz"))) == 2  # velocity derived, not stored


class Persistence(torch.nn.Module):
    """Predicts that nothing changes: its errors are known in closed form. Any grid."""
    time_history = 1
    fields = ["w"]
    stats_from_data = False
    native_grid = None

    def check_grid(self, n, source):
        pass

    def step(self, history):
        return history[:, -1]

    def example_input(self, batch=2, resolution=None):
        return (torch.zeros(batch, 1, 1, resolution or 8, resolution or 8),)

    def loss(self, pred, target):
        return (pred - target).abs().mean(), {}

    def fit_field_stats(self, frames):
        pass


def tiny_sinenet(fields=("w",), time_history=1, resolution=None):
    from zoo.models.sinenet import sinenet
    return sinenet(variant=None, waves=1, mult=1.5, hidden=4, fields=list(fields), time_history=time_history,
                   resolution=resolution)


def test_models_fulfil_the_rollout_protocol():
    from zoo.models.drift_net import drift_net
    task = get_task("pde-rollout")
    assert isinstance(tiny_sinenet(), task.model_protocol) and isinstance(Persistence(), task.model_protocol)
    assert isinstance(drift_net(image_size=16, embed_dim=8, depths=[1, 1, 1, 1], patch_size=2), task.model_protocol)
    assert "rollout_rel_l2" in task.metric_definitions and task.datasets["navier-stokes"]


def test_metrics_follow_the_papers_definitions(data_dir):
    task = get_task("pde-rollout")
    ds = task.load_dataset("navier-stokes", "test", None, Persistence(), dict(SMALL))
    assert len(ds) == 3 * 6 and ds.start == 1
    m = task.evaluate(Persistence(), ds, {"steps": 4})
    fr = ds.frames.numpy()[:, :, 0]
    one = [np.linalg.norm(fr[n, t - 1] - fr[n, t]) / np.linalg.norm(fr[n, t]) for n in range(3) for t in range(1, 7)]
    assert m["one_step_rel_l2"] == pytest.approx(np.mean(one), rel=1e-5)
    l1 = [np.abs(fr[n, t - 1] - fr[n, t]).sum() / np.abs(fr[n, t]).sum() for n in range(3) for t in range(1, 7)]
    assert m["one_step_rel_l1"] == pytest.approx(np.mean(l1), rel=1e-5)
    # rollout of persistence: every step repeats frame 0
    steps = [np.mean([np.linalg.norm(fr[n, 0] - fr[n, k]) / np.linalg.norm(fr[n, k]) for n in range(3)])
             for k in range(1, 5)]
    assert m["rollout_steps"] == 4 and m["rel_l2_step04"] == pytest.approx(steps[-1], rel=1e-5)
    assert m["rollout_rel_l2"] == pytest.approx(np.mean(steps), rel=1e-5)
    assert m["final_rel_l2"] == pytest.approx(steps[-1], rel=1e-5)


def test_models_roll_out_and_train(data_dir):
    from zoo.models.drift_net import drift_net
    from zoo.models.sinenet import sinenet

    task = get_task("pde-rollout")
    models = [
        ({"image_size": 32, "fields": ["w"], "embed_dim": 8, "depths": [1, 1, 1, 1], "gate_hidden": 16}, drift_net),
        ({"variant": None, "waves": 1, "mult": 1.5, "hidden": 8, "fields": ["w"], "time_history": 3,
          "padding": "circular", "resolution": 32}, sinenet),
    ]
    for cfg, build in models:
        model = build(**cfg)
        train = task.load_dataset("navier-stokes", "train", None, model, dict(SMALL))
        task.prepare(model, train, {})
        assert float(model.field_std.flatten()[0]) == pytest.approx(float(train.frames.std()), rel=1e-3)
        batch = task.collate([train[i] for i in range(4)])
        loss, logs = task.loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss)
        test = task.load_dataset("navier-stokes", "test", None, model, dict(SMALL))
        metrics = task.evaluate(model, test, {})
        assert metrics["start_frame"] == model.time_history
        assert metrics["rollout_steps"] == 7 - model.time_history
        assert all(np.isfinite(v) for v in metrics.values())
        (x, *rest) = task.example_input(model, {"batch_size": 2})
        assert x.shape[0] == 2


def test_predict_writes_the_rollout_animation(data_dir):
    from PIL import Image

    task = get_task("pde-rollout")
    ds = task.load_dataset("navier-stokes", "test", None, Persistence(), dict(SMALL))
    out = task.predict(Persistence(), None, ds, data_dir / "rollout.gif", {"steps": 5, "index": 1})
    assert out["steps"] == 5 and len(out["rel_l2_per_step"]) == 5
    with Image.open(data_dir / "rollout.gif") as gif:
        assert gif.n_frames == 5
    with pytest.raises(DataError, match="out of range"):
        task.predict(Persistence(), None, ds, None, {"index": 9})


def test_bad_input_is_one_clear_line(data_dir):
    task = get_task("pde-rollout")
    with pytest.raises(DataError, match="trained at 64x64"):
        task.load_dataset("navier-stokes", "test", None, tiny_sinenet(time_history=4, resolution=64), dict(SMALL))
    with pytest.raises(DataError, match="needs \\['smoke', 'u', 'v'\\]"):
        task.load_dataset("navier-stokes", "test", None, tiny_sinenet(["smoke", "u", "v"]), dict(SMALL))
    with pytest.raises(DataError, match="needs 8 of history"):
        task.load_dataset("navier-stokes", "test", None, tiny_sinenet(time_history=8), dict(SMALL))
    ds = task.load_dataset("navier-stokes", "test", None, Persistence(), dict(SMALL))
    with pytest.raises(DataError, match="need 21 frames"):
        task.evaluate(Persistence(), ds, {"steps": 20})
    frames = ds.frames.clone()
    frames[1, 2, 0, 3, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        ns.check_frames(ns.Trajectories(frames.numpy(), ["w"], "test set"))
    with pytest.raises(DataError, match="multiple of 16"):
        task.load_dataset("navier-stokes", "test", None, tiny_sinenet(), {**SMALL, "resolution": 24})
    from zoo.models.drift_net import drift_net
    with pytest.raises(DataError, match="spectral resampling needs an even size"):
        task.load_dataset("navier-stokes", "test", None,
                          drift_net(image_size=16, fields=["w"], embed_dim=8, depths=[1, 1, 1, 1], patch_size=2),
                          {**SMALL, "resolution": 25})
    assert isinstance(ds, RolloutDataset)


@pytest.mark.slow
def test_finetune_eval_predict_end_to_end(data_dir):
    import zoo

    out = data_dir / "run"
    summary = zoo.finetune("drift-net", dataset="navier-stokes", out=out, steps=3, batch_size=4, progress=False,
                           **SMALL)
    assert (out / "model.safetensors").is_file() and "rollout_rel_l2" in summary["metrics"]
    res = zoo.evaluate(str(out), dataset="navier-stokes", **SMALL)
    assert res["metrics"]["rollout_rel_l2"] == pytest.approx(summary["metrics"]["rollout_rel_l2"], rel=1e-4)
