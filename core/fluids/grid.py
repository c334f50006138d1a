r"""The periodic box of the pseudo-spectral solvers: wavenumbers, the 2/3 rule, spectral derivatives.

The box is :math:`[0, L_x) \times [0, L_y)` with :math:`n_x \times n_y` points
:math:`x_i = i L_x / n_x`, :math:`y_j = j L_y / n_y`; physical fields have shape ``(nx, ny)``
(x first, ``indexing="ij"``, as in jax-cfd) and their real FFTs ``jnp.fft.rfft2`` shape
``(nx, ny // 2 + 1)``. In two dimensions the vorticity :math:`\omega = \partial_x v - \partial_y u`
carries the whole flow: the streamfunction solves :math:`-\Delta\psi = \omega` and

.. math::
    \hat\psi = \hat\omega / |k|^2, \qquad u = \partial_y \psi, \qquad v = -\partial_x \psi,

so :math:`\hat u = i k_y \hat\psi`, :math:`\hat v = -i k_x \hat\psi`, divergence-free by
construction (the mean flow, :math:`k = 0`, is a separate constant).

Products of fields are evaluated on the grid and transformed back; the modes they alias onto are
removed by Orszag's 2/3 rule: keep the integer wavenumbers with :math:`3|k_x| < n_x` and
:math:`3|k_y| < n_y`, zero the rest (Orszag 1971, J. Atmos. Sci. 28, 1074). (A product of two kept
modes reaches :math:`2K`, which aliases to :math:`2K - n`; that stays outside the kept band exactly when
:math:`3K < n`, so for :math:`n` divisible by 3 the mode :math:`n/3` must go too.) The grid is a small frozen
dataclass registered as a static pytree node: it holds only shapes and lengths, so it may be closed
over or passed to ``jit`` as a static argument, and the wavenumber arrays are rebuilt (constant
folded) inside each trace.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..brownian._args import positive_int
from ..errors import check_range

__all__ = ["PeriodicGrid"]


@dataclasses.dataclass(frozen=True)
class PeriodicGrid:
    """A uniform periodic grid of ``nx x ny`` points on ``[0, lx) x [0, ly)``.

    Args:
        nx, ny: points per direction, even and at least 8 (static: a new size compiles once).
        lx, ly: box lengths (default :math:`2\\pi`, so integer wavenumbers).
    """

    nx: int
    ny: int
    lx: float = 2 * math.pi
    ly: float = 2 * math.pi

    def __post_init__(self):
        for name in ("nx", "ny"):
            n = positive_int(name, getattr(self, name), low=8)
            if n % 2:
                raise ValueError(f"{name} must be an even int >= 8, got {n}")
            object.__setattr__(self, name, n)
        for name in ("lx", "ly"):
            check_range(name, getattr(self, name), low=0.0, low_open=True)
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def square(cls, n: int, length: float = 2 * math.pi) -> "PeriodicGrid":
        """``n x n`` points on a square box of side ``length``."""
        return cls(n, n, length, length)

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.nx, self.ny)

    @property
    def spectral_shape(self) -> tuple[int, int]:
        return (self.nx, self.ny // 2 + 1)

    @property
    def dx(self) -> float:
        return self.lx / self.nx

    @property
    def dy(self) -> float:
        return self.ly / self.ny

    def mesh(self, dtype=None) -> tuple[jax.Array, jax.Array]:
        """Point coordinates ``(x, y)``, each of shape ``(nx, ny)``."""
        x = jnp.arange(self.nx, dtype=dtype or float) * self.dx
        y = jnp.arange(self.ny, dtype=dtype or float) * self.dy
        return jnp.meshgrid(x, y, indexing="ij")

    # -- Fourier space --------------------------------------------------------------------------
    def wavenumbers(self, dtype=None) -> tuple[jax.Array, jax.Array]:
        """Angular wavenumbers ``(kx, ky)`` broadcast to :attr:`spectral_shape`."""
        dtype = dtype or jnp.asarray(0.0).dtype
        kx = 2 * jnp.pi * jnp.fft.fftfreq(self.nx, self.dx).astype(dtype)
        ky = 2 * jnp.pi * jnp.fft.rfftfreq(self.ny, self.dy).astype(dtype)
        return jnp.broadcast_to(kx[:, None], self.spectral_shape), jnp.broadcast_to(ky[None, :], self.spectral_shape)

    def laplacian_symbol(self, dtype=None) -> jax.Array:
        r"""The Fourier symbol of :math:`-\Delta`: :math:`|k|^2 = k_x^2 + k_y^2`."""
        kx, ky = self.wavenumbers(dtype)
        return kx * kx + ky * ky

    def dealias_mask(self) -> jax.Array:
        r"""Boolean mask of the modes the 2/3 rule keeps (:math:`3|k| < n`), shape :attr:`spectral_shape`."""
        ix = jnp.abs(jnp.fft.fftfreq(self.nx, 1.0 / self.nx))
        iy = jnp.fft.rfftfreq(self.ny, 1.0 / self.ny)
        return (ix[:, None] <= self.kept_wavenumber("x")) & (iy[None, :] <= self.kept_wavenumber("y"))

    def kept_wavenumber(self, axis: str) -> int:
        r"""The largest integer wavenumber the 2/3 rule keeps along ``axis`` ("x" or "y"): :math:`\lceil n/3\rceil - 1`."""
        return (getattr(self, f"n{axis}") - 1) // 3

    # -- transforms -----------------------------------------------------------------------------
    def fft(self, field: jax.Array) -> jax.Array:
        """Real FFT over the last two axes (physical ``(..., nx, ny)`` -> spectral)."""
        return jnp.fft.rfft2(field)

    def ifft(self, field_hat: jax.Array) -> jax.Array:
        """Inverse of :meth:`fft`, back to shape ``(..., nx, ny)``."""
        return jnp.fft.irfft2(field_hat, s=self.shape)

    def streamfunction_hat(self, omega_hat: jax.Array) -> jax.Array:
        r""":math:`\hat\psi = \hat\omega / |k|^2`, with the mean mode set to zero."""
        k2 = self.laplacian_symbol(omega_hat.real.dtype)
        return jnp.where(k2 > 0, omega_hat / jnp.where(k2 > 0, k2, 1.0), 0.0)

    def velocity_hat(self, omega_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""Spectral velocity of zero mean: :math:`\hat u = i k_y \hat\psi`, :math:`\hat v = -i k_x \hat\psi`."""
        kx, ky = self.wavenumbers(omega_hat.real.dtype)
        psi_hat = self.streamfunction_hat(omega_hat)
        return 1j * ky * psi_hat, -1j * kx * psi_hat

    def velocity(self, omega_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Velocity ``(u, v)`` on the grid (zero mean) from the spectral vorticity."""
        u_hat, v_hat = self.velocity_hat(omega_hat)
        return self.ifft(u_hat), self.ifft(v_hat)

    def gradient(self, field_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""Spectral :math:`(\partial_x f, \partial_y f)` of a spectral field."""
        kx, ky = self.wavenumbers(field_hat.real.dtype)
        return 1j * kx * field_hat, 1j * ky * field_hat

    def vorticity_hat(self, u: jax.Array, v: jax.Array) -> jax.Array:
        r""":math:`\hat\omega = i k_x \hat v - i k_y \hat u` from a velocity on the grid."""
        kx, ky = self.wavenumbers(u.dtype)
        return 1j * kx * self.fft(v) - 1j * ky * self.fft(u)


# Shapes and lengths only: a static leaf-free pytree, hashable, so it can be a static jit argument.
jax.tree_util.register_static(PeriodicGrid)
