r"""The Cox-Ingersoll-Ross process and the two solvers of its high-volatility experiment.

The CIR process (Cox, Ingersoll & Ross 1985), in Ito form,

.. math::
    dX_t = a\,(b - X_t)\,dt + \sigma \sqrt{X_t}\,dW_t, \qquad a, b, \sigma > 0,

is the same process as the Stratonovich SDE

.. math::
    dX_t = a\,(\tilde b - X_t)\,dt + \sigma \sqrt{X_t} \circ dW_t, \qquad
    \tilde b = b - \frac{\sigma^2}{4a},

because the Ito-Stratonovich correction is :math:`\tfrac12 g g' = \sigma^2/4` for
:math:`g(x) = \sigma\sqrt{x}`, :math:`x > 0`. The process stays non-negative; it never reaches 0 when
:math:`2ab \ge \sigma^2` (Feller's condition). With :math:`a = b = 1,\ \sigma = 2.2` (the
high-volatility case of Jelincic, Foster & Kidger 2024, "Single-seed generation of Brownian paths and
integrals for adaptive and high order SDE solvers") Feller's condition fails and even
:math:`\tilde b = 1 - 2.2^2/4 = -0.21` is negative.

Parameters travel in ``args = (a, b, sigma)`` (traced: a new value does not recompile). Both
solvers here read them from ``args`` and use closed-form flows, so they solve only the CIR SDEs of
this module (:data:`CIR_STRATONOVICH`, :data:`CIR_ITO`; both describe the same process). Near and
below zero they do what the paper's code does: every square root is taken of :math:`\max(x, 0)`.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from .._sde import SDE
from .base import AbstractSolver

__all__ = ["CIR_STRATONOVICH", "CIR_ITO", "b_tilde", "DriftImplicitEulerCIR", "HOStS"]


def b_tilde(args):
    r""":math:`\tilde b = b - \sigma^2 / (4a)`, the mean level of the Stratonovich drift."""
    a, b, sigma = args
    return b - sigma**2 / (4.0 * a)


def _positive_sqrt(x):
    return jnp.sqrt(jnp.maximum(x, 0.0))


def _strat_drift(t, x, args):
    a = args[0]
    return a * (b_tilde(args) - x)


def _ito_drift(t, x, args):
    a, b, _ = args
    return a * (b - x)


def _diffusion(t, x, args):
    return args[2] * _positive_sqrt(x)


#: :math:`dX = a(\tilde b - X)\,dt + \sigma\sqrt{\max(X, 0)} \circ dW`, ``args = (a, b, sigma)``.
CIR_STRATONOVICH = SDE(_strat_drift, _diffusion, "diagonal", "stratonovich")
#: :math:`dX = a(b - X)\,dt + \sigma\sqrt{\max(X, 0)}\,dW`, ``args = (a, b, sigma)``.
CIR_ITO = SDE(_ito_drift, _diffusion, "diagonal", "ito")


class _CIRSolver(AbstractSolver):
    noise_types = ("diagonal",)
    calculi = ("stratonovich", "ito")

    def check(self, sde) -> None:
        if sde is not CIR_STRATONOVICH and sde is not CIR_ITO:
            raise ValueError(
                f"{self.name} solves only the CIR SDE (solverlab.sde.cir.cir_sde()), got {sde!r}"
            )


@dataclasses.dataclass(frozen=True)
class DriftImplicitEulerCIR(_CIRSolver):
    r"""Drift-implicit Euler for the square root :math:`Y = \sqrt X` of the CIR process.

    :math:`Y` solves :math:`dY = \big(\tfrac{a\tilde b}{2Y} - \tfrac a2 Y\big)dt + \tfrac\sigma2\,dW`
    (additive noise). Taking its drift at the end of the step,

    .. math::
        Y_{n+1} = Y_n + \Big(\frac{a\tilde b}{2Y_{n+1}} - \frac a2 Y_{n+1}\Big)h
                  + \frac\sigma2 \Delta W_n,

    a quadratic in :math:`Y_{n+1}` whose larger root is taken:

    .. math::
        Y_{n+1} = \frac{T_n + \sqrt{\max\big(T_n^2 + (2 + ah)\,a\tilde b\,h,\ 0\big)}}{2 + ah},
        \qquad T_n = \sqrt{\max(X_n, 0)} + \frac\sigma2 \Delta W_n, \qquad X_{n+1} = Y_{n+1}^2 .

    Alfonsi (2005), "On the discretization schemes for the CIR (and Bessel squared) processes";
    Dereich, Neuenkirch & Szpruch (2012), Proc. R. Soc. A 468; used by Jelincic, Foster & Kidger (2024).
    :math:`X_{n+1} = Y_{n+1}^2 \ge 0` always. When :math:`4ab > \sigma^2` (:math:`\tilde b > 0`) the
    discriminant is positive and :math:`Y_{n+1} > 0`. When :math:`\tilde b < 0` (e.g. the paper's
    :math:`\sigma = 2.2`) the discriminant can be negative; it is clipped at 0 as in the paper's code,
    giving :math:`Y_{n+1} = T_n / (2 + ah)`. (The paper's code carries the signed :math:`Y` from step
    to step; here the state is :math:`X`, so each step restarts from :math:`\sqrt{\max(X_n, 0)} \ge 0`.)
    Strong order 1 in the mild regime (Alfonsi 2013, Neuenkirch & Szpruch 2014); lower when Feller's
    condition fails. No embedded error estimate.
    """

    name = "drift-implicit Euler (CIR)"
    strong_order = {"diagonal": 1.0}

    def step(self, sde, t, y, h, inc, args):
        a, _, sigma = args
        t_n = _positive_sqrt(y) + 0.5 * sigma * inc.W
        d = 2.0 + a * h
        root = (t_n + _positive_sqrt(t_n**2 + d * a * b_tilde(args) * h)) / d
        return root**2, None


_TAU1 = (3.0 - math.sqrt(3.0)) / 6.0  # drift substeps: tau1 h, tau2 h, tau1 h sum to h
_TAU2 = 1.0 / math.sqrt(3.0)


@dataclasses.dataclass(frozen=True)
class HOStS(_CIRSolver):
    r"""Foster's high-order Strang splitting (HOStS) for the CIR process.

    Both pieces of the Stratonovich SDE have exact flows: the drift
    :math:`\varphi_\tau(x) = e^{-a\tau}x + (1 - e^{-a\tau})\tilde b` and the noise
    :math:`\psi_w(x) = \big(\sqrt{\max(x, 0)} + \tfrac\sigma2 w\big)^2` (the solution of
    :math:`dx = \sigma\sqrt x \circ dw`). With :math:`W = W_{t_n, t_n+h}`, the space-time Levy area
    :math:`H = H_{t_n, t_n+h}` and :math:`\tau_1 = \tfrac{3-\sqrt3}{6}h`, :math:`\tau_2 = \tfrac{h}{\sqrt3}`,

    .. math::
        X_{n+1} = \varphi_{\tau_1} \circ \psi_{W/2 - \sqrt3 H} \circ \varphi_{\tau_2}
                  \circ \psi_{W/2 + \sqrt3 H} \circ \varphi_{\tau_1}\,(X_n).

    Foster, dos Reis & Strange (2023), "High order splitting methods for SDEs satisfying a
    commutativity condition", eq. (5.3) (strong order 3/2 observed on CIR in the mild regime); used by
    Jelincic, Foster & Kidger (2024). When :math:`\tilde b \ge 0` every stage is a convex combination of
    non-negative numbers, so :math:`X_{n+1} \ge 0`. When :math:`\tilde b < 0` the last drift flow can
    end slightly below zero, :math:`X_{n+1} \ge (1 - e^{-a\tau_1})\,\tilde b`; the next step starts
    from :math:`\sqrt{\max(X_n, 0)}`, as in the paper's code. Needs ``levy_area="space-time"``.
    """

    name = "HOStS (CIR)"
    levy_area = "space-time"
    strong_order = {"diagonal": 1.5}

    def step(self, sde, t, y, h, inc, args):
        a, _, sigma = args
        bt = b_tilde(args)
        c1, c2 = jnp.exp(-a * _TAU1 * h), jnp.exp(-a * _TAU2 * h)
        w1 = 0.5 * inc.W + math.sqrt(3.0) * inc.H
        w2 = 0.5 * inc.W - math.sqrt(3.0) * inc.H
        z = c1 * y + (1.0 - c1) * bt
        z = (_positive_sqrt(z) + 0.5 * sigma * w1) ** 2
        z = c2 * z + (1.0 - c2) * bt
        z = (_positive_sqrt(z) + 0.5 * sigma * w2) ** 2
        return c1 * z + (1.0 - c1) * bt, None
