r"""Diagnostics of a periodic 2-D flow given by its spectral vorticity: energy, enstrophy, spectrum,
divergence, CFL number and the terms of the energy budget.

Every function takes the real FFT :math:`\hat\omega` of the vorticity, shape
:attr:`PeriodicGrid.spectral_shape` (``grid.fft(omega)``; leading batch axes are fine except for
:func:`energy_spectrum`), and returns domain *means* (per unit area), so numbers do not depend on the
box size or the number of points:

.. math::
    E = \frac{1}{|\Omega|}\int_\Omega \tfrac12 |u|^2, \qquad
    Z = \frac{1}{|\Omega|}\int_\Omega \tfrac12 \omega^2, \qquad
    P = \frac{1}{|\Omega|}\int_\Omega \tfrac12 |\nabla\omega|^2 .

Means of products come straight from the coefficients by Parseval,
:math:`\overline{fg} = \sum_k \hat f_k \overline{\hat g_k} / (n_x n_y)^2`, where the real FFT keeps
only :math:`k_y \ge 0`: the columns :math:`0 < k_y < n_y/2` stand for themselves and their mirror
images, so they count twice.

The energy budget of :math:`\partial_t\omega + u\cdot\nabla\omega = \nu\Delta\omega - \mu\omega + f`
(the nonlinear term conserves energy, also after the 2/3-rule truncation, which is a Galerkin
projection) is

.. math::
    \frac{dE}{dt} = \underbrace{\overline{\psi f}}_{\text{injection}}
        - \underbrace{2\nu Z}_{\text{dissipation}} - \underbrace{2\mu E}_{\text{drag}},

since :math:`\overline{u\cdot F} = \overline{\psi\,\operatorname{curl} F}` for the velocity forcing
:math:`F` whose curl is :math:`f`, and :math:`\overline{u\cdot\Delta u} = -\overline{\omega^2}`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .grid import PeriodicGrid

__all__ = [
    "energy",
    "enstrophy",
    "palinstrophy",
    "rms_velocity",
    "energy_spectrum",
    "divergence",
    "max_speed",
    "cfl_number",
    "energy_injection",
    "dissipation",
    "drag_loss",
    "mean_product",
]


# Jitted with the grid static: one dispatch per call from Python, inlined when called inside a trace.
_jit = functools.partial(jax.jit, static_argnames=("grid",))


def _column_weights(grid: PeriodicGrid, dtype) -> jax.Array:
    """Weight of each real-FFT column in a Parseval sum: 1 for k_y = 0 and the Nyquist column, else 2."""
    iy = jnp.arange(grid.ny // 2 + 1)
    w = jnp.where((iy == 0) | (2 * iy == grid.ny), 1.0, 2.0).astype(dtype)
    return w[None, :]


@_jit
def mean_product(f_hat: jax.Array, g_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Domain mean :math:`\overline{fg}` of two real fields from their real FFTs (Parseval)."""
    dtype = f_hat.real.dtype
    w = _column_weights(grid, dtype)
    s = jnp.sum(w * (f_hat * jnp.conj(g_hat)).real, axis=(-2, -1))
    return s / float(grid.nx * grid.ny) ** 2


def _inverse_k2(grid: PeriodicGrid, dtype) -> jax.Array:
    k2 = grid.laplacian_symbol(dtype)
    return jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)


