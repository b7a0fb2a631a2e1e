"""The DeepONet paper's antiderivative operator: ds/dx = u(x), s(0) = 0 on [0, 1].

Input functions are drawn from a Gaussian random field with an RBF kernel (length scale 0.2)
sampled on N = 1000 points by Cholesky, evaluated at m = 100 uniform sensors by cubic
interpolation, as in the official generator. Each function gives one (x, s(x)) triplet at a
uniform random x (the paper's "unaligned" data: 10,000 train and 100,000 test triplets).

The official code integrates the ODE with RK45; we integrate the same cubic interpolant exactly
(its spline antiderivative), which is the ODE's solution for that input without solver error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data import atomic_save_npz, cache_dir, params_key
from zoo.data.grf import rbf_grf_1d

TRAIN_SIZE = 10_000
TEST_SIZE = 100_000


def generate(n: int, seed: int, sensors: int = 100, length_scale: float = 0.2, grid: int = 1000,
             chunk: int = 5000) -> dict[str, np.ndarray]:
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(seed)
    xs = np.linspace(0.0, 1.0, grid)
    sensor_x = np.linspace(0.0, 1.0, sensors)
    u_out = np.empty((n, sensors), np.float32)
    y_out = np.empty((n, 1), np.float32)
    s_out = np.empty((n, 1), np.float32)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        u = rbf_grf_1d(k, rng, length_scale, grid)
        spline = CubicSpline(xs, u, axis=1)
        anti = spline.antiderivative()
        y = rng.uniform(0.0, 1.0, k)
        u_out[start:start + k] = spline(sensor_x).astype(np.float32)
        y_out[start:start + k, 0] = y
        # each function's antiderivative at its own point: evaluate the piecewise polynomial directly
        idx = np.clip(np.searchsorted(xs, y, side="right") - 1, 0, grid - 2)
        dx = y - xs[idx]
        coef = anti.c[:, idx, np.arange(k)]  # (order, k)
        order = coef.shape[0]
        s_out[start:start + k, 0] = sum(coef[j] * dx ** (order - 1 - j) for j in range(order))
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
