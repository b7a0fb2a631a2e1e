"""PDE problems for physics-informed networks, with reference solvers written here (numpy/scipy).

A problem is a 1-D periodic PDE on x in [0, 2*pi), t in [0, T], its initial condition, the N x M
collocation grid (N space points x_i = 2*pi*i/N, M times from 0 to T) and a reference solution on
that grid. The PDE is written in the form both formulations need:

    u_t + a(u) u_x = nu u_xx + s(u)        (a = characteristic speed, s = source)

- convection            a = c,                   u0 = sin x       exact: u0(x - c t)
- convection-diffusion  a = c, nu > 0            u0 = sin x       exact in Fourier space
- burgers               a = u, nu = 0.01         u0 = sin x + C   pseudo-spectral (integrating-factor RK4)
- lwr                   a = v (1 - 2 rho)        rho0 = 0.5 + 0.3 sin x on a ring road (rho_max = 1),
                        loop detectors at a few positions observe rho(t); Godunov finite volume
- reaction-diffusion    a = 0, s = rho u (1 - u) u0 = Gaussian   Strang splitting (exact sub-steps)

Defaults from the LPINN code (spec operators.md E): N = 256, M = 100, t in [0, 1], nu = 0.01,
c = 50. Every reference is checked for convergence (NaN, or a half-resolution solve that
disagrees) and refuses with one line rather than hand back a wrong field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from zoo.errors import ConfigError, DataError

TWO_PI = 2.0 * math.pi

#: problem name -> (one-line description, defaults of its parameters)
DEFAULTS: dict[str, dict] = {
    "convection": {"c": 50.0},
    "convection-diffusion": {"c": 50.0, "nu": 0.01},
    "burgers": {"nu": 0.01, "C": 0.0},
    "lwr": {"v_max": 1.5, "nu": 0.0, "detectors": 4},
    "reaction-diffusion": {"nu": 0.01, "rho": 5.0},
}
GRID_DEFAULTS = {"n_x": 256, "n_t": 100, "t_max": 1.0}
DESCRIPTIONS = {
    "convection": "u_t + c u_x = 0, periodic on [0, 2pi), u0 = sin x, c = 50 (-o c=...); exact reference",
    "convection-diffusion": "u_t + c u_x = nu u_xx, u0 = sin x, c = 50, nu = 0.01; exact in Fourier space",
    "burgers": "u_t + u u_x = nu u_xx, u0 = sin x + C, nu = 0.01, C = 0 (-o C=...); pseudo-spectral reference",
    "lwr": "LWR traffic density on a ring road, Greenshields flux v_max rho (1 - rho), rho0 = 0.5 + 0.3 sin x, "
           "4 loop detectors observe rho(t); Godunov finite-volume reference",
    "reaction-diffusion": "u_t = nu u_xx + rho u (1 - u), Gaussian u0 (Krishnapriyan et al.); Strang-splitting "
                          "reference; has no characteristic (transport) form",
}


@dataclass(frozen=True)
class Problem:
    """One PDE problem. `speed` and `source` work on numpy arrays and torch tensors alike."""
    name: str
    params: dict
    nu: float
    speed: Optional[Callable]           # characteristic speed a(u); None: no transport form
    source: Optional[Callable]          # s(u) or None
    u0: Callable                        # initial condition on x (numpy)
    n_x: int = 256
    n_t: int = 100
    t_max: float = 1.0
    detectors: tuple = field(default=())   # x positions where the solution is observed

    @property
    def has_characteristics(self) -> bool:
        """True when u is carried along dx/dt = a(u) and changes there only by diffusion."""
        return self.speed is not None and self.source is None

    def x_grid(self) -> np.ndarray:
        return TWO_PI * np.arange(self.n_x) / self.n_x

    def t_grid(self) -> np.ndarray:
        return np.linspace(0.0, self.t_max, self.n_t)

    def eulerian_residual(self, u, u_t, u_x, u_xx):
        """u_t + a(u) u_x - nu u_xx - s(u) (tensors from autograd)."""
        r = u_t - self.nu * u_xx
        if self.speed is not None:
            r = r + self.speed(u) * u_x
        if self.source is not None:
            r = r - self.source(u)
        return r

    def with_params(self, **changes) -> "Problem":
        """The same problem with other PDE parameters (auxiliary tasks use a relaxed copy)."""
        return make_problem(self.name, {**self.params, **changes, "n_x": self.n_x, "n_t": self.n_t,
                                        "t_max": self.t_max})

    def describe(self) -> str:
        ps = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.name} ({ps}; {self.n_x}x{self.n_t} grid, t in [0, {self.t_max:g}])"


def _sin(x):
    return np.sin(x)


def make_problem(name: str, options: dict | None = None) -> Problem:
    """The named problem with its parameters from `options` (validated: one line per bad value)."""
    if name not in DEFAULTS:
        from zoo.errors import UnknownNameError
        raise UnknownNameError("PINN problem", name, DEFAULTS)
    options = dict(options or {})
    for k, v in options.items():   # a parameter this problem does not have is an error, not ignored
        if v is not None and k not in DEFAULTS[name] and k not in GRID_DEFAULTS:
            raise ConfigError(f"{name} has no parameter '{k}'; its parameters: "
                              f"{', '.join(list(DEFAULTS[name]) + list(GRID_DEFAULTS))}")
    params = {k: type(v)(options[k]) if options.get(k) is not None else v for k, v in DEFAULTS[name].items()}
    grid = {k: type(v)(options[k]) if options.get(k) is not None else v for k, v in GRID_DEFAULTS.items()}
    if grid["n_x"] < 8:
        raise ConfigError(f"n_x = {grid['n_x']}: the grid needs at least 8 space points")
    if grid["n_t"] < 2:
        raise ConfigError(f"n_t = {grid['n_t']}: the grid needs at least 2 time points")
    if not 0 < grid["t_max"] <= 100:
        raise ConfigError(f"t_max = {grid['t_max']}: must be in (0, 100]")
    nu = float(params.get("nu", 0.0))
    if nu < 0 or not math.isfinite(nu):
        raise ConfigError(f"nu = {nu}: the viscosity must be >= 0 (a negative one makes the PDE ill-posed)")
    if name == "convection-diffusion" and nu == 0:
        raise ConfigError("convection-diffusion needs nu > 0 (use the convection problem for nu = 0)")
    if "c" in params and not (0 <= params["c"] <= 1000 and math.isfinite(params["c"])):
        raise ConfigError(f"c = {params['c']}: the convection speed must be in [0, 1000]")
    if "C" in params and not abs(params["C"]) <= 100:
        raise ConfigError(f"C = {params['C']}: the Burgers offset must be in [-100, 100]")
    if name == "lwr":
        if not 0 < params["v_max"] <= 100:
            raise ConfigError(f"v_max = {params['v_max']}: must be in (0, 100]")
        if not 0 <= params["detectors"] <= grid["n_x"]:
            raise ConfigError(f"detectors = {params['detectors']}: must be in [0, n_x]")
    if name == "reaction-diffusion" and not 0 <= params["rho"] <= 100:
        raise ConfigError(f"rho = {params['rho']}: the reaction rate must be in [0, 100]")

    common = dict(name=name, params=params, nu=nu, **grid)
    if name in ("convection", "convection-diffusion"):
        c = params["c"]
        return Problem(speed=lambda u: c + 0 * u, source=None, u0=_sin, **common)
    if name == "burgers":
        C = params["C"]
        return Problem(speed=lambda u: u, source=None, u0=lambda x: np.sin(x) + C, **common)
    if name == "lwr":
        v = params["v_max"]
        n_det = params["detectors"]
        # detectors on grid points, evenly spread round the ring
        det = tuple(float(TWO_PI * (i * grid["n_x"] // max(n_det, 1)) / grid["n_x"]) for i in range(n_det))
        return Problem(speed=lambda u: v * (1 - 2 * u), source=None, u0=lambda x: 0.5 + 0.3 * np.sin(x),
                       detectors=det, **common)
    rho = params["rho"]
    return Problem(speed=None, source=lambda u: rho * u * (1 - u),
                   u0=lambda x: np.exp(-((x - math.pi) ** 2) / (2 * (math.pi / 4) ** 2)), **common)


# ---- reference solvers ------------------------------------------------------------------------

def convection_exact(c: float, x: np.ndarray, t: np.ndarray, u0=_sin) -> np.ndarray:
    """u(t, x) = u0(x - c t): (M, N)."""
    return u0((x[None, :] - c * t[:, None]) % TWO_PI)


def convection_diffusion_fourier(c: float, nu: float, x: np.ndarray, t: np.ndarray, u0=_sin) -> np.ndarray:
    """Exact for the band-limited interpolant of u0 on the grid: each Fourier mode is multiplied
    by exp(-(i c k + nu k^2) t)."""
    n = len(x)
    k = np.fft.fftfreq(n, d=1.0 / n)
    u_hat = np.fft.fft(u0(x))
    decay = np.exp(-(1j * c * k[None, :] + nu * k[None, :] ** 2) * t[:, None])
    return np.real(np.fft.ifft(u_hat[None, :] * decay, axis=1))


def _burgers_spectral(nu: float, n: int, t_out: np.ndarray, u0=_sin, cfl: float = 0.4) -> np.ndarray:
    """u_t + u u_x = nu u_xx on n points, integrating-factor RK4, 2/3 de-aliasing: (M, n)."""
    x = TWO_PI * np.arange(n) / n
    k = np.fft.rfftfreq(n, d=1.0 / n)
    dealias = k < (2.0 / 3.0) * (n / 2)
    lin = -nu * k**2
    v = np.fft.rfft(u0(x))

    def nonlinear(v_hat):
        u = np.fft.irfft(v_hat, n)
        return -0.5j * k * np.fft.rfft(u * u) * dealias   # -(u^2/2)_x

    out = np.empty((len(t_out), n))
    t, dx = 0.0, TWO_PI / n
    umax = float(np.abs(u0(x)).max()) + 1e-12
    dt_max = cfl * dx / umax
    for j, target in enumerate(t_out):
        while t < target - 1e-14:
            dt = min(dt_max, target - t)
            e, e2 = np.exp(lin * dt), np.exp(lin * dt / 2)
            a = nonlinear(v)
            b = nonlinear(e2 * (v + dt / 2 * a))
            c_ = nonlinear(e2 * v + dt / 2 * b)
            d = nonlinear(e * v + dt * e2 * c_)
            v = e * v + dt / 6 * (e * a + 2 * e2 * (b + c_) + d)
            t += dt
        out[j] = np.fft.irfft(v, n)
        if not np.all(np.isfinite(out[j])):
            raise DataError(f"burgers reference did not converge: the spectral solve blew up at t = {target:.3g} "
                            f"(nu = {nu:g} is too small for {n} modes)")
    return out


def burgers_reference(nu: float, C: float, x: np.ndarray, t: np.ndarray, fine: int = 2048) -> np.ndarray:
    """u0 = sin x + C. Solved for w = u - C in the frame moving with C (Galilean invariance), then
    shifted back exactly by a Fourier phase. Refuses when the solve at `fine` and at fine/2 points
    differ by more than 1e-3 (relative): the shock is then thinner than the grid resolves."""
    n = len(x)
    fine = max(fine, n)
    fine = int(math.ceil(fine / n) * n)
    w = _burgers_spectral(nu, fine, t)
    # a resolved solution has (almost) no energy just below the dealiasing cut-off; a shock thinner
    # than the grid piles energy up there (nu = 5e-4: 6e-7 of the total; nu = 1e-5: 2.5e-5)
    power = np.abs(np.fft.rfft(w, axis=1)) ** 2
    cut = int(power.shape[1] * 2 / 3)
    tail = float((power[:, cut // 2:cut].sum(1) / power.sum(1).clip(1e-300)).max())
    if not tail < 5e-6:
        raise DataError(f"burgers reference did not converge: {tail:.1e} of the energy sits at the highest "
                        f"resolved modes of {fine} (nu = {nu:g} is too small for this solver; use nu >= 5e-4)")
    w_half = _burgers_spectral(nu, fine // 2, t) if (fine // 2) % n == 0 else None
    if w_half is not None:
        diff = np.linalg.norm(w[:, ::fine // n] - w_half[:, ::(fine // 2) // n]) / np.linalg.norm(w[:, ::fine // n])
        if not diff < 1e-3:
            raise DataError(f"burgers reference did not converge: {fine} and {fine // 2} modes differ by {diff:.1e} "
                            f"(nu = {nu:g} is too small for this solver; use nu >= 5e-4)")
    # u(x, t) = C + w(x - C t, t): a phase shift of each mode
    k = np.fft.rfftfreq(fine, d=1.0 / fine)
    w_hat = np.fft.rfft(w, axis=1) * np.exp(-1j * k[None, :] * C * t[:, None])
    return C + np.fft.irfft(w_hat, fine, axis=1)[:, ::fine // n]


def burgers_cole_hopf(nu: float, x: np.ndarray, t: np.ndarray, points: int = 40000) -> np.ndarray:
    """The exact solution for u0 = sin x (Cole-Hopf): u = int (x - y)/t K dy / int K dy with
    K = exp(-(x - y)^2 / (4 nu t) - (1 - cos y) / (2 nu)), by quadrature with the largest exponent
    taken out (the Bessel series cancels catastrophically for small nu)."""
    y = np.linspace(-3 * math.pi, 5 * math.pi, points)
    out = np.empty((len(t), len(x)))
    for j, tj in enumerate(t):
        if tj == 0:
            out[j] = np.sin(x)
            continue
        expo = -((x[:, None] - y[None, :]) ** 2) / (4 * nu * tj) - (1 - np.cos(y))[None, :] / (2 * nu)
        w = np.exp(expo - expo.max(axis=1, keepdims=True))
        out[j] = ((x[:, None] - y[None, :]) / tj * w).sum(1) / w.sum(1)
    return out


def _godunov_flux(left, right, v):
    """Godunov flux of the concave Greenshields flux f = v rho (1 - rho): min(demand, supply)."""
    f = lambda r: v * r * (1 - r)
    demand = f(np.minimum(left, 0.5))
    supply = f(np.maximum(right, 0.5))
    return np.minimum(demand, supply)


def _lwr_fv(v: float, nu: float, n_cells: int, t_out: np.ndarray, rho0) -> np.ndarray:
    """First-order Godunov finite volume on a ring of n_cells (cell averages), explicit diffusion."""
    dx = TWO_PI / n_cells
    edges = dx * np.arange(n_cells + 1)
    # exact cell averages of the initial condition (Simpson on each cell)
    rho = (rho0(edges[:-1]) + 4 * rho0(edges[:-1] + dx / 2) + rho0(edges[1:])) / 6
    dt_max = 0.45 * dx / v
    if nu > 0:
        dt_max = min(dt_max, 0.4 * dx * dx / nu)
    out = np.empty((len(t_out), n_cells))
    t = 0.0
    for j, target in enumerate(t_out):
        while t < target - 1e-14:
            dt = min(dt_max, target - t)
            flux = _godunov_flux(rho, np.roll(rho, -1), v)          # at the right face of each cell
            rho = rho - dt / dx * (flux - np.roll(flux, 1))
            if nu > 0:
                rho = rho + nu * dt / dx**2 * (np.roll(rho, -1) - 2 * rho + np.roll(rho, 1))
            t += dt
        out[j] = rho
    return out


def lwr_reference(v: float, nu: float, x: np.ndarray, t: np.ndarray, rho0, refine: int = 9) -> np.ndarray:
    """Cell averages on a grid `refine` times finer whose middle cells are centred on the grid
    points x_i, read there. Refuses when a solve 3x coarser disagrees by more than 1e-2."""
    n = len(x)
    shift = TWO_PI / (2 * n)      # cells centred on x_i: solve on the grid shifted by half a coarse cell

    def solve(r):
        fine = _lwr_fv(v, nu, n * r, t, lambda s: rho0(s - shift))
        return fine.reshape(len(t), n, r)[:, :, r // 2]

    u = solve(refine)
    coarse = solve(max(1, refine // 3)) if refine >= 3 else None
    if not np.all(np.isfinite(u)):
        raise DataError("lwr reference did not converge: the finite-volume solve produced NaN")
    if coarse is not None:
        diff = np.linalg.norm(u - coarse) / np.linalg.norm(u)
        if not diff < 1e-2:
            raise DataError(f"lwr reference did not converge: {refine}x and {refine // 3}x refined solves differ "
                            f"by {diff:.1e}")
    return u


def lwr_characteristics(v: float, x: np.ndarray, t: float, rho0, iters: int = 60) -> np.ndarray:
    """The exact (pre-shock) solution by characteristics: rho(x, t) = rho0(xi), x = xi + a(rho0(xi)) t."""
    xi = x.copy()
    for _ in range(iters):   # Newton on g(xi) = xi + v (1 - 2 rho0(xi)) t - x
        h = 1e-6
        g = xi + v * (1 - 2 * rho0(xi)) * t - x
        dg = 1 + v * (-2) * (rho0(xi + h) - rho0(xi - h)) / (2 * h) * t
        xi = xi - g / dg
    return rho0(xi)


def reaction_diffusion_reference(nu: float, rho: float, x: np.ndarray, t: np.ndarray, u0,
                                 substeps: int = 200) -> np.ndarray:
    """Strang splitting of exact sub-steps: logistic growth exactly, diffusion in Fourier space."""
    n = len(x)
    k = np.fft.fftfreq(n, d=1.0 / n)
    u = u0(x).astype(float)
    out = np.empty((len(t), n))
    out[0] = u
    for j in range(1, len(t)):
        dt = (t[j] - t[j - 1]) / substeps
        for _ in range(substeps):
            e = math.exp(rho * dt / 2)
            u = u * e / (1 - u + u * e)
            u = np.real(np.fft.ifft(np.fft.fft(u) * np.exp(-nu * k**2 * dt)))
            u = u * e / (1 - u + u * e)
        out[j] = u
    return out


def reference(problem: Problem) -> np.ndarray:
    """The reference field on the problem's grid: (M, N), rows are times."""
    x, t = problem.x_grid(), problem.t_grid()
    p = problem.params
    if problem.name == "convection":
        u = convection_exact(p["c"], x, t)
    elif problem.name == "convection-diffusion":
        u = convection_diffusion_fourier(p["c"], p["nu"], x, t)
    elif problem.name == "burgers":
        u = burgers_reference(p["nu"], p["C"], x, t)
    elif problem.name == "lwr":
        u = lwr_reference(p["v_max"], p["nu"], x, t, problem.u0)
    else:
        u = reaction_diffusion_reference(p["nu"], p["rho"], x, t, problem.u0)
    if not np.all(np.isfinite(u)):
        raise DataError(f"{problem.name} reference did not converge (non-finite values)")
    return u.astype(np.float32)


_CACHE: dict = {}


def load(name: str, options: dict | None = None) -> tuple[Problem, np.ndarray]:
    """(problem, reference field (M, N)); the reference is cached per parameter set in-process."""
    problem = make_problem(name, options)
    key = (name, tuple(sorted(problem.params.items())), problem.n_x, problem.n_t, problem.t_max)
    if key not in _CACHE:
        _CACHE[key] = reference(problem)
    return problem, _CACHE[key]


def with_replace(problem: Problem, **kw) -> Problem:
    return replace(problem, **kw)