@_jit
def energy(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Mean kinetic energy :math:`E = \overline{|u|^2}/2 = \tfrac12\sum_k |\hat\omega_k|^2/|k|^2`
    (coefficients normalised by :math:`n_x n_y`)."""
    dtype = omega_hat.real.dtype
    w = _column_weights(grid, dtype)
    s = jnp.sum(w * _inverse_k2(grid, dtype) * jnp.abs(omega_hat) ** 2, axis=(-2, -1))
    return 0.5 * s / float(grid.nx * grid.ny) ** 2


@_jit
def enstrophy(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Mean enstrophy :math:`Z = \overline{\omega^2}/2`."""
    return 0.5 * mean_product(omega_hat, omega_hat, grid)


@_jit
def palinstrophy(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Mean palinstrophy :math:`P = \overline{|\nabla\omega|^2}/2 = \tfrac12\sum_k |k|^2|\hat\omega_k|^2`
    (coefficients normalised by :math:`n_x n_y`).

    :math:`dZ/dt = -2\nu P` in unforced, drag-free flow.
    """
    dtype = omega_hat.real.dtype
    w = _column_weights(grid, dtype)
    s = jnp.sum(w * grid.laplacian_symbol(dtype) * jnp.abs(omega_hat) ** 2, axis=(-2, -1))
    return 0.5 * s / float(grid.nx * grid.ny) ** 2


@_jit
def rms_velocity(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Root-mean-square speed :math:`U = \sqrt{\overline{|u|^2}} = \sqrt{2E}`."""
    return jnp.sqrt(2.0 * energy(omega_hat, grid))


@_jit
def energy_spectrum(omega_hat: jax.Array, grid: PeriodicGrid) -> tuple[jax.Array, jax.Array]:
    r"""Shell-summed energy spectrum
    :math:`E(k_n) = \sum_{|\,|k|/\Delta k - n\,| < 1/2} \tfrac12|\hat u_k|^2`.

    Shells of width :math:`\Delta k = 2\pi/\max(L_x, L_y)` (1 on the :math:`2\pi` box) centred on
    :math:`k_n = n\,\Delta k`, :math:`n = 0, 1, \dots`; the coefficients are normalised as in
    :func:`energy`, so :math:`\sum_n E(k_n) = E` exactly (a sum, not an integral: divide by
    :math:`\Delta k` for a density).

    Args:
        omega_hat: spectral vorticity, shape ``grid.spectral_shape`` (no batch axes).
        grid: the periodic grid.

    Returns:
        ``(k, E_k)``, each of shape ``(n_shells,)`` with
        ``n_shells = round(max|k| / dk) + 1`` (static for a grid).
    """
    dtype = omega_hat.real.dtype
    dk = 2 * jnp.pi / max(grid.lx, grid.ly)
    n_shells = _n_shells(grid)
    k2 = grid.laplacian_symbol(dtype)
    shell = jnp.round(jnp.sqrt(k2) / dk).astype(jnp.int32)
    w = _column_weights(grid, dtype)
    e = 0.5 * w * _inverse_k2(grid, dtype) * jnp.abs(omega_hat) ** 2 / float(grid.nx * grid.ny) ** 2
    e_k = jax.ops.segment_sum(e.ravel(), shell.ravel(), num_segments=n_shells)
    return jnp.arange(n_shells, dtype=dtype) * dk, e_k


def _n_shells(grid: PeriodicGrid) -> int:
    import math

    kx = 2 * math.pi / grid.lx * (grid.nx // 2)
    ky = 2 * math.pi / grid.ly * (grid.ny // 2)
    dk = 2 * math.pi / max(grid.lx, grid.ly)
    return int(round(math.hypot(kx, ky) / dk)) + 1


@_jit
def divergence(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r""":math:`\nabla\cdot u` of the velocity *reconstructed on the grid* from :math:`\hat\omega`.

    The velocity is taken to physical space (:meth:`PeriodicGrid.velocity`), transformed back and
    differentiated spectrally, so the result measures the whole round trip:
    :math:`ik_x\hat u + ik_y\hat v = k_xk_y\hat\psi - k_yk_x\hat\psi = 0` up to rounding (about
    :math:`10^{-16}` of :math:`\max|k|\,\max|u|` in float64). Shape ``grid.shape``.
    """
    u, v = grid.velocity(omega_hat)
    ux, _ = grid.gradient(grid.fft(u))
    _, vy = grid.gradient(grid.fft(v))
    return grid.ifft(ux + vy)


@_jit
def max_speed(omega_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r""":math:`\max_x\,(|u|/\Delta x + |v|/\Delta y)`, the inverse of the time step at CFL number 1."""
    u, v = grid.velocity(omega_hat)
    return jnp.max(jnp.abs(u) / grid.dx + jnp.abs(v) / grid.dy, axis=(-2, -1))


@_jit
def cfl_number(omega_hat: jax.Array, grid: PeriodicGrid, dt) -> jax.Array:
    r"""Advective CFL number :math:`C = \Delta t\,\max_x(|u|/\Delta x + |v|/\Delta y)`."""
    return dt * max_speed(omega_hat, grid)


@_jit
def energy_injection(omega_hat: jax.Array, forcing_hat: jax.Array, grid: PeriodicGrid) -> jax.Array:
    r"""Power of the forcing :math:`\overline{u\cdot F} = \overline{\psi f}`.

    ``forcing_hat`` is the spectral *vorticity* forcing :math:`\hat f` (the curl of the body force
    :math:`F`), e.g. ``grid.fft(kolmogorov_forcing(grid))``.
    """
    return mean_product(grid.streamfunction_hat(omega_hat), forcing_hat, grid)


@_jit
def dissipation(omega_hat: jax.Array, grid: PeriodicGrid, nu) -> jax.Array:
    r"""Viscous dissipation rate of energy :math:`\varepsilon = \nu\,\overline{\omega^2} = 2\nu Z`."""
    return 2.0 * nu * enstrophy(omega_hat, grid)


@_jit
def drag_loss(omega_hat: jax.Array, grid: PeriodicGrid, drag) -> jax.Array:
    r"""Energy removed by the linear drag :math:`-\mu u` (vorticity :math:`-\mu\omega`): :math:`2\mu E`."""
    return 2.0 * drag * energy(omega_hat, grid)
