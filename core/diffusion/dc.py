r"""DC-Solver: dynamic compensation of a predictor-corrector sampler (Zhao, Wang, Rao, Zhou, Lu, ECCV 2024).

UniPC (:mod:`.unipc`) corrects :math:`\tilde x_{t_i}` to :math:`x_{t_i}^c` but keeps the data
prediction :math:`m_i = \hat x_0(\tilde x_{t_i}, t_i)` made at the *uncorrected* point: the history
the next steps extrapolate from is misaligned with the corrected trajectory. DC-Solver compensates
by replacing :math:`m_i`, before the predictor of step :math:`i \ge 2`, by the Lagrange interpolant
of the last three data predictions evaluated at a shifted time,

.. math::
    \hat m_i = \sum_{k=0}^{2} m_{i-k} \prod_{j \ne k} \frac{\tau_i - t_{i-j}}{t_{i-k} - t_{i-j}},
    \qquad \tau_i = t_{i-1} + \rho_i\,(t_i - t_{i-1}),

with one compensation ratio :math:`\rho_i` per step (:math:`\rho_i = 1` is plain UniPC); the
compensated value also stays in the history (the authors' ``dynamic_compensation``, dc_order 2, on
UniPC-2 with :math:`B(h) = e^{-h} - 1`, the configuration of their diffusers code).

**Fitting the ratios** (:func:`fit_dc_ratios`): gradient descent (Adam, optax) through the
differentiable sampler (static ``nfe``) on about 10 noise samples against the endpoints of a
many-step reference solve (:func:`~solverlab.diffusion.reference.reference`). The authors fit each
ratio in turn to the state of a 200-step DDIM trajectory at the next step; here all ratios are fitted
together to the endpoint, the quantity the terminal error measures.

**Cascade polynomial regression** (:func:`fit_cascade`, :class:`CascadeRatios`): the ratio of step
:math:`i` of :math:`n` at guidance :math:`w` with ``nfe`` evaluations is a polynomial in the step
position :math:`u = i/n` whose coefficients are polynomials in :math:`\omega = w/12` whose
coefficients are polynomials in :math:`\nu = \text{nfe}/50` (the authors' scalings),

.. math::
    \rho(u; \nu, \omega) = \sum_p \Big(\sum_a \Big(\sum_b C_{pab}\,\nu^b\Big)\omega^a\Big) u^p,

linear in :math:`C`, so a few fitted configurations determine :math:`C` by least squares, and the
ratios of an unseen (``nfe``, guidance) come without any fitting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import SolverError, check_range, concrete_value
from .reference import reference
from .samplers import register, sample
from .unipc import unipc_stepper

__all__ = ["DC_ORDER", "CascadeRatios", "DCRatios", "fit_cascade", "fit_dc_ratios"]

DC_ORDER = 2  #: degree of the compensating interpolation (three data predictions)
MIN_NFE = DC_ORDER + 2  #: fitting needs a compensated step: step DC_ORDER, so nfe - 1 > DC_ORDER


def _check_nfe(nfe, low=1):
    if isinstance(nfe, bool) or not isinstance(nfe, (int, np.integer)):
        raise ValueError(f"nfe must be an int >= {low}, got {nfe!r}")  # noqa: TRY004
    check_range("nfe", nfe, low=low)


class DCRatios(eqx.Module):
    r"""Compensation ratios :math:`\rho_0..\rho_{n-1}` for the :math:`n = \text{nfe} - 1` main-loop
    steps of ``sample(..., method="dc_solver", nfe=nfe, fitted=...)`` (the first two are not used:
    the interpolation needs three data predictions; below ``nfe = 4`` DC-Solver is UniPC). ``loss``: the fit's final mean squared endpoint
    error (``nan`` when the ratios were not fitted)."""

    ratios: jax.Array
    nfe: int = eqx.field(static=True)
    loss: jax.Array = eqx.field(default_factory=lambda: jnp.asarray(np.nan))

    def __check_init__(self):
        _check_nfe(self.nfe)
        if jnp.ndim(self.ratios) != 1 or jnp.shape(self.ratios)[0] != self.nfe - 1:
            raise ValueError(f"ratios must have shape ({self.nfe - 1},) for nfe = {self.nfe}, "
                             f"got {jnp.shape(self.ratios)}")
        check_range("ratios", self.ratios)  # finite when concrete

    @classmethod
    def ones(cls, nfe: int, dtype=None) -> DCRatios:
        """Ratios of 1: plain UniPC (bh2, order 2)."""
        _check_nfe(nfe)
        return cls(jnp.ones((nfe - 1,), dtype or jnp.result_type(float)), nfe)


_base = unipc_stepper(2, "bh2", dc_order=DC_ORDER)


def _dc_stepper(model_fn, schedule, x, grid, evaluations, fitted):
    if not isinstance(evaluations, (int, np.integer)):
        raise ValueError("dc_solver needs a static nfe (a Python int): its ratios are fitted for one nfe")  # noqa: TRY004
    if evaluations + 1 != fitted.nfe:
        raise ValueError(f"nfe must equal the nfe the DC ratios were fitted for ({fitted.nfe}), "
                         f"got {evaluations + 1}")
    return _base(model_fn, schedule, x, grid, evaluations, fitted)


register("dc_solver", _dc_stepper, 1, fitted=DCRatios)


def fit_dc_ratios(model_fn: Callable, schedule, x_fit, nfe: int, *, t_start=None, t_end=None, steps="logSNR",
                  target=None, iterations: int = 150, learning_rate: float = 0.05, regularization: float = 0.0,
                  rtol: float = 1e-8, atol: float = 1e-8) -> DCRatios:
    r"""Fit DC-Solver's compensation ratios for ``nfe >= 4`` evaluations by gradient descent.

    With :math:`E(\rho) = \frac1N\sum_n \lVert \text{DC}_\rho(x_T^{(n)}) - x_0^{\text{ref},(n)}\rVert^2`,
    minimises :math:`E(\rho)/E(\mathbf 1) + \beta\lVert\rho - \mathbf 1\rVert^2` with Adam from
    :math:`\rho = \mathbf 1` (plain UniPC), differentiating through the sampler; returns the iterate of
    least objective (so never worse than UniPC on ``x_fit`` when :math:`\beta = 0`), with ``loss`` =
    its :math:`E`.

    Args:
        model_fn, schedule, t_start, t_end, steps: as :func:`~solverlab.diffusion.sample`.
        x_fit: the fitting noise, shape (N, d); about 10 samples suffice.
        nfe: the number of evaluations the ratios are for (a Python int >= 4).
        target: the reference endpoints of ``x_fit`` (N, d); default: an adaptive reference solve
            to ``rtol``/``atol`` (:func:`~solverlab.diffusion.reference.reference`).
        iterations, learning_rate: Adam's steps and step size.
        regularization: :math:`\beta \ge 0`, a pull towards UniPC (default none).
        rtol, atol: tolerances of the default reference solve.
    """
    _check_nfe(nfe, low=MIN_NFE)  # fewer steps have nothing to compensate
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    check_range("learning_rate", learning_rate, low=0.0, low_open=True)
    check_range("regularization", regularization, low=0.0)
    x_fit = jnp.asarray(x_fit)
    if x_fit.ndim != 2:
        raise ValueError(f"x_fit must have shape (N, d), got {x_fit.shape}")
    if target is None:
        target = reference(model_fn, x_fit, schedule, rtol=rtol, atol=atol, t_start=t_start, t_end=t_end).x0
    target = jnp.asarray(target, x_fit.dtype)
    if target.shape != x_fit.shape:
        raise ValueError(f"target must have the shape of x_fit {x_fit.shape}, got {target.shape}")
    times = None
    if not isinstance(steps, str):
        times, steps = jnp.asarray(steps, x_fit.dtype), "logSNR"
    ratios, best = _fit(model_fn, schedule, x_fit, target, t_start, t_end, times, jnp.asarray(regularization, x_fit.dtype),
                        nfe=nfe, steps=steps, iterations=iterations, learning_rate=float(learning_rate))
    if not bool(jnp.isfinite(best)):
        raise SolverError("fitting the DC ratios gave a non-finite loss: the model or its samples are not finite")
    return DCRatios(ratios, nfe, best)


# filter_jit: a model holding arrays (a guidance scale) is traced, so fitting at a new guidance reuses
# the compiled fit; nfe, steps and the optimiser settings are static.
@eqx.filter_jit
def _fit(model_fn, schedule, x_fit, target, t_start, t_end, times, regularization, *, nfe, steps, iterations,
         learning_rate):
    def error(r):
        x0 = sample(model_fn, x_fit, schedule, "dc_solver", nfe, t_start, t_end,
                    steps=steps if times is None else times, fitted=DCRatios(r, nfe), check=False)
        return jnp.mean(jnp.sum((x0 - target) ** 2, axis=-1))

    r0 = jnp.ones((nfe - 1,), x_fit.dtype)
    # UniPC's error: the objective is relative to it (guarded for a sampler that is already exact).
    scale = jnp.maximum(jax.lax.stop_gradient(error(r0)), jnp.finfo(x_fit.dtype).tiny)

    def loss(r):
        return error(r) / scale + regularization * jnp.sum((r - 1.0) ** 2)

    optimizer = optax.adam(learning_rate)

    def body(carry, _):
        r, state, best_r, best = carry
        value, grad = jax.value_and_grad(loss)(r)
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        better = value < best  # NaN never counts as better
        best_r, best = jnp.where(better, r, best_r), jnp.where(better, value, best)
        updates, state = optimizer.update(grad, state, r)
        return (optax.apply_updates(r, updates), state, best_r, best), None

    init = (r0, optimizer.init(r0), r0, jnp.asarray(jnp.inf, r0.dtype))
    r, _, best_r, best = jax.lax.scan(body, init, None, length=iterations)[0]
    final = loss(r)
    r = jnp.where(final < best, r, best_r)
    return r, error(r)


class CascadeRatios(eqx.Module):
    r"""Cascade polynomial regression of DC ratios over (step position, guidance, nfe).

    ``coeffs[p, a, b]`` multiplies :math:`u^p\,\omega^a\,\nu^b` with :math:`u = i/n`,
    :math:`\omega = w/` ``guidance_scale``, :math:`\nu = \text{nfe}/` ``nfe_scale``.
    """

    coeffs: jax.Array
    nfe_scale: float = eqx.field(static=True, default=50.0)
    guidance_scale: float = eqx.field(static=True, default=12.0)

    def predict(self, nfe: int, guidance) -> DCRatios:
        """The ratios for ``nfe`` evaluations at guidance scale ``guidance`` (maybe traced; steps
        before the first compensated one are 1)."""
        _check_nfe(nfe)
        check_range("guidance", guidance, low=0.0)
        ratios = _predict(self.coeffs, jnp.asarray(guidance, self.coeffs.dtype), nfe=int(nfe),
                          nfe_scale=self.nfe_scale, guidance_scale=self.guidance_scale)
        return DCRatios(ratios, int(nfe))


@functools.partial(jax.jit, static_argnames=("nfe", "nfe_scale", "guidance_scale"))
def _predict(coeffs, guidance, *, nfe, nfe_scale, guidance_scale):
    n = nfe - 1
    steps = jnp.arange(n)
    X = _features(jnp, steps, n, nfe, guidance, coeffs.shape, nfe_scale, guidance_scale)
    return jnp.where(steps >= DC_ORDER, X @ coeffs.reshape(-1), 1.0)


def _features(xp, step, n, nfe, guidance, shape, nfe_scale, guidance_scale):
    """Monomials u^p w^a v^b (``xp``: numpy or jax.numpy), flattened as ``coeffs.reshape(-1)``."""
    P, A, B = shape
    u = xp.asarray(step) / n
    u, w, v = xp.broadcast_arrays(u, xp.asarray(guidance / guidance_scale, u.dtype), xp.asarray(nfe / nfe_scale, u.dtype))
    mono = ((u[..., None] ** xp.arange(P))[..., :, None, None]
            * (w[..., None] ** xp.arange(A))[..., None, :, None]
            * (v[..., None] ** xp.arange(B))[..., None, None, :])
    return mono.reshape(mono.shape[:-3] + (P * A * B,))


def fit_cascade(fits: Sequence[tuple[float, DCRatios]], *, step_degree: int = 3, guidance_degree: int = 2,
                nfe_degree: int = 2, ridge: float = 1e-6, nfe_scale: float = 50.0,
                guidance_scale: float = 12.0) -> CascadeRatios:
    r"""Fit the cascade polynomial regression to fitted ratios.

    Args:
        fits: pairs ``(guidance, DCRatios)``: the ratios fitted (:func:`fit_dc_ratios`) at each
            configuration; only the compensated steps (:math:`i \ge 2`) enter the regression.
        step_degree, guidance_degree, nfe_degree: degrees of the three nested polynomials (the
            authors use 2 in guidance and in NFE). A degree at least the number of distinct
            values of its variable leaves the fit underdetermined; ``ridge`` then picks the
            smallest coefficients.
        ridge: Tikhonov weight, relative to the mean squared feature.
    """
    if not fits:
        raise ValueError("fits must hold at least one (guidance, DCRatios) pair, got none")
    for name, deg in (("step_degree", step_degree), ("guidance_degree", guidance_degree),
                      ("nfe_degree", nfe_degree)):
        if isinstance(deg, bool) or not isinstance(deg, int) or deg < 0:
            raise ValueError(f"{name} must be an int >= 0, got {deg!r}")
    check_range("ridge", ridge, low=0.0)
    shape = (step_degree + 1, guidance_degree + 1, nfe_degree + 1)
    rows, values = [], []
    for guidance, fitted in fits:
        if not isinstance(fitted, DCRatios):
            raise ValueError(f"fits must hold (guidance, DCRatios) pairs, got {type(fitted).__name__}")  # noqa: TRY004
        check_range("guidance", guidance, low=0.0)
        n = fitted.nfe - 1
        steps = np.arange(DC_ORDER, n)
        rows.append(_features(np, steps.astype(np.float64), n, fitted.nfe, float(guidance), shape, nfe_scale,
                              guidance_scale))
        values.append(np.asarray(concrete_value(fitted.ratios))[DC_ORDER:])
    X, y = np.concatenate(rows).astype(np.float64), np.concatenate(values).astype(np.float64)
    lam = ridge * np.mean(X**2)
    # Ridge as an augmented least-squares problem (better conditioned than the normal equations).
    A = np.concatenate([X, np.sqrt(lam) * np.eye(X.shape[1])])
    coeffs = np.linalg.lstsq(A, np.concatenate([y, np.zeros(X.shape[1])]), rcond=None)[0]
    return CascadeRatios(jnp.asarray(coeffs.reshape(shape), jnp.result_type(float)), nfe_scale, guidance_scale)
