"""Statistical checks with tolerances derived from the sample size (fixed keys: never flaky).

A check passes when the estimate lies within ``Z`` standard errors of the truth; with ``Z = 5`` a
correct sampler fails with probability below 1e-6 per check, and the keys are fixed anyway.
"""

import numpy as np
from scipy import stats

Z = 5.0


def assert_variance(x, expected, name=""):
    """Sample variance of Gaussian draws against ``expected``: SE of s^2/sigma^2 is sqrt(2/(n-1))."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    ratio = np.var(x, ddof=1) / expected
    se = np.sqrt(2.0 / (n - 1))
    assert abs(ratio - 1.0) < Z * se, f"{name}: var/expected = {ratio:.4f}, allowed 1 +- {Z * se:.4f}"


def assert_mean_zero(x, sd, name=""):
    x = np.asarray(x, dtype=np.float64).ravel()
    se = sd / np.sqrt(x.size)
    assert abs(x.mean()) < Z * se, f"{name}: mean {x.mean():.3g}, allowed +- {Z * se:.3g}"


def assert_uncorrelated(x, y, name=""):
    """Sample correlation of independent draws has SE about 1/sqrt(n)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    r = np.corrcoef(x, y)[0, 1]
    se = 1.0 / np.sqrt(x.size)
    assert abs(r) < Z * se, f"{name}: correlation {r:.4f}, allowed +- {Z * se:.4f}"


def assert_standard_normal(x, name="", alpha=1e-4):
    """Kolmogorov-Smirnov test against N(0, 1)."""
    p = stats.kstest(np.asarray(x, dtype=np.float64).ravel(), "norm").pvalue
    assert p > alpha, f"{name}: KS p-value {p:.2e} < {alpha}"


def assert_same_law(x, y, name="", alpha=1e-4):
    """Two-sample Kolmogorov-Smirnov test."""
    p = stats.ks_2samp(np.ravel(x), np.ravel(y)).pvalue
    assert p > alpha, f"{name}: two-sample KS p-value {p:.2e} < {alpha}"
