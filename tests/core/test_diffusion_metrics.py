"""Sample-quality metrics against closed forms, with tolerances from the sample size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.diffusion import ring
from solverlab.diffusion.metrics import frechet_distance, mode_weight_tv, sliced_w2, terminal_error


def test_sliced_w2_of_a_shift_is_its_length_over_root_d(x64):
    # For y = x + m, every projection shifts by theta . m exactly: SW2^2 = E (theta . m)^2 = |m|^2 / d.
    d, n = 4, 2000
    x = jax.random.normal(jax.random.key(0), (n, d))
    m = jnp.asarray([1.0, -2.0, 0.5, 0.0])
    sw = float(sliced_w2(x, x + m, jax.random.key(1), n_projections=4096))
    # Monte Carlo over directions: (theta.m)^2 has relative s.d. about sqrt(2) at d = 4.
    expected = float(jnp.linalg.norm(m)) / np.sqrt(d)
    assert abs(sw**2 / expected**2 - 1) < 5 * np.sqrt(2.0 / 4096), (sw, expected)
    assert float(sliced_w2(x, x, jax.random.key(1))) == 0.0


def test_frechet_distance_of_gaussian_samples(x64):
    n, d = 40_000, 3
    key_a, key_b = jax.random.split(jax.random.key(2))
    scale = jnp.asarray([1.0, 2.0, 0.5])
    x = jax.random.normal(key_a, (n, d))
    y = 0.3 + scale * jax.random.normal(key_b, (n, d))
    # Closed form for diagonal covariances: |m|^2 + sum (1 - s)^2.
    expected = 3 * 0.3**2 + float(jnp.sum((1 - scale) ** 2))
    # The estimate's noise is O(sum s^2 / sqrt(n)) here; 5 such units as the tolerance.
    assert abs(float(frechet_distance(x, y)) - expected) < 5 * float(jnp.sum(scale**2 + 1)) / np.sqrt(n)


def test_mode_weights_of_exact_samples_and_of_a_collapse(x64):
    mixture = ring(K=8, n_classes=4)
    x = mixture.sample(jax.random.key(3), 8000)
    # Exact samples: TV of a multinomial with 8 cells is about sqrt(K / (2 pi n)); components barely overlap.
    assert float(mode_weight_tv(mixture, x)) < 5 * np.sqrt(8 / (2 * np.pi * 8000))
    collapsed = jnp.broadcast_to(mixture.means[0], (100, 2))
    np.testing.assert_allclose(float(mode_weight_tv(mixture, collapsed)), 1 - float(mixture.weights[0]), rtol=1e-6)
    in_class = mixture.sample(jax.random.key(4), 4000, label=1)
    assert float(mode_weight_tv(mixture, in_class, label=1)) < 5 * np.sqrt(2 / (2 * np.pi * 4000))


def test_terminal_error_and_bad_shapes():
    x = jnp.zeros((5, 2))
    np.testing.assert_allclose(float(terminal_error(x, x + jnp.asarray([3.0, 4.0]))), 5.0)
    with pytest.raises(ValueError, match=r"x and reference must have the same shape"):
        terminal_error(x, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"x must be a \(n, d\) array of n >= 2 samples, got shape \(5,\)"):
        sliced_w2(jnp.zeros(5), jnp.zeros(5), jax.random.key(0))


@pytest.mark.parametrize("method", ["dpm_solver++_2m", "dpm_solver_3", "heun"])
def test_samplers_reach_the_data_law_as_nfe_grows(method, x64):
    """Sliced W2 to exact draws of the 2-D ring falls with NFE down to the floor set by the sample
    size (W2 between two independent exact sample sets of the same size)."""
    from solverlab.diffusion import VPLinear, model_fn, sample

    mixture, sch, n = ring(K=8), VPLinear(), 2000
    exact = mixture.sample(jax.random.key(6), n)
    floor = float(sliced_w2(exact, mixture.sample(jax.random.key(7), n), jax.random.key(8)))
    x_T = jax.random.normal(jax.random.key(9), (n, 2))
    model = model_fn(mixture, sch)
    w2 = [float(sliced_w2(sample(model, x_T, sch, method, nfe), exact, jax.random.key(8))) for nfe in (4, 10, 40)]
    assert w2[0] > w2[2], w2
    assert w2[2] < 2.5 * floor, (w2, floor)
