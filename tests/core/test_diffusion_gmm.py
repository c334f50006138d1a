"""Exact-score Gaussian mixtures: score, noise/data predictions, guidance, sampling, validation."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from solverlab.diffusion.gmm import (
    GaussianMixture,
    GMMModel,
    model_fn,
    random_mixture,
    ring,
)

from .stats import Z


@dataclasses.dataclass(frozen=True)
class VPStandIn:
    """Local VP-linear schedule (the tests do not depend on schedules.py)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def alpha(self, t):
        return jnp.exp(-(t**2) * (self.beta_max - self.beta_min) / 4 - t * self.beta_min / 2)

    def sigma(self, t):
        return jnp.sqrt(1 - self.alpha(t) ** 2)


LEVELS = [(1.0, 0.05), (0.8, 0.6), (0.3, 0.95), (0.02, 1.0)]


def small_mixture(d=3, K=4, n_classes=2, seed=0):
    return random_mixture(jax.random.PRNGKey(seed), d=d, K=K, n_classes=n_classes, mean_scale=1.5)


def scipy_log_density(gmm, x, label=None):
    w = np.asarray(gmm.weights, np.float64)
    labels = np.asarray(gmm.labels)
    keep = np.ones_like(labels, bool) if label is None else labels == label
    w = np.where(keep, w, 0.0)
    w = w / w.sum()
    dens = sum(
        w[k] * stats.multivariate_normal(np.asarray(gmm.means[k]), np.asarray(gmm.covs[k])).pdf(x)
        for k in range(len(w))
        if keep[k]
    )
    return np.log(dens)


# ---------------------------------------------------------------------- score
@pytest.mark.parametrize("label", [None, 1])
def test_score_matches_autodiff_and_finite_differences(x64, label):
    gmm = small_mixture()
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)) * 2.0)
    log_prob = jax.jit(lambda x, a, s: gmm.log_prob(x, a, s, label))
    grad = jax.jit(jax.vmap(jax.grad(log_prob), in_axes=(0, None, None)))
    for alpha, sigma in LEVELS:
        score = gmm.score(xs, alpha, sigma, label)
        np.testing.assert_allclose(score, grad(xs, alpha, sigma), rtol=1e-10, atol=1e-10)
        h = 1e-5
        fd = np.stack(
            [(log_prob(xs + h * e, alpha, sigma) - log_prob(xs - h * e, alpha, sigma)) / (2 * h) for e in np.eye(3)],
            axis=-1,
        )
        np.testing.assert_allclose(score, fd, rtol=1e-6, atol=1e-6)


def test_eps_and_tweedie_relations(x64):
    gmm = ring(K=6, n_classes=3)
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(7, 2)) * 3.0)
    for alpha, sigma in LEVELS:
        score = gmm.score(xs, alpha, sigma)
        np.testing.assert_allclose(gmm.eps(xs, alpha, sigma), -sigma * score, rtol=1e-12, atol=1e-12)
        tweedie = (xs + sigma**2 * score) / alpha
        np.testing.assert_allclose(gmm.x0(xs, alpha, sigma), tweedie, rtol=1e-8, atol=1e-8 / alpha)


# ---------------------------------------------------------------------- densities
def test_log_prob_tends_to_data_density(x64):
    gmm = small_mixture()
    xs = np.asarray(gmm.sample(jax.random.PRNGKey(3), 6))
    exact = scipy_log_density(gmm, xs)
    np.testing.assert_allclose(gmm.log_prob(xs), exact, rtol=1e-10)
    np.testing.assert_allclose(gmm.log_prob(xs, 1.0, 1e-7), exact, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gmm.log_prob(xs, 1.0, 1e-7, label=0), scipy_log_density(gmm, xs, 0), rtol=1e-9)


def test_log_prob_equals_noised_mixture(x64):
    gmm = small_mixture()
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)))
    noised = gmm.noised(0.7, 0.5)
    np.testing.assert_allclose(gmm.log_prob(xs, 0.7, 0.5), scipy_log_density(noised, np.asarray(xs)), rtol=1e-10)


