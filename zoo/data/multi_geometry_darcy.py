"""2-D Darcy flow on several geometries: the MT-DeepONet multi-task benchmark (generator + reader).

-div(K grad u) = f inside a geometry Omega drawn on a 100 x 100 grid of the unit square, u = 0 on
and outside its boundary. Each sample carries its binary mask (1 inside Omega), which MT-DeepONet
reads in its branch (channel 2) and multiplies into its prediction.

What follows the official code (Darcy/preprocessor.py): the grid (100 x 100), the geometries of the
source tasks (square, circle, equilateral triangle) and of the transfer target (square with a
cross-shaped hole), the branch input [standardised log K, mask] (log K standardised point by point
with the training split's statistics), the output u * 10, and "num_train per geometry" (the same
count drawn from each geometry).

Ours (the paper's .mat files are on a Google Drive and its text was not reachable here):
K = exp(g) with g a GRF of covariance (-Lap + 9 I)^-2 (the FNO Darcy field, sampled through the
DCT, not thresholded), f = 1, each geometry scaled by a random factor in [0.75, 0.95] and shifted
by up to 0.04 per sample (so the mask varies per sample), laptop sizes (300 train / 60 test per
geometry). Solver: 5-point finite differences with face coefficients averaging the two adjacent
nodes, one sparse solve per sample. Cached under `zoo.data.cache_dir()/multi_geometry_darcy/`.

Reader: the official `.mat` files (`k_train`, `u_train`, `shape_train`, `k_test`, `u_test`,
`shape_test`) through scipy (MATLAB v5) or h5py (v7.3, transposed on disk).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from zoo.data import atomic_write_bytes, cache_dir, params_key
from zoo.data.grf import dct_grf
from zoo.errors import DataError

GRID = 100
SOURCE_GEOMETRIES = ("square", "circle", "triangle")
TARGET_GEOMETRIES = ("square-cross",)
DEFAULTS = {"grid": GRID, "train_per_geometry": 300, "test_per_geometry": 60, "alpha": 2.0, "tau": 3.0,
            "source": 1.0}


def geometry_mask(kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """A binary (s, s) mask of one geometry, randomly scaled and shifted; x is the row axis."""
    x = np.linspace(0.0, 1.0, s)
    X, Y = np.meshgrid(x, x, indexing="ij")
    scale = rng.uniform(0.75, 0.95)
    cx, cy = 0.5 + rng.uniform(-0.04, 0.04, size=2)
    half = 0.5 * scale
    if kind == "square":
        m = (np.abs(X - cx) <= half) & (np.abs(Y - cy) <= half)
    elif kind == "circle":
        m = (X - cx) ** 2 + (Y - cy) ** 2 <= half**2
    elif kind == "triangle":
        # equilateral, pointing up in y, side 2*half, centred on its centroid
        side = 2 * half
        h = side * np.sqrt(3) / 2
        base_y = cy - h / 3
        v = (Y - base_y) / h  # 0 at the base, 1 at the apex
        m = (v >= 0) & (v <= 1) & (np.abs(X - cx) <= (1 - v) * side / 2)
    elif kind == "square-cross":
        outer = (np.abs(X - cx) <= half) & (np.abs(Y - cy) <= half)
        arm, width = 0.6 * half, 0.12 * half
        cross = ((np.abs(X - cx) <= arm) & (np.abs(Y - cy) <= width)) | \
                ((np.abs(Y - cy) <= arm) & (np.abs(X - cx) <= width))
        m = outer & ~cross
    else:
        raise DataError(f"unknown geometry '{kind}' ({', '.join(SOURCE_GEOMETRIES + TARGET_GEOMETRIES)})")
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False
    return m.astype(np.float32)


def log_permeability(n: int, s: int, rng: np.random.Generator, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    # scaled so that log K has a standard deviation near 0.8 (K spans about e^-2.5 .. e^2.5)
    return dct_grf(n, s, rng, alpha, tau) * 3 * s


def solve_masked(K: np.ndarray, mask: np.ndarray, f: float = 1.0) -> np.ndarray:
    """-div(K grad u) = f on the nodes where mask = 1, u = 0 elsewhere (h = 1/(s-1))."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    s = K.shape[0]
    h = 1.0 / (s - 1)
    inside = mask > 0.5
    idx = -np.ones((s, s), dtype=np.int64)
    idx[inside] = np.arange(int(inside.sum()))
    ii, jj = np.nonzero(inside)
    rows, cols, vals = [], [], []
    diag = np.zeros(len(ii))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ni, nj = ii + di, jj + dj
        face = 0.5 * (K[ii, jj] + K[ni, nj])
        diag += face
        nb = idx[ni, nj]
        keep = nb >= 0
        rows.append(idx[ii[keep], jj[keep]])
        cols.append(nb[keep])
        vals.append(-face[keep])
    rows.append(idx[ii, jj])
    cols.append(idx[ii, jj])
    vals.append(diag)
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(ii), len(ii)))
    u = np.zeros((s, s))
    u[inside] = spsolve(A, np.full(len(ii), f * h * h))
    return u


