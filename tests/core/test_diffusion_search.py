"""Searched solver schedules (solverlab.diffusion.search, USF/S^3 after Liu et al. 2023).

The per-step multistep solver reproduces DDIM, DPM-Solver++(2M) and (3M) for the matching choices;
the times parametrisation is strictly decreasing with exact end points for any logits; on held-out
noise the searched schedule beats every fixed placement (log-SNR, time, Karras) of DPM-Solver++(2M)
on the 2-D ring mixture, with guidance 1 and 7.5, at NFE 5 and 10 (terminal error against the
adaptive reference from the same noise); the search never returns worse than its initialisation.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from solverlab import SolverError
from solverlab.diffusion import gmm, metrics, schedules
from solverlab.diffusion.reference import reference
from solverlab.diffusion.samplers import sample
from solverlab.diffusion.search import (
    SearchedSchedule,
    logits_from_times,
    search_schedule,
    searched_terminal_error,
    times_from_logits,
)

SCHEDULE = schedules.VPLinear()


def _model(guidance=None):
    """The ring's (guided, class 1) noise prediction; the mixture is built in the caller's precision
    (under x64: float64 means and covariances)."""
    mixture = gmm.ring(K=8, n_classes=4)
    return gmm.model_fn(mixture, SCHEDULE) if guidance is None else gmm.model_fn(mixture, SCHEDULE, label=1, guidance=guidance)
N_FIT, N_TEST = 128, 128
PLACEMENTS = ("logSNR", "time", "karras")


def _fixed(n, orders, variants=None, times=None, nfe=None):
    nfe = n + 1 if nfe is None else nfe
    times = schedules.timesteps(SCHEDULE, n, "logSNR") if times is None else times
    variants = jnp.zeros(n, jnp.int32) if variants is None else jnp.asarray(variants)
    inf = jnp.asarray(jnp.inf)
    return SearchedSchedule(times, jnp.asarray(orders, jnp.int32), variants, inf, inf, nfe)


def test_choices_reproduce_ddim_and_dpm_solver_pp(x64):
    """orders 1 = DDIM; [1, 2, 2, ...] variant 0 = DPM-Solver++(2M); [1, 2, 3, ...] with variant 1 at
    step 1 = DPM-Solver++(3M): the same published updates, to rounding (shapes as in the search tests,
    so the compiled samplers are shared)."""
    model = _model(3.0)
    x_T = jax.random.normal(jax.random.key(0), (N_TEST, 2))
    nfe, n = 10, 9
    times = schedules.timesteps(SCHEDULE, n, "karras")  # uneven steps: r != 1 in the multistep weights
    cases = {
        "ddim": _fixed(n, np.ones(n), times=times),
        "dpm_solver++_2m": _fixed(n, np.minimum(np.arange(1, n + 1), 2), times=times),
        "dpm_solver++_3m": _fixed(n, np.minimum(np.arange(1, n + 1), 3), np.eye(n, dtype=np.int32)[1], times=times),
    }
    for method, fitted in cases.items():
        ours = sample(model, x_T, SCHEDULE, "searched", nfe, fitted=fitted)
        theirs = sample(model, x_T, SCHEDULE, method, nfe, steps=times)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-10, atol=1e-10, err_msg=method)


def test_times_strictly_decreasing_with_exact_end_points(x64):
    t_start, t_end = 0.9, 2e-3
    for seed, scale in [(0, 0.0), (1, 1.0), (2, 30.0)]:  # uniform, mild and extreme logits
        theta = scale * jax.random.normal(jax.random.key(seed), (9,))
        times = np.asarray(times_from_logits(SCHEDULE, theta, jnp.asarray(t_start), jnp.asarray(t_end)))
        assert times.shape == (10,)
        assert times[0] == t_start and times[-1] == t_end
        assert np.all(np.diff(times) < 0), times
    # theta = 0 is uniform log-SNR, and logits_from_times inverts times_from_logits
    uniform = schedules.timesteps(SCHEDULE, 9, "logSNR", t_start, t_end)
    got = times_from_logits(SCHEDULE, jnp.zeros(9), jnp.asarray(t_start), jnp.asarray(t_end))
    np.testing.assert_allclose(np.asarray(got), np.asarray(uniform), rtol=1e-10)
    karras = schedules.timesteps(SCHEDULE, 9, "karras", t_start, t_end)
    back = times_from_logits(SCHEDULE, logits_from_times(SCHEDULE, karras), jnp.asarray(t_start), jnp.asarray(t_end))
    np.testing.assert_allclose(np.asarray(back), np.asarray(karras), rtol=1e-6)


@pytest.fixture(scope="module")
def searched():
    """One search per (guidance, nfe), its errors on the fitting and on held-out noise."""
    out = {}
    with jax.enable_x64(True):
        x_fit = jax.random.normal(jax.random.key(1), (N_FIT, 2))
        x_test = jax.random.normal(jax.random.key(2), (N_TEST, 2))
        for w in (1.0, 7.5):
            model = _model(w)
            ref = reference(model, jnp.concatenate([x_fit, x_test]), SCHEDULE).x0  # one compile for both sets
            fit_ref, test_ref = ref[:N_FIT], ref[N_FIT:]
            for nfe in (5, 10):
                start = time.perf_counter()
                s = search_schedule(model, SCHEDULE, x_fit, nfe, target=fit_ref)
                seconds = time.perf_counter() - start
                sweep_only = search_schedule(model, SCHEDULE, x_fit, nfe, target=fit_ref, iterations=0)

                def err(x_T, target, method="dpm_solver++_2m", kind=None, fitted=None, model=model, nfe=nfe):
                    steps = None if kind is None else schedules.timesteps(SCHEDULE, nfe - 1, kind)
                    x0 = sample(model, x_T, SCHEDULE, method, nfe, steps=steps, fitted=fitted)
                    return float(metrics.terminal_error(x0, target))

                out[w, nfe] = {
                    "schedule": s,
                    "seconds": seconds,
                    "sweep_only": float(sweep_only.fit_error),
                    "test": err(x_test, test_ref, "searched", fitted=s),
                    "test_fixed": {k: err(x_test, test_ref, kind=k) for k in PLACEMENTS},
                    "fit": float(searched_terminal_error(model, SCHEDULE, x_fit, s, fit_ref)),
                    "fit_fixed": {k: err(x_fit, fit_ref, kind=k) for k in PLACEMENTS},
                }
    return out


@pytest.mark.parametrize("w", [1.0, 7.5])
@pytest.mark.parametrize("nfe", [5, 10])
def test_search_beats_every_fixed_placement_on_held_out_noise(searched, w, nfe):
    r = searched[w, nfe]
    best_fixed = min(r["test_fixed"].values())
    print(f"w = {w}, nfe = {nfe}: searched {r['test']:.4g}, fixed dpm_solver++_2m {r['test_fixed']}")
    assert r["test"] < 0.5 * best_fixed, (r["test"], r["test_fixed"])


@pytest.mark.parametrize("w", [1.0, 7.5])
@pytest.mark.parametrize("nfe", [5, 10])
def test_search_is_never_worse_than_its_initialisation(searched, w, nfe):
    r = searched[w, nfe]
    s = r["schedule"]
    # the initialisation is the best fixed placement of DPM-Solver++(2M) on the fitting set ...
    assert s.initial == min(r["fit_fixed"], key=r["fit_fixed"].get)
    np.testing.assert_allclose(float(s.initial_error), min(r["fit_fixed"].values()), rtol=1e-8)
    # ... the reported fitting error is what sample gives with the returned schedule, and no worse
    np.testing.assert_allclose(r["fit"], float(s.fit_error), rtol=1e-8)
    assert float(s.fit_error) <= float(s.initial_error)


@pytest.mark.parametrize("nfe", [5, 10])
def test_searched_schedule_is_well_formed(searched, nfe):
    s = searched[7.5, nfe]["schedule"]
    times, orders = np.asarray(s.times), np.asarray(s.orders)
    assert s.nfe == nfe and times.shape == (nfe,) and orders.shape == (nfe - 1,)
    assert times[0] == SCHEDULE.t_max and times[-1] == SCHEDULE.t_min
    assert np.all(np.diff(times) < 0)
    assert np.all((orders >= 1) & (orders <= np.minimum(3, np.arange(1, nfe))))  # warm-up respected


def test_plain_methods_use_the_searched_times(searched, x64):
    s = searched[1.0, 5]["schedule"]
    model = _model(1.0)
    x_T = jax.random.normal(jax.random.key(3), (N_TEST, 2))
    a = sample(model, x_T, SCHEDULE, "dpm_solver++_2m", 5, steps=s.times)
    b = sample(model, x_T, SCHEDULE, "dpm_solver++_2m", 5, fitted=s)  # the times come with it
    c = sample(model, x_T, SCHEDULE, "dpm_solver++_2m", 5, steps=schedules.timesteps(SCHEDULE, 4, "logSNR"))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_nfe_mismatch_and_bad_input_raise_value_error(searched, x64):
    s = searched[1.0, 5]["schedule"]
    model = _model(1.0)
    x_T = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="nfe = 7"):
        sample(model, x_T, SCHEDULE, "searched", 7, fitted=s)
    with pytest.raises(ValueError, match="fitted is for nfe = 5, got nfe = 7"):
        sample(model, x_T, SCHEDULE, "searched", 7, fitted=s)
    with pytest.raises(ValueError, match="leave steps unset"):
        sample(model, x_T, SCHEDULE, "searched", 5, steps="time", fitted=s)
    with pytest.raises(ValueError, match="needs fitted"):
        sample(model, x_T, SCHEDULE, "searched", 5)
    with pytest.raises(ValueError, match=r"nfe must lie in \[2, inf\), got 1"):
        search_schedule(model, SCHEDULE, x_T, 1)
    with pytest.raises(ValueError, match="nfe must be an int"):
        search_schedule(model, SCHEDULE, x_T, 5.0)
    with pytest.raises(ValueError, match="x_fit must be an"):
        search_schedule(model, SCHEDULE, jnp.zeros(4), 5)
    with pytest.raises(ValueError, match=r"learning_rate must lie in \(0, inf\)"):
        search_schedule(model, SCHEDULE, x_T, 5, learning_rate=0.0)
    with pytest.raises(ValueError, match="max_order must be 1, 2 or 3"):
        search_schedule(model, SCHEDULE, x_T, 5, max_order=4)
    with pytest.raises(ValueError, match="target must have the shape"):
        search_schedule(model, SCHEDULE, x_T, 5, target=jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="strictly decreasing"):
        _fixed(4, np.ones(4), times=jnp.linspace(0.0, 1.0, 5))
    with pytest.raises(ValueError, match="orders must lie in"):
        _fixed(4, np.full(4, 4))


@pytest.mark.parametrize("w", [1.0, 7.5])
@pytest.mark.parametrize("nfe", [5, 10])
def test_gradient_phase_improves_on_the_discrete_search_alone(searched, w, nfe):
    """Adam on the times (gradients through the sampler) lowers the fitting error well below what the
    per-step (order, variant) sweep reaches on the fixed initial placement."""
    r = searched[w, nfe]
    assert float(r["schedule"].fit_error) < 0.5 * r["sweep_only"], (float(r["schedule"].fit_error), r["sweep_only"])


def test_search_takes_seconds_once_compiled(searched):
    """Guidance is traced, so the search at w = 7.5 reuses what w = 1 compiled: seconds, not minutes
    (a loose bound: this machine's cores are shared)."""
    for nfe in (5, 10):
        assert searched[7.5, nfe]["seconds"] < 30.0, searched[7.5, nfe]["seconds"]


def test_a_model_that_gives_nan_raises_solver_error(x64):
    def broken(x, t):
        return x * jnp.nan

    x_T = jnp.ones((8, 2))
    with pytest.raises(SolverError, match="non-finite terminal error"):
        search_schedule(broken, SCHEDULE, x_T, 3, target=jnp.zeros((8, 2)), iterations=1)


def test_phi_functions_match_high_precision(x64):
    """The series branch (|h| < 1/2) and the closed forms agree with 40-digit arithmetic."""
    mp = pytest.importorskip("mpmath")
    from solverlab.diffusion.search import _phis

    mp.mp.dps = 40
    for h in (1e-6, 1e-3, 0.1, 0.49, 0.51, 1.0, 3.0):
        exact1 = mp.expm1(-mp.mpf(h))
        exact2 = exact1 / h + 1
        exact3 = exact2 / h - mp.mpf(1) / 2
        for got, exact in zip(_phis(jnp.asarray(h)), (exact1, exact2, exact3), strict=True):
            assert abs(float(got) - float(exact)) <= 1e-14 * abs(float(exact)), (h, float(got), float(exact))