# ---------------------------------------------------------------------- data prediction
def test_x0_single_gaussian_is_exact_conditioning(x64):
    rng = np.random.default_rng(4)
    A = rng.normal(size=(3, 3))
    Sigma = A @ A.T + 0.3 * np.eye(3)
    mu = rng.normal(size=3)
    gmm = GaussianMixture([1.0], mu[None], Sigma[None])
    x = rng.normal(size=(5, 3))
    for alpha, sigma in LEVELS:
        # precision form of the posterior, independent of the implementation's covariance form
        post_cov = np.linalg.inv(np.linalg.inv(Sigma) + alpha**2 / sigma**2 * np.eye(3))
        post_mean = (post_cov @ (np.linalg.solve(Sigma, mu)[:, None] + alpha * x.T / sigma**2)).T
        np.testing.assert_allclose(gmm.x0(x, alpha, sigma), post_mean, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("label", [None, 0])
def test_x0_matches_monte_carlo_posterior_mean(x64, label):
    """E[x0 | x_t = x] by self-normalised importance sampling over exact data draws."""
    gmm = ring(K=4, radius=2.0, radial_std=0.3, tangential_std=0.8, n_classes=2)
    n = 200_000
    x0s = np.asarray(gmm.sample(jax.random.PRNGKey(5), n, label=label))
    alpha, sigma = 0.7, 0.7
    for x in [np.array([0.5, 0.2]), np.array([1.2, -0.4])]:
        logw = -0.5 * np.sum((x - alpha * x0s) ** 2, axis=1) / sigma**2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        est = w @ x0s
        se = np.sqrt(np.sum(w[:, None] ** 2 * (x0s - est) ** 2, axis=0))
        got = np.asarray(gmm.x0(x, alpha, sigma, label))
        assert np.all(np.abs(got - est) < Z * se), (got, est, se)


def test_x0_finite_as_alpha_vanishes(precision):
    gmm = ring(K=5)
    x = jnp.asarray([[0.3, -1.0], [5.0, 2.0]])
    out = gmm.x0(x, 1e-30, 1.0)
    assert jnp.all(jnp.isfinite(out))
    np.testing.assert_allclose(out, np.broadcast_to(gmm.mean(), out.shape), atol=1e-5)
    assert jnp.all(jnp.isfinite(gmm.x0(x, 0.0, 1.0)))


# ---------------------------------------------------------------------- guidance
def test_guidance_endpoints_and_linearity(x64):
    gmm = ring(K=6, n_classes=3)
    xs = jnp.asarray(np.random.default_rng(6).normal(size=(5, 2)) * 3.0)
    for alpha, sigma in LEVELS:
        eu = gmm.eps(xs, alpha, sigma)
        ec = gmm.eps(xs, alpha, sigma, label=2)
        np.testing.assert_allclose(gmm.guided_eps(xs, alpha, sigma, 2, 1.0), ec, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gmm.guided_eps(xs, alpha, sigma, 2, 0.0), eu, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            gmm.guided_eps(xs, alpha, sigma, 2, 3.5), eu + 3.5 * (ec - eu), rtol=1e-9, atol=1e-12
        )


def test_model_fn_matches_schedule_and_does_not_recompile(x64):
    gmm = ring(K=6, n_classes=3)
    sched = VPStandIn()
    xs = jnp.asarray(np.random.default_rng(7).normal(size=(4, 2)))
    t = 0.4
    a, s = sched.alpha(t), sched.sigma(t)
    np.testing.assert_allclose(model_fn(gmm, sched)(xs, t), gmm.eps(xs, a, s), rtol=1e-12)
    np.testing.assert_allclose(model_fn(gmm, sched, label=1)(xs, t), gmm.eps(xs, a, s, 1), rtol=1e-10)

    traces = []

    @jax.jit
    def call(model, x, t):
        traces.append(None)
        return model(x, t)

    for label, w in [(0, 0.0), (1, 2.0), (2, 7.5)]:
        got = call(model_fn(gmm, sched, label=label, guidance=w), xs, t)
        np.testing.assert_allclose(got, gmm.guided_eps(xs, a, s, label, w), rtol=1e-10, atol=1e-12)
    assert len(traces) == 1
    # also usable as a static (hashable) argument, as samplers take it
    model = model_fn(gmm, sched, label=1, guidance=2.0)
    assert isinstance(hash(model), int)
    static = jax.jit(lambda x, t, m: m(x, t), static_argnums=2)(xs, t, model)
    np.testing.assert_allclose(static, model(xs, t), rtol=1e-10, atol=1e-12)
    # per-row times
    ts = jnp.linspace(0.1, 0.9, 4)
    per_row = model_fn(gmm, sched)(xs, ts)
    for i in range(4):
        np.testing.assert_allclose(per_row[i], gmm.eps(xs[i], sched.alpha(ts[i]), sched.sigma(ts[i])), rtol=1e-12)


# ---------------------------------------------------------------------- sampling
def _assert_moments(x, mean, cov, name):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < Z * se_mean), f"{name}: mean {x.mean(0)} vs {mean}"
    c = x - x.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - cov) < Z * se_cov + 1e-12), f"{name}: cov {prods.mean(0)} vs {cov}"


