r"""The stochastic Heun method (Stratonovich), with an embedded Euler error estimate.

.. math::
    \tilde Y = Y_n + f(t_n, Y_n)\,h + g(t_n, Y_n)\,\Delta W, \\
    Y_{n+1} = Y_n + \tfrac12\big(f(t_n, Y_n) + f(t_{n+1}, \tilde Y)\big) h
              + \tfrac12\big(g(t_n, Y_n) + g(t_{n+1}, \tilde Y)\big)\,\Delta W,

error estimate :math:`Y_{n+1} - \tilde Y`. Converges to the Stratonovich solution: strong order 1
for commutative (e.g. diagonal or additive) noise, 1/2 in general. Kloeden & Platen (1992),
section 11.1; Kidger (2022), section 5.3.
"""

from __future__ import annotations

import dataclasses

from .base import AbstractSolver

__all__ = ["Heun"]


@dataclasses.dataclass(frozen=True)
class Heun(AbstractSolver):
    name = "stochastic Heun"
    noise_types = ("diagonal", "additive", "general")
    calculi = ("stratonovich",)
    strong_order = {"diagonal": 1.0, "additive": 1.0, "general": 0.5}
    error_estimate = True
    drift_evals = 2

    def step(self, sde, t, y, h, inc, args):
        f0 = sde.drift(t, y, args)
        g0 = sde.diffusion(t, y, args)
        euler = y + f0 * h + sde.g_dw(g0, inc.W)
        f1 = sde.drift(t + h, euler, args)
        g1 = sde.diffusion(t + h, euler, args)
        y1 = y + 0.5 * (f0 + f1) * h + sde.g_dw(0.5 * (g0 + g1), inc.W)
        return y1, y1 - euler
