"""The target member: a small Gaussian process on the target's own measurements.

While tuning, the measurements of the target problem are few (tens) and arrive one by one, so the
model fitted on them must be cheap to refit and honest about its own accuracy. A Gaussian process
(RBF kernel on standardized features plus the prior's prediction as one more input) gives both:
refitting is one Cholesky factorization of an n x n matrix, and its leave-one-out predictions have
a closed form (Rasmussen & Williams, eq. 5.12), so its cross-validated ranking error, which
decides its weight against the per-device members, costs no refits. The length scale and noise
are picked from a small grid by that same leave-one-out error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

LENGTH_SCALES = (0.5, 1.0, 2.0, 4.0)  # times sqrt(number of features)
NOISES = (1e-3, 1e-1)  # share of the target variance


@dataclass
class TargetGP:
    """A fitted GP: predict with ``predict``; ``loo_error`` is its leave-one-out pairwise error."""

    center: np.ndarray
    scale: np.ndarray
    keep: np.ndarray
    x: np.ndarray
    alpha: np.ndarray
    inv: np.ndarray  # (R + noise I)^-1 of the correlation matrix R
    mean: float
    var: float
    length: float
    loo_error: float
    best: float  # lowest target value measured (the incumbent of expected improvement)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, times: np.ndarray, pool: np.ndarray) -> TargetGP:
        """Fit on measured features ``x`` and targets ``y``; ``pool`` gives the feature scaling.

        ``times`` (inf = failed) is what the leave-one-out error is judged against.
        """
        from ._model import _pair_error

        center, scale, keep = _scaling(pool)
        z = _standardize(x, center, scale, keep)
        mean = float(y.mean())
        yc = y - mean
        var = float(yc.var()) or 1.0
        d2 = _sq_dist(z, z)
        best = None
        for ls in LENGTH_SCALES:
            length = ls * np.sqrt(max(1, z.shape[1]))
            k = np.exp(-d2 / (2 * length**2))
            for noise in NOISES:
                try:
                    inv = np.linalg.inv(k + noise * np.eye(len(y)))
                except np.linalg.LinAlgError:
                    continue
                alpha = inv @ yc
                loo = yc - alpha / np.diag(inv)  # leave-one-out means (centered)
                err = _pair_error(times, loo)
                if best is None or err < best[0] - 1e-12:
                    best = (err, length, alpha, inv)
        if best is None:
            raise ValueError("target GP: every kernel matrix was singular")
        err, length, alpha, inv = best
        ok = np.isfinite(times)
        return cls(center, scale, keep, z, alpha, inv, mean, var, float(length), float(err), float(y[ok].min()))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Posterior mean (the target's log time relative to its best measurement)."""
        return self._kernel(x) @ self.alpha + self.mean

    def expected_improvement(self, x: np.ndarray) -> np.ndarray:
        """Expected improvement over the best measurement (in log time): mean and uncertainty both count."""
        from scipy.stats import norm

        k = self._kernel(x)
        mu = k @ self.alpha + self.mean
        var = self.var * np.maximum(1.0 - np.einsum("ij,jk,ik->i", k, self.inv, k), 1e-12)
        sd = np.sqrt(var)
        gain = self.best - mu
        z = gain / sd
        return gain * norm.cdf(z) + sd * norm.pdf(z)

    def _kernel(self, x: np.ndarray) -> np.ndarray:
        z = _standardize(x, self.center, self.scale, self.keep)
        return np.exp(-_sq_dist(z, self.x) / (2 * self.length**2))


def _scaling(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    finite = np.where(np.isfinite(pool), pool, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: dropped below
        center = np.nanmean(finite, axis=0)
        scale = np.nanstd(finite, axis=0)
    keep = np.isfinite(center) & np.isfinite(scale) & (scale > 1e-12)  # constant columns say nothing
    return np.where(keep, center, 0.0), np.where(keep, scale, 1.0), keep


def _standardize(x: np.ndarray, center: np.ndarray, scale: np.ndarray, keep: np.ndarray) -> np.ndarray:
    z = (x - center) / scale
    z = np.where(np.isfinite(z), z, 0.0)  # a missing value sits at the pool's mean
    return z[:, keep]


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)
