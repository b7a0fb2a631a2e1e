"""The DeepONet paper's antiderivative operator: ds/dx = u(x), s(0) = 0 on [0, 1].

Input functions are drawn from a Gaussian random field with an RBF kernel (length scale 0.2)
sampled on N = 1000 points by Cholesky, evaluated at m = 100 uniform sensors by cubic
interpolation, as in the official generator. Each function gives one (x, s(x)) triplet at a
uniform random x (the paper's "unaligned" data: 10,000 train and 100,000 test triplets).

The official code integrates the ODE with RK45; we integrate the same cubic interpolant exactly
(its spline antiderivative), which is the ODE's solution for that input without solver error.

Everything after the Gaussian draws z is linear in z: the field is chol @ z, and the not-a-knot
spline, its values at the sensors and its antiderivative are linear in the field's values. So the
spline is fitted once, to the columns of the Cholesky factor, and each sample is a few matrix
products with its own z instead of a 1000-point spline per sample (50 s -> a few seconds for the
100k test set). The random stream (per chunk: normals, then the query points) is the one the
per-sample spline generator drew, so the sets are the same up to float64 rounding.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zoo.data import atomic_save_npz, cache_dir, params_key
from zoo.data.grf import rbf_cholesky_1d
from zoo.progress import progress

TRAIN_SIZE = 10_000
TEST_SIZE = 100_000


def linear_maps(sensors: int = 100, length_scale: float = 0.2, grid: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(to_sensors (sensors, grid), anti (grid - 1, order, grid)): a sample's sensor values are
    to_sensors @ z, and on grid interval i its antiderivative is sum_j (anti[i, j] @ z) dx^(order-1-j)."""
    from scipy.interpolate import CubicSpline

    xs = np.linspace(0.0, 1.0, grid)
    spline = CubicSpline(xs, rbf_cholesky_1d(length_scale, grid), axis=0)  # one spline per column of chol
    anti = spline.antiderivative().c  # (order, interval, column)
    return spline(np.linspace(0.0, 1.0, sensors)), np.ascontiguousarray(anti.transpose(1, 0, 2))


def _triplets(z: np.ndarray, y: np.ndarray, maps, xs: np.ndarray):
    """Sensor values (k, sensors) and s(y) (k,) of one chunk of draws z (grid, k)."""
    to_sensors, anti = maps
    u = (to_sensors @ z).T
    idx = np.clip(np.searchsorted(xs, y, side="right") - 1, 0, len(xs) - 2)
    # samples grouped by interval: each group's polynomial coefficients are one small matrix product
    order = np.argsort(idx, kind="stable")
    idx, zs = idx[order], z.T[order]
    bounds = np.searchsorted(idx, np.arange(anti.shape[0] + 1))
    coef = np.empty((len(y), anti.shape[1]))
    for i in np.flatnonzero(np.diff(bounds)):
        coef[bounds[i]:bounds[i + 1]] = zs[bounds[i]:bounds[i + 1]] @ anti[i].T
    dx = y[order] - xs[idx]
    s = coef[:, 0]
    for j in range(1, coef.shape[1]):  # Horner in the offset from the interval's left knot
        s = s * dx + coef[:, j]
    out = np.empty(len(y))
    out[order] = s
    return u, out


def generate(n: int, seed: int, sensors: int = 100, length_scale: float = 0.2, grid: int = 1000,
             chunk: int = 5000, show_progress: bool = True) -> dict[str, np.ndarray]:
    """n triplets (u at the sensors, y, s(y)) from seed; `chunk` fixes the order of the random draws."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, 1.0, grid)
    maps = linear_maps(sensors, length_scale, grid)
    u_out = np.empty((n, sensors), np.float32)
    y_out = np.empty((n, 1), np.float32)
    s_out = np.empty((n, 1), np.float32)

    def finish(start, job):
        u, s = job.result()
        u_out[start:start + len(s)] = u
        s_out[start:start + len(s), 0] = s

    # the draws are one sequential stream; a second thread does the products of chunk i (BLAS and
    # numpy release the GIL) while this one draws chunk i + 1
    starts = range(0, n, chunk)
    pending = None
    with ThreadPoolExecutor(1) as pool:
        for start in progress(starts, len(starts), f"generating {n:,} antiderivative triplets", show_progress):
            k = min(chunk, n - start)
            z = rng.standard_normal((grid, k))
            y = rng.uniform(0.0, 1.0, k)
            y_out[start:start + k, 0] = y
            if pending is not None:
                finish(*pending)
            pending = (start, pool.submit(_triplets, z, y, maps, xs))
        if pending is not None:
            finish(*pending)
    return {"u": u_out, "y": y_out, "s": s_out}


def load(split: str, seed: int = 0, size: int | None = None) -> dict[str, np.ndarray]:
    """The cached split (generated once per parameters and seed)."""
    size = size or (TRAIN_SIZE if split == "train" else TEST_SIZE)
    split_seed = seed * 2 + (0 if split == "train" else 1)
    key = params_key(kind="antiderivative", n=size, seed=split_seed, sensors=100, l=0.2, grid=1000, v=1)
    path = Path(cache_dir()) / "antiderivative" / f"{split}-{key}.npz"
    if not path.is_file():
        atomic_save_npz(path, **generate(size, split_seed))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
