"""1-D Fisher(-KPP) equation with several reaction forms: the MT-DeepONet benchmark (generator).

u_t = D u_xx + a R(u), x in [0, 1], t in [0, 1], zero-flux (Neumann) ends, where the reaction R is
a polynomial in u whose 4 coefficients (of u, u^2, u^3, u^4) the branch net reads, as in the
official MT-DeepONet code (Fisher/dataset.py):
- form 1 (1000 samples): a (u - u^2)              -> a * [1, -1, 0, 0]
- form 2 (1000 samples): a (u - u^3)              -> a * [1, 0, -1, 0]
- form 4 (2000 samples): a e^-b (u + (b-1) u^2 + b(b/2-1) u^3 - b^2/2 u^4)
                                                  -> a * e^-b [1, b-1, b(b/2-1), -b^2/2]
with a in linspace(0.1, 1.0, 10) and b in linspace(0.5, 2.0, 10) (the official file names'
ranges); the solution is kept on nt = 20 x nx = 64 points of [0, 1]^2 (t and x both from
linspace(0, 1, .), so frame 0 is the initial condition). 80/20 train/test split of the 4000
samples (a seeded permutation; the official code uses sklearn with random_state 42).

Branch input (68 values): the 4 coefficients, then the 64 initial values standardised point by
point with the training split's mean and std (official preprocessing). Trunk input: (t, x).

Ours (the paper's data files are on a Google Drive, and its text was not reachable here): the
diffusion coefficient D = 0.01, the zero-flux boundaries, and the initial conditions
u0 = logistic(2 g) with g a Gaussian random field (RBF kernel, length scale 0.2, DeepONet's
default) so that 0 < u0 < 1. Solved by second-order finite differences on the 64 points and
classical RK4 with 50 steps between stored frames (dt = 1/950; diffusion number 0.04).
Cached under `zoo.data.cache_dir()/fisher/`, keyed by all parameters and the seed.
"""

from __future__ import annotations

import io
import json

import numpy as np

from zoo.data import atomic_write_bytes, cache_dir, params_key
from zoo.errors import DataError

NX, NT = 64, 20
DEFAULTS = {"diffusion": 0.01, "length_scale": 0.2, "a_values": 10, "b_values": 10, "per_form": [1000, 1000, 2000],
            "substeps": 50, "test_fraction": 0.2}


def reaction_coefficients(form: int, a: float, b: float | None = None) -> np.ndarray:
    """The 4 coefficients of (u, u^2, u^3, u^4) in a R(u) for one of the paper's forms."""
    if form == 1:
        return a * np.array([1.0, -1.0, 0.0, 0.0])
    if form == 2:
        return a * np.array([1.0, 0.0, -1.0, 0.0])
    if form == 4:
        e = np.exp(-b)
        return a * e * np.array([1.0, b - 1.0, b * (0.5 * b - 1.0), -0.5 * b**2])
    raise DataError(f"unknown Fisher reaction form {form} (1, 2 or 4)")


def initial_conditions(n: int, rng: np.random.Generator, length_scale: float = 0.2) -> np.ndarray:
    """n initial profiles on the 64-point grid, each in (0, 1)."""
    x = np.linspace(0.0, 1.0, NX)
    cov = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length_scale**2)
    chol = np.linalg.cholesky(cov + 1e-10 * np.eye(NX))
    g = rng.standard_normal((n, NX)) @ chol.T
    return 1.0 / (1.0 + np.exp(-2.0 * g))