@pytest.mark.parametrize("label", [None, 1])
def test_sample_moments(x64, label):
    gmm = small_mixture(d=3, K=4, n_classes=2)
    x, comp = gmm.sample(jax.random.PRNGKey(8), 100_000, label=label, return_components=True)
    _assert_moments(x, np.asarray(gmm.mean(label)), np.asarray(gmm.cov(label)), f"label={label}")
    if label is not None:
        assert np.all(np.asarray(gmm.labels)[np.asarray(comp)] == label)
    # component frequencies
    p = np.asarray(gmm.class_weights(label))
    freq = np.bincount(np.asarray(comp), minlength=4) / comp.shape[0]
    se = np.sqrt(p * (1 - p) / comp.shape[0])
    assert np.all(np.abs(freq - p) <= Z * se)


def test_noised_sample_moments(x64):
    gmm = ring(K=8)
    n = 100_000
    k0, k1 = jax.random.split(jax.random.PRNGKey(9))
    alpha, sigma = 0.6, 0.8
    xt = alpha * gmm.sample(k0, n) + sigma * jax.random.normal(k1, (n, 2))
    noised = gmm.noised(alpha, sigma)
    _assert_moments(xt, np.asarray(noised.mean()), np.asarray(noised.cov()), "noised")


# ---------------------------------------------------------------------- batching, transforms, dtypes
def test_batch_shapes_jit_vmap(x64):
    gmm = small_mixture(d=3)
    x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 5, 3)))
    assert gmm.log_prob(x, 0.5, 0.5).shape == (2, 5)
    for f in (gmm.score, gmm.eps, gmm.x0):
        assert f(x, 0.5, 0.5).shape == (2, 5, 3)
    np.testing.assert_allclose(gmm.eps(x[1, 2], 0.5, 0.5), gmm.eps(x, 0.5, 0.5)[1, 2], rtol=1e-12)
    jitted = jax.jit(lambda g, x, a, s, c: g.guided_eps(x, a, s, c, 2.0))(gmm, x, 0.5, 0.5, 1)
    np.testing.assert_allclose(jitted, gmm.guided_eps(x, 0.5, 0.5, 1, 2.0), rtol=1e-10)
    sig = jnp.linspace(0.1, 1.0, 4)
    vm = jax.vmap(lambda s: gmm.eps(x[0], 0.5, s))(sig)
    assert vm.shape == (4, 5, 3)
    np.testing.assert_allclose(vm[2], gmm.eps(x[0], 0.5, sig[2]), rtol=1e-10)
    assert gmm.eps(x, 0.5, 0.5).dtype == jnp.float64


