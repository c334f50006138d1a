r"""Model parameterisations of a diffusion model and the conversions between them.

With :math:`x = \alpha x_0 + \sigma\varepsilon` (schedule values at the same time :math:`t`), a model
may predict

- the noise :math:`\hat\varepsilon` (Ho et al. 2020),
- the data :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha` (DPM-Solver++, Lu et al. 2022),
- the score :math:`\nabla_x\log p_t(x) = -\hat\varepsilon/\sigma` (Song et al. 2021),
- the velocity :math:`v = \alpha\hat\varepsilon - \sigma\hat x_0` (Salimans & Ho, "Progressive
  distillation", 2022).

The :math:`v` formulas below hold for any :math:`(\alpha, \sigma)`, not only variance-preserving ones:
with :math:`r^2 = \alpha^2 + \sigma^2`,

.. math::
    \hat\varepsilon = \frac{\alpha v + \sigma x}{r^2}, \qquad \hat x_0 = \frac{\alpha x - \sigma v}{r^2},
    \qquad v = \frac{r^2\hat\varepsilon - \sigma x}{\alpha}.

``alpha`` and ``sigma`` are scalars or arrays that broadcast against ``x`` (shape ``(..., d)``);
:func:`as_noise_prediction` does that broadcasting for a batch of times.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = [
    "PARAMETERISATIONS",
    "as_noise_prediction",
    "convert",
    "eps_to_score",
    "eps_to_v",
    "eps_to_x0",
    "score_to_eps",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
    "x0_to_v",
]

PARAMETERISATIONS = ("eps", "x0", "score", "v")


def eps_to_x0(x, eps, alpha, sigma):
    r"""Data prediction :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha`."""
    return (x - sigma * eps) / alpha


def x0_to_eps(x, x0, alpha, sigma):
    r"""Noise prediction :math:`\hat\varepsilon = (x - \alpha\hat x_0)/\sigma`."""
    return (x - alpha * x0) / sigma


def eps_to_score(eps, sigma):
    r"""Score :math:`\nabla_x \log p_t(x) = -\hat\varepsilon/\sigma`."""
    return -eps / sigma


def score_to_eps(score, sigma):
    r"""Noise prediction :math:`\hat\varepsilon = -\sigma\,\nabla_x\log p_t(x)`."""
    return -sigma * score


def eps_to_v(x, eps, alpha, sigma):
    r"""Velocity :math:`v = \alpha\hat\varepsilon - \sigma\hat x_0 = \big((\alpha^2+\sigma^2)\hat\varepsilon - \sigma x\big)/\alpha`."""
    return ((alpha**2 + sigma**2) * eps - sigma * x) / alpha


def v_to_eps(x, v, alpha, sigma):
    r"""Noise prediction :math:`\hat\varepsilon = (\alpha v + \sigma x)/(\alpha^2+\sigma^2)`."""
    return (alpha * v + sigma * x) / (alpha**2 + sigma**2)


def x0_to_v(x, x0, alpha, sigma):
    r"""Velocity :math:`v = \alpha\hat\varepsilon - \sigma\hat x_0 = \big(\alpha x - (\alpha^2+\sigma^2)\hat x_0\big)/\sigma`."""
    return (alpha * x - (alpha**2 + sigma**2) * x0) / sigma


def v_to_x0(x, v, alpha, sigma):
    r"""Data prediction :math:`\hat x_0 = (\alpha x - \sigma v)/(\alpha^2+\sigma^2)`."""
    return (alpha * x - sigma * v) / (alpha**2 + sigma**2)


def _check_kind(name, value):
    if value not in PARAMETERISATIONS:
        raise ValueError(f"{name} must be one of {', '.join(PARAMETERISATIONS)}, got {value!r}")


def _to_eps(pred, x, alpha, sigma, source):
    if source == "eps":
        return pred
    if source == "x0":
        return x0_to_eps(x, pred, alpha, sigma)
    if source == "score":
        return score_to_eps(pred, sigma)
    return v_to_eps(x, pred, alpha, sigma)


def convert(pred, x, alpha, sigma, *, source, target):
    r"""Convert a model output between parameterisations ``"eps"``, ``"x0"``, ``"score"``, ``"v"``.

    Goes through the noise prediction except for the direct pairs x0 <-> v (one division each).

    Args:
        pred: the model output at ``x``, shape of ``x``.
        x: the noised state :math:`x_t`, shape ``(..., d)``.
        alpha, sigma: schedule values at :math:`t`, broadcastable against ``x``.
        source, target: parameterisation names.
    """
    _check_kind("source", source)
    _check_kind("target", target)
    if source == target:
        return pred
    if source == "x0" and target == "v":
        return x0_to_v(x, pred, alpha, sigma)
    if source == "v" and target == "x0":
        return v_to_x0(x, pred, alpha, sigma)
    eps = _to_eps(pred, x, alpha, sigma, source)
    if target == "eps":
        return eps
    if target == "x0":
        return eps_to_x0(x, eps, alpha, sigma)
    if target == "score":
        return eps_to_score(eps, sigma)
    return eps_to_v(x, eps, alpha, sigma)


def _broadcast_to_x(a, x):
    """Append trailing axes to a per-time value ``a`` (shape of ``t``) so it broadcasts against ``x``."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (jnp.ndim(x) - a.ndim))


def as_noise_prediction(model_fn, schedule, parameterisation="eps"):
    r"""Wrap ``model_fn(x, t)`` predicting ``parameterisation`` into a noise predictor
    :math:`\hat\varepsilon(x, t)` with the schedule's :math:`\alpha(t), \sigma(t)`.

    ``t`` is a scalar or has the leading batch shape of ``x`` (e.g. ``t`` of shape ``(B,)`` with
    ``x`` of shape ``(B, d)``).
    """
    _check_kind("parameterisation", parameterisation)

    def eps_fn(x, t):
        pred = model_fn(x, t)
        if parameterisation == "eps":
            return pred
        alpha = _broadcast_to_x(schedule.alpha(t), x)
        sigma = _broadcast_to_x(schedule.sigma(t), x)
        return _to_eps(pred, x, alpha, sigma, parameterisation)

    return eps_fn
