r"""Stochastic differential equations :math:`dY = f(t, Y)\,dt + g(t, Y)\,dW` as plain data.

Kidger, "On Neural Differential Equations" (2022), chapter 5, for the conventions. ``noise`` says
how :math:`g` acts on the Brownian increment:

* ``"diagonal"``: :math:`g(t, y)` has the shape of :math:`y` and acts elementwise,
  :math:`g \odot \Delta W` (one independent Brownian motion per component);
* ``"additive"``: :math:`g(t)` does not depend on :math:`y`; either the shape of :math:`y`
  (elementwise) or a matrix of shape ``y.shape + (m,)`` acting on an ``m``-dimensional :math:`W`;
* ``"general"``: :math:`g(t, y)` is a matrix of shape ``y.shape + (m,)``, :math:`g\,\Delta W`.

``calculus`` is ``"ito"`` or ``"stratonovich"``; for additive noise the two coincide.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["SDE", "NOISE_TYPES", "CALCULI"]

NOISE_TYPES = ("diagonal", "additive", "general")
CALCULI = ("ito", "stratonovich")


@dataclasses.dataclass(frozen=True)
class SDE:
    """An SDE: ``drift(t, y, args)``, ``diffusion(t, y, args)``, the noise type and the calculus.

    Args:
        drift: :math:`f(t, y, \\text{args})`, an array of the shape of ``y``.
        diffusion: :math:`g(t, y, \\text{args})`, see the module docstring for its shape.
        noise: ``"diagonal"``, ``"additive"`` or ``"general"``.
        calculus: ``"ito"`` or ``"stratonovich"``.
    """

    drift: Callable[[Any, jax.Array, Any], jax.Array]
    diffusion: Callable[[Any, jax.Array, Any], jax.Array]
    noise: str = "diagonal"
    calculus: str = "ito"

    def __post_init__(self):
        if not callable(self.drift):
            raise ValueError(f"drift must be a function f(t, y, args), got {self.drift!r}")
        if not callable(self.diffusion):
            raise ValueError(f"diffusion must be a function g(t, y, args), got {self.diffusion!r}")
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_TYPES)}, got {self.noise!r}")
        if self.calculus not in CALCULI:
            raise ValueError(f"calculus must be one of {', '.join(CALCULI)}, got {self.calculus!r}")

    def brownian_shape(self, y0, args=None) -> tuple[int, ...]:
        """Shape of :math:`W`; checks the shapes ``drift`` and ``diffusion`` return (no compilation)."""
        y0 = jnp.asarray(y0)
        t = jax.ShapeDtypeStruct((), y0.dtype)
        f = jax.eval_shape(self.drift, t, y0, args)
        if f.shape != y0.shape:
            raise ValueError(f"drift must return the shape of y0 {y0.shape}, got {f.shape}")
        g = jax.eval_shape(self.diffusion, t, y0, args)
        if g.shape == y0.shape and self.noise in ("diagonal", "additive"):
            return y0.shape
        if self.noise != "diagonal" and g.shape[: y0.ndim] == y0.shape and g.ndim == y0.ndim + 1:
            return g.shape[-1:]
        allowed = (
            f"{y0.shape}" if self.noise == "diagonal" else f"{y0.shape} or {y0.shape + ('m',)}"
        )
        if self.noise == "general":
            allowed = f"{y0.shape + ('m',)}"
        raise ValueError(
            f"diffusion must return shape {allowed} for noise={self.noise!r}, got {g.shape}"
        )

    def g_dw(self, g, dw):
        """:math:`g\\,\\Delta W`: elementwise when ``g`` has the shape of ``dw``, else a matrix product."""
        if g.shape == dw.shape:
            return g * dw
        return jnp.tensordot(g, dw, axes=dw.ndim)