def test_float32_agrees_with_float64():
    with jax.enable_x64(True):
        g64 = random_mixture(jax.random.PRNGKey(0), d=64, K=8)
        x = np.asarray(g64.sample(jax.random.PRNGKey(1), 16))
        ref = {lv: np.asarray(g64.eps(x, *lv)) for lv in LEVELS}
        ref_x0 = np.asarray(g64.x0(x, 0.3, 0.95))
        parts = [np.asarray(a) for a in (g64.weights, g64.means, g64.covs)]
    with jax.enable_x64(False):
        g32 = GaussianMixture(*parts, g64.labels)
        assert g32.means.dtype == jnp.float32
        x32 = x.astype(np.float32)
        for lv in LEVELS:
            got = g32.eps(x32, *lv)
            assert got.dtype == jnp.float32 and jnp.all(jnp.isfinite(got))
            np.testing.assert_allclose(got, ref[lv], atol=2e-3 * max(1.0, np.abs(ref[lv]).max()))
        np.testing.assert_allclose(g32.x0(x32, 0.3, 0.95), ref_x0, atol=2e-3 * np.abs(ref_x0).max())


def test_gmm_is_a_pytree_with_traced_label():
    gmm = ring(K=4, n_classes=2)
    leaves = jax.tree_util.tree_leaves(gmm)
    assert len(leaves) == 6  # weights, means, covs, labels, eigenvalues, eigenvectors
    out = jax.vmap(lambda c: gmm.eps(jnp.zeros(2) + 1.0, 0.5, 0.5, c))(jnp.arange(2))
    np.testing.assert_allclose(out[1], gmm.eps(jnp.ones(2), 0.5, 0.5, 1), rtol=1e-5)
    assert isinstance(model_fn(gmm, VPStandIn(), label=0, guidance=2.0), GMMModel)
    assert eqx.is_array(model_fn(gmm, VPStandIn(), label=0).guidance)


# ---------------------------------------------------------------------- validation
def test_bad_input():
    K = 2
    means = np.zeros((K, 2))
    covs = np.broadcast_to(np.eye(2), (K, 2, 2))
    with pytest.raises(ValueError, match="weights must lie in"):
        GaussianMixture([1.2, -0.2], means, covs)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture([0.5, 0.6], means, covs)
    with pytest.raises(ValueError, match="weights must have shape"):
        GaussianMixture([1.0], means, covs)
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture([0.5, 0.5], means, np.eye(2))
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture([0.5, 0.5], np.zeros(2), covs)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([0.5, 0.5], means, np.stack([np.eye(2), np.diag([1.0, -1.0])]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture([0.5, 0.5], means, np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="labels must be integers"):
        GaussianMixture([0.5, 0.5], means, covs, [0.5, 1.5])
    gmm = ring(K=4, n_classes=2)
    with pytest.raises(ValueError, match=r"guidance must lie in \[0, inf\), got -1"):
        gmm.guided_eps(jnp.zeros(2), 0.5, 0.5, 1, -1.0)
    with pytest.raises(ValueError, match=r"guidance must lie in \[0, inf\), got -0.5"):
        model_fn(gmm, VPStandIn(), label=0, guidance=-0.5)
    with pytest.raises(ValueError, match="label must be one of"):
        gmm.eps(jnp.zeros(2), 0.5, 0.5, label=5)
    with pytest.raises(ValueError, match="label must be one of"):
        model_fn(gmm, VPStandIn(), label=3)
    with pytest.raises(ValueError, match="alpha must lie in"):
        gmm.eps(jnp.zeros(2), -0.5, 0.5)
    with pytest.raises(ValueError, match="both be 0"):
        gmm.eps(jnp.zeros(2), 0.0, 0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        gmm.score(jnp.zeros(3), 0.5, 0.5)
    with pytest.raises(ValueError, match="n_classes"):
        ring(K=4, n_classes=5)
    with pytest.raises(ValueError, match="radial_std"):
        ring(radial_std=0.0)
    with pytest.raises(ValueError, match="K must be"):
        random_mixture(jax.random.PRNGKey(0), K=0)
