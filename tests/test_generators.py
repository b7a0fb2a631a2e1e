"""The vectorised antiderivative generator against the straightforward one it replaced.

The generated test split defines the registry metrics (and data_sha256) of deeponet.antiderivative,
so the fast generator must draw the same random stream and give the same float32 numbers."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import zoo.progress
from zoo.data import antiderivative
from zoo.data.grf import rbf_cholesky_1d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference(n, seed, chunk, sensors=100, length_scale=0.2, grid=1000):
    """The previous generator: per chunk, the fields on the 1000-point grid, one cubic spline per
    field, its values at the sensors and its antiderivative's polynomial at each query point."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, 1.0, grid)
    chol = rbf_cholesky_1d(length_scale, grid)
    u_out, y_out, s_out = [], [], []
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        u = (chol @ rng.standard_normal((grid, k))).T
        spline = CubicSpline(xs, u, axis=1)
        anti = spline.antiderivative()
        y = rng.uniform(0.0, 1.0, k)
        idx = np.clip(np.searchsorted(xs, y, side="right") - 1, 0, grid - 2)
        coef = anti.c[:, idx, np.arange(k)]
        s = sum(coef[j] * (y - xs[idx]) ** (coef.shape[0] - 1 - j) for j in range(coef.shape[0]))
        u_out.append(spline(np.linspace(0.0, 1.0, sensors)).astype(np.float32))
        y_out.append(y.astype(np.float32))
        s_out.append(s.astype(np.float32))
    return np.concatenate(u_out), np.concatenate(y_out)[:, None], np.concatenate(s_out)[:, None]


@pytest.mark.parametrize("n,seed,chunk", [(37, 1, 10), (64, 0, 5000)])
def test_vectorised_generator_equals_the_per_sample_splines(n, seed, chunk):
    d = antiderivative.generate(n, seed, chunk=chunk, show_progress=False)
    u, y, s = _reference(n, seed, chunk)
    assert d["u"].shape == (n, 100) and d["y"].shape == (n, 1) and d["s"].shape == (n, 1)
    assert np.array_equal(d["y"], y)
    assert np.array_equal(d["u"], u), np.abs(d["u"] - u).max()
    assert np.array_equal(d["s"], s), np.abs(d["s"] - s).max()


def test_antiderivative_values_are_the_integral_of_the_input():
    d = antiderivative.generate(6, seed=5, show_progress=False)
    from scipy.interpolate import CubicSpline
    for i in range(6):
        y = float(d["y"][i, 0])
        grid = np.linspace(0.0, y, 4001)
        fine = CubicSpline(np.linspace(0, 1, 100), d["u"][i])(grid)
        assert abs(np.trapezoid(fine, grid) - d["s"][i, 0]) < 5e-3


def _digest(d):
    return hashlib.sha256(b"".join(d[k].tobytes() for k in ("u", "y", "s"))).hexdigest()


def test_generated_data_does_not_depend_on_the_blas_thread_count():
    # the RBF kernel matrix is singular to working precision: a multi-threaded Cholesky gives other
    # trailing columns, hence other fields, and a cold cache would no longer match the registry's data_sha256
    code = ("from zoo.data import antiderivative as a; import hashlib; d = a.generate(20, 7, show_progress=False);"
            "print(hashlib.sha256(b''.join(d[k].tobytes() for k in ('u', 'y', 's'))).hexdigest())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _digest(antiderivative.generate(20, 7, show_progress=False))


def test_generation_shows_progress_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(zoo.progress, "PROGRESS_EVERY_S", 0.0)
    antiderivative.generate(30, seed=2, chunk=10)
    err = capsys.readouterr().err
    assert "generating 30 antiderivative triplets: 1/3" in err and "2/3" in err
    antiderivative.generate(30, seed=2, chunk=10, show_progress=False)
    assert capsys.readouterr().err == ""


def test_load_caches_the_split_under_zoo_data(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    d = antiderivative.load("train", seed=3, size=12)
    files = list((tmp_path / "antiderivative").glob("train-*.npz"))
    assert len(files) == 1 and d["u"].shape == (12, 100)
    again = antiderivative.load("train", seed=3, size=12)
    assert np.array_equal(again["s"], d["s"])


def test_the_data_cache_follows_zoo_cache_when_zoo_data_is_unset(monkeypatch, tmp_path):
    from zoo.data import cache_dir
    monkeypatch.delenv("ZOO_DATA", raising=False)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
