r"""Milstein's method for diagonal noise.

.. math::
    Y_{n+1} = Y_n + f\,h + g\,\Delta W + \tfrac12\, g\, \partial_y g\,\big(\Delta W^2 - c\,h\big),
    \qquad c = 1 \text{ (Ito)}, \; c = 0 \text{ (Stratonovich)},

componentwise, with :math:`g_i` depending on :math:`y_i` only (diagonal noise), so
:math:`\partial_y g` is the Jacobian-vector product of :math:`g` with a vector of ones.
Milstein (1974); Kloeden & Platen (1992), section 10.3. Strong order 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .base import AbstractSolver

__all__ = ["Milstein"]


@dataclasses.dataclass(frozen=True)
class Milstein(AbstractSolver):
    name = "Milstein"
    noise_types = ("diagonal", "additive")
    calculi = ("ito", "stratonovich")
    strong_order = {"diagonal": 1.0, "additive": 1.0}

    def step(self, sde, t, y, h, inc, args):
        f = sde.drift(t, y, args)
        g, dg = jax.jvp(lambda x: sde.diffusion(t, x, args), (y,), (jnp.ones_like(y),))
        if g.shape != y.shape:  # raised while tracing, before anything compiles
            raise ValueError(
                f"Milstein needs an elementwise diffusion of shape {y.shape}, got {g.shape}"
            )
        dw = inc.W
        correction = dw * dw - h if sde.calculus == "ito" else dw * dw
        return y + f * h + g * dw + 0.5 * g * dg * correction, None
