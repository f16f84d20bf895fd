"""The Fréchet distance: float64, biased covariance, trace square root from eigenvalues; checked against a closed
form and against scipy's matrix square root."""

import numpy as np
import pytest
import scipy.linalg

from latte.evaluation.frechet import FeatureStats, frechet_distance, trace_sqrt_product


def scipy_frechet(mean1, cov1, mean2, cov2) -> float:
    """The formula as StyleGAN-V writes it (scipy's sqrtm of the product), without the deprecated `disp`."""
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    return float(np.real(((mean1 - mean2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root)))


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    mean1, mean2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mean1 - mean2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    mean, cov = x.mean(0), np.cov(x, rowvar=False, bias=True)
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize(("n", "dim"), [(400, 32), (20, 32)])  # full rank, and rank-deficient (N < dim)
def test_matches_scipy_on_random_statistics(n, dim):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 0.3
    stats = []
    for x in (a, b):
        mean, cov = x.mean(0), np.cov(x, rowvar=False, bias=True)
        stats += [mean, cov]
    assert frechet_distance(*stats) == pytest.approx(scipy_frechet(*stats), rel=1e-8)


def test_trace_sqrt_of_commuting_matrices():
    # S and S^2 commute: tr((S S^2)^(1/2)) = sum(eigenvalues^(3/2)).
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    values = rng.uniform(0.5, 2, size=5)
    s = (q * values) @ q.T
    assert trace_sqrt_product(s, s @ s) == pytest.approx((values ** 1.5).sum(), rel=1e-10)


def test_feature_stats_are_float64_biased_and_batch_independent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 4)).astype(np.float32)
    whole, batched = FeatureStats(4), FeatureStats(4)
    whole.add(x)
    for start in range(0, 37, 5):
        batched.add(x[start:start + 5])
    mean, cov = batched.mean_cov()
    assert mean.dtype == cov.dtype == np.float64 and batched.count == 37
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False, bias=True), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, whole.mean_cov()[1], rtol=1e-12, atol=1e-14)


def test_bad_statistics_are_one_line_errors():
    with pytest.raises(ValueError, match=r"statistics do not match: means \(3,\) and \(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    stats = FeatureStats(3)
    with pytest.raises(ValueError, match="gave 2 features per item, expected 3"):
        stats.add(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        stats.add(np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match="no features were collected"):
        stats.mean_cov()
