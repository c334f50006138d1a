r"""Euler-Maruyama: :math:`Y_{n+1} = Y_n + f(t_n, Y_n)\,h + g(t_n, Y_n)\,\Delta W_n`.

Kloeden & Platen (1992), section 10.2. Strong order 1/2 in general, 1 for additive noise; it
converges to the Ito solution.
"""

from __future__ import annotations

import dataclasses

from .base import AbstractSolver

__all__ = ["EulerMaruyama"]


@dataclasses.dataclass(frozen=True)
class EulerMaruyama(AbstractSolver):
    name = "Euler-Maruyama"
    noise_types = ("diagonal", "additive", "general")
    calculi = ("ito",)
    strong_order = {"diagonal": 0.5, "general": 0.5, "additive": 1.0}

    def step(self, sde, t, y, h, inc, args):
        f = sde.drift(t, y, args)
        g = sde.diffusion(t, y, args)
        return y + f * h + sde.g_dw(g, inc.W), None