def solve(u0: np.ndarray, coeffs: np.ndarray, diffusion: float = 0.01, substeps: int = 50) -> np.ndarray:
    """u0 (n, 64), coeffs (n, 4) -> u (n, 20, 64) on t = linspace(0, 1, 20)."""
    dx = 1.0 / (NX - 1)
    dt = 1.0 / ((NT - 1) * substeps)

    def rhs(u):
        ue = np.concatenate([u[:, 1:2], u, u[:, -2:-1]], axis=1)  # zero flux: mirror the neighbours
        lap = (ue[:, 2:] - 2 * u + ue[:, :-2]) / dx**2
        powers = np.stack([u, u**2, u**3, u**4], axis=-1)
        return diffusion * lap + (powers * coeffs[:, None, :]).sum(-1)

    u = u0.astype(np.float64).copy()
    out = [u.copy()]
    for _ in range(NT - 1):
        for _ in range(substeps):
            k1 = rhs(u)
            k2 = rhs(u + 0.5 * dt * k1)
            k3 = rhs(u + 0.5 * dt * k2)
            k4 = rhs(u + dt * k3)
            u = u + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.copy())
    return np.stack(out, axis=1)


def generate(seed: int = 0, **params) -> dict:
    """All samples of the three forms: coefficients (N, 4), ic (N, 64), u (N, 20, 64), form (N,)."""
    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(seed)
    a_vals = np.linspace(0.1, 1.0, int(p["a_values"]))
    b_vals = np.linspace(0.5, 2.0, int(p["b_values"]))
    coeffs, forms = [], []
    n1, n2, n4 = (int(v) for v in p["per_form"])
    for form, n in ((1, n1), (2, n2)):
        for k in range(n):
            coeffs.append(reaction_coefficients(form, a_vals[k % len(a_vals)]))
            forms.append(form)
    grid = [(a, b) for a in a_vals for b in b_vals]
    for k in range(n4):
        a, b = grid[k % len(grid)]
        coeffs.append(reaction_coefficients(4, a, b))
        forms.append(4)
    coeffs = np.asarray(coeffs)
    ic = initial_conditions(len(coeffs), rng, float(p["length_scale"]))
    u = solve(ic, coeffs, float(p["diffusion"]), int(p["substeps"]))
    if not np.isfinite(u).all():
        raise DataError("the Fisher solver diverged; lower the time step (more substeps)")
    return {"coefficients": coeffs.astype(np.float32), "ic": ic.astype(np.float32), "u": u.astype(np.float32),
            "form": np.asarray(forms, dtype=np.int8)}


def points() -> np.ndarray:
    """(t, x) of the 20 x 64 output grid, t-major: the trunk's inputs."""
    t = np.linspace(0.0, 1.0, NT, dtype=np.float32)
    x = np.linspace(0.0, 1.0, NX, dtype=np.float32)
    tt, xx = np.meshgrid(t, x, indexing="ij")
    return np.stack([tt.ravel(), xx.ravel()], axis=1)


def load(split: str, seed: int = 0, size: int | None = None, **params) -> dict:
    """Branch inputs (N, 68), points (1280, 2), values (N, 1280) and the form of each sample."""
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split '{split}' for fisher (train, test)")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    key = params_key(kind="fisher", seed=int(seed), **p)
    path = cache_dir() / "fisher" / f"fisher-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            d = {k: z[k] for k in ("coefficients", "ic", "u", "form")}
    else:
        d = generate(seed, **p)
        buf = io.BytesIO()
        np.savez(buf, **d, params=json.dumps({"seed": seed, **p}))
        atomic_write_bytes(path, buf.getvalue())
    n = len(d["u"])
    perm = np.random.default_rng(42 + int(seed)).permutation(n)
    n_test = int(round(n * float(p["test_fraction"])))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    idx = train_idx if split == "train" else test_idx  # "val" is the held-out 20% as in the official code
    if size:
        idx = idx[: int(size)]
    ic_mean, ic_std = d["ic"][train_idx].mean(0), d["ic"][train_idx].std(0)
    ic = (d["ic"][idx] - ic_mean) / (ic_std + 1e-9)
    inputs = np.concatenate([d["coefficients"][idx], ic], axis=1).astype(np.float32)
    return {"inputs": inputs, "points": points(), "values": d["u"][idx].reshape(len(idx), -1),
            "form": d["form"][idx], "ic_mean": ic_mean, "ic_std": ic_std, "cache": str(path)}


__all__ = ["load", "generate", "solve", "points", "reaction_coefficients", "NX", "NT"]
