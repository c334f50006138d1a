"""Side by side with Diffrax's VirtualBrownianTree: the same law (two-sample KS, variances)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.brownian import BrownianTree

from .stats import assert_same_law, assert_variance

diffrax = pytest.importorskip("diffrax")
pytestmark = pytest.mark.peers

N = 20_000


@pytest.mark.parametrize("tol", [1e-2, 1e-5])
def test_same_law_as_diffrax_virtual_brownian_tree(tol, x64):
    s = jnp.asarray([0.1234, 0.41, 0.7777])
    t = jnp.asarray([0.3999, 0.4177, 0.9512])
    keys = jax.random.split(jax.random.key(0), N)

    def ours(k):
        inc = BrownianTree(0.0, 1.0, tol, (), k, levy_area="space-time").evaluate(s, t)
        return inc.W, inc.H

    def theirs(k):
        vbt = diffrax.VirtualBrownianTree(0.0, 1.0, tol, (), k, levy_area=diffrax.SpaceTimeLevyArea)
        out = jax.vmap(lambda a, b: vbt.evaluate(a, b, use_levy=True))(s, t)
        return out.W, out.H

    w1, h1 = map(np.asarray, jax.jit(jax.vmap(ours))(keys))
    w2, h2 = map(np.asarray, jax.jit(jax.vmap(theirs))(jax.random.split(jax.random.key(1), N)))
    for i in range(3):
        h = float(t[i] - s[i])
        assert_same_law(w1[:, i], w2[:, i], f"W on interval {i}")
        assert_same_law(h1[:, i], h2[:, i], f"H on interval {i}")
        assert_variance(w2[:, i], h, "diffrax W")  # the peer itself obeys the law we test against
        assert_variance(h2[:, i], h / 12, "diffrax H")


def test_space_time_time_levy_area_matches_diffrax(x64):
    s, t = jnp.asarray([0.1234, 0.5]), jnp.asarray([0.4567, 0.5021])
    n = 8000

    def ours(k):
        return BrownianTree(0.0, 1.0, 1e-3, (), k, levy_area="space-time-time").evaluate(s, t).K

    def theirs(k):
        vbt = diffrax.VirtualBrownianTree(0.0, 1.0, 1e-3, (), k, levy_area=diffrax.SpaceTimeTimeLevyArea)
        return jax.vmap(lambda a, b: vbt.evaluate(a, b, use_levy=True).K)(s, t)

    k1 = np.asarray(jax.jit(jax.vmap(ours))(jax.random.split(jax.random.key(2), n)))
    k2 = np.asarray(jax.jit(jax.vmap(theirs))(jax.random.split(jax.random.key(3), n)))
    for i in range(2):
        assert_same_law(k1[:, i], k2[:, i], f"K on interval {i}")
        assert_variance(k1[:, i], float(t[i] - s[i]) / 720, "our K")
