"""MA-fBM paths on the Brownian tree and SDEs driven by them (the augmented Markov system), against
closed forms: projection coefficients, consistency across query grids, sample laws, the fractional
Ornstein-Uhlenbeck moments and a strong order (Daems et al. 2024)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from solverlab import sde
from solverlab.brownian import BrownianGrid, BrownianTree, coarsen
from solverlab.fractional.fsde import (
    augmented_args,
    augmented_sde,
    augmented_state,
    fou_args,
    fou_moments,
    fou_sde,
    split_state,
)
from solverlab.fractional.markov import (
    active_mask,
    ma_covariance,
    ma_fbm_from_increments,
    ma_fbm_path,
    ma_variance,
    optimal_weights,
    ou_increment_coefficients,
    speeds,
)

from .stats import Z, assert_variance

N_TREES = 4000
GRID = jnp.linspace(0.0, 1.0, 33)[1:]  # 32 steps of 1/32
CHECK = (7, 15, 31)  # t = 0.25, 0.5, 1


def quad(f, a, b):
    return integrate.quad(f, a, b, limit=200, epsabs=0.0, epsrel=1e-12)[0]


# ------------------------------------------------------------------------------------------------
# the exact-in-mean OU step


@pytest.mark.parametrize("z", [1e-3, 0.3, 1.99, 2.01, 12.0])
def test_projection_coefficients_against_quadrature(z, x64):
    """c_j = int_0^1 e^{-z(1-x)} p_j(x) dx / int p_j^2 for p = 1, 1/2 - x, P2(x)/12."""
    h = 0.37
    decay, coefs, resid = ou_increment_coefficients(jnp.asarray([z / h]), h, "space-time-time")
    polys = [lambda x: 1.0, lambda x: 0.5 - x, lambda x: (6 * x * x - 6 * x + 1) / 12]
    norms = [1.0, 1 / 12, 1 / 720]
    for j, (p, n) in enumerate(zip(polys, norms)):
        ref = quad(lambda x: np.exp(-z * (1 - x)) * p(x), 0.0, 1.0) / n
        np.testing.assert_allclose(float(coefs[j, 0]), ref, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(float(decay[0]), np.exp(-z), rtol=1e-14)
    # Variance left after conditioning on W and H: h (Var I/h - c_W^2 - c_H^2/12).
    _, c2, r2 = ou_increment_coefficients(jnp.asarray([z / h]), h, "space-time")
    var_i = quad(lambda x: np.exp(-2 * z * (1 - x)), 0.0, 1.0)
    ref = h * (var_i - float(c2[0, 0]) ** 2 - float(c2[1, 0]) ** 2 / 12)
    np.testing.assert_allclose(float(r2[0]), ref, rtol=1e-6, atol=1e-15)
    assert float(r2[0]) >= float(resid[0]) >= 0.0  # K only adds information


def test_conditional_variance_vanishes_like_h_z4_over_720(x64):
    g = jnp.asarray([1.0])
    for h in (0.01, 0.05):
        r = float(ou_increment_coefficients(g, h, "space-time")[2][0])
        np.testing.assert_allclose(r, h * h**4 / 720, rtol=2 * h)
        r_w = float(ou_increment_coefficients(g, h, None)[2][0])
        np.testing.assert_allclose(r_w, h * h**2 / 12, rtol=2 * h)


# ------------------------------------------------------------------------------------------------
# paths on the tree


def _tree(key, tol=2.0**-8):
    return BrownianTree(0.0, 1.0, tol, (), key, levy_area="space-time")


def test_paths_on_one_tree_agree_across_query_grids(x64):
    """The same tree on a fine grid and on sub-grids: the values at common times converge (O(h^2)).

    Every grid is written as 512 sorted times, a coarse point repeated (a zero-length step changes
    nothing), so one compiled function serves all grids.
    """
    g = speeds(5, 20.0)
    w = optimal_weights(0.7, g)
    tree = _tree(jax.random.key(0), tol=2.0**-12)
    path = jax.jit(lambda ts: ma_fbm_path(tree, ts, 0.7, g, w))
    fine = jnp.linspace(0.0, 1.0, 513)[1:]
    b_fine = np.asarray(path(fine))
    gaps = []
    for m in (32, 8, 2):  # steps of 1/16, 1/64, 1/256 against 1/512
        b_coarse = np.asarray(path(jnp.repeat(fine[m - 1::m], m)))
        gaps.append(np.abs(b_coarse[m - 1::m] - b_fine[m - 1::m]).max())
    assert path._cache_size() == 1
    assert gaps[0] > 4 * gaps[1] > 16 * gaps[2] and gaps[2] < 1e-3, gaps
    # Causal: a prefix of the grid gives the same values.
    prefix = jnp.concatenate([fine[:100], jnp.full(412, fine[99])])
    np.testing.assert_allclose(np.asarray(path(prefix))[:100], b_fine[:100], rtol=1e-13)


@pytest.fixture(scope="module")
def sampled_paths():
    """MA-fBM paths (both kinds, one tree each) on N_TREES trees, H = 0.3, K = 5, gamma_max = 100."""
    with jax.enable_x64(True):
        g = speeds(5, 100.0)
        w = {kind: optimal_weights(0.3, g, kind=kind) for kind in ("II", "I")}

        def one(key):
            # One tree query per step, shared by both kinds (ma_fbm_path does the same stepping).
            k_tree, k_start = jax.random.split(key)
            tree = _tree(k_tree)
            prev = jnp.concatenate([jnp.zeros(1), GRID[:-1]])
            inc = tree.evaluate(prev, GRID)
            return [ma_fbm_from_increments(inc, GRID - prev, 0.3, g, w[kind], kind, key=k_start)
                    for kind in ("II", "I")]

        keys = jax.random.split(jax.random.key(1), N_TREES)
        paths = jax.jit(jax.vmap(one))(keys)
        return {kind: (np.asarray(p), g, w[kind]) for kind, p in zip(("II", "I"), paths)}


@pytest.mark.parametrize("kind", ["I", "II"])
def test_sample_variance_of_tree_paths_matches_the_closed_form(kind, sampled_paths, x64):
    paths, g, w = sampled_paths[kind]
    for j in CHECK:
        t = float(GRID[j])
        assert_variance(paths[:, j], float(ma_variance(t, 0.3, g, w, kind)), f"{kind} t={t}")


def test_sample_covariance_matches_and_approaches_fbm_as_K_grows(sampled_paths, x64):
    paths, g, w = sampled_paths["I"]
    s, t = float(GRID[15]), float(GRID[31])
    x, y = paths[:, 15], paths[:, 31]
    cov = np.mean(x * y) - x.mean() * y.mean()
    ref = float(ma_covariance(s, t, 0.3, g, w, "I"))
    se = np.sqrt((np.var(x) * np.var(y) + ref**2) / N_TREES)
    assert abs(cov - ref) < Z * se, (cov, ref, se)
    # The closed-form covariance approaches the standard fBM's as K grows (type I).
    ts = np.linspace(0.05, 1.0, 12)
    S, T = np.meshgrid(ts, ts)
    H = 0.3
    fbm = 0.5 * (S ** (2 * H) + T ** (2 * H) - np.abs(T - S) ** (2 * H))
    cov_K = jax.jit(lambda K: ma_covariance(S, T, H, speeds(K, 100.0, slots=17), kind="I",
                                            active=active_mask(K, 17)))
    gaps = [np.abs(np.asarray(cov_K(K)) - fbm).max() for K in (3, 5, 9, 17)]
    assert np.all(np.diff(gaps) < 0) and gaps[-1] < 0.01, gaps


def test_type_I_path_needs_a_key():
    tree = _tree(jax.random.key(0))
    with pytest.raises(ValueError, match="key must be a jax.random key for kind='I'"):
        ma_fbm_path(tree, GRID, 0.3, speeds(3, 20.0), kind="I")
    with pytest.raises(ValueError, match="ts must be sorted"):
        ma_fbm_path(tree, GRID[::-1], 0.3, speeds(3, 20.0))
    with pytest.raises(ValueError, match=r"hurst must lie in \(0, 1\)"):
        ma_fbm_path(tree, GRID, 1.5, speeds(3, 20.0))


# ------------------------------------------------------------------------------------------------
# the augmented SDE: the fractional OU process


THETA, SIGMA, X0 = 1.5, 0.8, 0.6


def test_fou_moments_against_the_kernel_formula(x64):
    """X_t - e^{-theta t} x0 = sigma int_0^t G(t-r) dW_r with
    G(v) = sum_k w_k (theta e^{-theta v} - g_k e^{-g_k v}) / (theta - g_k)."""
    g = np.asarray(speeds(4, 20.0))
    w = np.asarray(optimal_weights(0.7, g))
    t = 0.9
    Gf = lambda v: np.sum(w * (THETA * np.exp(-THETA * v) - g * np.exp(-g * v)) / (THETA - g))
    var = SIGMA**2 * quad(lambda v: Gf(v) ** 2, 0.0, t)
    mean, v = fou_moments(jnp.asarray([t]), X0, THETA, SIGMA, g, w, "II")
    np.testing.assert_allclose(float(mean[0]), X0 * np.exp(-THETA * t), rtol=1e-12)
    np.testing.assert_allclose(float(v[0]), var, rtol=1e-9)
    # Type I adds the stationary start: its drift -sigma sum_k w_k g_k e^{-g_k s} Y^k_0 gives
    # X_t a term sigma u.Y_0, u_k = -w_k g_k (e^{-g_k t} - e^{-theta t}) / (theta - g_k).
    u = -w * g * (np.exp(-g * t) - np.exp(-THETA * t)) / (THETA - g)
    past = SIGMA**2 * u @ (u @ (1 / (g[:, None] + g[None, :])))
    _, v1 = fou_moments(jnp.asarray([t]), X0, THETA, SIGMA, g, w, "I")
    np.testing.assert_allclose(float(v1[0]), var + past, rtol=1e-9)
    # And with theta -> 0, X - x0 = sigma * Bhat: Var = sigma^2 ma_variance.
    _, v0 = fou_moments(jnp.asarray([t]), X0, 1e-9, SIGMA, g, w, "I")
    np.testing.assert_allclose(float(v0[0]), SIGMA**2 * float(ma_variance(t, 0.7, g, w, "I")), rtol=1e-6)


def test_fou_sample_moments_match_the_closed_form(x64):
    """Solves of the augmented fOU system with ShARK on Brownian trees, both kinds in one compile."""
    K = 5
    g = speeds(K, 20.0)
    w = {kind: optimal_weights(0.7, g, kind=kind) for kind in ("II", "I")}
    eq = fou_sde()

    # The two kinds differ only in args and start: one solve, vmapped over them (one compile).
    both = [fou_args(THETA, SIGMA, g, w[k]) for k in ("II", "I")]
    args = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *both)

    @jax.jit
    def final(key):
        k_start, k_tree = jax.random.split(key)
        tree = BrownianTree(0.0, 1.0, 1 / 64, (1,), k_tree, levy_area="space-time")
        z0 = jnp.stack([augmented_state(X0, g, kind, key=k_start) for kind in ("II", "I")])
        return jax.vmap(lambda z, a: sde.solve(eq, sde.ShARK(), z, 0.0, 1.0, dt=1 / 64, brownian=tree,
                                               args=a, check=False).y1)(z0, args)

    finals = jnp.moveaxis(jax.vmap(final)(jax.random.split(jax.random.key(2), N_TREES)), 1, 0)
    for kind, z1 in zip(("II", "I"), finals):
        x1, y1 = split_state(np.asarray(z1), K)
        mean, var = fou_moments(jnp.asarray([1.0]), X0, THETA, SIGMA, g, w[kind], kind)
        se = np.sqrt(float(var[0]) / N_TREES)
        assert abs(x1[:, 0].mean() - float(mean[0])) < Z * se
        assert_variance(x1[:, 0], float(var[0]), f"fOU {kind}")
        # The OU components are OU: Var Y^k_1 = (1 - e^{-2 g})/(2 g) (type II), 1/(2 g) (type I).
        gk = np.asarray(g)
        expect = 1 / (2 * gk) if kind == "I" else -np.expm1(-2 * gk) / (2 * gk)
        for k in (0, K - 1):
            assert_variance(y1[:, k], expect[k], f"{kind} Y^{k}")


def _grid_solve(eq, solver, z0, inc, dt, args):
    """Constant steps of ``solver.step`` over given increments (the grid of a strong-order study)."""
    n = inc.W.shape[0]

    def step(z, k):
        one = jax.tree_util.tree_map(lambda x: x[k], inc)
        return solver.step(eq, k * dt, z, dt, one, args)[0], None

    return jax.lax.scan(step, z0, jnp.arange(n))[0]


def test_strong_orders_on_the_augmented_system(x64):
    """Euler-Maruyama (order 1 for additive noise) and ShARK against a fine ShARK reference, on the
    same Brownian paths (a fine grid coarsened by Chen's relation)."""
    K, n_fine, n_paths = 4, 2**10, 200
    g = speeds(K, 8.0)
    args = fou_args(THETA, SIGMA, g, optimal_weights(0.7, g))
    eq, z0 = fou_sde(), augmented_state(X0, g)
    factors = (64, 32, 16, 8)  # dt = 2^-4 .. 2^-7
    dt = 1.0 / n_fine

    def one(key):
        inc = BrownianGrid(0.0, 1.0, n_fine, (1,), key, levy_area="space-time").increments()
        ref = _grid_solve(eq, sde.ShARK(), z0, inc, dt, args)[0]
        errs = []
        for solver in (sde.EulerMaruyama(), sde.ShARK()):
            for f in factors:
                z = _grid_solve(eq, solver, z0, coarsen(inc, dt, f), f * dt, args)
                errs.append(jnp.abs(z[0] - ref))
        return jnp.stack(errs)

    e = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), n_paths)))
    dts = np.asarray(factors) * dt
    em, shark = e[:, :4], e[:, 4:]
    order_em, (lo, hi) = sde.fit_order(dts, em)
    assert lo - 0.15 < 1.0 < hi + 0.15, (order_em, lo, hi)
    order_shark, (lo_s, _) = sde.fit_order(dts, shark)
    assert lo_s > 1.35, order_shark  # 3/2 in general; linear drift and additive noise give about 2
    assert np.all(shark.mean(axis=0) < em.mean(axis=0))


