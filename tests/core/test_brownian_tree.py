"""The Virtual Brownian Tree: exact relations, laws at random non-dyadic times, determinism, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.brownian import BrownianIncrement, BrownianTree
from solverlab.brownian._increment import from_moments, join, to_moments

from .stats import (
    assert_mean_zero,
    assert_standard_normal,
    assert_uncorrelated,
    assert_variance,
)

LEVY = [None, "space-time", "space-time-time"]
N_PATHS = 20_000


def _sample(levy_area, times, n=N_PATHS, tol=1e-3, t0=0.0, t1=1.0, seed=0):
    """``times`` is a list of (s, t); returns a stacked array (n, len(times), d) of (W, H, K)."""
    s = jnp.asarray([p[0] for p in times])
    t = jnp.asarray([p[1] for p in times])

    def one(key):
        bm = BrownianTree(t0, t1, tol, (), key, levy_area=levy_area)
        inc = bm.evaluate(s, t)
        return jnp.stack([x for x in (inc.W, inc.H, inc.K) if x is not None], axis=-1)

    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(one))(keys), dtype=np.float64)


def _chen(h1, v1, h2, v2):
    h, m = join(h1, to_moments(h1, v1), h2, to_moments(h2, v2))
    return from_moments(h, m)


@pytest.mark.parametrize("levy_area", LEVY)
def test_additivity_and_chen_relation_to_float_precision(levy_area, precision):
    # Random, non-dyadic times, at least tol apart.
    r, u, w = 0.1234567, 0.4012345, 0.8765432
    bm = BrownianTree(0.0, 1.0, 1e-3, (3,), jax.random.key(7), levy_area=levy_area)
    a, b, c = bm.evaluate(r, u), bm.evaluate(u, w), bm.evaluate(r, w)
    eps = 1e-12 if precision == "float64" else 3e-6
    np.testing.assert_allclose(a.W + b.W, c.W, atol=eps)
    if levy_area is not None:
        joined = _chen(u - r, a.stack(), w - u, b.stack())
        np.testing.assert_allclose(joined, c.stack(), atol=eps)


def test_evaluate_from_t0_is_the_path():
    bm = BrownianTree(0.0, 2.0, 1e-3, (), jax.random.key(1), levy_area="space-time")
    ts = jnp.asarray([0.3, 1.1, 1.7])
    w = bm.evaluate(ts).W
    np.testing.assert_allclose(w[1] - w[0], bm.evaluate(0.3, 1.1).W, atol=1e-6)
    assert float(bm.evaluate(0.0, 0.0).W) == 0.0
    assert float(bm.evaluate(0.5, 0.5).H) == 0.0


@pytest.mark.parametrize("levy_area", LEVY)
def test_laws_at_random_times(levy_area, x64):
    # Disjoint intervals at non-dyadic times (ends in different leaves), and the whole interval.
    times = [(0.1234, 0.3771), (0.3771, 0.3799), (0.61, 0.93), (0.500013, 0.5013), (0.0, 1.0)]
    x = _sample(levy_area, times, tol=1e-3)
    for i, (s, t) in enumerate(times):
        h = t - s
        assert_variance(x[:, i, 0], h, f"W[{s},{t}]")
        assert_mean_zero(x[:, i, 0], np.sqrt(h), f"W[{s},{t}]")
        assert_standard_normal(x[:, i, 0] / np.sqrt(h), f"W[{s},{t}]")
        if levy_area is not None:
            assert_variance(x[:, i, 1], h / 12, f"H[{s},{t}]")
            assert_standard_normal(x[:, i, 1] / np.sqrt(h / 12), f"H[{s},{t}]")
            assert_uncorrelated(x[:, i, 0], x[:, i, 1], f"W, H on [{s},{t}]")
        if levy_area == "space-time-time":
            assert_variance(x[:, i, 2], h / 720, f"K[{s},{t}]")
            assert_uncorrelated(x[:, i, 0], x[:, i, 2], f"W, K on [{s},{t}]")
            assert_uncorrelated(x[:, i, 1], x[:, i, 2], f"H, K on [{s},{t}]")
    # Disjoint intervals are independent, component by component.
    d = x.shape[-1]
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        for k in range(d):
            for m in range(d):
                assert_uncorrelated(x[:, i, k], x[:, j, m], f"intervals {i},{j} comp {k},{m}")


@pytest.mark.parametrize("t0, t1, tol", [(-3.7, 2.2, 1e-2), (5.0, 1000.0, 0.5), (0.1, 0.9, 1e-4)])
def test_laws_on_shifted_and_long_intervals(t0, t1, tol, precision):
    span = t1 - t0
    times = [(t0, t0 + 0.3 * span), (t0 + 0.3 * span, t0 + 0.77 * span), (t0 + 0.8123 * span, t1)]
    x = _sample("space-time-time", times, n=8000, tol=tol, t0=t0, t1=t1)
    for i, (s, t) in enumerate(times):
        assert_variance(x[:, i, 0], t - s, f"W[{s},{t}]")
        assert_variance(x[:, i, 1], (t - s) / 12, f"H[{s},{t}]")
        assert_variance(x[:, i, 2], (t - s) / 720, f"K[{s},{t}]")
    assert_uncorrelated(x[:, 0, 0], x[:, 1, 0], "disjoint W")


def test_eager_and_jit_build_the_same_tree():
    # Concrete and traced construction agree on the depth (computed exactly from binary exponents).
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    depth = jax.jit(lambda a, b, c: BrownianTree(a, b, c, (), key).depth)
    for _ in range(300):
        t0 = float(rng.uniform(-2, 2))
        t1 = t0 + float(rng.uniform(1e-3, 3))
        span = float(np.float32(t1) - np.float32(t0))
        tol = span / 2.0 ** int(rng.integers(0, 20)) * float(rng.choice([1.0, 1.0 + 1e-7, 1.0 - 1e-7]))
        tol = min(tol, span)
        tree = BrownianTree(t0, t1, tol, (), key)
        assert int(tree.depth) == int(depth(t0, t1, tol)), (t0, t1, tol)
        assert float(tree.leaf_length) <= float(np.float32(tol))
        assert int(tree.depth) == 0 or float(tree.leaf_length) * 2 > float(np.float32(tol))


def test_queries_at_the_ends_of_a_shifted_interval_in_float32():
    bm = BrownianTree(0.1, 1.0, 1e-3, (), jax.random.key(0))
    assert np.isfinite(bm.evaluate(0.1, 0.5).W) and np.isfinite(bm.evaluate(0.3, 1.0).W)
    assert np.isfinite(BrownianTree(-1.3, 2.0, 1e-3, (), jax.random.key(0)).evaluate(-1.3, 0.0).W)


def test_below_tol_h_is_interpolation_not_brownian(x64):
    # Pinned limitation (as in diffrax's default leaf interpolation): inside one leaf, H of a short
    # interval does not shrink like sqrt(h/12); solve() therefore refuses trees coarser than its steps.
    x = _sample("space-time", [(0.6, 0.6 + 1e-6), (0.6, 0.6 + 1e-2)], n=4000, tol=0.25)
    sd_short, sd_long = np.std(x[:, 0, 1]), np.std(x[:, 1, 1])
    assert sd_short > 100 * np.sqrt(1e-6 / 12)
    assert sd_short > 0.2 * sd_long


def test_covariance_of_the_path_is_min(x64):
    # Cov(W_s, W_t) = min(s, t) for values of the path (queries from t0).
    ts = [0.137, 0.5521, 0.9003]
    x = _sample(None, [(0.0, t) for t in ts])[..., 0]
    cov = np.cov(x.T)
    expected = np.minimum.outer(ts, ts)
    se = np.sqrt((expected**2 + np.outer(ts, ts)) / N_PATHS)  # SE of a Gaussian sample covariance
    assert np.all(np.abs(cov - expected) < 5 * se), (cov, expected)


def test_queries_cutting_a_leaf_once_have_the_right_joint_law(x64):
    # A coarse tree (tol 0.25): the leaf [0.25, 0.5] is cut once at 0.31 by the exact bridge (not
    # interpolated linearly), and both queries use that cut.
    times = [(0.0, 0.31), (0.31, 0.9)]
    x = _sample("space-time", times, tol=0.25)
    for i, (s, t) in enumerate(times):
        assert_variance(x[:, i, 0], t - s, "W across a cut leaf")
        assert_variance(x[:, i, 1], (t - s) / 12, "H across a cut leaf")
        assert_uncorrelated(x[:, i, 0], x[:, i, 1], "W, H across a cut leaf")
    for k in range(2):
        for m in range(2):
            assert_uncorrelated(x[:, 0, k], x[:, 1, m], f"the two sides of the cut, comp {k},{m}")


@pytest.mark.parametrize("levy_area", LEVY)
def test_the_path_is_consistent_and_continuous_inside_a_leaf(levy_area, x64):
    bm = BrownianTree(0.0, 1.0, 0.25, (), jax.random.key(2), levy_area=levy_area)
    r, u, w = 0.26, 0.33, 0.47  # one leaf
    a, b, c = bm.evaluate(r, u), bm.evaluate(u, w), bm.evaluate(r, w)
    np.testing.assert_allclose(a.W + b.W, c.W, atol=1e-13)
    np.testing.assert_allclose(bm.evaluate(w).W - bm.evaluate(r).W, c.W, atol=1e-13)
    if levy_area is not None:
        np.testing.assert_allclose(_chen(u - r, a.stack(), w - u, b.stack()), c.stack(), atol=1e-13)
    # Continuous in time, across the leaf's midpoint too: a jump would not shrink with the grid.
    def max_step(n):
        return np.abs(np.diff(np.asarray(bm.evaluate(jnp.linspace(0.25, 0.5, n)).W))).max()

    assert max_step(100_001) < max_step(1_001) / 5


def test_same_key_same_values_whatever_the_query_order():
    bm = BrownianTree(0.0, 1.0, 1e-4, (2,), jax.random.key(11), levy_area="space-time-time")
    rng = np.random.default_rng(0)
    pts = np.sort(rng.uniform(0, 1, size=(64, 2)), axis=1)
    forward = bm.evaluate(pts[:, 0], pts[:, 1])
    order = rng.permutation(64)
    shuffled = bm.evaluate(pts[order, 0], pts[order, 1])
    for f, g in zip(forward.stack(), shuffled.stack()):
        np.testing.assert_array_equal(np.asarray(f)[order], np.asarray(g))
    one = bm.evaluate(float(pts[5, 0]), float(pts[5, 1]))
    np.testing.assert_allclose(one.W, forward.W[5], rtol=1e-6)
    # Separate calls with other batch sizes (separately compiled) agree too.
    part = bm.evaluate(pts[10:17, 0], pts[10:17, 1])
    np.testing.assert_allclose(part.K, forward.K[10:17], rtol=1e-5, atol=1e-7)
    again = BrownianTree(0.0, 1.0, 1e-4, (2,), jax.random.key(11), levy_area="space-time-time")
    np.testing.assert_array_equal(again.evaluate(pts[:, 0], pts[:, 1]).H, forward.H)


def test_refining_tol_keeps_the_coarse_path():
    key = jax.random.key(5)
    coarse = BrownianTree(0.0, 1.0, 2.0**-6, (), key, levy_area="space-time")
    fine = BrownianTree(0.0, 1.0, 2.0**-12, (), key, levy_area="space-time")
    nodes = jnp.arange(1, 64) / 64.0
    np.testing.assert_allclose(coarse.evaluate(nodes).W, fine.evaluate(nodes).W, atol=2e-6)
    np.testing.assert_allclose(coarse.evaluate(nodes).H, fine.evaluate(nodes).H, atol=2e-6)


def test_works_under_jit_and_vmap_with_traced_tol_and_shapes():
    @jax.jit
    def walk(tol, s, t):
        bm = BrownianTree(0.0, 1.0, tol, (4, 2), jax.random.key(0), levy_area="space-time")
        return bm.evaluate(s, t)

    s = jnp.linspace(0.0, 0.5, 6)
    t = s + 0.25
    out = walk(1e-3, s, t)
    assert isinstance(out, BrownianIncrement)
    assert out.W.shape == (6, 4, 2) and out.H.shape == (6, 4, 2) and out.K is None
    walk(1e-5, s, t)
    assert walk._cache_size() == 1  # tol is traced: a new value does not recompile
    eager = BrownianTree(0.0, 1.0, 1e-3, (4, 2), jax.random.key(0), levy_area="space-time")
    np.testing.assert_allclose(out.W, eager.evaluate(s, t).W, atol=1e-6)
    # vmap over trees (keys) and over times
    keys = jax.random.split(jax.random.key(1), 3)
    many = jax.vmap(lambda k: BrownianTree(0.0, 1.0, 1e-3, (), k).evaluate(0.2, 0.7).W)(keys)
    assert many.shape == (3,)


@pytest.mark.parametrize("levy_area", LEVY)
def test_dtype_follows_x64_flag(levy_area, precision):
    bm = BrownianTree(0.0, 1.0, 1e-6, (), jax.random.key(0), levy_area=levy_area)
    inc = bm.evaluate(0.3, 0.7)
    expected = jnp.float64 if precision == "float64" else jnp.float32
    assert all(x.dtype == expected for x in inc.stack())
    assert np.all(np.isfinite(inc.stack()))


def test_depth_is_logarithmic_and_leaves_are_below_tol():
    for tol in [0.3, 1e-3, 1e-6, 2.0**-10]:
        bm = BrownianTree(0.0, 1.0, tol, (), jax.random.key(0))
        assert int(bm.depth) == int(np.ceil(np.log2(1.0 / tol) - 1e-9))
        assert float(bm.leaf_length) <= tol * (1 + 1e-6)
    assert int(BrownianTree(0.0, 1.0, 1.0, (), jax.random.key(0)).depth) == 0


def test_deep_trees_beyond_32_levels(x64):
    # Positions need more than one 32-bit word below level 32.
    times = [(0.3, 0.3 + 3e-11), (0.1, 0.9)]
    x = _sample("space-time", times, tol=1e-11, n=4000)
    assert_variance(x[:, 0, 0], 3e-11, "deep W")
    assert_variance(x[:, 0, 1], 3e-11 / 12, "deep H")
    assert_variance(x[:, 1, 0], 0.8, "W")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t0=1.0, t1=1.0), r"t1 must be greater than t0 = 1, got t1 = 1"),
        (dict(t0=2.0, t1=1.0), r"t1 must be greater than t0"),
        (dict(tol=0.0), r"tol must lie in \[2.1684e-19, 1\] \(t1 - t0 = 1 and at most 62 halvings\), got 0"),
        (dict(tol=-1e-3), r"tol must lie in \[2.1684e-19, 1\] .*, got -0.001"),
        (dict(tol=2.0), r"tol must lie in \[2.1684e-19, 1\] .*, got 2"),
        (dict(tol=1e-20), r"tol must lie in \[2.1684e-19, 1\] .*, got 1e-20"),
        (dict(tol=float("nan")), r"tol must be finite"),
        (dict(shape=(-1,)), r"shape must be a tuple of non-negative ints"),
        (dict(shape="ab"), r"shape must be a tuple of non-negative ints"),
        (dict(levy_area="space"), r"levy_area must be one of"),
        (dict(key=0), r"key must be a jax.random key"),
        (dict(key=None), r"key must be a jax.random key"),
    ],
)
def test_bad_construction_names_parameter_value_and_range(kwargs, match):
    args = dict(t0=0.0, t1=1.0, tol=1e-3, shape=(), key=jax.random.key(0), levy_area=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BrownianTree(**args)


@pytest.mark.parametrize(
    "s, t, match",
    [
        (-0.1, 0.5, r"s must lie in \[0, 1\], got -0.1"),
        (0.2, 1.5, r"t must lie in \[0, 1\], got 1.5"),
        (0.7, 0.3, r"s must be <= t, got s = 0.7 > t = 0.3"),
        (np.array([0.1, 0.2]), np.array([0.3, 0.4, 0.5]), r"s and t must broadcast together"),
    ],
)
def test_bad_queries_raise_before_compiling(s, t, match):
    from solverlab.brownian.tree import _evaluate_flat

    bm = BrownianTree(0.0, 1.0, 1e-3, (), jax.random.key(0))
    compiled = _evaluate_flat._cache_size()
    with pytest.raises(ValueError, match=match):
        bm.evaluate(s, t)
    assert _evaluate_flat._cache_size() == compiled  # raised before anything was traced


def test_traced_bad_queries_give_nan_not_garbage():
    bm = BrownianTree(0.0, 1.0, 1e-3, (), jax.random.key(0), levy_area="space-time")
    out = jax.jit(lambda s, t: bm.evaluate(s, t))(jnp.asarray([0.7, -0.1, 0.2]), jnp.asarray([0.3, 0.5, 0.4]))
    assert np.isnan(out.W[0]) and np.isnan(out.H[1])
    assert np.isfinite(out.W[2])


def test_trees_from_bad_traced_arguments_give_nan():
    @jax.jit
    def w(t1, tol):
        return BrownianTree(0.0, t1, tol, (), jax.random.key(0)).evaluate(0.0, 0.5).W

    assert np.isfinite(w(1.0, 1e-3))
    assert np.isnan(w(1.0, 0.0)) and np.isnan(w(1.0, -1.0)) and np.isnan(w(0.0, 1e-3))


def test_a_tree_is_a_pytree():
    bm = BrownianTree(0.0, 1.0, 1e-3, (2,), jax.random.key(0), levy_area="space-time")
    leaves, treedef = jax.tree_util.tree_flatten(bm)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    np.testing.assert_array_equal(rebuilt.evaluate(0.1, 0.2).W, bm.evaluate(0.1, 0.2).W)
    assert "space-time" in repr(bm)
