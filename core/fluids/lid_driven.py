r"""The lid-driven cavity: vorticity-streamfunction finite differences marched to steady state.

The unit square, walls at rest except the lid :math:`y = 1`, which slides at speed :math:`U` in
:math:`+x`; :math:`Re = U L/\nu` with :math:`L = 1`. In two dimensions the vorticity
:math:`\omega = \partial_x v - \partial_y u` and the streamfunction :math:`\psi`
(:math:`u = \partial_y\psi`, :math:`v = -\partial_x\psi`) carry the flow:

.. math::
    \partial_t\omega + u\,\partial_x\omega + v\,\partial_y\omega = \nu\,\Delta\omega, \qquad
    -\Delta\psi = \omega, \qquad \psi = 0 \text{ on the walls}, \qquad \nu = U/Re .

Grid: nodes :math:`x_i = i h`, :math:`y_j = j h`, :math:`i, j = 0..n`, :math:`h = 1/n`; fields have
shape ``(n + 1, n + 1)``, x first, walls included. At the interior nodes, second-order central
differences (:math:`\delta_x f_{ij} = (f_{i+1,j} - f_{i-1,j})/2h`, :math:`\delta_x^2` the three-point
second difference):

.. math::
    \frac{d\omega_{ij}}{dt} = L(\omega)_{ij}
      = -u_{ij}\,\delta_x\omega_{ij} - v_{ij}\,\delta_y\omega_{ij}
        + \nu\,(\delta_x^2 + \delta_y^2)\,\omega_{ij}, \qquad
    u_{ij} = \delta_y\psi_{ij}, \quad v_{ij} = -\delta_x\psi_{ij},

where :math:`\psi` solves the five-point :math:`-(\delta_x^2 + \delta_y^2)\psi = \omega` with
:math:`\psi = 0` on the walls, exactly, by the sine transform (:func:`.poisson.solve_dirichlet`, no
matrix factorisation). The wall vorticity follows from :math:`\psi` by Jensen's second-order formula
(Jensen 1959, Proc. R. Soc. Lond. A 249, 346; Napolitano, Pascazio & Quartapelle 1999, Comput. Fluids
28, 139): with :math:`\psi_{\rm wall} = 0`, :math:`\partial_n\psi` = the wall's tangential speed and
:math:`\omega = -\partial_n^2\psi` there, the cubic through the wall and the next two nodes gives

.. math::
    \omega_{i,n} = -\frac{8\psi_{i,n-1} - \psi_{i,n-2}}{2h^2} - \frac{3U}{h}\ \text{(lid)}, \qquad
    \omega_{i,0} = -\frac{8\psi_{i,1} - \psi_{i,2}}{2h^2}, \ \text{and likewise on } x = 0, 1 .

(Thom's first-order :math:`\omega_{i,0} = -2\psi_{i,1}/h^2` gives the same order in the interior but
larger constants: at Re = 1000, n = 128, it is 0.0137 from Ghia's centrelines where Jensen's is 0.0106.)
Time: the three-stage strong-stability-preserving Runge-Kutta method (Shu & Osher 1988, J. Comput.
Phys. 77, 439), one Poisson solve per stage,

.. math::
    \omega^{(1)} = \omega^n + \delta t\, L(\omega^n), \quad
    \omega^{(2)} = \tfrac34\omega^n + \tfrac14\big(\omega^{(1)} + \delta t\, L(\omega^{(1)})\big), \quad
    \omega^{n+1} = \tfrac13\omega^n + \tfrac23\big(\omega^{(2)} + \delta t\, L(\omega^{(2)})\big).

Its stability region holds the imaginary axis up to :math:`\pm\sqrt3` and the negative real axis to
about :math:`-2.51`; for central advection-diffusion (von Neumann, frozen coefficients) it is stable
whenever :math:`\nu\,\delta t/h^2 \le 1/4` and :math:`(|u| + |v|)\,\delta t/h \le \sqrt3`. So

.. math::
    \delta t \le \frac{h^2 Re}{4 U} \ \text{(diffusive)}, \qquad
    C = \frac{U\,\delta t}{h} \le C_{\max} = 1.6 \ \text{(advective CFL, lid speed)},

both enforced on an explicit ``dt`` (the margin below :math:`\sqrt3` leaves room for
:math:`|u| + |v| > U` inside). The default step is the largest both allow at ``cfl = 1.4``. The CFL
number seen, :math:`\max (|u| + |v|)\,\delta t/h` over the interior, is reported with every advance, and
a march that sees more than :math:`\sqrt3`, or a non-finite vorticity, fails.

Steady state: the run stops when the velocity's rate of change over the last chunk of steps,

.. math::
    R = \frac{\tau}{U\,T}\max_{ij} \big(|u_{ij}(t) - u_{ij}(t - T)|,\ |v_{ij}(t) - v_{ij}(t - T)|\big),
    \qquad \tau = \min\Big(\frac{L}{U}, \frac{L^2}{\nu}\Big),

falls below ``tol`` (:math:`T` the chunk's time span, ``check_every`` steps; :math:`\tau` the flow's
time scale, the viscous one for :math:`Re < 1`). Measuring over a chunk rather than one step keeps
float32 rounding in :math:`u` (about :math:`10^{-6} U`) far below the tolerance.

Validated against Ghia, Ghia & Shin (1982), J. Comput. Phys. 48, 387-411 (the tests; their Tables I
and II). Precision: the state's dtype (JAX's default float: float32 unless x64 is on, e.g. by
``solverlab.setup(x64=True)``); float32 reaches Ghia's two-to-three digits, float64 is for
convergence studies.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian._args import positive_int
from ..errors import SolverError, check_range, concrete_value
from .poisson import solve_dirichlet

__all__ = [
    "CavityState",
    "CavityAdvance",
    "CavityResult",
    "cavity",
    "cavity_init",
    "cavity_advance",
    "march",
    "stable_dt",
    "check_interval",
    "residual",
    "velocity",
    "CFL_MAX",
    "DEFAULT_N",
]

CFL_MAX = 1.6  # below SSP-RK3's sqrt(3) on the imaginary axis, with room for |u| + |v| > U
CFL_BLOWUP = math.sqrt(3.0)  # a seen CFL above this is outside the stability region: fail
DEFAULT_N = 128  # Ghia's 129 x 129 nodes
DEFAULT_CFL = 1.4
DEFAULT_TOL = 1e-4
MIN_N = 8


class CavityState(NamedTuple):
    """The march's state (a pytree): fields of shape ``(n + 1, n + 1)``, x first, walls included.

    ``omega`` holds Jensen's wall vorticity and ``psi`` the streamfunction of ``omega`` (zero on the
    walls); ``time`` and ``steps`` count from the impulsive start.
    """

    omega: jax.Array
    psi: jax.Array
    time: jax.Array
    steps: jax.Array


class CavityAdvance(NamedTuple):
    r"""What :func:`cavity_advance` returns: the new state and how the steps went.

    ``residual``: :math:`R` over the steps just taken (module docstring; NaN once not finite);
    ``cfl``: the largest finite CFL number :math:`\max(|u|+|v|)\,\delta t/h` seen; ``finite``: False
    once the vorticity is NaN or infinite (the march stops at that step); ``dt``: the step used.
    """

    state: CavityState
    residual: jax.Array
    cfl: jax.Array
    finite: jax.Array
    dt: jax.Array


class CavityResult(NamedTuple):
    """A steady cavity flow.

    Node coordinates ``x``, ``y`` (shape ``(n + 1,)``, from 0 to 1) and NumPy fields of shape
    ``(n + 1, n + 1)``, x first: velocity ``u``, ``v`` (walls and lid included), streamfunction
    ``psi``, vorticity ``omega``. ``steps`` and ``time`` from the impulsive start; ``residual``: the
    history of :math:`R`, one value per check (the last below ``tol`` when ``converged``); ``dt``;
    ``cfl``: the largest CFL number seen.
    """

    reynolds: float
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    psi: np.ndarray
    omega: np.ndarray
    steps: int
    time: float
    residual: np.ndarray
    converged: bool
    dt: float
    cfl: float
    lid_velocity: float

    def centerline_u(self) -> tuple[np.ndarray, np.ndarray]:
        """``(y, u)`` along the vertical centreline x = 0.5, walls included (``u = U`` at y = 1).

        For odd ``n`` the two nearest grid columns are averaged (second-order interpolation).
        """
        return self.y, _midline(self.u, axis=0)

    def centerline_v(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, v)`` along the horizontal centreline y = 0.5, walls included (``v = 0`` at x = 0, 1)."""
        return self.x, _midline(self.v, axis=1)

    @property
    def psi_min(self) -> tuple[float, float, float]:
        """The primary vortex: ``(psi, x, y)`` at the grid node of least streamfunction (as Ghia's
        Table III, on their 129 x 129 nodes)."""
        i, j = np.unravel_index(np.argmin(self.psi), self.psi.shape)
        return float(self.psi[i, j]), float(self.x[i]), float(self.y[j])


