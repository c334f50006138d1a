r"""Periodic 2-D Navier-Stokes by the pseudo-spectral vorticity-streamfunction method, ETDRK time stepping.

On the periodic box of a :class:`~solverlab.fluids.grid.PeriodicGrid` the vorticity obeys

.. math::
    \partial_t\omega + u\cdot\nabla\omega = \nu\Delta\omega - \mu\omega + f, \qquad
    -\Delta\psi = \omega, \quad u = (\partial_y\psi, -\partial_x\psi),

with viscosity :math:`\nu`, linear drag :math:`\mu \ge 0` and a vorticity forcing :math:`f`. In
Fourier space it splits into a diagonal linear part and a nonlinear part,

.. math::
    \partial_t\hat\omega = L\hat\omega + N(\hat\omega), \qquad L = -\nu|k|^2 - \mu, \qquad
    N(\hat\omega) = -P\,\widehat{u\cdot\nabla\omega} + \hat f,

where :math:`P` zeroes the modes the 2/3 rule drops (Orszag 1971). The advection is evaluated in
Basdevant's form (Basdevant 1983, J. Comput. Phys. 50, 209), which for a divergence-free 2-D flow is
an identity,

.. math::
    u\cdot\nabla\omega = (\partial_x^2 - \partial_y^2)(uv) + \partial_x\partial_y(v^2 - u^2),

so one evaluation costs two inverse FFTs (:math:`u, v`) and two forward FFTs (:math:`uv`,
:math:`v^2-u^2`) instead of the five of the advective form :math:`u\,\omega_x + v\,\omega_y`. With
the state kept on the 2/3-rule modes, every form gives the same truncated term to rounding, which
conserves energy and enstrophy exactly (a Galerkin projection).

Time stepping is exponential: the stiff viscous part is integrated exactly and the nonlinear part
by Runge-Kutta stages (Cox & Matthews 2002, J. Comput. Phys. 176, 430). ETDRK4 with
:math:`E = e^{hL}`, :math:`E_2 = e^{hL/2}`:

.. math::
    a &= E_2\hat\omega_n + Q\,N(\hat\omega_n), \quad b = E_2\hat\omega_n + Q\,N(a), \quad
    c = E_2 a + Q\,\big(2N(b) - N(\hat\omega_n)\big), \\
    \hat\omega_{n+1} &= E\hat\omega_n + f_1 N(\hat\omega_n) + 2 f_2\,\big(N(a) + N(b)\big) + f_3 N(c),

with :math:`Q = h\,\frac{e^{z/2}-1}{z}`, :math:`f_1 = h\,\frac{-4-z+e^{z}(4-3z+z^2)}{z^3}`,
:math:`f_2 = h\,\frac{2+z+e^{z}(z-2)}{z^3}`, :math:`f_3 = h\,\frac{-4-3z-z^2+e^{z}(4-z)}{z^3}`,
:math:`z = hL`. ETDRK2 (Cox & Matthews eq. 22):
:math:`a = E\hat\omega_n + h\varphi_1(z) N(\hat\omega_n)`,
:math:`\hat\omega_{n+1} = a + h\varphi_2(z)\,(N(a) - N(\hat\omega_n))`,
:math:`\varphi_1 = (e^z-1)/z`, :math:`\varphi_2 = (e^z-1-z)/z^2`. The coefficients cancel
catastrophically near :math:`z = 0`; they are evaluated as means over a circle of radius 1 around
each :math:`z` (Cauchy's formula, trapezoidal rule on 16 points, 8 of them by conjugate symmetry)
as Kassam & Trefethen (2005, SIAM J. Sci. Comput. 26, 1214) do. They are computed inside the trace
from the traced :math:`\nu`, :math:`\Delta t`, :math:`\mu`, once per :func:`advance` call, so a new
viscosity or step never recompiles.

Stability: the linear part is exact, so the step is limited by the advective CFL number
:math:`C = \Delta t\max(|u|/\Delta x + |v|/\Delta y)`. Advection eigenvalues are
:math:`i\,u\cdot k` with :math:`|k_x|\Delta x \le 2\pi/3` after the 2/3 rule, so
:math:`|\lambda|\Delta t \le \tfrac{2\pi}{3}C`; ETDRK4 reduces to classical RK4 for :math:`L = 0`,
stable on the imaginary axis up to :math:`2\sqrt2`, hence :math:`C \le 3\sqrt2/\pi \approx 1.35`.
ETDRK2 reduces to Heun's method, which has no stable interval on the imaginary axis: an undamped
top mode grows by :math:`(1 + y^4/4)^{1/2}` per step, :math:`y = \tfrac{2\pi}{3}C`, and only its viscous
decay :math:`e^{-\nu|k|^2\Delta t}` holds it back. Its limit 0.3 is below the CFL numbers at which
decaying turbulence at :math:`64^2`-:math:`128^2`, :math:`\nu = 10^{-4}`-:math:`10^{-3}` blew up by
:math:`t = 10` (0.35-0.7, depending on the flow; ETDRK4 ran at 1.5 on all of them and blew up from
1.8-2.2), so ETDRK2 wants about a third of ETDRK4's step for stability alone. Blow-ups below these
limits (under-resolved flows) are still caught at run time (:func:`simulate` raises
:class:`~solverlab.SolverError` with the CFL number).

The Reynolds number :math:`Re = UL/\nu` maps to the viscosity with :func:`viscosity_for` (any
velocity and length scale) and :func:`kolmogorov_viscosity` (the Kolmogorov-flow convention of
Chandler & Kerswell 2013).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian._args import as_key, positive_int
from ..errors import SolverError, check_range, concrete_value
from . import diagnostics
from .grid import PeriodicGrid

__all__ = [
    "METHODS",
    "STABILITY_CFL",
    "DEFAULT_CFL",
    "MIN_POINTS",
    "viscosity_for",
    "kolmogorov_viscosity",
    "taylor_green",
    "kolmogorov_forcing",
    "kolmogorov_laminar",
    "decaying_turbulence",
    "san_staples_spectrum",
    "nonlinear_term",
    "etd_coefficients",
    "make_stepper",
    "AdvanceResult",
    "advance",
    "SimulationResult",
    "simulate",
]

METHODS = ("etdrk4", "etdrk2")
# Largest advective CFL number dt * max(|u|/dx + |v|/dy) allowed: ETDRK4 from RK4's imaginary-axis
# interval 2*sqrt(2) over max |k dx| = 2*pi/3; ETDRK2 (Heun: no imaginary-axis interval) below the
# CFL numbers where decaying turbulence blew up (0.35-0.5, measured; module docstring).
STABILITY_CFL = {"etdrk4": 3 * math.sqrt(2) / math.pi, "etdrk2": 0.3}
# The CFL number simulate() aims at when no dt is given.
DEFAULT_CFL = {"etdrk4": 0.5, "etdrk2": 0.25}
# 16 points keep |k| <= 5 after the 2/3 rule (3|k| < n): fewer is not a flow worth the name.
MIN_POINTS = 16
_MAX_RUNS = 64  # advance() calls per save interval before simulate gives up on the CFL number
# Points on the upper half circle (conjugate symmetry doubles them): 8 give the coefficients to ~1e-12
# relative in float64, as 16 do (Kassam & Trefethen use 16, i.e. 32 on the circle); half the cost.
_CONTOUR_POINTS = 8


# --- Reynolds number --------------------------------------------------------------------------------


def viscosity_for(reynolds, velocity=1.0, length=1.0):
    r"""Viscosity :math:`\nu = UL/Re` for a Reynolds number :math:`Re = UL/\nu`.

    The scales each set-up uses (all on the box of side :math:`L_b`, :math:`2\pi` by default):

    - Kolmogorov flow, forcing :math:`F = A\sin(n\,2\pi y/L_b)`: :math:`U = \sqrt{A L_b/2\pi}`,
      :math:`L = L_b/2\pi` (Chandler & Kerswell 2013), see :func:`kolmogorov_viscosity`; on the
      :math:`2\pi` box with :math:`A = 1`, :math:`\nu = 1/Re` (Kochkov et al. 2021 use Re = 1000).
    - Decaying turbulence: the rms speed :math:`U = \sqrt{2E}`
      (:func:`~solverlab.fluids.diagnostics.rms_velocity`; 1 for the default energy 1/2) and
      :math:`L = L_b/2\pi`, so :math:`\nu = 1/Re` on the :math:`2\pi` box at :math:`E = 1/2`.
    - Taylor-Green of wavenumber :math:`k` and amplitude :math:`A`: :math:`U = A`,
      :math:`L = L_b/(2\pi k)`.

    Args:
        reynolds: :math:`Re > 0` (traced values pass unchecked).
        velocity, length: the scales :math:`U > 0`, :math:`L > 0`.
    """
    check_range("reynolds", reynolds, low=0.0, low_open=True)
    check_range("velocity", velocity, low=0.0, low_open=True)
    check_range("length", length, low=0.0, low_open=True)
    return velocity * length / reynolds


def kolmogorov_viscosity(reynolds, grid: PeriodicGrid, amplitude=1.0):
    r""":math:`\nu = \sqrt{A}\,(L_y/2\pi)^{3/2}/Re` for the Kolmogorov flow of :func:`kolmogorov_forcing`.

    Chandler & Kerswell (2013, J. Fluid Mech. 722, 554), eq. (2.5): lengths in units of
    :math:`L_y/2\pi` and velocities of :math:`\sqrt{A L_y/2\pi}`.
    """
    _check_grid(grid)
    check_range("amplitude", amplitude, low=0.0, low_open=True)
    scale = grid.ly / (2 * math.pi)
    return viscosity_for(reynolds, velocity=(amplitude * scale) ** 0.5, length=scale)


# --- initial fields and forcing --------------------------------------------------------------------


def taylor_green(grid: PeriodicGrid, k: int = 1, amplitude=1.0, *, t=0.0, nu=0.0, drag=0.0) -> jax.Array:
    r"""Taylor-Green vortex vorticity, exact at time ``t``: a steady Euler flow that decays viscously.

    With :math:`a = 2\pi k/L_x`, :math:`b = 2\pi k/L_y`,
    :math:`u = A\sin(ax)\cos(by)`, :math:`v = -\tfrac{a}{b}A\cos(ax)\sin(by)`, and

    .. math::
        \omega(x, y, t) = A\,\frac{a^2+b^2}{b}\,\sin(ax)\sin(by)\;e^{-(\nu(a^2+b^2)+\mu)t}.

    One Laplacian eigenvalue, so :math:`u\cdot\nabla\omega = 0` and the decay is exact for the
    Navier-Stokes equations: :math:`E(t) = E(0)e^{-2(\nu(a^2+b^2)+\mu)t}`, i.e. :math:`e^{-4\nu t}`
    for :math:`k = 1` on the :math:`2\pi` box (Taylor & Green 1937), with
    :math:`E(0) = A^2(1 + a^2/b^2)/8`.

    Args:
        grid: the periodic grid.
        k: integer wavenumber, kept by the 2/3 rule on both axes (``3k < min(nx, ny)``).
        amplitude, t, nu, drag: scalars (traced values welcome).

    Returns:
        The vorticity on the grid, shape ``grid.shape``.
    """
    _check_grid(grid)
    k = _wavenumber("k", k, grid)
    a, b = 2 * math.pi * k / grid.lx, 2 * math.pi * k / grid.ly
    x, y = grid.mesh()
    decay = jnp.exp(-(nu * (a * a + b * b) + drag) * t)
    return amplitude * (a * a + b * b) / b * jnp.sin(a * x) * jnp.sin(b * y) * decay


def kolmogorov_forcing(grid: PeriodicGrid, wavenumber: int = 4, amplitude=1.0) -> jax.Array:
    r"""Vorticity forcing of Kolmogorov flow: the curl of the body force :math:`F = (A\sin(\kappa y), 0)`.

    .. math::
        f = \partial_x F_y - \partial_y F_x = -A\kappa\cos(\kappa y), \qquad \kappa = 2\pi n/L_y.

    The usual set-up (Kochkov et al. 2021, as in jax-cfd) is :math:`n = 4`, :math:`A = 1` on the
    :math:`2\pi` box with a drag :math:`\mu = 0.1` that keeps energy from piling up in the largest
    scales (the inverse cascade). Returns shape ``grid.shape``.

    Args:
        grid: the periodic grid.
        wavenumber: :math:`n`, an int kept by the 2/3 rule (``3n < ny``).
        amplitude: :math:`A` (traced values welcome).
    """
    _check_grid(grid)
    n = _wavenumber("wavenumber", wavenumber, grid, axis="ny")
    kappa = 2 * math.pi * n / grid.ly
    _, y = grid.mesh()
    return -amplitude * kappa * jnp.cos(kappa * y)


def kolmogorov_laminar(grid: PeriodicGrid, nu, wavenumber: int = 4, amplitude=1.0, *, drag=0.0,
                       t=None) -> jax.Array:
    r"""The laminar flow :math:`u = U(t)\sin(\kappa y)` that :func:`kolmogorov_forcing` drives from rest.

    A single Fourier mode, so the nonlinear term vanishes and
    :math:`U(t) = \frac{A}{\nu\kappa^2+\mu}\big(1 - e^{-(\nu\kappa^2+\mu)t}\big)`
    (``t=None``: the steady state). Vorticity :math:`-U\kappa\cos(\kappa y)`, shape ``grid.shape``.
    It is linearly unstable above a critical Reynolds number (:math:`\sqrt2` for :math:`n = 1`,
    Meshalkin & Sinai 1961); below it, every flow tends to it.
    """
    _check_grid(grid)
    n = _wavenumber("wavenumber", wavenumber, grid, axis="ny")
    check_range("nu", nu, low=0.0, low_open=True)
    kappa = 2 * math.pi * n / grid.ly
    rate = nu * kappa**2 + drag
    u = amplitude / rate if t is None else amplitude / rate * -jnp.expm1(-rate * t)
    _, y = grid.mesh()
    return -u * kappa * jnp.cos(kappa * y)


def san_staples_spectrum(k, peak_wavenumber, energy=0.5, s: int = 3):
    r"""The initial energy spectrum of decaying 2-D turbulence of San & Staples (2012).

    .. math::
        E(k) = \frac{a_s}{2}\,\frac{1}{k_p}\Big(\frac{k}{k_p}\Big)^{2s+1}
        \exp\!\Big(-\big(s + \tfrac12\big)\Big(\frac{k}{k_p}\Big)^2\Big),
        \qquad a_s = \frac{(2s+1)^{s+1}}{2^s s!},

    scaled by ``energy / 0.5`` so that :math:`\int_0^\infty E\,dk` equals ``energy``
    (San & Staples 2012, "High-order methods for decaying two-dimensional homogeneous isotropic
    turbulence", Computers & Fluids 63, 105-127; they take :math:`s = 3`, :math:`k_p = 12`).
    """
    a_s = (2 * s + 1) ** (s + 1) / (2**s * math.factorial(s))
    x = k / peak_wavenumber
    return 2 * energy * 0.5 * a_s / peak_wavenumber * x ** (2 * s + 1) * jnp.exp(-(s + 0.5) * x * x)


def decaying_turbulence(key, grid: PeriodicGrid, peak_wavenumber=4.0, energy=0.5, dtype=None) -> jax.Array:
    r"""Random vorticity with the energy spectrum of :func:`san_staples_spectrum` and random phases.

    Each shell :math:`|\,|k|/\Delta k - n| < 1/2` gets exactly the energy :math:`E(n\Delta k)\Delta k`,
    spread evenly over its modes, with the phases of the FFT of white noise (so the field is real
    and isotropic in law); the 2/3 rule is applied and the total is scaled to ``energy`` exactly:
    :func:`~solverlab.fluids.diagnostics.energy_spectrum` of the result is the prescribed spectrum up
    to that one factor. San & Staples (2012) build the vorticity the same way,
    :math:`|\hat\omega| = \sqrt{kE(k)/\pi}` with random phases.

    Args:
        key: a ``jax.random`` key.
        grid: the periodic grid.
        peak_wavenumber: :math:`k_p` in units of :math:`\Delta k = 2\pi/\max(L_x, L_y)`,
            ``0 < k_p <= min(nx, ny) / 9``, so that at the 2/3 cut, :math:`k \ge 3k_p`, the spectrum
            is down to :math:`3^7 e^{-28} \approx 10^{-9}` of its peak.
        energy: mean kinetic energy :math:`E > 0`; the rms speed is :math:`\sqrt{2E}`.
        dtype: floating dtype (default JAX's default float).

    Returns:
        The vorticity on the grid, shape ``grid.shape``, zero mean.
    """
    _check_grid(grid)
    key = as_key(key)
    limit = min(grid.nx, grid.ny) / 9
    check_range("peak_wavenumber", peak_wavenumber, low=0.0, high=limit, low_open=True)
    check_range("energy", energy, low=0.0, low_open=True)
    dtype = dtype or jnp.asarray(0.0).dtype
    peak, energy = jnp.asarray(peak_wavenumber, dtype), jnp.asarray(energy, dtype)
    return _decaying_turbulence(key, peak, energy, grid=grid)


@functools.partial(jax.jit, static_argnames=("grid",))
def _decaying_turbulence(key, peak, energy, *, grid):
    dtype = peak.dtype
    dk = 2 * jnp.pi / max(grid.lx, grid.ly)
    noise_hat = grid.fft(jax.random.normal(key, grid.shape, dtype))
    phase = noise_hat / jnp.maximum(jnp.abs(noise_hat), jnp.finfo(dtype).tiny)
    k2 = grid.laplacian_symbol(dtype)
    kmag = jnp.sqrt(k2)
    shell = jnp.round(kmag / dk).astype(jnp.int32)
    n_shells = diagnostics._n_shells(grid)
    weight = jnp.broadcast_to(diagnostics._column_weights(grid, dtype), grid.spectral_shape)
    count = jax.ops.segment_sum(weight.ravel(), shell.ravel(), num_segments=n_shells)[shell]
    shell_energy = san_staples_spectrum(shell.astype(dtype), peak) * (shell > 0)
    # w * |u_hat|^2 / 2 / (nx ny)^2 summed over a shell's `count` modes gives its energy
    u_amp = jnp.sqrt(2 * shell_energy / count) * float(grid.nx * grid.ny)
    omega_hat = jnp.where(grid.dealias_mask(), phase * kmag * u_amp, 0.0)
    omega_hat = omega_hat * jnp.sqrt(energy / diagnostics.energy(omega_hat, grid))
    return grid.ifft(omega_hat)


# --- the right-hand side -----------------------------------------------------------------------------


class _Operators(NamedTuple):
    """Real symbols built once per trace (constant folded): velocity from vorticity, and the
    Basdevant-form advection with the 2/3 rule and the minus sign folded in."""

    to_u: jax.Array  # u_hat = to_u * (i omega_hat): k_y / |k|^2
    to_v: jax.Array  # v_hat = to_v * (i omega_hat): -k_x / |k|^2
    from_uv: jax.Array  # P (k_x^2 - k_y^2)
    from_d: jax.Array  # P k_x k_y
    k2: jax.Array
    mask: jax.Array
    inv_dx: float
    inv_dy: float

    @classmethod
    def build(cls, grid: PeriodicGrid, dtype) -> "_Operators":
        kx, ky = grid.wavenumbers(dtype)
        k2 = kx * kx + ky * ky
        inv_k2 = jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)
        mask = grid.dealias_mask()
        keep = mask.astype(dtype)
        return cls(ky * inv_k2, -kx * inv_k2, keep * (kx * kx - ky * ky), keep * kx * ky,
                   k2, mask, 1.0 / grid.dx, 1.0 / grid.dy)


def _nonlinear(omega_hat, ops: _Operators, forcing_hat, grid: PeriodicGrid):
    r""":math:`N(\hat\omega) = -P\widehat{u\cdot\nabla\omega} + \hat f` (4 FFTs), and
    :math:`\max(|u|/dx + |v|/dy)` from the velocity it computes on the way."""
    i_omega = 1j * omega_hat
    u, v = grid.ifft(jnp.stack([ops.to_u * i_omega, ops.to_v * i_omega]))
    products = grid.fft(jnp.stack([u * v, v * v - u * u]))
    n_hat = ops.from_uv * products[0] + ops.from_d * products[1]
    speed = jnp.max(jnp.abs(u) * ops.inv_dx + jnp.abs(v) * ops.inv_dy)
    return n_hat + forcing_hat, speed


def nonlinear_term(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""The dealiased advection term :math:`-P\,\widehat{u\cdot\nabla\omega}` of a spectral vorticity.

    Basdevant's form (module docstring); the input is projected on the 2/3-rule modes first.
    Shape ``grid.spectral_shape``.
    """
    _check_grid(grid)
    return _nonlinear_jit(omega_hat, grid=grid)


@functools.partial(jax.jit, static_argnames=("grid",))
def _nonlinear_jit(omega_hat, *, grid):
    ops = _Operators.build(grid, omega_hat.real.dtype)
    return _nonlinear(omega_hat * ops.mask, ops, 0.0, grid)[0]


# --- exponential integrators ---------------------------------------------------------------------


def etd_coefficients(z, dt, method: str = "etdrk4"):
    r"""The ETDRK coefficients of :math:`z = h L` (real, any shape) by the Kassam-Trefethen contour mean.

    Each :math:`g(z)` is replaced by :math:`\mathrm{Re}\,\frac1M\sum_j g(z + \rho_j)`,
    :math:`\rho_j = e^{i\pi(j-1/2)/M}`, :math:`M = 8` points on the upper half of the unit circle
    around :math:`z` (the lower half gives the conjugates for real :math:`z`): Cauchy's integral by
    the trapezoidal rule, which converges geometrically since :math:`g` is entire, free of the
    cancellation of the closed forms near 0 (Kassam & Trefethen 2005). What is left is rounding:
    about :math:`10^{-12}` relative in float64 where the circle passes near the poles at 0 of the
    separate terms (:math:`|z| \approx 1`-3), :math:`10^{-16}` elsewhere. Since :math:`z` is real,
    :math:`e^{z+\rho_j} = e^z e^{\rho_j}` with :math:`e^{\rho_j}` a constant: one real exponential
    per entry instead of :math:`M` complex ones (the loop over the points is unrolled and fused).

    Returns:
        ``"etdrk4"``: ``(E, E2, Q, f1, f2, f3)``; ``"etdrk2"``: ``(E, h*phi1, h*phi2)`` (formulas in
        the module docstring), each of the shape and dtype of ``z``.
    """
    _check_method(method)
    e, e2 = jnp.exp(z), jnp.exp(z / 2)
    sums = None
    for j in range(_CONTOUR_POINTS):
        rho = complex(np.exp(1j * np.pi * (j + 0.5) / _CONTOUR_POINTS))
        r = z + rho
        inv = 1 / r
        er = e * complex(np.exp(rho))
        if method == "etdrk4":
            inv3 = inv * inv * inv
            terms = (
                (e2 * complex(np.exp(rho / 2)) - 1) * inv,
                (-4 - r + er * (4 - 3 * r + r * r)) * inv3,
                (2 + r + er * (r - 2)) * inv3,
                (-4 - 3 * r - r * r + er * (4 - r)) * inv3,
            )
        else:
            terms = ((er - 1) * inv, (er - 1 - r) * inv * inv)
        terms = tuple(t.real for t in terms)
        sums = terms if sums is None else tuple(a + t for a, t in zip(sums, terms))
    means = tuple(dt * (a / _CONTOUR_POINTS) for a in sums)
    return ((e, e2) if method == "etdrk4" else (e,)) + means


def _etdrk4_step(w, coef, ops, f_hat, grid):
    e, e2, q, f1, f2, f3 = coef
    nw, speed = _nonlinear(w, ops, f_hat, grid)
    a = e2 * w + q * nw
    na, _ = _nonlinear(a, ops, f_hat, grid)
    b = e2 * w + q * na
    nb, _ = _nonlinear(b, ops, f_hat, grid)
    c = e2 * a + q * (2 * nb - nw)
    nc, _ = _nonlinear(c, ops, f_hat, grid)
    return e * w + f1 * nw + 2 * f2 * (na + nb) + f3 * nc, speed


def _etdrk2_step(w, coef, ops, f_hat, grid):
    e, p1, p2 = coef
    nw, speed = _nonlinear(w, ops, f_hat, grid)
    a = e * w + p1 * nw
    na, _ = _nonlinear(a, ops, f_hat, grid)
    return a + p2 * (na - nw), speed


_STEPS = {"etdrk4": _etdrk4_step, "etdrk2": _etdrk2_step}


def _setup(omega_hat, nu, dt, drag, forcing_hat, grid, method):
    """Operators, coefficients, and the state and forcing projected on the 2/3-rule modes of zero
    mean (the vorticity of a periodic velocity field has zero mean: its circulation round the box)."""
    dtype = omega_hat.real.dtype
    ops = _Operators.build(grid, dtype)
    nu, dt, drag = (jnp.asarray(p, dtype) for p in (nu, dt, drag))
    # Modes outside the 2/3 rule stay zero, and k_x, -k_x share |k|^2: a quarter of the array suffices.
    z = -dt * (nu * _kept_block(ops.k2, grid) + drag)
    coef = tuple(_embed_block(c, grid) for c in etd_coefficients(z, dt, method))
    keep = ops.mask & (ops.k2 > 0)
    f_hat = 0.0 if forcing_hat is None else jnp.where(keep, forcing_hat, 0.0).astype(omega_hat.dtype)
    return ops, coef, jnp.where(keep, omega_hat, 0.0), f_hat


def _kept_block(x, grid: PeriodicGrid):
    """Rows 0 <= k_x <= K_x and columns k_y <= K_y of a spectral array (K: the largest wavenumber
    the 2/3 rule keeps): with the mirror rows -k_x (same |k|^2), where all the coefficients that
    matter live."""
    return x[: grid.kept_wavenumber("x") + 1, : grid.kept_wavenumber("y") + 1]


def _embed_block(block, grid: PeriodicGrid):
    """Inverse of :func:`_kept_block`: the rows mirrored onto -k_x, zeros outside the 2/3-rule box."""
    kx, ky = grid.kept_wavenumber("x"), grid.kept_wavenumber("y")
    gap = jnp.zeros((grid.nx - 2 * kx - 1, ky + 1), block.dtype)
    rows = jnp.concatenate([block, gap, block[:0:-1]])
    return jnp.pad(rows, ((0, 0), (0, grid.ny // 2 - ky)))


def make_stepper(grid: PeriodicGrid, method: str = "etdrk4", drag=0.0):
    r"""A jitted single step ``step(omega_hat, nu, dt, forcing_hat=None) -> omega_hat``.

    ``nu`` and ``dt`` are traced (a new value never recompiles); the coefficients are recomputed
    inside every call (use :func:`advance` to reuse them across many steps). ``omega_hat`` and
    ``forcing_hat`` are spectral, shape ``grid.spectral_shape``; both are projected on the 2/3-rule
    modes of zero mean. ``drag`` :math:`\mu \ge 0` is fixed for this stepper (:func:`advance`
    traces it). The update rule is in the module docstring.
    """
    _check_grid(grid)
    _check_method(method)
    check_range("drag", drag, low=0.0)
    drag = float(drag)

    @jax.jit
    def step(omega_hat, nu, dt, forcing_hat=None):
        ops, coef, w, f_hat = _setup(omega_hat, nu, dt, drag, forcing_hat, grid, method)
        return _STEPS[method](w, coef, ops, f_hat, grid)[0]

    return step


class AdvanceResult(NamedTuple):
    """What :func:`advance` returns: the state, the largest CFL number met, a finite flag, steps done."""

    omega_hat: jax.Array  # the state after `steps` steps (the last good one after a CFL stop)
    cfl: jax.Array  # max over the steps taken of dt * max(|u|/dx + |v|/dy) at their start
    finite: jax.Array  # False when the state holds NaN/inf (a blow-up)
    steps: jax.Array  # steps taken: n_steps, or fewer when the loop stopped early


def advance(omega_hat, grid: PeriodicGrid, nu, dt, n_steps, forcing_hat=None, method: str = "etdrk4",
            drag=0.0, cfl_limit=None) -> AdvanceResult:
    r"""``n_steps`` steps of size ``dt`` in one jitted call (the loop a dashboard calls between frames).

    ``nu``, ``dt``, ``drag``, ``cfl_limit`` and ``n_steps`` are traced (``n_steps`` bounds the
    loop), so none of them recompiles; ``grid`` and ``method`` are static. The ETD coefficients are
    computed once per call. The CFL number :math:`\Delta t\max(|u|/\Delta x + |v|/\Delta y)` is taken
    at the start of every step, from the velocity the first stage computes anyway (the end state's
    is the next call's first; :func:`~solverlab.fluids.diagnostics.cfl_number` gives it now). The
    loop stops early, before the step it would take, when that CFL number exceeds ``cfl_limit`` or
    is not finite (a blow-up: nothing is gained by stepping NaNs).

    Args:
        omega_hat: spectral vorticity, shape ``grid.spectral_shape`` (complex64 or complex128: the
            precision of the run); projected on the 2/3-rule modes of zero mean.
        grid: the periodic grid (at least :data:`MIN_POINTS` points a side).
        nu: viscosity :math:`\nu > 0`.
        dt: time step :math:`\Delta t > 0`.
        n_steps: number of steps, an int >= 0.
        forcing_hat: spectral vorticity forcing (e.g. ``grid.fft(kolmogorov_forcing(grid))``) or None.
        method: ``"etdrk4"`` or ``"etdrk2"``.
        drag: linear drag :math:`\mu \ge 0`.
        cfl_limit: stop when the CFL number exceeds it (None: never; e.g. ``STABILITY_CFL[method]``).

    Returns:
        :class:`AdvanceResult` ``(omega_hat, cfl, finite, steps)``. ``finite = False`` is a blow-up;
        ``steps < n_steps`` with ``finite`` means the CFL number passed ``cfl_limit``. The caller
        reports it (:func:`simulate` raises :class:`~solverlab.SolverError`).
    """
    _check_grid(grid)
    _check_method(method)
    check_range("nu", nu, low=0.0, low_open=True)
    check_range("dt", dt, low=0.0, low_open=True)
    check_range("drag", drag, low=0.0)
    if cfl_limit is not None:
        check_range("cfl_limit", cfl_limit, low=0.0, low_open=True)
    n = concrete_value(n_steps)
    if n is not None:
        if n.shape != () or not np.issubdtype(n.dtype, np.integer) or isinstance(n_steps, (bool, np.bool_)):
            raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
        n_steps = positive_int("n_steps", int(n), low=0)
    omega_hat = jnp.asarray(omega_hat)
    if omega_hat.shape != grid.spectral_shape:
        raise ValueError(f"omega_hat must have shape {grid.spectral_shape} (grid.spectral_shape), "
                         f"got {omega_hat.shape}")
    if not jnp.iscomplexobj(omega_hat):
        raise ValueError(
            f"omega_hat must be complex (spectral: grid.fft(omega)), got dtype {omega_hat.dtype}")
    if forcing_hat is not None and jnp.shape(forcing_hat) != grid.spectral_shape:
        raise ValueError(f"forcing_hat must have shape {grid.spectral_shape}, got {jnp.shape(forcing_hat)}")
    real = omega_hat.real.dtype
    limit = jnp.inf if cfl_limit is None else cfl_limit
    # No forcing is a zero forcing: one compiled loop whether or not a dashboard switches it on.
    forcing_hat = jnp.zeros(grid.spectral_shape, omega_hat.dtype) if forcing_hat is None else forcing_hat
    return _advance(omega_hat, jnp.asarray(nu, real), jnp.asarray(dt, real), jnp.asarray(n_steps, jnp.int32),
                    jnp.asarray(drag, real), jnp.asarray(forcing_hat, omega_hat.dtype),
                    jnp.asarray(limit, real), grid=grid, method=method)


@functools.partial(jax.jit, static_argnames=("grid", "method"))
def _advance(omega_hat, nu, dt, n_steps, drag, forcing_hat, cfl_limit, *, grid, method):
    ops, coef, w, f_hat = _setup(omega_hat, nu, dt, drag, forcing_hat, grid, method)
    step = _STEPS[method]

    def cond(carry):
        i, _, _, ok = carry
        return ok & (i < n_steps)

    def body(carry):
        i, w, top, _ = carry
        w_next, speed = step(w, coef, ops, f_hat, grid)
        ok = dt * speed <= cfl_limit  # False for NaN too
        top = jnp.where(ok & (speed > top), speed, top)  # over the steps taken
        return i + ok, jnp.where(ok, w_next, w), top, ok

    zero = jnp.zeros((), nu.dtype)
    steps, w, top, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), w, zero, jnp.array(True)))
    finite = jnp.all(jnp.isfinite(w.real) & jnp.isfinite(w.imag))
    return AdvanceResult(w, dt * top, finite, steps)


# --- the high-level call -----------------------------------------------------------------------


class SimulationResult(NamedTuple):
    """What :func:`simulate` returns (arrays on the host; ``n_saves`` intervals, ``n_saves + 1`` times)."""

    omega: jax.Array  # final vorticity on the grid, (nx, ny)
    omega_hat: jax.Array  # final spectral vorticity, grid.spectral_shape
    times: np.ndarray  # (n_saves + 1,), starting at 0
    frames: np.ndarray | None  # vorticity at `times`, (n_saves + 1, nx, ny), or None (keep_frames=False)
    energy: np.ndarray  # (n_saves + 1,)
    enstrophy: np.ndarray  # (n_saves + 1,)
    cfl: np.ndarray  # (n_saves,) the largest CFL number in each interval
    dt: np.ndarray  # (n_saves,) the step used in each interval
    steps: int  # total number of steps


def simulate(omega0, grid: PeriodicGrid, nu, t_end, *, cfl=None, dt=None, forcing=None,
             method: str = "etdrk4", save_every=None, drag=0.0, keep_frames: bool = True,
             max_steps: int = 10_000_000) -> SimulationResult:
    r"""Integrate from the vorticity ``omega0`` to ``t_end``, saving every ``save_every`` time units.

    The run is cut into intervals of length ``save_every`` (default: one interval); each is
    normally one :func:`advance` call with a constant step that ends exactly on the save time:
    :math:`\Delta t = T/\lceil T/\Delta t_0\rceil`, where :math:`\Delta t_0` is ``dt`` when given,
    else :math:`C/\max(|u|/\Delta x + |v|/\Delta y)` from the current state (the CFL number
    :math:`C` = ``cfl``). When the velocity grows so that the CFL number passes
    :data:`STABILITY_CFL`, an explicit ``dt`` raises :class:`~solverlab.SolverError`; with
    ``dt=None`` the run goes on from the last state within the limit with a step from its CFL
    number (a run whose every step began within the limit but whose end state did not is redone
    with a proportionally smaller step), so no step is taken from a state above the limit.

    Args:
        omega0: initial vorticity on the grid, shape ``grid.shape`` (its float dtype sets the precision).
        grid: the periodic grid.
        nu: viscosity :math:`\nu > 0` (see :func:`viscosity_for`).
        t_end: final time :math:`> 0`.
        cfl: target CFL number in :math:`(0,` ``STABILITY_CFL[method]`` :math:`]` when ``dt`` is None;
            default ``DEFAULT_CFL[method]`` (0.5 for ETDRK4, 0.25 for ETDRK2).
        dt: fixed time step, or None (from ``cfl``). Its CFL number on ``omega0`` must not exceed the
            stability limit.
        forcing: vorticity forcing on the grid, shape ``grid.shape`` (e.g. :func:`kolmogorov_forcing`),
            or None.
        method: ``"etdrk4"`` (default) or ``"etdrk2"``.
        save_every: time between saved frames, in :math:`(0, t_{end}]`; None saves only the end.
        drag: linear drag :math:`\mu \ge 0`.
        keep_frames: keep the vorticity at every save time (else only energy and enstrophy).
        max_steps: guard on the total number of steps.

    Returns:
        :class:`SimulationResult`.

    Raises:
        ValueError: a bad argument (before anything is compiled).
        SolverError: the flow blew up (NaN/inf) or the CFL number left the stability range; the
            message gives the CFL number seen and what to try.
    """
    _check_grid(grid)
    _check_method(method)
    limit = STABILITY_CFL[method]
    omega0 = jnp.asarray(omega0)
    if omega0.shape != grid.shape:
        raise ValueError(f"omega0 must have shape {grid.shape} (grid.shape), got {omega0.shape}")
    if not jnp.issubdtype(omega0.dtype, jnp.floating):
        raise ValueError(f"omega0 must be a real floating array, got dtype {omega0.dtype}")
    for name, value in (("nu", nu), ("t_end", t_end)):
        _check_scalar_concrete(name, value)
        check_range(name, value, low=0.0, low_open=True)
    _check_scalar_concrete("drag", drag)
    check_range("drag", drag, low=0.0)
    cfl = DEFAULT_CFL[method] if cfl is None else cfl
    _check_scalar_concrete("cfl", cfl)
    check_range("cfl", cfl, low=0.0, high=limit, low_open=True)
    t_end = float(t_end)
    if save_every is not None:
        _check_scalar_concrete("save_every", save_every)
        check_range("save_every", save_every, low=0.0, high=t_end, low_open=True)
    max_steps = positive_int("max_steps", max_steps)
    if forcing is not None and jnp.shape(forcing) != grid.shape:
        raise ValueError(f"forcing must have shape {grid.shape} (grid.shape), got {jnp.shape(forcing)}")
    if dt is not None:
        _check_scalar_concrete("dt", dt)
        check_range("dt", dt, low=0.0, low_open=True)
        dt = float(dt)
    check_range("omega0", omega0)  # finite
    if forcing is not None:
        check_range("forcing", forcing)

    w = jnp.where(grid.dealias_mask(), grid.fft(omega0), 0.0)
    f_hat = None if forcing is None else grid.fft(jnp.asarray(forcing, omega0.dtype))
    snap = _snapshot(w, grid)
    speed = float(snap[0])
    if dt is not None and dt * speed > limit:
        raise ValueError(
            f"dt must lie in (0, {limit / speed:.4g}] for this initial field (the {method} stability "
            f"limit CFL = dt * max(|u|/dx + |v|/dy) <= {limit:.3g}), got {dt:g} (CFL {dt * speed:.3g})")

    interval = t_end if save_every is None else float(save_every)
    n_saves = max(1, math.ceil(t_end / interval - 1e-9))
    times = np.minimum(np.arange(n_saves + 1) * interval, t_end)
    history = [snap]
    cfls, dts, steps = [], [], 0
    for i in range(n_saves):
        remaining, top, smallest, h0 = float(times[i + 1] - times[i]), 0.0, math.inf, None
        for _run in range(_MAX_RUNS):
            if h0 is None:  # the step from the CFL number of the current state
                h0 = dt if dt is not None else (
                    remaining if speed == 0 else min(remaining, float(cfl) / speed))
            n = max(1, math.ceil(remaining / h0 * (1 - 1e-12)))
            if steps + n > max_steps:
                raise SolverError(
                    f"simulate needs more than max_steps={max_steps} steps to reach t_end={t_end:g} "
                    f"(dt = {remaining / n:.3g} at t = {times[i + 1] - remaining:g}); raise max_steps or "
                    f"cfl, or lower the Reynolds number")
            h = remaining / n
            res = advance(w, grid, nu, h, n, f_hat, method=method, drag=drag,
                          cfl_limit=None if math.isinf(limit) else limit)
            done, taken = int(res.steps), float(res.cfl)
            seen = taken
            if bool(res.finite):
                after = _snapshot(res.omega_hat, grid)
                seen = max(seen, h * float(after[0]))  # the end state's CFL number too
            if not bool(res.finite) or not math.isfinite(seen):
                raise SolverError(
                    f"the flow blew up (NaN/inf) near t = {times[i + 1] - remaining + done * h:.4g} with "
                    f"{method}, dt = {h:.4g}; the largest CFL number seen was {float(res.cfl):.3g} "
                    f"(stability limit {limit:.3g}). Try a smaller cfl or dt, a larger viscosity (lower Re), "
                    f"a finer grid" + (" or method='etdrk4'." if method == "etdrk2" else "."))
            if dt is not None and seen > limit:
                raise SolverError(
                    f"the CFL number reached {seen:.3g} > {limit:.3g} (the {method} stability limit) "
                    f"before t = {times[i + 1] - remaining + (done + 1) * h:.4g} with the fixed dt = {dt:g}: "
                    f"the velocity grew. Use a smaller dt, or dt=None to follow the CFL number.")
            if done == n and seen > limit:
                h0 = h * float(cfl) / seen  # every step began in range but the end state did not: redo
                continue
            w, steps, remaining = res.omega_hat, steps + done, remaining - done * h
            top, smallest = max(top, taken if done < n else seen), min(smallest, h)
            snap, speed = after, float(after[0])
            if done == n:
                break
            h0 = None  # stopped before a step whose CFL number passed the limit: go on from here
        else:
            raise SolverError(
                f"the CFL number kept passing {limit:.3g} (last seen {seen:.3g}) before "
                f"t = {times[i + 1]:g}: "
                f"{_MAX_RUNS} step reductions in one interval (dt = {h:.3g}); lower the Reynolds number or "
                f"the forcing, or refine the grid.")
        cfls.append(top)
        dts.append(smallest)
        history.append(snap)
    energy = np.asarray([float(s[1]) for s in history])
    enstrophy = np.asarray([float(s[2]) for s in history])
    frames = np.stack([np.asarray(s[3]) for s in history]) if keep_frames else None
    return SimulationResult(
        omega=snap[3], omega_hat=w, times=times, frames=frames, energy=energy, enstrophy=enstrophy,
        cfl=np.asarray(cfls), dt=np.asarray(dts), steps=steps)


@functools.partial(jax.jit, static_argnames=("grid",))
def _snapshot(omega_hat, grid):
    """max(|u|/dx + |v|/dy), energy, enstrophy and the vorticity on the grid, in one dispatch."""
    return (diagnostics.max_speed(omega_hat, grid), diagnostics.energy(omega_hat, grid),
            diagnostics.enstrophy(omega_hat, grid), grid.ifft(omega_hat))


# --- argument checks ---------------------------------------------------------------------------


def _check_grid(grid) -> None:
    if not isinstance(grid, PeriodicGrid):
        raise ValueError(f"grid must be a PeriodicGrid, got {type(grid).__name__}")
    for name in ("nx", "ny"):
        n = getattr(grid, name)
        if n < MIN_POINTS:
            raise ValueError(
                f"grid.{name} must be an even int >= {MIN_POINTS} (the 2/3 rule keeps 3|k| < n), "
                f"got {n}")


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_scalar_concrete(name, value) -> None:
    arr = concrete_value(value)
    if arr is None:
        raise ValueError(f"{name} must be a concrete number in simulate (it drives the Python loop); "
                         f"use advance() inside jit")
    if arr.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")


def _wavenumber(name, value, grid, axis=None) -> int:
    n = positive_int(name, value)
    kept = {a: grid.kept_wavenumber(a) for a in ("x", "y")}
    top = kept["y"] if axis == "ny" else min(kept.values())
    if n > top:
        raise ValueError(f"{name} must lie in [1, {top}] on this grid (the largest wavenumber the 2/3 rule "
                         f"keeps{' along y' if axis == 'ny' else ''}), got {n}")
    return n
