"""Readers of the published time-dependent PDE formats: each test writes a small file in the real
layout (PDEArena, PDEBench CFD / incompressible NS, SineNet's CFD re-pack, Poseidon NetCDF-4) and
reads it back through the same path `zoo eval --data` uses."""

import h5py
import numpy as np
import pytest

from zoo.data import navier_stokes as ns
from zoo.errors import DataError
from zoo.tasks import get_task

N, T, S = 3, 6, 16
rng = np.random.default_rng(0)


def fields(*names):
    return {n: rng.standard_normal((N, T, S, S)).astype(np.float32) for n in names}


def write_pdearena(path):
    data = {}
    with h5py.File(path, "w") as f:
        for split in ("train", "valid", "test"):
            g = f.create_group(split)
            d = fields("u", "vx", "vy")
            for k, v in d.items():
                g.create_dataset(k, data=v)
            g.create_dataset("buo_y", data=np.full(N, 0.5, np.float32))
            g.create_dataset("t", data=np.tile(np.linspace(18, 102, T), (N, 1)))
            g.create_dataset("x", data=np.tile(np.linspace(0, 32, S), (N, 1)))
            data[split] = d
    return data


def test_pdearena_navier_stokes(tmp_path):
    path = tmp_path / "NavierStokes2D_test_1.h5"
    data = write_pdearena(path)
    traj = ns.read_file(path, split="test")
    assert traj.fields == ["smoke", "u", "v"] and traj.frames.shape == (N, T, 3, S, S)
    assert np.array_equal(traj.frames[:, :, 0], data["test"]["u"])
    assert np.array_equal(traj.frames[:, :, 2], data["test"]["vy"])
    val = ns.read_file(path, split="val", fields=["u", "v"])
    assert np.array_equal(val.frames[:, :, 0], data["valid"]["vx"])
    assert ns.read_file(path, split="test", limit=2).frames.shape[0] == 2


def test_pdebench_cfd_and_incompressible(tmp_path):
    cfd = tmp_path / "2D_CFD_Rand_M0.1_Eta1e-08_Zeta1e-08_periodic_128_Train.hdf5"
    d = fields("density", "pressure", "Vx", "Vy")
    with h5py.File(cfd, "w") as f:
        for k, v in d.items():
            f.create_dataset(k, data=v)
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, T + 1))
        f.create_dataset("x-coordinate", data=np.linspace(0, 1, S))
        f.create_dataset("y-coordinate", data=np.linspace(0, 1, S))
    traj = ns.read_file(cfd, split="all")
    assert traj.fields == ["rho", "p", "u", "v"]
    assert np.array_equal(traj.frames[:, :, 1], d["pressure"]) and np.array_equal(traj.frames[:, :, 3], d["Vy"])

    inc = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    vel = rng.standard_normal((N, T, S, S, 2)).astype(np.float32)
    part = rng.random((N, T, S, S, 1)).astype(np.float32)
    with h5py.File(inc, "w") as f:
        f.create_dataset("velocity", data=vel)
        f.create_dataset("particles", data=part)
        f.create_dataset("force", data=rng.standard_normal((N, S, S, 2)).astype(np.float32))
        f.create_dataset("t", data=np.tile(np.linspace(0, 5, T), (N, 1)))
    traj = ns.read_file(inc, split="all", fields=["u", "v"])
    assert np.array_equal(traj.frames[:, :, 0], vel[..., 0]) and np.array_equal(traj.frames[:, :, 1], vel[..., 1])
    assert ns.read_file(inc, split="all").fields == ["u", "v", "smoke"]


def test_sinenet_cfd_repack(tmp_path):
    path = tmp_path / "cfd_test.h5"
    with h5py.File(path, "w") as f:
        for seed in ("seed_0", "seed_1"):
            g = f.create_group("test").create_group(seed) if "test" not in f else f["test"].create_group(seed)
            for k in ("D", "P", "Vx", "Vy"):
                g.create_dataset(k, data=rng.standard_normal((N, T, S, S, 1)).astype(np.float32))
    traj = ns.read_file(path, split="test")
    assert traj.fields == ["rho", "p", "u", "v"] and traj.frames.shape == (2 * N, T, 4, S, S)
    with h5py.File(path) as f:
        assert np.array_equal(traj.frames[N:, :, 2], f["test/seed_1/Vx"][..., 0])