def generate(geometries, n_per_geometry: int, seed: int, grid: int = GRID, alpha: float = 2.0, tau: float = 3.0,
             source: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    ks, us, masks, geom = [], [], [], []
    for gi, kind in enumerate(geometries):
        logk = log_permeability(n_per_geometry, grid, rng, alpha, tau)
        for i in range(n_per_geometry):
            mask = geometry_mask(kind, grid, rng)
            K = np.exp(logk[i])
            ks.append(K)
            us.append(solve_masked(K, mask, source))
            masks.append(mask)
            geom.append(gi)
    return {"k": np.asarray(ks, np.float32), "u": np.asarray(us, np.float32), "mask": np.asarray(masks, np.float32),
            "geometry": np.asarray(geom, np.int8)}


def _cached(geometries, n: int, seed: int, p: dict) -> dict:
    key = params_key(kind="mg-darcy", geometries=list(geometries), n=n, seed=seed, **p)
    path = cache_dir() / "multi_geometry_darcy" / f"mgd-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in ("k", "u", "mask", "geometry")}
    d = generate(geometries, n, seed, int(p["grid"]), float(p["alpha"]), float(p["tau"]), float(p["source"]))
    buf = io.BytesIO()
    np.savez(buf, **d, params=json.dumps({"geometries": list(geometries), "n": n, "seed": seed, **p}))
    atomic_write_bytes(path, buf.getvalue())
    return d


def read_mat(path: str | Path) -> dict:
    """The official .mat layout -> {"train": {...}, "test": {...}} with k, u, mask (N, s, s)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    keys = ("k_train", "u_train", "shape_train", "k_test", "u_test", "shape_test")
    try:
        from scipy.io import loadmat
        raw = loadmat(str(path))
        arrays = {k: np.asarray(raw[k]) for k in keys if k in raw}
    except NotImplementedError:  # MATLAB v7.3 = HDF5; h5py reads MATLAB's column-major arrays transposed
        import h5py
        with h5py.File(path, "r") as f:
            arrays = {k: np.asarray(f[k]).T for k in keys if k in f}
    except ValueError as exc:
        raise DataError(f"{path.name}: not a MATLAB .mat file ({exc})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path.name}: missing {missing}; expected the MT-DeepONet Darcy keys {list(keys)}")
    out = {}
    for split in ("train", "test"):
        k, u, m = (arrays[f"{n}_{split}"].astype(np.float32) for n in ("k", "u", "shape"))
        s = int(round(np.sqrt(k[0].size)))
        out[split] = {"k": k.reshape(-1, s, s), "u": u.reshape(-1, s, s), "mask": m.reshape(-1, s, s)}
    return out


def load(split: str, seed: int = 0, size: int | None = None, geometries=None, data_path: str | None = None,
         **params) -> dict:
    """Branch inputs (N, 2, s, s) = [standardised log K, mask], points (s*s, 2) in [0, 1]^2 (row-major,
    x along rows), values u*10 (N, s*s), mask (N, s*s), geometry id per sample."""
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split '{split}' for multi-geometry-darcy (train, test)")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None and k in DEFAULTS}}
    geoms = tuple(geometries or SOURCE_GEOMETRIES)
    if data_path:
        both = read_mat(data_path)
        train, test = both["train"], both["test"]
        source = Path(data_path).name
    else:
        train = _cached(geoms, int(p["train_per_geometry"]), int(seed), p)
        test = _cached(geoms, int(p["test_per_geometry"]), int(seed) + 7919, p)
        source = f"generated multi-geometry darcy ({', '.join(geoms)})"
    for name, d in (("train", train), ("test", test)):
        if not (np.isfinite(d["k"]).all() and np.isfinite(d["u"]).all()):
            raise DataError(f"{source}: NaN/inf values in the {name} split")
        if (d["k"] <= 0).any():
            raise DataError(f"{source}: the permeability must be positive (its log is the branch input)")
    logk_train = np.log(train["k"])
    mean, std = logk_train.mean(0), logk_train.std(0) + 1e-9
    d = train if split == "train" else test
    n = len(d["k"]) if not size else min(int(size), len(d["k"]))
    s = d["k"].shape[-1]
    inputs = np.stack([(np.log(d["k"][:n]) - mean) / std, d["mask"][:n]], axis=1).astype(np.float32)
    x = np.linspace(0.0, 1.0, s, dtype=np.float32)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    return {"inputs": inputs, "points": np.stack([xx.ravel(), yy.ravel()], axis=1),
            "values": (d["u"][:n] * 10.0).reshape(n, -1), "mask": d["mask"][:n].reshape(n, -1),
            "geometry": d.get("geometry", np.zeros(n, np.int8))[:n], "source": source, "grid": s}


__all__ = ["load", "generate", "geometry_mask", "solve_masked", "read_mat", "SOURCE_GEOMETRIES", "TARGET_GEOMETRIES"]
