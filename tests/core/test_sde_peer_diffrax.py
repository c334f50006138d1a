"""One step of each SDE solver against Diffrax's, fed the identical Brownian increment (W, H)."""

import jax.numpy as jnp
import numpy as np
import pytest

from solverlab import sde
from solverlab.brownian import BrownianIncrement

diffrax = pytest.importorskip("diffrax")
pytestmark = pytest.mark.peers

W = np.array([0.21, -0.13])  # NumPy: float64 whatever JAX's x64 flag was at import
H = np.array([0.05, 0.02])
STEP = 0.1
Y0 = np.array([0.3, -0.4])


class _FixedIncrement(diffrax.AbstractBrownianPath):
    """A Brownian 'path' that answers every query with one given (W, H): a single-step probe."""

    levy_area = diffrax.SpaceTimeLevyArea

    @property
    def t0(self):
        return 0.0

    @property
    def t1(self):
        return STEP

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        if use_levy:
            return diffrax.SpaceTimeLevyArea(dt=jnp.asarray(STEP), W=jnp.asarray(W), H=jnp.asarray(H))
        return jnp.asarray(W)


def _drift(t, y, args):
    return jnp.sin(y) - 0.3 * y + 0.1 * t


def _diag(t, y, args):
    return 0.7 * jnp.cos(y) + 0.2


def _additive(t, y, args):
    return jnp.asarray([0.5, 0.8])


def _diffrax_step(solver, diffusion):
    term = diffrax.MultiTerm(
        diffrax.ODETerm(_drift),
        diffrax.ControlTerm(lambda t, y, a: jnp.diag(diffusion(t, y, a)), _FixedIncrement()),
    )
    y0 = jnp.asarray(Y0)
    state = solver.init(term, 0.0, STEP, y0, None)
    y1, *_ = solver.step(term, 0.0, STEP, y0, None, state, made_jump=False)
    return y1


@pytest.mark.parametrize(
    "ours, theirs, noise, calculus, diffusion",
    [
        (sde.EulerMaruyama(), "Euler", "diagonal", "ito", _diag),
        (sde.Milstein(), "ItoMilstein", "diagonal", "ito", _diag),
        (sde.Milstein(), "StratonovichMilstein", "diagonal", "stratonovich", _diag),
        (sde.Heun(), "Heun", "diagonal", "stratonovich", _diag),
        (sde.ShARK(), "ShARK", "additive", "ito", _additive),
    ],
)
def test_one_step_matches_diffrax(ours, theirs, noise, calculus, diffusion, x64):
    eq = sde.SDE(_drift, diffusion, noise, calculus)
    inc = BrownianIncrement(W=jnp.asarray(W), H=jnp.asarray(H))
    y1, _ = ours.step(eq, 0.0, jnp.asarray(Y0), STEP, inc, None)
    expected = _diffrax_step(getattr(diffrax, theirs)(), diffusion)
    np.testing.assert_allclose(y1, expected, rtol=1e-12, atol=1e-12)
