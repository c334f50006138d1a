r"""Fractional noise (chapter 03): exact fractional Brownian motion, its Markov approximation by a
mixture of Ornstein-Uhlenbeck processes, SDEs driven by it, and learning the Hurst index.

Daems, Opper, Crevecoeur & Birdal, "Variational Inference for SDEs Driven by Fractional Noise"
(ICLR 2024); Davies & Harte (1987) for exact sampling.

Modules: :mod:`.covariance` (fBM and fGn covariances), :mod:`.exact` (Davies-Harte and Cholesky
sampling), :mod:`.hurst` (estimating :math:`H` with a standard error), :mod:`.markov` (the OU mixture:
speeds, optimal weights, closed-form errors and variances, paths on the Brownian tree), :mod:`.fsde`
(SDEs driven by it as augmented Markov systems), :mod:`.vi` (learning :math:`H` by variational
inference; use it as ``fractional.vi.fit``).
"""

from . import covariance, exact, fsde, hurst, markov, vi
from .covariance import check_hurst, fbm_covariance, fgn_autocovariance
from .exact import circulant_eigenvalues, fbm, fbm_cholesky, fgn
from .fsde import (
    augmented_args,
    augmented_sde,
    augmented_state,
    fou_args,
    fou_moments,
    fou_sde,
    linear_moments,
    split_state,
)
from .hurst import HurstEstimate, estimate_hurst
from .markov import (
    KINDS,
    active_mask,
    approximation_error,
    exact_variance,
    fbm_kernel,
    ma_covariance,
    ma_fbm_from_increments,
    ma_fbm_path,
    ma_kernel,
    ma_variance,
    mvn_constant,
    objective_terms,
    optimal_weights,
    ou_increment_coefficients,
    sample_stationary,
    speeds,
    stationary_covariance,
)

__all__ = [
    # modules
    "covariance", "exact", "hurst", "markov", "fsde", "vi",
    # exact fBM
    "fbm", "fgn", "fbm_cholesky", "circulant_eigenvalues", "fbm_covariance", "fgn_autocovariance",
    "check_hurst", "estimate_hurst", "HurstEstimate",
    # Markov approximation
    "KINDS", "speeds", "active_mask", "objective_terms", "optimal_weights", "approximation_error",
    "mvn_constant", "fbm_kernel", "ma_kernel", "exact_variance", "ma_variance", "ma_covariance",
    "stationary_covariance", "sample_stationary", "ou_increment_coefficients", "ma_fbm_path",
    "ma_fbm_from_increments",
    # SDEs driven by MA-fBM
    "augmented_sde", "augmented_args", "augmented_state", "split_state", "fou_sde", "fou_args",
    "fou_moments", "linear_moments",
]
