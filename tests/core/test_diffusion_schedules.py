"""Noise schedules, sampler step schedules and model parameterisations (solverlab.diffusion):
closed forms, the discrete DDPM schedule computed independently, the VP-SDE relations, exact inverses,
step spacing in the chosen variable, conversion round trips, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from solverlab.diffusion import params as P
from solverlab.diffusion.schedules import (
    EDM,
    VE,
    DDPMLinear,
    VPCosine,
    VPLinear,
    timesteps,
)

SCHEDULES = [
    VPLinear(),
    VPLinear(beta_min=0.0, beta_max=5.0),
    VPCosine(),
    VE(),
    EDM(),
    DDPMLinear(),
    DDPMLinear(beta_start=1e-3, beta_end=0.05, num_train_steps=50),
]
VP = [s for s in SCHEDULES if s.name in ("vp_linear", "vp_cosine", "ddpm_linear")]
IDS = [f"{s.name}-{i}" for i, s in enumerate(SCHEDULES)]
VP_IDS = [f"{s.name}-{i}" for i, s in enumerate(VP)]
KINDS = ["logSNR", "time", "karras"]


def _grid(s, n=2001):
    return jnp.linspace(s.t_min, s.t_max, n)


@pytest.mark.parametrize("s", VP, ids=VP_IDS)
def test_vp_schedules_preserve_variance(x64, s):
    t = _grid(s)
    np.testing.assert_allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
def test_lambda_is_strictly_decreasing_and_inverted_exactly(x64, s):
    t = _grid(s)
    lam = s.lambda_(t)
    assert np.all(np.diff(np.asarray(lam)) < 0)
    np.testing.assert_allclose(s.lambda_(t), jnp.log(s.alpha(t) / s.sigma(t)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.t_of_lambda(lam), t, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s.karras_sigma(t), s.sigma(t) / s.alpha(t), rtol=1e-12)


def test_ddpm_matches_the_discrete_alphas_cumprod(x64):
    n = 1000
    betas = np.linspace(1e-4, 0.02, n)
    alphas_cumprod = np.cumprod(1.0 - betas)  # Ho et al. 2020, computed independently
    s = DDPMLinear()
    t_i = (np.arange(n) + 1.0) / n
    np.testing.assert_allclose(s.alpha(t_i) ** 2, alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(s.sigma(t_i) ** 2, 1.0 - alphas_cumprod, rtol=1e-10)
    np.testing.assert_allclose(s.alphas_cumprod(), alphas_cumprod, rtol=1e-12)
    assert (s.t_min, s.t_max) == (1.0 / n, 1.0)
    # between the grid points log alpha is linear in t; outside [1/N, 1] the end segments continue
    la = 0.5 * np.log(alphas_cumprod)
    mid = 0.5 * (t_i[:-1] + t_i[1:])
    np.testing.assert_allclose(s.log_alpha(mid), 0.5 * (la[:-1] + la[1:]), rtol=1e-12)
    np.testing.assert_allclose(s.log_alpha(0.5 / n), la[0] - 0.5 * (la[1] - la[0]), rtol=1e-12)
    # the inverse is exact on and between the grid points and on the extension below t_min
    t = np.concatenate([t_i, mid, [0.25 / n, 0.5 / n]])
    np.testing.assert_allclose(s.t_of_lambda(s.lambda_(t)), t, rtol=1e-12, atol=1e-15)


def test_vp_linear_closed_form_and_sde_relations(x64):
    bmin, bmax = 0.1, 20.0
    s = VPLinear(bmin, bmax)
    t = np.linspace(1e-3, 1.0, 101)
    alpha = np.exp(-0.25 * t**2 * (bmax - bmin) - 0.5 * t * bmin)
    np.testing.assert_allclose(s.alpha(t), alpha, rtol=1e-14)
    np.testing.assert_allclose(s.sigma(t), np.sqrt(1.0 - alpha**2), rtol=1e-13)
    np.testing.assert_allclose(s.beta(t), bmin + t * (bmax - bmin), rtol=1e-14)
    # d log alpha / dt = -beta/2 (central differences, error O(h^2) with a zero third derivative)
    h = 1e-5
    tc = t[1:-1]
    dlog = (s.log_alpha(tc + h) - s.log_alpha(tc - h)) / (2 * h)
    np.testing.assert_allclose(dlog, -0.5 * s.beta(tc), rtol=1e-8)
    # the VP-SDE's variance ODE: d sigma^2/dt = beta (1 - sigma^2)
    dvar = (s.sigma(tc + h) ** 2 - s.sigma(tc - h) ** 2) / (2 * h)
    np.testing.assert_allclose(dvar, s.beta(tc) * (1.0 - s.sigma(tc) ** 2), rtol=1e-7)


def test_cosine_ve_edm_closed_forms(x64):
    t = np.linspace(1e-3, 0.99, 50)
    sc = 0.008
    abar = np.cos(0.5 * np.pi * (t + sc) / (1 + sc)) ** 2 / np.cos(0.5 * np.pi * sc / (1 + sc)) ** 2
    np.testing.assert_allclose(VPCosine().alpha(t) ** 2, abar, rtol=1e-12)
    assert VPCosine().t_max < 1.0
    ve = VE(0.02, 100.0)
    np.testing.assert_allclose(ve.sigma(t), 0.02 * (100.0 / 0.02) ** t, rtol=1e-12)
    np.testing.assert_allclose(ve.sigma(jnp.array([0.0, 1.0])), [0.02, 100.0], rtol=1e-12)
    np.testing.assert_allclose(ve.alpha(t), 1.0)
    edm = EDM()
    np.testing.assert_allclose(edm.sigma(t), t, rtol=1e-15)
    np.testing.assert_allclose(edm.alpha(t), 1.0)
    assert (edm.t_min, edm.t_max) == (0.002, 80.0)


@pytest.mark.parametrize("s", SCHEDULES, ids=IDS)
def test_methods_jit_with_traced_t_in_both_precisions(precision, s):
    dtype = jnp.dtype(precision)
    t = jnp.linspace(s.t_min, s.t_max, 9).astype(dtype).reshape(3, 3)

    @jax.jit
    def all_of(t):
        lam = s.lambda_(t)
        return s.alpha(t), s.sigma(t), lam, s.log_alpha(t), s.t_of_lambda(lam)

    out = all_of(t)
    for o in out:
        assert o.shape == (3, 3) and o.dtype == dtype
        assert np.all(np.isfinite(np.asarray(o)))
    tol = 1e-4 if precision == "float32" else 1e-12
    np.testing.assert_allclose(out[4], t, rtol=tol, atol=tol * s.t_max)
    # frozen dataclasses: hashable, usable as static jit arguments
    assert hash(s) == hash(type(s)(*[getattr(s, f) for f in s.__dataclass_fields__]))


def _spread_variable(s, kind, t, rho=7.0):
    if kind == "time":
        return t
    if kind == "logSNR":
        return s.lambda_(t)
    return s.karras_sigma(t) ** (1.0 / rho)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("s", [VPLinear(), VPCosine(), VE(), EDM(), DDPMLinear()], ids=lambda s: s.name)
def test_timesteps_endpoints_order_and_uniform_spacing(x64, s, kind):
    for nfe, t_start, t_end in [(1, None, None), (10, None, None), (7, 0.8 * s.t_max, 2.0 * s.t_min + 1e-3)]:
        ts = timesteps(s, nfe, kind, t_start=t_start, t_end=t_end)
        t0 = s.t_max if t_start is None else t_start
        t1 = s.t_min if t_end is None else t_end
        assert ts.shape == (nfe + 1,)
        assert float(ts[0]) == t0 and float(ts[-1]) == t1
        assert np.all(np.diff(np.asarray(ts)) < 0)
        d = np.diff(np.asarray(_spread_variable(s, kind, ts)))
        np.testing.assert_allclose(d, d.mean(), rtol=1e-9)


def test_karras_matches_the_edm_formula_and_traced_endpoints(x64):
    smin, smax, rho, n = 0.002, 80.0, 7.0, 18
    i = np.arange(n + 1)
    ref = (smax ** (1 / rho) + i / n * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho  # EDM eq. 5
    np.testing.assert_allclose(timesteps(EDM(), n, "karras"), ref, rtol=1e-12)
    s = DDPMLinear()
    f = jax.jit(lambda a, b: jnp.stack([timesteps(s, 6, k, t_start=a, t_end=b) for k in KINDS]))
    ref = jnp.stack([timesteps(s, 6, k, 0.9, 0.01) for k in KINDS])
    np.testing.assert_allclose(f(0.9, 0.01), ref, rtol=1e-14)
    with jax.enable_x64(False):
        ts = timesteps(VPLinear(), 5, "logSNR")
        assert ts.dtype == jnp.float32 and np.all(np.diff(np.asarray(ts)) < 0)


def test_conversions_round_trip_and_agree_with_the_forward_process(x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0 = jax.random.normal(k1, (5, 3))
    eps = jax.random.normal(k2, (5, 3))
    for alpha, sigma in [(0.8, 0.6), (0.3, 2.0), (1.0, 0.05)]:  # VP and not VP
        x = alpha * x0 + sigma * eps
        v = alpha * eps - sigma * x0
        truth = {"eps": eps, "x0": x0, "score": -eps / sigma, "v": v}
        for src in P.PARAMETERISATIONS:
            for dst in P.PARAMETERISATIONS:
                got = P.convert(truth[src], x, alpha, sigma, source=src, target=dst)
                np.testing.assert_allclose(got, truth[dst], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(P.eps_to_x0(x, eps, alpha, sigma), x0, atol=1e-12)
        np.testing.assert_allclose(P.x0_to_eps(x, x0, alpha, sigma), eps, atol=1e-12)
        np.testing.assert_allclose(P.score_to_eps(P.eps_to_score(eps, sigma), sigma), eps, atol=1e-12)
        np.testing.assert_allclose(P.v_to_eps(x, P.eps_to_v(x, eps, alpha, sigma), alpha, sigma), eps, atol=1e-12)
        np.testing.assert_allclose(P.v_to_x0(x, P.x0_to_v(x, x0, alpha, sigma), alpha, sigma), x0, atol=1e-12)


def test_as_noise_prediction_with_a_batch_of_times(x64):
    s = VPLinear()
    t = jnp.array([0.1, 0.5, 0.9])
    x0 = jnp.arange(6.0).reshape(3, 2)
    eps = jnp.ones((3, 2)) * 0.5
    a, sg = s.alpha(t)[:, None], s.sigma(t)[:, None]
    x = a * x0 + sg * eps
    model = {"x0": lambda x, t: x0, "v": lambda x, t: a * eps - sg * x0,
             "score": lambda x, t: -eps / sg, "eps": lambda x, t: eps}
    for name, fn in model.items():
        got = jax.jit(P.as_noise_prediction(fn, s, name))(x, t)
        np.testing.assert_allclose(got, eps, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: VPLinear(beta_min=-0.1), r"beta_min must lie in \[0, inf\), got -0\.1"),
        (lambda: VPLinear(beta_max=0.05), r"beta_max must lie in \(0\.1, inf\), got 0\.05"),
        (lambda: VPLinear(t_min=0.0), r"t_min must lie in \(0, 1\), got 0"),
        (lambda: VPLinear(t_max=1.5), r"t_max must lie in \(0\.001, 1\], got 1\.5"),
        (lambda: VPCosine(s=-1.0), r"s must lie in \[0, 1\], got -1"),
        (lambda: VPCosine(t_max=1.0), r"t_max must lie in \(0\.001, 1\), got 1"),
        (lambda: VE(sigma_min=0.0), r"sigma_min must lie in \(0, inf\), got 0"),
        (lambda: EDM(sigma_max=0.001), r"sigma_max must lie in \(0\.002, inf\), got 0\.001"),
        (lambda: DDPMLinear(beta_start=0.0), r"beta_start must lie in \(0, 1\), got 0"),
        (lambda: DDPMLinear(beta_end=1.0), r"beta_end must lie in \[0\.0001, 1\), got 1"),
        (lambda: DDPMLinear(num_train_steps=1), r"num_train_steps must lie in \[2, inf\), got 1"),
        (lambda: DDPMLinear(num_train_steps=10.5), r"num_train_steps must be an integer >= 2, got 10\.5"),
        (lambda: timesteps(VPLinear(), 0), r"nfe must lie in \[1, inf\), got 0"),
        (lambda: timesteps(VPLinear(), 2.0), r"nfe must be an integer >= 1, got 2\.0"),
        (lambda: timesteps(VPLinear(), 5, "uniform"), r"kind must be one of logSNR, time, karras, got 'uniform'"),
        (lambda: timesteps(VPLinear(), 5, t_start=0.5, t_end=0.5), r"t_end must lie in \[0\.001, 0\.5\), got 0\.5"),
        (lambda: timesteps(VPLinear(), 5, t_start=2.0), r"t_start must lie in \(0\.001, 1\], got 2"),
        (lambda: timesteps(EDM(), 5, t_end=0.001), r"t_end must lie in \[0\.002, 80\), got 0\.001"),
        (lambda: timesteps(EDM(), 5, "karras", rho=0.0), r"rho must lie in \(0, inf\), got 0"),
        (lambda: P.convert(1.0, 1.0, 1.0, 1.0, source="noise", target="x0"),
         r"source must be one of eps, x0, score, v, got 'noise'"),
        (lambda: P.as_noise_prediction(None, VE(), "data"),
         r"parameterisation must be one of eps, x0, score, v, got 'data'"),
    ],
)
def test_bad_input_names_parameter_value_and_range(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_float32_extreme_ends_stay_finite():
    with jax.enable_x64(False):
        for s in SCHEDULES:
            t = jnp.asarray([s.t_min, s.t_max], jnp.float32)
            lam = s.lambda_(t)
            assert np.all(np.isfinite(np.asarray(lam)))
            assert np.all(np.isfinite(np.asarray(s.t_of_lambda(lam))))
    assert math.isclose(VPLinear().lambda_(1e-3), VPLinear().lambda_(jnp.float32(1e-3)), rel_tol=1e-4)
