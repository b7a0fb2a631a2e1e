"""2-D Darcy flow, -div(a grad u) = 1 on the unit square, u = 0 on the boundary.

Readers of what users hold:
- the FNO `.mat` files (fields `coeff` and `sol`, (N, s, s); MATLAB v5 through scipy, v7.3/HDF5
  through h5py, whose arrays come transposed);
- neuraloperator's `.pt` tensor files (a dict with `x`, a 0/1 coefficient mask mapped to 12/3, and
  `y`), read with weights_only=True; the
  small real set shipped inside the neuraloperator 0.3.0 wheel (16x16 and 32x32) is extracted
  from the wheel itself at prepare time, so that package never becomes a dependency.

Generator (the FNO recipe): a = GRF N(0, (-Lap + 9 I)^-2) thresholded to 12 (>= 0) and 3 (< 0),
f = 1, zero boundary, 5-point finite differences whose face coefficients average the two
adjacent nodes, one sparse solve per sample. The FNO files are made at 421x421 and subsampled
every 15th point to 29x29 for DeepONet; we generate at 85x85 (the paper's other grid) and take
every 3rd point, the same 29x29 grid, because a 421^2 solve per sample is too slow for a laptop.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from zoo.data import atomic_save_npz, atomic_write_bytes, cache_dir, fetch_package_file, params_key
from zoo.data.grf import dct_grf
from zoo.errors import DataError

MODEL_GRID = 29

NEURALOPERATOR_WHEEL = "neuraloperator-0.3.0-py3-none-any.whl"
NEURALOPERATOR_SHA256 = "483b358f2d9823c2ccb5dd0c1af8d21f879fd103806ad42959ebb975260e6ec4"
REAL_FILES = {"16": "neuralop/datasets/data/darcy_test_16.pt",
              "16-train": "neuralop/datasets/data/darcy_train_16.pt",
              "32": "neuralop/datasets/data/darcy_test_32.pt"}


# ---- generator -------------------------------------------------------------------------------

def grf_coefficient(n: int, s: int, rng: np.random.Generator, alpha: float = 2.0, tau: float = 3.0,
                    high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """Piecewise-constant coefficients from a thresholded GRF sampled through the DCT."""
    return np.where(dct_grf(n, s, rng, alpha, tau) >= 0, high, low).astype(np.float64)


def solve_darcy(a: np.ndarray, f: float = 1.0) -> np.ndarray:
    """Solve on the vertex grid of `a` (s x s, boundary included); returns u with u = 0 on the boundary."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    s = a.shape[0]
    h = 1.0 / (s - 1)
    n = s - 2
    idx = np.arange(n * n).reshape(n, n)
    ai = a[1:-1, 1:-1]
    # face coefficients: mean of the two nodes the face joins
    east = 0.5 * (ai + a[1:-1, 2:])
    west = 0.5 * (ai + a[1:-1, :-2])
    north = 0.5 * (ai + a[2:, 1:-1])
    south = 0.5 * (ai + a[:-2, 1:-1])
    diag = (east + west + north + south).ravel()
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [diag]
    for coeff, di, dj in ((east, 0, 1), (west, 0, -1), (north, 1, 0), (south, -1, 0)):
        ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ti, tj = ii + di, jj + dj
        inside = (ti >= 0) & (ti < n) & (tj >= 0) & (tj < n)
        rows.append(idx[inside])
        cols.append(idx[ti[inside], tj[inside]])
        vals.append(-coeff[inside])
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))
    u = np.zeros_like(a)
    u[1:-1, 1:-1] = spsolve(A, np.full(n * n, f * h * h)).reshape(n, n)
    return u


def generate(n: int, seed: int, resolution: int = 85, subsample: int = 3,
             show_progress: bool = True) -> dict[str, np.ndarray]:
    from zoo.progress import progress

    rng = np.random.default_rng(seed)
    coeff = grf_coefficient(n, resolution, rng)
    sol = np.stack([solve_darcy(c) for c in progress(coeff, n, f"solving {n:,} Darcy problems", show_progress)])
    return {"coeff": coeff[:, ::subsample, ::subsample].astype(np.float32),
            "sol": sol[:, ::subsample, ::subsample].astype(np.float32)}


def load_generated(split: str, seed: int = 0, size: int | None = None, resolution: int = 85,
                   subsample: int = 3) -> dict[str, np.ndarray]:
    size = size or (1000 if split == "train" else 200)
    split_seed = seed * 2 + (0 if split == "train" else 1)
    key = params_key(kind="darcy", n=size, seed=split_seed, res=resolution, sub=subsample, v=1)
    path = cache_dir() / "darcy" / f"{split}-{key}.npz"
    if not path.is_file():
        atomic_save_npz(path, **generate(size, split_seed, resolution, subsample))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# ---- readers ---------------------------------------------------------------------------------

def _as_real_array(value, name: str, source: str) -> np.ndarray:
    """A field as float32, refusing what has no real numbers in it (strings, MATLAB cells and
    structs, complex values that a cast would silently halve)."""
    try:
        import torch
        if isinstance(value, torch.Tensor):
            if value.is_complex():
                raise DataError(f"{source}: '{name}' is complex; a Darcy field is real")
            value = value.detach().cpu().float().numpy()
    except ImportError:
        pass
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise DataError(f"{source}: '{name}' is complex; a Darcy field is real")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{source}: '{name}' holds {arr.dtype.name} data (text, a cell or a struct), "
                        f"not numbers")
    return arr.astype(np.float32)


