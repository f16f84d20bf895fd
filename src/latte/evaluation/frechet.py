"""Feature statistics and the Fréchet distance between two Gaussians (FVD, FID).

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

Statistics are float64 running sums, and the covariance is the biased one (divide by N), as StyleGAN-V's
`FeatureStats` (used by Latte's tools) computes it; the unbiased one changes an FVD by about 0.05 % at N = 2048.
The trace of the matrix square root is taken from the eigenvalues of the symmetric matrix sqrt(S1) S2 sqrt(S1),
which has the same eigenvalues as S1 S2 but is symmetric positive semi-definite, so `eigvalsh` applies and no
complex parts or `scipy.linalg.sqrtm` (whose `disp` argument is deprecated) are involved.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureStats:
    """Running float64 sums of features and of their outer products; `add` a batch at a time."""

    dim: int
    count: int = 0
    total: np.ndarray | None = None  # sum of x
    total_outer: np.ndarray | None = None  # sum of x x^T

    def __post_init__(self):
        if self.total is None:
            self.total = np.zeros(self.dim, dtype=np.float64)
        if self.total_outer is None:
            self.total_outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def add(self, features: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"the detector gave {x.shape[1]} features per item, expected {self.dim}")
        if not np.isfinite(x).all():
            raise ValueError("the detector gave non-finite features (nan or inf)")
        self.count += len(x)
        self.total += x.sum(axis=0)
        self.total_outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and the biased (divide-by-N) covariance."""
        if self.count < 1:
            raise ValueError("no features were collected: the statistics are empty")
        mean = self.total / self.count
        return mean, self.total_outer / self.count - np.outer(mean, mean)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues from rounding
    are taken as 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for covariance matrices S1, S2."""
    root1 = _psd_sqrt(np.asarray(cov1, dtype=np.float64))
    middle = root1 @ np.asarray(cov2, dtype=np.float64) @ root1
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet distance between N(mean1, cov1) and N(mean2, cov2), in float64."""
    mean1, mean2 = (np.asarray(m, dtype=np.float64).ravel() for m in (mean1, mean2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in (cov1, cov2))
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mean1), len(mean1)):
        raise ValueError(f"statistics do not match: means {mean1.shape} and {mean2.shape}, covariances "
                         f"{cov1.shape} and {cov2.shape}")
    diff = mean1 - mean2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt_product(cov1, cov2)
    return float(max(value, 0.0))  # rounding can leave -1e-12 for identical statistics