def test_general_noise_with_constant_diffusion_matches_the_additive_system(x64):
    g = speeds(3, 20.0)
    w = optimal_weights(0.7, g)
    general = augmented_sde(lambda t, x, a: -THETA * x, lambda t, x, a: SIGMA * jnp.ones_like(x),
                            noise="general", calculus="ito")
    assert general.brownian_shape(jnp.zeros(4), augmented_args(g, w)) == (1,)
    inc = BrownianGrid(0.0, 1.0, 32, (1,), jax.random.key(4)).increments()
    z0 = augmented_state(X0, g)
    a = _grid_solve(general, sde.EulerMaruyama(), z0, inc, 1 / 32, augmented_args(g, w, None))
    b = _grid_solve(fou_sde(), sde.EulerMaruyama(), z0, inc, 1 / 32, fou_args(THETA, SIGMA, g, w))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_rebuilding_the_augmented_sde_does_not_recompile(x64):
    g = speeds(3, 20.0)
    tree = BrownianTree(0.0, 1.0, 1 / 16, (1,), jax.random.key(5), levy_area="space-time")

    @jax.jit
    def run(hurst):
        w = optimal_weights(hurst, g)
        return sde.solve(fou_sde(), sde.ShARK(), augmented_state(X0, g), 0.0, 1.0, dt=1 / 16,
                         brownian=tree, args=fou_args(THETA, SIGMA, g, w), check=False).y1

    run(0.3), run(0.8)
    assert run._cache_size() == 1
    assert fou_sde() == fou_sde() and hash(fou_sde()) == hash(fou_sde())


