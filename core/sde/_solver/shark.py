r"""ShARK: a stochastic Runge-Kutta method for additive noise that uses the space-time Levy area.

For :math:`dY = f(t, Y)\,dt + \sigma(t)\,dW`, with :math:`W = W_{t_n, t_n + h}` and
:math:`H = H_{t_n, t_n + h}` (Foster, dos Reis & Strange 2023, "High order splitting methods for SDEs
satisfying a commutativity condition"; the tableau as in Jelincic, Foster & Kidger 2024):

.. math::
    Z_1 = Y_n + \sigma H, \qquad
    Z_2 = Y_n + \tfrac56 f(Z_1)\,h + \sigma\big(\tfrac56 W + H\big), \\
    Y_{n+1} = Y_n + \big(\tfrac25 f(Z_1) + \tfrac35 f(Z_2)\big) h + \sigma W,

with the embedded error estimate :math:`\tfrac35\,(f(Z_2) - f(Z_1))\,h`. Strong order 3/2 for
additive noise (two drift evaluations per step); :math:`\sigma` is evaluated at the step's start.
"""

from __future__ import annotations

import dataclasses

from .base import AbstractSolver

__all__ = ["ShARK"]


@dataclasses.dataclass(frozen=True)
class ShARK(AbstractSolver):
    name = "ShARK"
    noise_types = ("additive",)
    calculi = ("ito", "stratonovich")
    levy_area = "space-time"
    strong_order = {"additive": 1.5}
    error_estimate = True
    drift_evals = 2

    def step(self, sde, t, y, h, inc, args):
        sigma = sde.diffusion(t, y, args)
        s_w, s_h = sde.g_dw(sigma, inc.W), sde.g_dw(sigma, inc.H)
        z1 = y + s_h
        f1 = sde.drift(t, z1, args)
        z2 = y + (5.0 / 6.0) * f1 * h + (5.0 / 6.0) * s_w + s_h
        f2 = sde.drift(t + (5.0 / 6.0) * h, z2, args)
        y1 = y + (0.4 * f1 + 0.6 * f2) * h + s_w
        return y1, 0.6 * (f2 - f1) * h
