"""Flow past obstacles by volume penalisation: masks, the penalised step, blow-ups, the Strouhal number."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solverlab.errors import SolverError
from solverlab.fluids import obstacles as ob
from solverlab.fluids.grid import PeriodicGrid

# A small box for the mechanics: 8 x 4, 8 points per unit. Every call below advances N steps at a
# time, so the tests share one compiled program per precision (a new n_steps compiles anew).
SMALL = PeriodicGrid(64, 32, 8.0, 4.0)
N = 16


def advance(flow, state, reynolds, dt, calls, **kw):
    """``calls`` x N steps; returns the state and the concatenated drag and lift."""
    drag, lift, ok = [], [], True
    for _ in range(calls):
        state, info = ob.obstacle_advance(flow, state, reynolds, dt, N, **kw)
        drag.append(np.asarray(info.drag))
        lift.append(np.asarray(info.lift))
        ok = ok and bool(info.ok)
    return state, np.concatenate(drag), np.concatenate(lift), ok


# --- geometry ------------------------------------------------------------------------------------


def test_cylinder_mask_profile():
    grid = SMALL
    h = grid.dx
    chi = np.asarray(ob.cylinder_mask(grid, (3.0, 2.0), 1.0))
    i, j = round(3.0 / h), round(2.0 / h)
    assert chi[i, j] > 0.99  # the core is solid
    assert chi[i + 8, j] == pytest.approx(0.5 * (1 - math.tanh(1.0)), abs=1e-6)  # on the surface
    assert chi[i + 11, j] < 0.01  # three spacings out: fluid
    assert chi.min() >= 0.0 and chi.max() <= 1.0
    # symmetric about the centre (which is a grid point)
    assert np.allclose(chi[i + 1 : i + 12, j], chi[i - 1 : i - 12 : -1, j], atol=1e-6)
    assert np.allclose(chi[i, j + 1 : j + 12], chi[i, j - 1 : j - 12 : -1], atol=1e-6)


def test_obstacle_mask_is_the_union():
    a, b = ob.Cylinder(2.0, 1.0, 0.5), ob.Rectangle(5.0, 2.0, 1.5, 1.0)
    chi = ob.obstacle_mask(SMALL, [a, b])
    ca = ob.cylinder_mask(SMALL, (2.0, 1.0), 0.5)
    cb = ob.rectangle_mask(SMALL, (5.0, 2.0), (1.5, 1.0))
    assert np.array_equal(np.asarray(chi), np.maximum(np.asarray(ca), np.asarray(cb)))
    assert float(cb[40, 16]) > 0.99 and float(cb[40, 24]) < 0.01  # centre (5, 2) solid; (5, 3) fluid
    # along x: 3 spacings in, on the face x = 5.75, 4 spacings out
    assert float(cb[43, 16]) > 0.95 and float(cb[50, 16]) < 0.01
    assert float(cb[46, 16]) == pytest.approx(0.5 * (1 - math.tanh(1.0)), abs=1e-6)
    assert float(jnp.max(ob.obstacle_mask(SMALL, []))) == 0.0


@pytest.mark.parametrize(
    "obstacles, match",
    [
        ([ob.Cylinder(3.0, 3.8, 0.5)], r"obstacles\[0\] spans y in \[3.3, 4.3\]; it must lie in \[0, 4\]"),
        ([ob.Cylinder(-1.0, 2.0, 0.5)], r"obstacles\[0\]\.x must lie in \[0, 8\], got -1"),
        ([(1.0, 2.0, 0.5), (7.2, 2.0, 0.5)], r"obstacles\[1\] spans x in \[6.7, 7.7\]; it must lie in \[0, 7\]"),
        ([ob.Cylinder(3.0, 2.0, 0.2)], r"at least 4 .*refine the grid"),
        ([ob.Cylinder(3.0, 2.0, 0.0)], r"obstacles\[0\]\.radius must lie in \(0, inf\), got 0"),
        (["disc"], r"obstacles\[0\] must be a Cylinder"),
    ],
)
def test_obstacles_outside_or_unresolved_are_refused(obstacles, match):
    with pytest.raises(ValueError, match=match):
        ob.make_obstacle_flow(SMALL, obstacles)


def test_bad_set_up_is_refused():
    with pytest.raises(ValueError, match=r"grid.ny must lie in \[16, inf\), got 8"):
        ob.make_obstacle_flow(PeriodicGrid(64, 8, 8.0, 1.0), [])
    with pytest.raises(ValueError, match="grid must be a PeriodicGrid"):
        ob.make_obstacle_flow((64, 32), [])
    with pytest.raises(ValueError, match=r"inflow must lie in \(0, inf\), got -1"):
        ob.make_obstacle_flow(SMALL, [], inflow=-1.0)
    with pytest.raises(ValueError, match=r"sponge_width must lie in \[0.5, 4\)"):
        ob.make_obstacle_flow(SMALL, [], sponge_width=0.1)
    with pytest.raises(ValueError, match=r"eta must lie in \(0, inf\), got 0"):
        ob.make_obstacle_flow(SMALL, [], eta=0.0)


# --- the penalised step --------------------------------------------------------------------------


def test_without_obstacles_the_flow_stays_uniform():
    flow = ob.make_obstacle_flow(SMALL, [], inflow=1.5)
    dt = ob.stable_dt(flow, 0.5)
    state, drag, lift, ok = advance(flow, ob.initial_state(flow), 100.0, dt, 2)
    u, v = ob.velocity(flow, state.omega_hat)
    assert ok and float(state.time) == pytest.approx(2 * N * dt, rel=1e-6)
    # zero vorticity and u = U are a fixed point: the sponge's target is the flow itself
    assert float(jnp.max(jnp.abs(state.vorticity))) == 0.0
    assert np.all(np.asarray(u) == 1.5) and float(jnp.max(jnp.abs(v))) == 0.0
    assert np.all(drag == 0.0) and np.all(lift == 0.0)


def test_velocity_is_divergence_free(x64):
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    state = ob.initial_state(flow, vortex=(3.5, 2.5, 1.0, 0.25))
    state, _, _, ok = advance(flow, state, 100.0, ob.stable_dt(flow, 0.5), 2)
    assert ok
    u, v = ob.velocity(flow, state.omega_hat)
    kx, ky = SMALL.wavenumbers()
    div = SMALL.ifft(1j * kx * SMALL.fft(u) + 1j * ky * SMALL.fft(v))
    scale = float(jnp.max(jnp.abs(u))) / SMALL.dx
    # the velocity is the perpendicular gradient of the streamfunction: divergence-free to rounding
    assert float(jnp.max(jnp.abs(div))) < 1e-13 * scale


def test_symmetric_flow_has_no_lift_and_positive_drag(x64):
    # centre on a grid point and y = Ly/2: the set-up is symmetric under y -> Ly - y, so is the flow
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    _, drag, lift, ok = advance(flow, ob.initial_state(flow), 20.0, ob.stable_dt(flow, 0.5), 4)
    assert ok and np.all(drag[10:] > 0.5)
    assert np.max(np.abs(lift)) < 1e-10 * np.max(drag)


def test_velocity_inside_the_obstacle_scales_with_eta():
    # Brinkman: inside the solid the drag chi/eta balances the fluid's stresses, so the velocity left
    # there is O(eta) once the penetration length sqrt(nu eta) is below the grid spacing (Angot,
    # Bruneau & Fabrie 1999). Re 20 on D = 2, 8 points per unit, t = 1 (many eta's).
    grid = SMALL
    h = grid.dx
    speeds, etas = [], []
    for f in (1, 2, 4):
        eta = 0.25 * h / f
        flow = ob.make_obstacle_flow(grid, [ob.Cylinder(3.0, 2.0, 1.0)], eta=eta, length=2.0)
        dt = 0.125 * h  # <= 2.5 eta for the smallest eta
        state, _, _, ok = advance(flow, ob.initial_state(flow), 20.0, dt, 4)
        assert ok
        u, v = ob.velocity(flow, state.omega_hat)
        inside = np.asarray(flow.chi) > 0.99
        assert inside.sum() > 50
        speeds.append(float(np.mean(np.hypot(np.asarray(u), np.asarray(v))[inside])))
        etas.append(eta)
    slope = np.polyfit(np.log(etas), np.log(speeds), 1)[0]
    # measured 0.88 here (0.94 with twice the points: the edge layer sharpens as eta falls, so the
    # stress it leaves inside grows a little and the order stays just under 1 on coarse grids)
    assert 0.75 < slope < 1.1, (slope, speeds)
    assert speeds[-1] < 0.025  # measured 0.0175: the solid is at rest to 2 % of U at eta = h / 16


def test_dashboard_parameters_are_traced():
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    state = ob.initial_state(flow)
    dt = ob.stable_dt(flow, 0.5)
    state, _ = ob.obstacle_advance(flow, state, 50.0, dt, N)
    before = ob._advance_jit._cache_size()
    for re, step in [(80.0, dt), (120.0, 0.7 * dt), (60, 0.5 * dt)]:
        state, info = ob.obstacle_advance(flow, state, re, step, N)
    # a new geometry on the same grid is a new mask array, not a new program either
    other = ob.make_obstacle_flow(SMALL, [ob.Cylinder(3.0, 1.5, 0.75)])
    ob.obstacle_advance(other, ob.initial_state(other), 90.0, dt, N)
    assert ob._advance_jit._cache_size() == before
    assert info.lift.shape == (N,) and state.vorticity.shape == SMALL.shape


def test_advance_refuses_bad_arguments():
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    state = ob.initial_state(flow)
    limit = ob.stable_dt(flow, 1.0)
    with pytest.raises(ValueError, match=r"reynolds must lie in \(0, inf\), got 0"):
        ob.obstacle_advance(flow, state, 0.0, 0.01, 5)
    with pytest.raises(ValueError, match=r"reynolds must lie in \(0, inf\), got -5"):
        ob.simulate_obstacle_flow(-5.0, [ob.Cylinder(2.5, 2.0, 0.5)], grid=SMALL, t_end=1.0)
    with pytest.raises(ValueError, match=rf"dt must lie in \(0, {limit:g}\], got {2 * limit:g}"):
        ob.obstacle_advance(flow, state, 100.0, 2 * limit, 5)
    with pytest.raises(ValueError, match=r"dt must lie in \(0, "):
        ob.simulate_obstacle_flow(100.0, [ob.Cylinder(2.5, 2.0, 0.5)], grid=SMALL, t_end=1.0, dt=1.0)
    with pytest.raises(ValueError, match=r"cfl must lie in \(0, 1\], got 1.5"):
        ob.simulate_obstacle_flow(100.0, [ob.Cylinder(2.5, 2.0, 0.5)], grid=SMALL, t_end=1.0, cfl=1.5)
    with pytest.raises(ValueError, match=r"t_end must lie in \(0, inf\), got 0"):
        ob.simulate_obstacle_flow(100.0, [ob.Cylinder(2.5, 2.0, 0.5)], grid=SMALL, t_end=0.0)
    with pytest.raises(ValueError, match="n_steps must be an int >= 1, got 0"):
        ob.obstacle_advance(flow, state, 100.0, 0.01, 0)


def test_blow_up_raises_solver_error_with_the_cfl_number():
    # a vortex of circulation 300 U D, radius D/4, spins at ~ 200 U: the CFL number leaves RK4's range
    with pytest.raises(SolverError, match=r"at t = 0: the CFL number left .* the CFL number seen was \d+(\.\d+)? \(RK4 limit 1.35\)"):
        # t_end = N dt: one chunk of N steps
        ob.simulate_obstacle_flow(100.0, [ob.Cylinder(2.5, 2.0, 0.5)], grid=SMALL, t_end=0.5, perturbation=300.0)
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    state = ob.initial_state(flow, vortex=(4.0, 2.0, 300.0, 0.25))
    out, info = ob.obstacle_advance(flow, state, 100.0, ob.stable_dt(flow, 0.5), N)
    assert not bool(info.ok) and 10 < float(info.max_cfl) < 1e3
    # the run stopped at the failing first step: the state is the last good one, still finite
    assert float(out.time) == 0.0 and bool(jnp.all(jnp.isfinite(out.omega_hat)))


# --- the Strouhal number ---------------------------------------------------------------------------


def test_strouhal_recovers_a_sine():
    # uneven sampling, an offset, and a transient of another frequency before t_min
    f, d, u = 0.37, 2.0, 1.5
    t = np.sort(np.random.default_rng(0).uniform(0.0, 60.0, 6000))
    s = 0.3 + np.sin(2 * np.pi * f * t + 0.4)
    s = np.where(t < 20.0, 5.0 * np.sin(2 * np.pi * 1.3 * t), s)
    st = ob.strouhal(t, s, d, u, t_min=20.0)
    # crossings of a sine are inflection points: linear interpolation errs by O(dt^3)
    assert st == pytest.approx(f * d / u, rel=1e-6)


def test_strouhal_refuses_too_short_a_signal():
    t = np.linspace(0.0, 10.0, 200)
    with pytest.raises(ValueError, match="whole periods after t_min"):
        ob.strouhal(t, np.sin(2 * np.pi * 0.15 * t), 1.0, 1.0, t_min=0.0)
    with pytest.raises(ValueError, match=r"diameter must lie in \(0, inf\)"):
        ob.strouhal(t, np.sin(t), 0.0, 1.0)


# Published: St = 0.164 at Re = 100 for the unconfined cylinder (Williamson 1996, Annu. Rev. Fluid
# Mech. 28, 477, from his fit St = -3.3265/Re + 0.1816 + 1.6e-4 Re of parallel shedding); Roshko's
# (1954) St = 0.212 (1 - 21.2/Re) gives 0.167. Tolerance 5 %, the error budget measured for this
# solver and box (24 D x 16 D, cylinder 7.5 D downstream of the sponge):
# * resolution: the penalised body's effective diameter is off by O(h) (the mask's smoothing) and
#   O(sqrt(nu eta)); St = 0.161 at 12 points per D (here), 0.169 at 24 (+5 %, 155 s);
# * confinement: the y-period 16 D (6 % blockage) raises St by 0.4 % against 24 D; the sponge
#   holding u = U 3.5 D upstream instead of 7.5 D raised it by 2 %;
# * the window: three whole periods after the start-up, +-1 %; the time step: < 0.1 % (cfl 0.25).
STROUHAL_GRID = PeriodicGrid(288, 192, 24.0, 16.0)


def test_strouhal_number_of_the_cylinder_at_re_100():
    # 288 x 192 points, 1080 steps: about 10 s on 2 cores (float32). The kick behind the cylinder
    # starts the shedding: C_L saturates by t = 16; St is read over the 3 periods after that.
    res = ob.simulate_obstacle_flow(
        100.0, [ob.Cylinder(8.0, 8.0, 0.5)], grid=STROUHAL_GRID, t_end=36.0, cfl=0.8, perturbation=1.5
    )
    late = res.times >= 16.0
    assert np.ptp(res.lift[late]) > 0.6  # it sheds: C_L swings by about +-0.4
    st = ob.strouhal(res.times, res.lift, diameter=1.0, velocity=1.0, t_min=16.0)
    assert st == pytest.approx(0.164, rel=0.05)  # measured 0.1615
    # the wake probe (2 D behind the centre, on the axis) sees the same frequency: measured 0.1602
    st_probe = ob.strouhal(res.times, res.probe, diameter=1.0, velocity=1.0, t_min=16.0)
    assert st_probe == pytest.approx(st, rel=0.02)
    assert res.max_cfl < ob.CFL_BLOWUP and res.vorticity.shape == STROUHAL_GRID.shape  # measured 1.08


def test_a_reynolds_sweep_vmaps():
    flow = ob.make_obstacle_flow(SMALL, [ob.Cylinder(2.5, 2.0, 0.5)])
    state = ob.initial_state(flow, vortex=(3.5, 2.5, 1.0, 0.25))
    dt = ob.stable_dt(flow, 0.5)
    res = jnp.array([20.0, 100.0])
    batch, info = jax.vmap(lambda re: ob.obstacle_advance(flow, state, re, dt, N))(res)
    assert batch.omega_hat.shape == (2,) + SMALL.spectral_shape and info.drag.shape == (2, N)
    for k, re in enumerate([20.0, 100.0]):
        one, _ = ob.obstacle_advance(flow, state, re, dt, N)
        np.testing.assert_allclose(np.asarray(batch.omega_hat[k]), np.asarray(one.omega_hat), rtol=0, atol=1e-3)
    assert not np.allclose(np.asarray(batch.omega_hat[0]), np.asarray(batch.omega_hat[1]))
