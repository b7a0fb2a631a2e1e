"""2-D incompressible Navier-Stokes trajectories: a seeded generator and readers of the files users hold.

Generator (the FNO recipe, Li et al. 2021, `data_generation/navier_stokes`): vorticity form on the
periodic unit torus, w_t + u.grad(w) = nu Lap(w) + f, with
- w0 ~ N(0, 7^1.5 (-Lap + 49 I)^-2.5) (GRF, alpha 2.5, tau 7; mean mode zero),
- f(x, y) = 0.1 (sin 2pi(x + y) + cos 2pi(x + y)), nu = 1e-3,
- pseudo-spectral in space with 2/3 dealiasing, Crank-Nicolson for diffusion, explicit Euler for
  advection (the recipe's scheme), velocity from the stream function (-Lap psi = w, u = psi_y,
  v = -psi_x).
Laptop sizes (ours, documented): we solve at 64^2 directly (FNO solves at 256^2 and subsamples;
at nu = 1e-3 a 64^2 solve and a 128^2 solve truncated to 64^2 agree to 1e-10 relative L2, measured,
because the GRF spectrum decays like |k|^-5) with dt = 5e-3 instead of 1e-4 (|u| <= 0.23 over the test set, so the
CFL number is <= 0.07; against a dt = 2.5e-4 run the vorticity differs by 2.5e-4 relative L2 at
t = 10, measured), and keep 21 frames one time unit apart (t = 0..20) instead of T = 50.
Fields: vorticity `w`; velocity `u`, `v` derived spectrally on request.
Generated sets are cached under `zoo.data.cache_dir()/navier_stokes/` keyed by all parameters and
the seed, written atomically.

Readers (h5py; no netCDF library needed because NetCDF-4 files are HDF5 files):
- PDEArena NavierStokes2D `.h5`: groups `train`/`valid`/`test`, each with `u` (smoke), `vx`, `vy`
  of shape (N, T, H, W) -> fields smoke, u, v;
- PDEBench 2-D CFD `.hdf5`: `density`, `pressure`, `Vx`, `Vy` (N, T, H, W) -> rho, p, u, v;
  PDEBench 2-D incompressible NS: `velocity` (N, T, H, W, 2) and `particles` (N, T, H, W, 1) ->
  u, v, smoke;
- the SineNet CFD re-pack of PDEBench: split groups holding per-seed groups with `D`, `P`, `Vx`,
  `Vy` of shape (N, T, H, W, 1) -> rho, p, u, v;
- Poseidon / PDEgym NetCDF `.nc`: `velocity` (N, T, C, H, W), C = u, v (and a tracer), or
  `solution` (FNS-KF) -> u, v[, tracer]. Splits as Poseidon uses them: the last 240 trajectories
  are test, the 120 before them validation (files with fewer than 361 trajectories: all of them).
Every reader returns float32 frames (N, T, C, H, W) and the field names; bad files (unknown
layout, non-square grids, NaNs) raise DataError with one line.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data import atomic_write_bytes, cache_dir, params_key
from zoo.errors import DataError

DEFAULTS = {"resolution": 64, "nu": 1e-3, "dt": 5e-3, "record_every": 1.0, "frames": 21,
            "alpha": 2.5, "tau": 7.0}
SPLIT_SIZES = {"train": 256, "val": 32, "test": 32}
SPLIT_SEED_OFFSET = {"train": 0, "val": 100_003, "test": 200_003}
FIELD_ALIASES = {"vorticity": "w", "vx": "u", "vy": "v", "density": "rho", "pressure": "p", "particles": "smoke"}


@dataclass
class Trajectories:
    """Frames (N, T, C, H, W) float32 with the name of each field (channel)."""
    frames: np.ndarray
    fields: list[str]
    source: str
    info: dict = field(default_factory=dict)

    def select(self, wanted: list[str] | None) -> "Trajectories":
        if not wanted:
            return self
        wanted = [FIELD_ALIASES.get(f, f) for f in wanted]
        missing = [f for f in wanted if f not in self.fields]
        if missing:
            raise DataError(f"{self.source} has fields {self.fields}; the model needs {wanted} "
                            f"(missing {missing})")
        idx = [self.fields.index(f) for f in wanted]
        return Trajectories(self.frames[:, :, idx], wanted, self.source, self.info)


# ---- generator -----------------------------------------------------------------------------

def _wavenumbers(s: int, torch):
    k = torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64)
    kr = torch.fft.rfftfreq(s, d=1.0 / s, dtype=torch.float64)
    return torch.meshgrid(k, kr, indexing="ij")


def initial_vorticity(n: int, s: int, seed: int, alpha: float = 2.5, tau: float = 7.0) -> np.ndarray:
    """n samples of the FNO initial field on an s x s grid (float64)."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    k = torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64)
    kx, ky = torch.meshgrid(k, k, indexing="ij")
    sigma = tau ** (0.5 * (2 * alpha - 2))
    # amplitude of each Fourier mode; s^2 undoes ifft2's 1/s^2 so the field has the GRF's variance
    amp = s * s * math.sqrt(2.0) * sigma * (4 * math.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2)
    amp[0, 0] = 0.0
    xi = torch.randn(n, s, s, 2, generator=gen, dtype=torch.float64)
    return torch.fft.ifft2(amp * torch.complex(xi[..., 0], xi[..., 1])).real.numpy()