def _midline(field, axis):
    m = field.shape[axis] - 1
    take = functools.partial(np.take, field, axis=axis)
    return take(m // 2) if m % 2 == 0 else 0.5 * (take(m // 2) + take(m // 2 + 1))


# --- the scheme -----------------------------------------------------------------------------------


def _psi_of(omega_in, h):
    """Streamfunction on the full grid (zero on the walls) from the interior vorticity."""
    return jnp.pad(solve_dirichlet(omega_in, h), 1)


def _with_walls(omega_in, psi, h, lid):
    """The full vorticity: interior values plus Jensen's wall values (corners are unused: 0)."""
    w = jnp.pad(omega_in, 1)
    c = -0.5 / (h * h)
    w = w.at[1:-1, 0].set(c * (8 * psi[1:-1, 1] - psi[1:-1, 2]))
    w = w.at[1:-1, -1].set(c * (8 * psi[1:-1, -2] - psi[1:-1, -3]) - 3.0 * lid / h)
    w = w.at[0, 1:-1].set(c * (8 * psi[1, 1:-1] - psi[2, 1:-1]))
    return w.at[-1, 1:-1].set(c * (8 * psi[-2, 1:-1] - psi[-3, 1:-1]))


def _interior_velocity(psi, h):
    u = (psi[1:-1, 2:] - psi[1:-1, :-2]) / (2 * h)
    v = (psi[:-2, 1:-1] - psi[2:, 1:-1]) / (2 * h)
    return u, v


def _rhs(omega_in, h, nu, lid):
    r""":math:`L(\omega)` at the interior nodes, and the CFL speed :math:`\max(|u| + |v|)`."""
    psi = _psi_of(omega_in, h)
    w = _with_walls(omega_in, psi, h, lid)
    u, v = _interior_velocity(psi, h)
    wx = (w[2:, 1:-1] - w[:-2, 1:-1]) / (2 * h)
    wy = (w[1:-1, 2:] - w[1:-1, :-2]) / (2 * h)
    lap = (w[2:, 1:-1] + w[:-2, 1:-1] + w[1:-1, 2:] + w[1:-1, :-2] - 4 * omega_in) / (h * h)
    return -(u * wx + v * wy) + nu * lap, jnp.max(jnp.abs(u) + jnp.abs(v))


def _ssprk3(omega_in, dt, h, nu, lid):
    """One SSP-RK3 step of the interior vorticity; also the CFL number at its start."""
    k0, speed = _rhs(omega_in, h, nu, lid)
    w1 = omega_in + dt * k0
    w2 = 0.75 * omega_in + 0.25 * (w1 + dt * _rhs(w1, h, nu, lid)[0])
    w3 = omega_in / 3.0 + (2.0 / 3.0) * (w2 + dt * _rhs(w2, h, nu, lid)[0])
    return w3, speed * dt / h


@jax.jit
def _advance(state, reynolds, dt, lid, n_steps):
    dtype = state.omega.dtype
    h = 1.0 / (state.omega.shape[0] - 1)
    nu = jnp.abs(lid) / reynolds

    def body(carry):
        k, w, cfl, _ = carry
        w, c = _ssprk3(w, dt, h, nu, lid)
        return k + 1, w, jnp.fmax(cfl, c), c

    def cond(carry):
        k, _, _, last = carry
        return (k < n_steps) & jnp.isfinite(last)  # stop at the first non-finite step

    zero = jnp.zeros((), dtype)
    init = (jnp.zeros((), jnp.int32), state.omega[1:-1, 1:-1], zero, zero)
    k, w, cfl, _ = jax.lax.while_loop(cond, body, init)
    psi = _psi_of(w, h)
    omega = _with_walls(w, psi, h, lid)
    finite = jnp.all(jnp.isfinite(omega))
    # Residual over the whole chunk, not the last step: float32 noise in u (~1e-6) divided by the
    # chunk's span stays far below any useful tolerance.
    span = k.astype(dtype) * dt
    u0, v0 = _interior_velocity(state.psi, h)
    u1, v1 = _interior_velocity(psi, h)
    change = jnp.maximum(jnp.max(jnp.abs(u1 - u0)), jnp.max(jnp.abs(v1 - v0)))
    flow_time = jnp.minimum(1.0, reynolds) / jnp.abs(lid)  # min(L/U, L^2/nu): Stokes flow is fast
    residual = change * flow_time / (jnp.abs(lid) * jnp.maximum(span, jnp.finfo(dtype).tiny))
    new = CavityState(omega, psi, state.time + span, state.steps + k)
    return CavityAdvance(new, jnp.where(finite, residual, jnp.nan), cfl, finite, dt)


# --- public API -----------------------------------------------------------------------------------


def stable_dt(n: int, reynolds, cfl=DEFAULT_CFL, lid_velocity=1.0):
    r"""The default step :math:`\delta t = \min\big(C h/U,\ h^2 Re/(4U)\big)`, :math:`h = 1/n`.

    Plain ``jnp`` arithmetic, traceable in ``reynolds``, ``cfl`` and ``lid_velocity``: a
    dashboard's new Reynolds number gives a new step without a recompile.
    """
    h = 1.0 / n
    lid = jnp.abs(lid_velocity)
    return jnp.minimum(cfl * h / lid, h * h * reynolds / (4.0 * lid))


def cavity_init(n: int = DEFAULT_N, dtype=None) -> CavityState:
    """Fluid at rest and the lid started impulsively: zero fields of shape ``(n + 1, n + 1)``.

    Args:
        n: grid intervals per side, an int >= 8 (static: a new size compiles once).
        dtype: floating dtype of the state; default JAX's default float (float32 unless x64 is on).
    """
    n = positive_int("n", n, low=MIN_N)
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    z = jnp.zeros((n + 1, n + 1), dtype)
    return CavityState(z, z, jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


def cavity_advance(state: CavityState, reynolds, n_steps, *, cfl=DEFAULT_CFL, dt=None,
                   lid_velocity=1.0) -> CavityAdvance:
    r"""Advance the cavity ``n_steps`` SSP-RK3 steps (module docstring): the dashboard's kernel.

    One compiled kernel per grid size and dtype: ``reynolds``, ``n_steps``, ``cfl``, ``dt`` and
    ``lid_velocity`` are all traced (``n_steps`` bounds a ``while_loop``; Python ints and floats are
    cast to the state's dtype), so new values never recompile. Concrete values are range-checked
    (``ValueError``), but the step is not checked against the stability limit, so that a notebook can
    show what happens past it: watch ``finite`` and ``cfl`` (:func:`cavity` checks and raises).

    Args:
        state: a :class:`CavityState` (from :func:`cavity_init` or a previous advance).
        reynolds: :math:`Re > 0`, a scalar.
        n_steps: steps to take, an int >= 1 (fewer if the vorticity stops being finite).
        cfl: lid CFL number :math:`U\delta t/h` of the default step
            :math:`\delta t = \min(C h/U, h^2 Re/4U)`, used when ``dt`` is None.
        dt: an explicit time step (overrides ``cfl``).
        lid_velocity: lid speed :math:`U > 0`; :math:`\nu = U/Re`.

    Returns:
        :class:`CavityAdvance` ``(state, residual, cfl, finite, dt)`` of JAX arrays.

    Example:
        >>> state = cavity_init(64)
        >>> for _ in range(20):                       # draw a frame between calls
        ...     out = cavity_advance(state, 400.0, 100)
        ...     state = out.state
    """
    check_range("reynolds", reynolds, low=0.0, low_open=True)
    check_range("lid_velocity", lid_velocity, low=0.0, low_open=True)
    steps = concrete_value(n_steps)
    if steps is not None:
        positive_int("n_steps", n_steps.item() if hasattr(n_steps, "item") else n_steps)
    dtype = state.omega.dtype
    n = state.omega.shape[0] - 1
    if dt is None:
        check_range("cfl", cfl, low=0.0, low_open=True)
        dt = stable_dt(n, jnp.asarray(reynolds, dtype), jnp.asarray(cfl, dtype), jnp.asarray(lid_velocity, dtype))
    else:
        check_range("dt", dt, low=0.0, low_open=True)
    cast = functools.partial(jnp.asarray, dtype=dtype)
    return _advance(state, cast(reynolds), cast(dt), cast(lid_velocity), jnp.asarray(n_steps, jnp.int32))


def cavity(reynolds, n: int = DEFAULT_N, *, lid_velocity=1.0, tol=DEFAULT_TOL, max_steps: int = 100_000,
           dt=None, cfl=DEFAULT_CFL, check_every: int | None = None, dtype=None) -> CavityResult:
    r"""The steady lid-driven cavity at Reynolds number ``reynolds`` (module docstring for the scheme).

    Marches :func:`cavity_advance` from rest, ``check_every`` steps at a time, until the residual
    :math:`R = \tau\max|\Delta u|/(U T)` over a chunk falls below ``tol``. The defaults (``n = 128``,
    ``tol = 1e-4``) match Ghia, Ghia & Shin (1982) to about 1% of the lid speed up to
    :math:`Re = 1000` (measured: 0.011 at Re = 1000); ``n = 96`` already does for :math:`Re \le 400`
    and ``n = 48`` for :math:`Re = 100`.

    Args:
        reynolds: :math:`Re = UL/\nu > 0`.
        n: grid intervals per side, an int >= 8 (``n + 1`` nodes; x = 0.5 is a grid line when ``n``
            is even, else the centrelines are interpolated).
        lid_velocity: lid speed :math:`U > 0` (velocities scale with it, times with :math:`1/U`).
        tol: steady-state tolerance on :math:`R` (> 0); the velocity left to change is about
            :math:`3\,\mathrm{tol}\,U` (measured at Re 400 and 1000).
        max_steps: the most steps before giving up (``SolverError``).
        dt: explicit time step in :math:`(0, \min(h^2 Re/4U,\ C_{\max} h/U)]`; default from ``cfl``.
        cfl: lid CFL number :math:`U\delta t/h` of the default step, in (0, 1.6].
        check_every: steps between residual checks; default about half a flow time unit
            (:math:`0.5\tau/\delta t`, within [50, 2000]).
        dtype: floating dtype (default JAX's default float).

    Returns:
        :class:`CavityResult`; ``centerline_u()`` and ``centerline_v()`` give the profiles.

    Raises:
        ValueError: a bad argument (before anything is compiled).
        SolverError: the march blew up (non-finite vorticity, or a CFL number past the stability
            region) or found no steady state within ``max_steps``.

    Example:
        >>> res = cavity(400.0, n=96)
        >>> y, u = res.centerline_u()
    """
    check_range("reynolds", reynolds, low=0.0, low_open=True)
    n = positive_int("n", n, low=MIN_N)
    check_range("lid_velocity", lid_velocity, low=0.0, low_open=True)
    check_range("tol", tol, low=0.0, low_open=True)
    max_steps = positive_int("max_steps", max_steps)
    reynolds, lid = float(reynolds), float(lid_velocity)
    h = 1.0 / n
    if dt is None:
        check_range("cfl", cfl, low=0.0, high=CFL_MAX, low_open=True)
        dt = float(stable_dt(n, reynolds, float(cfl), lid))
    else:
        check_range("dt", dt, low=0.0, low_open=True)
        dt = float(dt)
        diffusive, advective = h * h * reynolds / (4.0 * lid), CFL_MAX * h / lid
        for limit, what in ((diffusive, f"the diffusive limit h^2 Re/(4U) at n = {n}, Re = {reynolds:g}"),
                            (advective, f"the advective limit U dt/h <= {CFL_MAX:g} at n = {n}, U = {lid:g}")):
            if dt > limit * (1 + 1e-12):
                raise ValueError(f"dt must lie in (0, {limit:.4g}] ({what}), got {dt:g}; "
                                 "leave dt=None for the largest stable step")
    if check_every is None:
        check_every = check_interval(reynolds, dt, lid)
    check_every = positive_int("check_every", check_every)
    return march(cavity_init(n, dtype), reynolds, dt, lid_velocity=lid, tol=float(tol),
                 max_steps=max_steps, check_every=check_every)


def march(state: CavityState, reynolds, dt, *, lid_velocity=1.0, tol=DEFAULT_TOL, max_steps: int = 100_000,
          check_every: int = 250, raise_unconverged: bool = True) -> CavityResult:
    r"""March ``state`` towards steady state with the step ``dt``, which is not checked for stability.

    The driver of :func:`cavity`, exposed to continue from a state (a dashboard's, say) or to show an
    unstable step. Raises ``SolverError`` when the vorticity stops being finite or the CFL number seen
    leaves the stability region (:math:`\sqrt3`), and, when ``raise_unconverged``, when ``max_steps``
    pass without :math:`R <` ``tol`` (else it returns with ``converged=False``).
    """
    max_steps = positive_int("max_steps", max_steps)
    check_every = positive_int("check_every", check_every)
    n = state.omega.shape[0] - 1
    where = f"cavity at Re = {float(reynolds):g}, n = {n}"
    residuals, cfl_seen, taken, converged = [], 0.0, 0, False
    while taken < max_steps:
        out = cavity_advance(state, reynolds, min(check_every, max_steps - taken), dt=dt,
                             lid_velocity=lid_velocity)
        cfl, finite = float(out.cfl), bool(out.finite)
        cfl_seen = max(cfl_seen, cfl)
        if not finite or cfl > CFL_BLOWUP:
            what = "the vorticity became NaN or infinite" if not finite else "the march left the stability region"
            raise SolverError(
                f"{where}: {what} by step {int(out.state.steps)} (t = {float(out.state.time):.4g}); the "
                f"largest CFL number seen was {cfl_seen:.3g} (stable up to {CFL_BLOWUP:.3g}) with "
                f"dt = {float(out.dt):.3g}, h = {1.0 / n:.3g}; try a smaller cfl or dt, or a larger n"
            )
        taken += int(out.state.steps) - int(state.steps)
        state = out.state
        residuals.append(float(out.residual))
        if residuals[-1] < tol:
            converged = True
            break
    if not converged and raise_unconverged:
        raise SolverError(
            f"{where}: no steady state within max_steps = {max_steps} (t = {float(state.time):.4g}): "
            f"the residual was still {residuals[-1]:.3g} > tol = {tol:g} (largest CFL number seen "
            f"{cfl_seen:.3g}); try a larger max_steps or tol"
        )
    u, v = velocity(state.psi, lid_velocity)
    x = np.linspace(0.0, 1.0, n + 1)
    return CavityResult(
        reynolds=float(reynolds), x=x, y=x.copy(), u=np.asarray(u), v=np.asarray(v),
        psi=np.asarray(state.psi), omega=np.asarray(state.omega), steps=int(state.steps),
        time=float(state.time), residual=np.asarray(residuals), converged=converged, dt=float(dt),
        cfl=cfl_seen, lid_velocity=float(lid_velocity),
    )


def check_interval(reynolds, dt, lid_velocity=1.0) -> int:
    """Steps between residual checks: about half a flow time unit :math:`\tau/2`, 50 to 2000 steps."""
    return int(min(max(round(0.5 * min(1.0, float(reynolds)) / (abs(float(lid_velocity)) * float(dt))), 50), 2000))


def residual(before: CavityState, after: CavityState, reynolds, lid_velocity=1.0) -> float:
    r"""The steady-state residual :math:`R` (module docstring) between two states of one march."""
    h = 1.0 / (before.psi.shape[0] - 1)
    u0, v0 = _interior_velocity(before.psi, h)
    u1, v1 = _interior_velocity(after.psi, h)
    change = float(jnp.maximum(jnp.max(jnp.abs(u1 - u0)), jnp.max(jnp.abs(v1 - v0))))
    span = float(after.time) - float(before.time)
    lid = abs(float(lid_velocity))
    return change * min(1.0, float(reynolds)) / lid / (lid * max(span, np.finfo(np.float64).tiny))


def velocity(psi, lid_velocity=1.0):
    r"""Velocity ``(u, v)`` on the full grid from ``psi`` of shape ``(n + 1, n + 1)``:
    :math:`u = \delta_y\psi`, :math:`v = -\delta_x\psi` inside, the wall values on the walls (the lid
    :math:`y = 1` moves at ``lid_velocity``; its two corner nodes count as the side walls, at rest)."""
    h = 1.0 / (psi.shape[0] - 1)
    u, v = _interior_velocity(psi, h)
    u = jnp.pad(u, 1).at[1:-1, -1].set(lid_velocity)
    return u, jnp.pad(v, 1)
