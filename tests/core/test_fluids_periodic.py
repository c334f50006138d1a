"""Periodic pseudo-spectral Navier-Stokes: exact solutions, convergence orders, energy budgets, errors.

Small grids (32^2; one 32 x 48 box) in float64 so the tolerances can be tight; every random field has a
fixed key.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab import SolverError
from solverlab.fluids import PeriodicGrid, diagnostics, periodic
from solverlab.fluids.periodic import (
    STABILITY_CFL,
    advance,
    decaying_turbulence,
    kolmogorov_forcing,
    kolmogorov_laminar,
    kolmogorov_viscosity,
    make_stepper,
    nonlinear_term,
    san_staples_spectrum,
    simulate,
    taylor_green,
    viscosity_for,
)

GRID = PeriodicGrid.square(32)


def rel(a, b):
    return float(jnp.linalg.norm(jnp.ravel(a - b)) / jnp.linalg.norm(jnp.ravel(b)))


def turbulence(grid=GRID, peak=2.0, energy=0.5, seed=1):
    return decaying_turbulence(jax.random.key(seed), grid, peak, energy)


# --- the nonlinear term ------------------------------------------------------------------------


def test_nonlinear_term_two_modes_closed_form(x64):
    # psi = sin x + cos 2y: omega = sin x + 4 cos 2y, u = -2 sin 2y, v = -cos x, so
    # u.grad(omega) = 6 cos x sin 2y exactly (all products within the 2/3-rule band).
    x, y = GRID.mesh()
    omega = jnp.sin(x) + 4 * jnp.cos(2 * y)
    got = GRID.ifft(nonlinear_term(GRID.fft(omega), GRID))
    np.testing.assert_allclose(got, -6 * jnp.cos(x) * jnp.sin(2 * y), atol=1e-12)


def test_nonlinear_term_matches_advective_form_and_conserves(x64):
    # Basdevant's form against the textbook u omega_x + v omega_y (5 FFTs), both 2/3-truncated;
    # then the Galerkin invariants: sum psi* N = 0 (energy) and sum omega* N = 0 (enstrophy).
    grid = PeriodicGrid(32, 48, 2 * math.pi, 3.0)  # non-square box, unequal sides
    w_hat = grid.fft(decaying_turbulence(jax.random.key(3), grid, 2.0)) * grid.dealias_mask()

    @jax.jit
    def advective(w_hat):
        u, v = grid.velocity(w_hat)
        wx, wy = grid.gradient(w_hat)
        return -grid.fft(u * grid.ifft(wx) + v * grid.ifft(wy)) * grid.dealias_mask()

    direct = advective(w_hat)
    got = nonlinear_term(w_hat, grid)
    assert rel(got, direct) < 1e-13
    scale = jnp.sqrt(diagnostics.mean_product(got, got, grid))
    psi_hat = grid.streamfunction_hat(w_hat)
    assert abs(float(diagnostics.mean_product(psi_hat, got, grid))) < 1e-13 * scale * jnp.sqrt(
        diagnostics.mean_product(psi_hat, psi_hat, grid))
    assert abs(float(diagnostics.mean_product(w_hat, got, grid))) < 1e-13 * scale * jnp.sqrt(
        diagnostics.mean_product(w_hat, w_hat, grid))


# --- exact solutions -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, dt", [("etdrk4", 0.1), ("etdrk2", 0.05)])  # CFL 0.51, 0.25
def test_taylor_green_exact_decay(x64, method, dt):
    # One Laplacian eigenvalue: the nonlinear term vanishes (to rounding) and the exponential
    # integrators are exact for the linear part at any step, so E(t) = E0 exp(-4 nu t) to ~1e-14.
    nu, t_end = 0.05, 3.0
    omega0 = taylor_green(GRID, k=1)
    res = simulate(omega0, GRID, nu, t_end, dt=dt, method=method, save_every=1.0)
    exact_e = 0.25 * np.exp(-4 * nu * res.times)
    np.testing.assert_allclose(res.energy, exact_e, rtol=1e-13)
    assert rel(res.omega, taylor_green(GRID, k=1, t=t_end, nu=nu)) < 1e-13
    # k = 2 and drag: rate 2 * (nu * 2 k^2 + mu)
    w = GRID.fft(taylor_green(GRID, k=2, amplitude=0.3))
    out = advance(w, GRID, nu, 0.2, 10, method=method, drag=0.1)
    assert rel(out.omega_hat, GRID.fft(taylor_green(GRID, 2, 0.3, t=2.0, nu=nu, drag=0.1))) < 1e-13


def test_taylor_green_float32():
    # The same decay in float32: rounding of one step (~1e-7) accumulated over 30 steps.
    omega0 = taylor_green(GRID, k=1)
    assert omega0.dtype == jnp.float32
    res = simulate(omega0, GRID, 0.05, 3.0, dt=0.1)
    np.testing.assert_allclose(res.energy[-1], 0.25 * np.exp(-4 * 0.05 * 3.0), rtol=1e-5)


@pytest.mark.parametrize("method", ["etdrk4", "etdrk2"])
def test_kolmogorov_spin_up_from_rest_is_exact(x64, method):
    # From rest the forced flow stays one mode, u = U(t) sin(4y), U(t) = A (1 - e^{-rt})/r,
    # r = 16 nu + mu; the ETD schemes integrate a constant forcing exactly, so any dt works.
    nu, drag = 0.02, 0.1
    f_hat = GRID.fft(kolmogorov_forcing(GRID, 4))
    out = advance(jnp.zeros(GRID.spectral_shape, jnp.complex128), GRID, nu, 0.25, 8, f_hat, method, drag)
    assert rel(out.omega_hat, GRID.fft(kolmogorov_laminar(GRID, nu, 4, drag=drag, t=2.0))) < 1e-13


# --- convergence in time on the nonlinear dynamics ------------------------------------------------


def test_time_convergence_orders(x64):
    # Decaying turbulence, where the nonlinear term matters: errors at t = 1 against ETDRK4 with
    # 1024 steps (error ~1e-12, far below the coarsest errors). Steps 16..128 (CFL 1.0..0.13):
    # local slopes 3.97-4.00 (ETDRK4) and 2.00-2.06 (ETDRK2) measured.
    nu, t_end = 1e-2, 1.0
    w0 = GRID.fft(turbulence())
    ref = advance(w0, GRID, nu, t_end / 1024, 1024).omega_hat
    ns = np.array([16, 32, 64, 128])
    for method, lo, hi in (("etdrk4", 3.8, 4.2), ("etdrk2", 1.9, 2.2)):
        errors = [rel(advance(w0, GRID, nu, t_end / n, int(n), method=method).omega_hat, ref) for n in ns]
        slope = np.polyfit(np.log(t_end / ns), np.log(errors), 1)[0]
        assert lo < slope < hi, (method, slope, errors)
    assert errors[-1] > 1e-6  # ETDRK2 at 128 steps: still far above the reference's error


def test_stepper_matches_advance(x64):
    w0 = GRID.fft(turbulence())
    f_hat = GRID.fft(kolmogorov_forcing(GRID, 2, 0.5))
    for method in ("etdrk4", "etdrk2"):
        step = make_stepper(GRID, method, drag=0.1)
        w = w0
        for _ in range(3):
            w = step(w, 0.01, 0.02, f_hat)
        out = advance(w0, GRID, 0.01, 0.02, 3, f_hat, method, drag=0.1)
        assert rel(w, out.omega_hat) < 1e-14


def test_etd_coefficients_match_closed_forms(x64):
    # Away from z = 0 the closed forms are accurate; near 0 their Taylor series are. The contour
    # means agree with both: to 1e-11 relative at |z| >= 0.5 (near |z| ~ 1-3 the circle passes
    # within pi/16 of the poles of the separate terms, which costs ~3 digits: measured 1.3e-12),
    # to 1e-13 at |z| <= 1e-6 where the closed forms are 0/0.
    z = -jnp.array([0.0, 1e-9, 1e-6, 0.5, 1.0, 3.0, 40.0, 1e4])
    coefficients = jax.jit(periodic.etd_coefficients, static_argnames="method")
    e, p1, p2 = coefficients(z, 1.0, method="etdrk2")
    zz = np.asarray(z)
    big, small = np.abs(zz) >= 0.5, np.abs(zz) <= 1e-6
    zb, zs = zz[big], zz[small]
    np.testing.assert_allclose(np.asarray(p1)[big], np.expm1(zb) / zb, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(p2)[big], (np.expm1(zb) - zb) / zb**2, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(p1)[small], 1 + zs / 2 + zs**2 / 6, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(p2)[small], 0.5 + zs / 6 + zs**2 / 24, rtol=1e-13)
    np.testing.assert_allclose(e, np.exp(zz), rtol=1e-15)
    _, _, q, f1, f2, f3 = coefficients(z, 1.0, method="etdrk4")
    # f1 + 4 f2 + f3 = phi1 (a constant forcing is integrated exactly); Q = phi1(z/2)/2
    np.testing.assert_allclose(f1 + 4 * f2 + f3, p1, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(q)[big], np.expm1(zb / 2) / zb, rtol=1e-11)
    limits = [1 / 6, 1 / 6, 1 / 6, 0.5]  # RK4's weights 1/6, 2/6, 2/6, 1/6 (2 f2 multiplies N(a) + N(b))
    np.testing.assert_allclose(np.asarray([f1[0], f2[0], f3[0], q[0]]), limits, rtol=1e-13)
    f1_big = (-4 - zb + np.exp(zb) * (4 - 3 * zb + zb**2)) / zb**3
    np.testing.assert_allclose(np.asarray(f1)[big], f1_big, rtol=1e-11)


# --- energy budget ---------------------------------------------------------------------------


def test_instantaneous_energy_and_enstrophy_budget(x64):
    # dE/dt = P - 2 nu Z - 2 mu E and dZ/dt = mean(omega f) - 2 nu Pal - 2 mu Z, by a central
    # difference with h = 1e-3 (error h^2 E'''/6 ~ 1e-8 relative) along one run with dt = h/4
    # (ETDRK4 error ~1e-13): a deterministic check of forcing, drag, viscosity and the
    # conservative nonlinear term together.
    nu, drag, h = 0.01, 0.1, 1e-3
    f_hat = GRID.fft(kolmogorov_forcing(GRID, 4))
    before = advance(GRID.fft(turbulence()), GRID, nu, 0.01, 50, f_hat, drag=drag).omega_hat
    mid = advance(before, GRID, nu, h / 4, 4, f_hat, drag=drag).omega_hat
    after = advance(mid, GRID, nu, h / 4, 4, f_hat, drag=drag).omega_hat
    rate = (diagnostics.energy(after, GRID) - diagnostics.energy(before, GRID)) / (2 * h)
    inj = diagnostics.energy_injection(mid, f_hat, GRID)
    loss = diagnostics.dissipation(mid, GRID, nu) + diagnostics.drag_loss(mid, GRID, drag)
    assert abs(float(rate - (inj - loss))) < 1e-6 * float(inj + loss)
    z_rate = (diagnostics.enstrophy(after, GRID) - diagnostics.enstrophy(before, GRID)) / (2 * h)
    z_gain = diagnostics.mean_product(mid, f_hat, GRID)
    z_loss = 2 * nu * diagnostics.palinstrophy(mid, GRID) + 2 * drag * diagnostics.enstrophy(mid, GRID)
    assert abs(float(z_rate - (z_gain - z_loss))) < 1e-6 * float(abs(z_gain) + z_loss)


def test_kolmogorov_steady_state_injection_equals_dissipation(x64):
    # Kolmogorov flow n = 4, nu = 0.02 (Re = 50), drag 0.1 on 32^2: the laminar state (E = 1.42) is
    # unstable and the flow wanders in E = 0.39-0.63 (mean 0.48). Averaged over t in [30, 130] the
    # exact budget gives <P> - <D + 2 mu E> = (E(130) - E(30)) / 100, so the relative mismatch is at
    # most (E_max - E_min) / (100 <P>) = 0.8% (the window's tolerance); measured 0.11%, equal to
    # (E(130) - E(30)) / (100 <P>) up to 1e-5 (the trapezoidal averages of samples every 0.5).
    nu, drag = 0.02, 0.1
    forcing = kolmogorov_forcing(GRID, 4)
    f_hat = GRID.fft(forcing)
    omega0 = decaying_turbulence(jax.random.key(0), GRID, 2.0, energy=0.1)
    res = simulate(omega0, GRID, nu, 130.0, forcing=forcing, drag=drag, save_every=0.5)
    frames = jax.vmap(GRID.fft)(jnp.asarray(res.frames))
    inj = np.asarray(jax.vmap(lambda w: diagnostics.energy_injection(w, f_hat, GRID))(frames))
    viscous = np.asarray(jax.vmap(lambda w: diagnostics.dissipation(w, GRID, nu))(frames))
    loss = viscous + 2 * drag * res.energy
    keep = res.times >= 30.0
    t, span = res.times[keep], res.times[keep][-1] - res.times[keep][0]
    p_mean, d_mean = np.trapezoid(inj[keep], t) / span, np.trapezoid(loss[keep], t) / span
    window = (res.energy[keep].max() - res.energy[keep].min()) / span
    assert res.energy[keep].max() < 0.8  # not the laminar state: a real statistically steady flow
    assert abs(p_mean - d_mean) <= window + 1e-4 * p_mean
    assert abs(p_mean - d_mean) < 0.01 * p_mean
    # the exact identity behind it, to the quadrature error
    de = (res.energy[keep][-1] - res.energy[keep][0]) / span
    assert abs((p_mean - d_mean) - de) < 1e-4 * p_mean
    assert res.cfl.max() <= STABILITY_CFL["etdrk4"]


# --- fields and diagnostics ------------------------------------------------------------------------


def test_decaying_turbulence_has_the_prescribed_spectrum(x64):
    grid, peak = GRID, 3.0
    omega = decaying_turbulence(jax.random.key(7), grid, peak, energy=0.3)
    w_hat = grid.fft(omega)
    k, e_k = diagnostics.energy_spectrum(w_hat, grid)
    assert float(jnp.sum(e_k)) == pytest.approx(0.3, rel=1e-13)
    assert float(diagnostics.energy(w_hat, grid)) == pytest.approx(0.3, rel=1e-13)
    target = san_staples_spectrum(k, peak, 0.3)
    # shell by shell (up to n = 9, E > 1e-10 E_peak): the prescribed E(k_n) dk times one normalising
    # factor (the discrete sum of E(k_n) vs the integral 0.3), 1 to the accuracy of that sum
    factor = e_k[1:10] / target[1:10]
    np.testing.assert_allclose(factor, factor[0], rtol=1e-12)
    assert float(factor[0]) == pytest.approx(1.0, abs=1e-3)
    assert int(jnp.argmax(e_k)) == 3
    assert abs(float(jnp.mean(omega))) < 1e-15
    again = decaying_turbulence(jax.random.key(7), grid, peak, energy=0.3)
    np.testing.assert_array_equal(omega, again)


def test_divergence_is_machine_zero(x64):
    w = advance(GRID.fft(turbulence()), GRID, 1e-2, 0.01, 20).omega_hat
    u, v = GRID.velocity(w)
    kmax = math.pi / GRID.dx
    scale = kmax * float(jnp.max(jnp.hypot(u, v)))
    assert float(jnp.max(jnp.abs(diagnostics.divergence(w, GRID)))) < 1e-14 * scale


def test_diagnostics_of_taylor_green(x64):
    # u = A sin x cos y, v = -A cos x sin y (k = 1): E = A^2/4, omega = 2A sin x sin y so Z = A^2/2,
    # palinstrophy |k|^2 Z = A^2, all energy in the shell |k| = sqrt 2 -> n = 1, and
    # max(|u| + |v|)/dx = A/dx (|sin x cos y| + |cos x sin y| = 1 at x + y = pi/2).
    a = 0.7
    w = GRID.fft(taylor_green(GRID, 1, a))
    assert float(diagnostics.energy(w, GRID)) == pytest.approx(a * a / 4, rel=1e-14)
    assert float(diagnostics.enstrophy(w, GRID)) == pytest.approx(a * a / 2, rel=1e-14)
    assert float(diagnostics.palinstrophy(w, GRID)) == pytest.approx(a * a, rel=1e-14)
    assert float(diagnostics.rms_velocity(w, GRID)) == pytest.approx(a / math.sqrt(2), rel=1e-14)
    k, e_k = diagnostics.energy_spectrum(w, GRID)
    assert float(e_k[1]) == pytest.approx(a * a / 4, rel=1e-14) and float(k[1]) == 1.0
    assert float(diagnostics.cfl_number(w, GRID, 0.1)) == pytest.approx(0.1 * a / GRID.dx, rel=1e-13)


def test_reynolds_number_helpers():
    assert viscosity_for(1000.0) == pytest.approx(1e-3)
    assert viscosity_for(200.0, velocity=2.0, length=0.5) == pytest.approx(5e-3)
    assert kolmogorov_viscosity(1000.0, PeriodicGrid.square(64)) == pytest.approx(1e-3)  # Kochkov et al.
    box = PeriodicGrid.square(64, 4 * math.pi)  # L/2pi = 2: nu = sqrt(A) 2^(3/2) / Re
    assert kolmogorov_viscosity(100.0, box, amplitude=4.0) == pytest.approx(2 * 2**1.5 / 100)
    # traced Reynolds number (a dashboard slider under jit)
    assert float(jax.jit(viscosity_for)(500.0)) == pytest.approx(2e-3)


def test_new_parameters_do_not_recompile(x64):
    w0 = GRID.fft(turbulence())
    advance(w0, GRID, 0.01, 0.01, 5)
    before = periodic._advance._cache_size()
    for nu, dt, n, drag in ((0.02, 0.005, 7, 0.0), (0.001, 0.02, 3, 0.3), (1e-4, 0.001, 12, 0.05)):
        advance(w0, GRID, nu, dt, n, drag=drag)
    assert periodic._advance._cache_size() == before


def test_vmap_over_viscosity_matches_single_runs(x64):
    # A Reynolds-number sweep is a vmap over nu (the loop stops per member, so the batch runs to the
    # longest): each member equals its own run.
    w0 = GRID.fft(turbulence())
    nus = jnp.array([1e-3, 1e-2, 5e-2])
    swept = jax.vmap(lambda nu: advance(w0, GRID, nu, 0.01, 10).omega_hat)(nus)
    for i, nu in enumerate(nus):
        assert rel(swept[i], advance(w0, GRID, float(nu), 0.01, 10).omega_hat) < 1e-14


# --- failures -------------------------------------------------------------------------------


def test_blow_up_is_reported_with_the_cfl_number(x64, monkeypatch):
    w0 = GRID.fft(turbulence())
    speed = float(diagnostics.max_speed(w0, GRID))
    # advance: far too large a step blows up; the flag says so and the CFL number is the last finite one
    out = advance(w0, GRID, 1e-4, 8.0 / speed, 200)
    assert not bool(out.finite) and float(out.cfl) > 2.0
    # advance with a CFL limit stops before the bad step (the first: CFL 8), keeps the state
    out = advance(w0, GRID, 1e-4, 8.0 / speed, 200, cfl_limit=STABILITY_CFL["etdrk4"])
    assert bool(out.finite) and int(out.steps) == 0 and float(out.cfl) == 0.0
    assert rel(out.omega_hat, w0) < 1e-15
    out = advance(w0, GRID, 1e-4, 1.0 / speed, 200, cfl_limit=STABILITY_CFL["etdrk4"])
    assert int(out.steps) == 200 and 0.5 < float(out.cfl) <= STABILITY_CFL["etdrk4"]
    # simulate, NaN branch (stability check disabled so the step is accepted)
    monkeypatch.setitem(periodic.STABILITY_CFL, "etdrk4", math.inf)
    with pytest.raises(SolverError, match=r"blew up \(NaN/inf\).*largest CFL number seen was"):
        simulate(GRID.ifft(w0), GRID, 1e-4, 25.0 / speed * 200, dt=25.0 / speed)


def test_growing_velocity_with_fixed_dt_raises(x64):
    # Forced from rest: the CFL number starts at 0 and grows past the limit -> SolverError naming it.
    forcing = kolmogorov_forcing(GRID, 4)
    with pytest.raises(SolverError, match=r"CFL number reached [0-9.]+ > 1\.35"):
        simulate(jnp.zeros(GRID.shape), GRID, 1e-3, 10.0, dt=0.5, forcing=forcing)
    # with dt from the CFL number the same run goes through, within the limit
    res = simulate(jnp.zeros(GRID.shape), GRID, 1e-3, 2.0, forcing=forcing, drag=0.1, save_every=1.0)
    assert res.cfl.max() <= STABILITY_CFL["etdrk4"] and res.steps > 4


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: viscosity_for(0.0), r"reynolds must lie in \(0, inf\), got 0"),
        (lambda: viscosity_for(-10.0), r"reynolds must lie in \(0, inf\), got -10"),
        (lambda: simulate(jnp.zeros((8, 8)), PeriodicGrid.square(8), 0.01, 1.0),
         r"grid.nx must be an even int >= 16.*got 8"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.0, 1.0), r"nu must lie in \(0, inf\), got 0"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, -1.0), r"t_end must lie in \(0, inf\), got -1"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, 1.0, dt=1.0),
         r"dt must lie in \(0, 0\.2652\] .*stability limit.*got 1 \(CFL 5\.09\)"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, 1.0, cfl=2.0),
         r"cfl must lie in \(0, 1\.35\d*\], got 2"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, 1.0, method="etdrk2", cfl=0.5),
         r"cfl must lie in \(0, 0\.3\], got 0\.5"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, 1.0, method="rk4"), r"method must be one of"),
        (lambda: simulate(taylor_green(GRID), GRID, 0.01, 1.0, save_every=2.0),
         r"save_every must lie in \(0, 1\], got 2"),
        (lambda: simulate(jnp.zeros((16, 16)), GRID, 0.01, 1.0), r"omega0 must have shape \(32, 32\)"),
        (lambda: simulate(jnp.full(GRID.shape, jnp.nan), GRID, 0.01, 1.0), r"omega0 must be finite"),
        (lambda: kolmogorov_forcing(GRID, 11), r"wavenumber must lie in \[1, 10\].*got 11"),
        (lambda: taylor_green(GRID, 0), r"k must be an int >= 1, got 0"),
        (lambda: decaying_turbulence(jax.random.key(0), GRID, 4.0),
         r"peak_wavenumber must lie in \(0, 3\.55\d*\], got 4"),
        (lambda: advance(jnp.zeros(GRID.spectral_shape, jnp.complex64), GRID, 0.01, 0.1, 2.5),
         r"n_steps must be an int >= 0, got 2\.5"),
        (lambda: advance(jnp.zeros(GRID.shape), GRID, 0.01, 0.1, 2), r"omega_hat must have shape \(32, 17\)"),
        (lambda: make_stepper(GRID, drag=-1.0), r"drag must lie in \[0, inf\), got -1"),
    ],
)
def test_bad_input_names_parameter_value_and_range(call, match):
    with pytest.raises(ValueError, match=match):
        call()
