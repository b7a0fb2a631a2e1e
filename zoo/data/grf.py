"""Gaussian random fields shared by the operator data generators.

`dct_grf`: the FNO recipe's field of covariance tau^(2 alpha - 2) (-Lap + tau^2 I)^-alpha on the unit
square with Neumann boundary, sampled through the type-II DCT. Darcy (thresholded to 12/3) and the
multi-geometry Darcy set (as log-permeability) both draw from it.
`rbf_grf_1d`: the DeepONet paper's 1-D field with an RBF kernel, sampled by Cholesky.
"""

from __future__ import annotations

import numpy as np


def dct_spectrum(s: int, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """Square-root eigenvalues of the covariance on an s x s cosine basis (mean mode removed)."""
    k = np.arange(s)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    coef = tau ** (alpha - 1) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2)
    coef[0, 0] = 0.0  # zero-mean field
    return coef


def dct_grf(n: int, s: int, rng: np.random.Generator, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """n fields of s x s points (float64); draws rng.standard_normal((n, s, s)) once."""
    from scipy.fft import idctn

    xi = rng.standard_normal((n, s, s))
    return idctn(xi * dct_spectrum(s, alpha, tau), type=2, axes=(1, 2), norm="ortho")


def rbf_cholesky_1d(length_scale: float, grid: int) -> np.ndarray:
    """Lower Cholesky factor (grid, grid) of the RBF kernel exp(-(x - x')^2 / (2 l^2)) on [0, 1], with
    1e-13 jitter as the official code: a field is chol @ z for z standard normal."""
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    x = np.linspace(0.0, 1.0, grid)
    cov = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / length_scale**2)
    # the kernel matrix is singular to working precision, so the factor's trailing columns are
    # rounding noise that depends on how BLAS splits the work: one thread makes the fields (and the
    # recorded eval data) the same whatever the thread count
    with threadpool_limits(limits=1, user_api="blas"):
        return np.linalg.cholesky(cov + 1e-13 * np.eye(grid))


def rbf_grf_1d(n: int, rng: np.random.Generator, length_scale: float, grid: int) -> np.ndarray:
    """n samples (n, grid) on [0, 1] of the RBF field; draws rng.standard_normal((grid, n)) once."""
    return (rbf_cholesky_1d(length_scale, grid) @ rng.standard_normal((grid, n))).T


__all__ = ["dct_spectrum", "dct_grf", "rbf_cholesky_1d", "rbf_grf_1d"]