def test_augmented_helpers_reject_bad_input():
    g = speeds(3, 20.0)
    with pytest.raises(ValueError, match="noise must be 'additive' or 'general'"):
        augmented_sde(lambda t, x, a: x, lambda t, x, a: x, noise="diagonal")
    with pytest.raises(ValueError, match="key must be a jax.random key for kind='I'"):
        augmented_state(0.0, g, "I")
    with pytest.raises(ValueError, match=r"weights must have the shape of gammas \(3,\)"):
        augmented_args(g, jnp.ones(2))
    with pytest.raises(ValueError, match="kind must be one of"):
        augmented_state(0.0, g, "3")


def test_adaptive_steps_on_the_augmented_system_follow_the_same_path(x64):
    """The MA-fBM lives on the Brownian tree, so an adaptive solve (PI controller, rejected steps
    re-query the same tree) converges to the fine constant-step solution on the *same* path, and a
    tighter tolerance gets closer (Jelincic, Foster & Kidger 2024)."""
    K, n_paths = 5, 24
    g = speeds(K, 50.0)  # fast OU terms: the stiff part the controller must resolve
    args = fou_args(THETA, SIGMA, g, optimal_weights(0.3, g))
    eq, z0 = fou_sde(), augmented_state(X0, g)
    dt_min = 2.0**-14

    def one(key, rtol):
        tree = BrownianTree(0.0, 1.0, dt_min, (1,), key, levy_area="space-time")
        fine = sde.solve(eq, sde.ShARK(), z0, 0.0, 1.0, dt=2.0**-12, brownian=tree, args=args, check=False)
        controller = sde.PIController(rtol=rtol, atol=rtol, dt_min=dt_min)
        adaptive = sde.solve(eq, sde.ShARK(), z0, 0.0, 1.0, dt=2.0**-4, brownian=tree, args=args,
                             controller=controller, max_steps=1024, check=False)
        return jnp.abs(adaptive.y1[0] - fine.y1[0]), adaptive.stats["accepted"], adaptive.result

    keys = jax.random.split(jax.random.key(6), n_paths)
    loose = jax.jit(jax.vmap(lambda k: one(k, 1e-1)))(keys)
    tight = jax.jit(jax.vmap(lambda k: one(k, 1e-2)))(keys)
    for err, steps, result in (loose, tight):
        assert np.all(np.asarray(result) == 0)
        assert np.all(np.asarray(steps) < 1024)
    assert np.mean(tight[1]) > 2 * np.mean(loose[1])  # tighter tolerance: more steps ...
    assert np.mean(tight[0]) < 0.2 * np.mean(loose[0])  # ... and a closer path
    assert np.mean(tight[0]) < 5e-3


@pytest.mark.parametrize("gamma_max", [20.0, 1000.0])
def test_fou_moments_stay_exact_for_fast_ou_terms(gamma_max, precision):
    """With theta = 0, sigma = 1 and x0 = 0 the fOU process is the MA-fBM itself, so its variance is
    ma_variance; fast speeds (gamma t up to 1000) once overflowed the block exponential."""
    g = speeds(5, gamma_max)
    ts = jnp.asarray([0.01, 0.5, 1.0])
    rtol = 1e-10 if precision == "float64" else 1e-4
    for kind in ("I", "II"):
        w = optimal_weights(0.3, g, kind=kind)
        mean, var = fou_moments(ts, 0.0, 0.0, 1.0, g, w, kind)
        np.testing.assert_allclose(np.asarray(var), np.asarray(ma_variance(ts, 0.3, g, w, kind)), rtol=rtol)
        np.testing.assert_array_equal(np.asarray(mean), 0.0)