def forcing(s: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, s + 1)[:-1]
    X, Y = np.meshgrid(x, x, indexing="ij")
    return 0.1 * (np.sin(2 * np.pi * (X + Y)) + np.cos(2 * np.pi * (X + Y)))


def solve_vorticity(w0: np.ndarray, nu: float, dt: float, record_every: float, frames: int,
                    f: np.ndarray | None = None) -> np.ndarray:
    """Integrate w0 (n, s, s); returns (n, frames, s, s) float32 with frame 0 = w0."""
    import torch

    w0t = torch.as_tensor(w0, dtype=torch.float64)
    s = w0t.shape[-1]
    kx, ky = _wavenumbers(s, torch)
    lap = 4 * math.pi**2 * (kx**2 + ky**2)
    lap[0, 0] = 1.0
    dealias = ((kx.abs() <= (2.0 / 3.0) * (s // 2)) & (ky.abs() <= (2.0 / 3.0) * (s // 2))).to(torch.float64)
    f_hat = torch.fft.rfft2(torch.as_tensor(forcing(s) if f is None else f, dtype=torch.float64))
    w_hat = torch.fft.rfft2(w0t)
    per_frame = int(round(record_every / dt))
    if per_frame < 1 or abs(per_frame * dt - record_every) > 1e-9 * max(record_every, 1):
        raise DataError(f"record_every {record_every} must be a whole number of steps dt={dt}")
    implicit = 1.0 + 0.5 * dt * nu * lap
    explicit = 1.0 - 0.5 * dt * nu * lap
    out = [w0t.float().numpy()]
    two_pi_i = 2j * math.pi
    for _ in range(frames - 1):
        for _ in range(per_frame):
            psi = w_hat / lap
            u = torch.fft.irfft2(two_pi_i * ky * psi, s=(s, s))
            v = torch.fft.irfft2(-two_pi_i * kx * psi, s=(s, s))
            w_x = torch.fft.irfft2(two_pi_i * kx * w_hat, s=(s, s))
            w_y = torch.fft.irfft2(two_pi_i * ky * w_hat, s=(s, s))
            adv = torch.fft.rfft2(u * w_x + v * w_y) * dealias
            w_hat = (-dt * adv + dt * f_hat + explicit * w_hat) / implicit
        out.append(torch.fft.irfft2(w_hat, s=(s, s)).float().numpy())
    return np.stack(out, axis=1)


def velocity_from_vorticity(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., s, s) vorticity -> (u, v) with -Lap psi = w, u = d psi/dy, v = -d psi/dx."""
    import torch

    wt = torch.as_tensor(w, dtype=torch.float64)
    s = wt.shape[-1]
    kx, ky = _wavenumbers(s, torch)
    lap = 4 * math.pi**2 * (kx**2 + ky**2)
    lap[0, 0] = 1.0
    psi = torch.fft.rfft2(wt) / lap
    u = torch.fft.irfft2(2j * math.pi * ky * psi, s=(s, s))
    v = torch.fft.irfft2(-2j * math.pi * kx * psi, s=(s, s))
    return u.float().numpy(), v.float().numpy()


def generate(n: int, seed: int, resolution: int = 64, nu: float = 1e-3, dt: float = 5e-3,
             record_every: float = 1.0, frames: int = 21, alpha: float = 2.5, tau: float = 7.0,
             chunk: int = 64) -> np.ndarray:
    """n vorticity trajectories (n, frames, s, s), float32; deterministic in (all parameters, seed)."""
    w0 = initial_vorticity(n, resolution, seed, alpha, tau)
    parts = [solve_vorticity(w0[i:i + chunk], nu, dt, record_every, frames) for i in range(0, n, chunk)]
    return np.concatenate(parts, axis=0)


def load_generated(split: str, seed: int = 0, size: int | None = None, fields: list[str] | None = None,
                   **params) -> Trajectories:
    """The generated set of `split` (train/val/test), from the cache or made now and cached."""
    if split not in SPLIT_SIZES:
        raise DataError(f"unknown split '{split}' for navier-stokes (train, val, test)")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    unknown = set(p) - set(DEFAULTS)
    if unknown:
        raise DataError(f"navier-stokes generator has no parameter(s) {sorted(unknown)}")
    n = int(size or SPLIT_SIZES[split])
    split_seed = int(seed) + SPLIT_SEED_OFFSET[split]
    key = params_key(kind="ns-vorticity", n=n, seed=split_seed, **p)
    path = cache_dir() / "navier_stokes" / f"ns-{split}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            w = z["w"]
    else:
        w = generate(n, split_seed, int(p["resolution"]), float(p["nu"]), float(p["dt"]), float(p["record_every"]),
                     int(p["frames"]), float(p["alpha"]), float(p["tau"]))
        buf = io.BytesIO()
        np.savez(buf, w=w, params=json.dumps({"n": n, "seed": split_seed, **p}))
        atomic_write_bytes(path, buf.getvalue())
    traj = _with_velocity(w, f"generated navier-stokes ({split}, {n} x {w.shape[1]} frames, "
                             f"{w.shape[-1]}x{w.shape[-1]}, seed {split_seed})", fields)
    traj.info.update({"split": split, "seed": split_seed, "cache": str(path), **p})
    return traj.select(fields)


def _with_velocity(w: np.ndarray, source: str, fields: list[str] | None) -> Trajectories:
    names = ["w"]
    arrays = [w]
    wanted = {FIELD_ALIASES.get(f, f) for f in (fields or [])}
    if wanted & {"u", "v"}:
        u, v = velocity_from_vorticity(w)
        names += ["u", "v"]
        arrays += [u, v]
    return Trajectories(np.stack(arrays, axis=2).astype(np.float32), names, source)


# ---- readers of published formats -------------------------------------------------------------

def _split_indices(n: int, split: str | None, layout: str) -> tuple[slice, str]:
    """Which trajectories of a file belong to `split`, as the dataset's own code splits them."""
    if split in (None, "all"):
        return slice(0, n), "all"
    if layout == "poseidon":
        if n < 361:
            return slice(0, n), "all (file smaller than Poseidon's 120 val + 240 test)"
        return {"train": slice(0, n - 360), "val": slice(n - 360, n - 240), "test": slice(n - 240, n)}[split], split
    if layout == "pdebench":
        n_test = max(1, n // 10) if n >= 10 else 0
        if n_test == 0:
            return slice(0, n), "all (file smaller than 10 trajectories)"
        return {"train": slice(0, n - 2 * n_test), "val": slice(n - 2 * n_test, n - n_test),
                "test": slice(n - n_test, n)}[split], split
    return slice(0, n), split


def _limit(sl: slice, limit: int | None) -> slice:
    if limit is None:
        return sl
    return slice(sl.start, min(sl.stop, sl.start + int(limit)))


def read_file(path: str | Path, split: str | None = "test", fields: list[str] | None = None,
              limit: int | None = None, transpose: bool = False) -> Trajectories:
    """Read trajectories from a PDEArena/PDEBench HDF5 or Poseidon NetCDF-4 file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not h5py.is_hdf5(str(path)):
        raise DataError(f"{path.name}: not an HDF5/NetCDF-4 file (PDEArena/PDEBench .h5, Poseidon .nc are read)")
    split = {"valid": "val", "validation": "val"}.get(split or "", split)
    try:
        with h5py.File(path, "r") as f:
            traj = _read_open(f, path.name, split, limit)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path.name}: unreadable ({str(exc).splitlines()[0]})") from None
    if transpose:
        traj.frames = np.ascontiguousarray(np.swapaxes(traj.frames, -1, -2))
    traj = traj.select(fields)
    check_frames(traj)
    return traj


def _read_open(f, name: str, split: str | None, limit: int | None) -> Trajectories:
    keys = set(f.keys())
    # PDEArena: split groups with u / vx / vy
    groups = [g for g in ("train", "valid", "val", "test") if g in keys and hasattr(f[g], "keys")]
    if groups:
        want = {"val": "valid"}.get(split or "", split)
        g = want if want in keys else ("val" if want == "valid" and "val" in keys else None)
        if g is None:
            if split not in (None, "all"):
                raise DataError(f"{name}: has split groups {groups}, not '{split}'")
            g = groups[0]
        grp = f[g]
        sub = set(grp.keys())
        if {"u", "vx", "vy"} <= sub:
            sl = _limit(slice(0, grp["u"].shape[0]), limit)
            frames = np.stack([grp["u"][sl], grp["vx"][sl], grp["vy"][sl]], axis=2)
            return Trajectories(frames.astype(np.float32), ["smoke", "u", "v"], f"{name} (PDEArena, {g})",
                                {"layout": "pdearena", "split": g})
        seeds = [s for s in sorted(sub) if hasattr(grp[s], "keys") and {"D", "P", "Vx", "Vy"} <= set(grp[s].keys())]
        if seeds:
            parts = []
            for s in seeds:
                d = grp[s]
                parts.append(np.stack([np.asarray(d[k])[..., 0] if d[k].ndim == 5 else np.asarray(d[k])
                                       for k in ("D", "P", "Vx", "Vy")], axis=2))
            frames = np.concatenate(parts, axis=0)[_limit(slice(0, None), limit)]
            return Trajectories(frames.astype(np.float32), ["rho", "p", "u", "v"], f"{name} (SineNet CFD, {g})",
                                {"layout": "sinenet-cfd", "split": g})
        raise DataError(f"{name}: group '{g}' has {sorted(sub)}; expected PDEArena u/vx/vy or CFD D/P/Vx/Vy")
    # PDEBench 2-D CFD
    if {"density", "pressure", "Vx", "Vy"} <= keys:
        sl, used = _split_indices(f["density"].shape[0], split, "pdebench")
        sl = _limit(sl, limit)
        frames = np.stack([f[k][sl] for k in ("density", "pressure", "Vx", "Vy")], axis=2)
        return Trajectories(frames.astype(np.float32), ["rho", "p", "u", "v"], f"{name} (PDEBench CFD, {used})",
                            {"layout": "pdebench", "split": used})
    # PDEBench 2-D incompressible NS: velocity (N, T, H, W, 2)
    if "velocity" in keys and f["velocity"].ndim == 5 and f["velocity"].shape[-1] == 2 and "particles" in keys:
        sl, used = _split_indices(f["velocity"].shape[0], split, "pdebench")
        sl = _limit(sl, limit)
        vel = np.moveaxis(np.asarray(f["velocity"][sl]), -1, 2)
        smoke = np.moveaxis(np.asarray(f["particles"][sl]), -1, 2)
        frames = np.concatenate([vel, smoke], axis=2)
        return Trajectories(frames.astype(np.float32), ["u", "v", "smoke"], f"{name} (PDEBench NS, {used})",
                            {"layout": "pdebench", "split": used})
    # Poseidon / PDEgym NetCDF: velocity or solution (N, T, C, H, W)
    for var in ("velocity", "solution"):
        if var in keys and f[var].ndim == 5:
            ds = f[var]
            sl, used = _split_indices(ds.shape[0], split, "poseidon")
            sl = _limit(sl, limit)
            frames = np.asarray(ds[sl])
            c = frames.shape[2]
            names = ["u", "v", "tracer", "p"][:c] if c <= 4 else [f"c{i}" for i in range(c)]
            return Trajectories(frames.astype(np.float32), names, f"{name} (Poseidon {var}, {used})",
                                {"layout": "poseidon", "split": used})
    raise DataError(f"{name}: unknown layout (top-level keys {sorted(keys)[:8]}); expected PDEArena "
                    f"(train/valid/test groups with u, vx, vy), PDEBench (density/pressure/Vx/Vy or "
                    f"velocity+particles) or Poseidon (velocity/solution)")


def check_frames(traj: Trajectories) -> None:
    """One-line DataErrors for what no model can use: wrong rank, non-square grids, NaN/inf."""
    fr = traj.frames
    if fr.ndim != 5:
        raise DataError(f"{traj.source}: expected (N, T, C, H, W) frames, got shape {fr.shape}")
    if fr.shape[0] == 0:
        raise DataError(f"{traj.source}: no trajectories in this split")
    if fr.shape[-1] != fr.shape[-2]:
        raise DataError(f"{traj.source}: the grid is {fr.shape[-2]}x{fr.shape[-1]}; the operators here need a "
                        f"square periodic grid")
    bad = ~np.isfinite(fr)
    if bad.any():
        n, t = np.argwhere(bad)[0][:2]
        raise DataError(f"{traj.source}: {int(bad.sum())} NaN/inf values (first in trajectory {n}, frame {t})")


__all__ = ["Trajectories", "generate", "load_generated", "read_file", "initial_vorticity", "solve_vorticity",
           "velocity_from_vorticity", "forcing", "check_frames", "DEFAULTS", "SPLIT_SIZES"]