def _check_fields(coeff, sol, source: str) -> dict[str, np.ndarray]:
    coeff, sol = _as_real_array(coeff, "coeff", source), _as_real_array(sol, "sol", source)
    if coeff.ndim == 4 and coeff.shape[1] == 1:
        coeff = coeff[:, 0]
    if sol.ndim == 4 and sol.shape[1] == 1:
        sol = sol[:, 0]
    if coeff.ndim != 3 or coeff.shape[1] != coeff.shape[2]:
        raise DataError(f"{source}: expected coefficients of shape (N, s, s), got {coeff.shape}")
    if sol.shape != coeff.shape:
        raise DataError(f"{source}: solution shape {sol.shape} does not match coefficient shape {coeff.shape}")
    if coeff.shape[0] == 0:
        raise DataError(f"{source}: holds 0 samples")
    if coeff.shape[1] < 5:
        raise DataError(f"{source}: grid {coeff.shape[1]}x{coeff.shape[2]} is too coarse")
    if not (np.isfinite(coeff).all() and np.isfinite(sol).all()):
        raise DataError(f"{source}: contains NaN or infinite values")
    return {"coeff": coeff, "sol": sol}


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """An FNO Darcy `.mat` file (MATLAB v5 or v7.3): `coeff` holds the physical coefficient a(x)."""
    path = Path(path)
    _need_file(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in head[:128]:
        import h5py
        try:
            with h5py.File(path, "r") as f:
                missing = [k for k in ("coeff", "sol") if k not in f]
                if missing:
                    raise DataError(f"{path}: missing field(s) {', '.join(missing)} (has {', '.join(f.keys())})")
                # MATLAB stores column-major: h5py shows (s, s, N)
                d = _check_fields(np.asarray(f["coeff"]).T, np.asarray(f["sol"]).T, str(path))
        except OSError as exc:
            raise DataError(f"{path}: unreadable HDF5/MATLAB v7.3 file ({exc})") from None
    else:
        from scipy.io import loadmat
        try:
            mat = loadmat(path, variable_names=["coeff", "sol"])
        except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on foreign files
            raise DataError(f"{path}: not a MATLAB .mat file ({type(exc).__name__})") from None
        missing = [k for k in ("coeff", "sol") if k not in mat]
        if missing:
            raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
        d = _check_fields(mat["coeff"], mat["sol"], str(path))
    if (d["coeff"] <= 0).any():
        # a diffusion coefficient is positive; 0/1 values would be a mask whose units we cannot know
        raise DataError(f"{path}: 'coeff' has values <= 0; an FNO .mat file holds the coefficient a(x) > 0 "
                        f"(a 0/1 mask is the neuraloperator encoding: give it as a .pt file with 'x' and 'y')")
    return d


def read_pt(path: str | Path) -> dict[str, np.ndarray]:
    """A neuraloperator `.pt` file: a dict with `x` (the coefficient as a 0/1 mask) and `y` (solutions).

    The mask is mapped to the FNO values (1 -> 12, 0 -> 3), exactly as for the shipped real set; any
    other encoding of `x` cannot be told apart, so it is refused instead of guessed."""
    import torch

    path = Path(path)
    _need_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable tensor file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or "x" not in obj or "y" not in obj:
        raise DataError(f"{path}: expected a dict with tensors 'x' and 'y'")
    for key in ("x", "y"):
        if not isinstance(obj[key], torch.Tensor):
            raise DataError(f"{path}: '{key}' is a {type(obj[key]).__name__}, not a tensor")
        if obj[key].is_complex():
            raise DataError(f"{path}: '{key}' is complex; a Darcy field is real")
    d = _check_fields(obj["x"], obj["y"], str(path))
    values = np.unique(d["coeff"])
    if not set(values.tolist()) <= {0.0, 1.0}:
        raise DataError(f"{path}: 'x' holds {len(values)} distinct values, not a 0/1 mask; the neuraloperator "
                        f"Darcy format stores the coefficient as a mask and other encodings have unknown units")
    d["coeff"] = np.where(d["coeff"] > 0.5, 12.0, 3.0).astype(np.float32)
    return d


#: file suffix -> (the named dataset whose units it carries, reader): one code path per format
FORMATS = {".mat": ("darcy", read_mat), ".pt": ("darcy-neuralop", read_pt), ".pth": ("darcy-neuralop", read_pt)}


def file_format(path: str | Path) -> str:
    """The dataset name whose format (and units) a Darcy file has: 'darcy' (FNO .mat) or 'darcy-neuralop' (.pt)."""
    path = Path(path)
    if path.suffix in FORMATS:
        return FORMATS[path.suffix][0]
    _need_file(path)
    raise DataError(f"{path}: unknown Darcy format '{path.suffix}' (expected .mat or .pt)")


def read_file(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    file_format(path)
    return FORMATS[path.suffix][1](path)


def _need_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")


# ---- the real set inside the neuraloperator 0.3.0 wheel --------------------------------------

def _wheel() -> Path:
    return fetch_package_file("neuraloperator==0.3.0", NEURALOPERATOR_WHEEL, NEURALOPERATOR_SHA256)


def real_file(which: str = "32") -> Path:
    """Path of a neuraloperator Darcy file ('16', '16-train' or '32'), extracted once from the wheel."""
    member = REAL_FILES[which]
    out = cache_dir() / "darcy" / "neuraloperator-0.3.0" / Path(member).name
    if not out.is_file():
        with zipfile.ZipFile(_wheel()) as zf:
            atomic_write_bytes(out, zf.read(member))
    return out


def load_real(which: str = "32") -> dict[str, np.ndarray]:
    """The shipped real set, through the same reader as a user's .pt file."""
    return read_pt(real_file(which))
