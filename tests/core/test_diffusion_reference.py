"""The adaptive reference solve of the probability-flow ODE against the exact Gaussian transport map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab import SolverError
from solverlab.diffusion import DDPMLinear, EDM, VPLinear
from solverlab.diffusion.reference import reference

M, S0 = 1.5, 0.5


def problem(sch):
    def eps(x, t):
        a, s = sch.alpha(t), sch.sigma(t)
        return s * (x - a * M) / (a**2 * S0**2 + s**2)

    a, s = sch.alpha(sch.t_max), sch.sigma(sch.t_max)
    x_T = s * jax.random.normal(jax.random.key(0), (128, 1), jnp.float64)
    # The exact flow to t_min, then the data prediction there (what the reference computes).
    ae, se = sch.alpha(sch.t_min), sch.sigma(sch.t_min)
    x_end = ae * M + jnp.sqrt(ae**2 * S0**2 + se**2) * (x_T - a * M) / jnp.sqrt(a**2 * S0**2 + s**2)
    return eps, x_T, (x_end - se * eps(x_end, sch.t_min)) / ae


@pytest.mark.parametrize("sch", [VPLinear(), DDPMLinear(), EDM()], ids=lambda s: type(s).__name__)
def test_reference_meets_its_tolerance(sch, x64):
    eps, x_T, target = problem(sch)
    errors, steps = [], []
    for tol in (1e-5, 1e-9):
        out = reference(eps, x_T, sch, rtol=tol, atol=tol)
        assert bool(out.success)
        errors.append(float(jnp.max(jnp.abs(out.x0 - target))))
        steps.append(int(out.n_steps))
        assert errors[-1] < 50 * tol, (tol, errors[-1])
    assert steps[1] > 3 * steps[0]  # fifth order: 1e4 in tolerance costs about 10^(4/5) = 6x the steps


def test_running_out_of_steps_is_an_error(x64):
    eps, x_T, _ = problem(VPLinear())
    with pytest.raises(SolverError, match="more than max_steps = 5 steps"):
        reference(eps, x_T, VPLinear(), rtol=1e-10, atol=1e-10, max_steps=5)


def test_bad_arguments():
    eps, x_T, _ = problem(VPLinear())
    with pytest.raises(ValueError, match=r"rtol must lie in \(0, inf\), got 0"):
        reference(eps, x_T, VPLinear(), rtol=0.0)
    with pytest.raises(ValueError, match="max_steps must be an int >= 1"):
        reference(eps, x_T, VPLinear(), max_steps=0)
    with pytest.raises(ValueError, match="t_end must be < t_start"):
        reference(eps, x_T, VPLinear(), t_start=0.3, t_end=0.3)


def test_a_nan_model_is_reported_as_nan_not_as_max_steps():
    with pytest.raises(SolverError, match="NaN"):
        reference(lambda x, t: x * jnp.nan, jnp.ones((4, 1)), VPLinear())