def write_poseidon(path, n=N, channels=2, var="velocity"):
    """A NetCDF-4 file as netCDF4/xarray write it: HDF5 datasets with dimension scales."""
    data = rng.standard_normal((n, T, channels, S, S)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["_NCProperties"] = np.bytes_("version=2,netcdf=4.9.2,hdf5=1.14.3")
        dims = []
        for name, size in (("member", n), ("time", T), ("channel", channels), ("x", S), ("y", S)):
            d = f.create_dataset(name, data=np.arange(size, dtype=np.float32))
            d.make_scale(name)
            dims.append(d)
        v = f.create_dataset(var, data=data)
        for i, d in enumerate(dims):
            v.dims[i].attach_scale(d)
    return data


def test_poseidon_netcdf(tmp_path):
    path = tmp_path / "NS-PwC.nc"
    pwc = write_poseidon(path)
    traj = ns.read_file(path, split="test")
    assert traj.fields == ["u", "v"] and np.array_equal(traj.frames, pwc)  # small file: all trajectories
    kf = tmp_path / "FNS-KF.nc"
    data = write_poseidon(kf, var="solution")
    assert np.array_equal(ns.read_file(kf, split="all").frames, data)
    big = tmp_path / "NS-SL.nc"
    write_poseidon(big, n=365)
    test = ns.read_file(big, split="test")
    assert test.frames.shape[0] == 240 and test.info["split"] == "test"  # Poseidon's last 240
    assert ns.read_file(big, split="val").frames.shape[0] == 120
    t = ns.read_file(path, split="all", transpose=True)
    assert np.array_equal(t.frames, np.swapaxes(pwc, -1, -2))  # NS-SL is stored transposed


def test_files_through_the_task_and_bad_files(tmp_path):
    task = get_task("pde-rollout")
    path = tmp_path / "NS-PwC.nc"
    write_poseidon(path)
    from zoo.models.drift_net import drift_net
    from zoo.models.sinenet import sinenet

    def sine(fields, time_history, resolution):
        return sinenet(variant=None, waves=1, mult=1.5, hidden=4, fields=fields, time_history=time_history,
                       resolution=resolution)

    model = drift_net(image_size=16, fields=["u", "v"], embed_dim=8, depths=[1, 1, 1, 1], patch_size=2)
    ds = task.load_dataset(None, "test", str(path), model, {})
    assert ds.frames.shape == (N, T, 2, S, S) and len(ds) == N * (T - 1)
    # a file given as predict's INPUT
    out = task.predict(model, str(path), None, tmp_path / "rollout.gif", {"steps": 3, "field": "v"})
    assert out["steps"] == 3 and out["field"] == "v" and (tmp_path / "rollout.gif").stat().st_size > 0
    # wrong fields for the model
    with pytest.raises(DataError, match="has fields \\['u', 'v'\\]; the model needs \\['smoke', 'u', 'v'\\]"):
        task.load_dataset(None, "test", str(path), sine(["smoke", "u", "v"], 4, None), {})
    # wrong resolution for a checkpoint made at another grid
    with pytest.raises(DataError, match="trained at 128x128"):
        task.load_dataset(None, "test", str(path), sine(["u", "v"], 1, 128), {})
    # too few time steps for the history
    with pytest.raises(DataError, match="6 time step\\(s\\) per trajectory; the model needs 6 of history"):
        task.load_dataset(None, "test", str(path), sine(["u", "v"], 6, 16), {})
    # NaNs
    nan = tmp_path / "nan.nc"
    with h5py.File(nan, "w") as f:
        bad = rng.standard_normal((N, T, 2, S, S)).astype(np.float32)
        bad[2, 4, 1, 0, 0] = np.nan
        f.create_dataset("velocity", data=bad)
    with pytest.raises(DataError, match="NaN/inf values \\(first in trajectory 2, frame 4\\)"):
        ns.read_file(nan, "all")
    # not HDF5, unknown layout, missing file, non-square grid
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(DataError, match="not an HDF5/NetCDF-4 file"):
        ns.read_file(txt)
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f.create_dataset("pressure_only", data=np.zeros((2, 3)))
    with pytest.raises(DataError, match="unknown layout"):
        ns.read_file(odd)
    with pytest.raises(DataError, match="not found"):
        ns.read_file(tmp_path / "missing.nc")
    rect = tmp_path / "rect.nc"
    with h5py.File(rect, "w") as f:
        f.create_dataset("velocity", data=np.zeros((N, T, 2, S, 2 * S), np.float32))
    with pytest.raises(DataError, match="square periodic grid"):
        ns.read_file(rect, "all")


def test_cli_bad_data_is_one_line(tmp_path):
    from tests.conftest import run_zoo
    from zoo.checkpoint import save_checkpoint
    from zoo.models.drift_net import drift_net

    cfg = {"image_size": 16, "fields": ["u", "v"], "embed_dim": 8, "depths": [1, 1, 1, 1], "patch_size": 2}
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, drift_net(**cfg), {"model": "drift-net", "config": cfg, "task": "pde-rollout"}, card=False)
    bad = tmp_path / "nan.nc"
    with h5py.File(bad, "w") as f:
        arr = np.zeros((2, 4, 2, 16, 16), np.float32)
        arr[0, 1, 0, 0, 0] = np.nan
        f.create_dataset("velocity", data=arr)
    run = run_zoo("eval", str(folder), "--data", str(bad))
    lines = [ln for ln in (run.stdout + run.stderr).strip().splitlines() if ln.strip()]
    assert run.returncode != 0 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "NaN" in lines[0]
    few = tmp_path / "short.nc"
    with h5py.File(few, "w") as f:
        f.create_dataset("velocity", data=np.zeros((2, 1, 2, 16, 16), np.float32))
    run = run_zoo("eval", str(folder), "--data", str(few))
    assert run.returncode != 0 and "1 time step(s) per trajectory" in run.stdout + run.stderr
