r"""DPM-Solver-v3: the probability-flow ODE sampler with empirical model statistics (EMS).

Zheng, Lu, Chen & Zhu, "DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model
Statistics", NeurIPS 2023 (arXiv:2310.13268). Equation numbers below are the paper's (section 3).

**The rewritten ODE.** With :math:`\lambda = \log(\alpha/\sigma)` the probability-flow ODE of a noise
prediction :math:`\epsilon_\theta` is
:math:`\frac{dx_\lambda}{d\lambda} = \frac{\dot\alpha_\lambda}{\alpha_\lambda}x_\lambda - \sigma_\lambda\epsilon_\theta`. For *any* functions :math:`l_\lambda, s_\lambda, b_\lambda` (per
dimension) it can be written (eqs. 5-7)

.. math::
    \frac{dx_\lambda}{d\lambda} = \Big(\frac{\dot\alpha_\lambda}{\alpha_\lambda} - l_\lambda\Big)x_\lambda
        - \alpha_\lambda f_\theta(x_\lambda, \lambda), \qquad
    f_\theta = \frac{\sigma_\lambda\epsilon_\theta - l_\lambda x_\lambda}{\alpha_\lambda},

    g_\theta(x_\lambda, \lambda) = e^{-\int_{\lambda_s}^{\lambda} s_\tau d\tau} f_\theta
        - \int_{\lambda_s}^{\lambda} e^{-\int_{\lambda_s}^{r} s_\tau d\tau} b_r\, dr .

With :math:`L = \int l`, :math:`S = \int s`, :math:`B = \int e^{-S} b` (cumulative from the start of
the statistics grid) and :math:`\Phi(\lambda) = (L + S)(\lambda) - (L + S)(\lambda_s)`, the exact
solution from :math:`\lambda_s` to :math:`\lambda_t = \lambda_s + h` (variation of constants) is

.. math::
    x_t = \frac{\alpha_t}{\alpha_s}e^{L_s - L_t}x_s - \alpha_t e^{L_s - L_t}\Big[
        \int_{\lambda_s}^{\lambda_t} e^{\Phi(\lambda)} g_\theta(x_\lambda, \lambda)\, d\lambda
        + e^{S_s}\int_{\lambda_s}^{\lambda_t} e^{\Phi(\lambda)}\big(B(\lambda) - B_s\big)\, d\lambda\Big],

and a Taylor expansion :math:`g \approx \sum_{k<n} g^{(k)}(\lambda_s)(\lambda - \lambda_s)^k/k!` gives
the :math:`n`-th order update (eq. 8) with the coefficients
:math:`E_k = \int_{\lambda_s}^{\lambda_t} e^{\Phi}(\lambda - \lambda_s)^{k-1}/(k-1)!\,d\lambda`.
:math:`l = 1, s = b = 0` is DPM-Solver++ (:math:`g = -\hat x_0`, the data prediction) and
:math:`l = 0, s = -1, b = 0` is DPM-Solver (:math:`g = e^{-\lambda_s}\epsilon_\theta`, the noise
prediction): the paper's section 3.1.

**The statistics** are chosen to make the first-order discretisation error small (eqs. 9-10):

.. math::
    l^*_\lambda = \arg\min_l \mathbb E_{x_\lambda}\big\|\nabla_x(\sigma_\lambda\epsilon_\theta - l x)\big\|_F^2
        = \mathbb E\,\operatorname{diag}\big(\sigma_\lambda\nabla_x\epsilon_\theta(x_\lambda, \lambda)\big),

    (s^*_\lambda, b^*_\lambda) = \arg\min_{s, b}\mathbb E_{x_\lambda}\big\|f^{(1)}_\theta(x_\lambda, \lambda)
        - s f_\theta(x_\lambda, \lambda) - b\big\|_2^2,

with :math:`f^{(1)}_\theta = \frac{d}{d\lambda}f_\theta(x_\lambda, \lambda)` along the ODE, a
Jacobian-vector product of the model with the tangent :math:`(dx_\lambda/d\lambda, 1)`. The least
squares are per dimension: :math:`s = \mathrm{Cov}(f^{(1)}, f)/\mathrm{Var}(f)`,
:math:`b = \mathbb E f^{(1)} - s\,\mathbb E f`. Expectations run over :math:`x_\lambda = \alpha x_0
+ \sigma\varepsilon` for data points :math:`x_0`; the same :math:`x_0, \varepsilon` (and probes) serve
every :math:`\lambda`, so the statistics are smooth in :math:`\lambda`, and
:math:`dl/d\lambda` (which enters :math:`f^{(1)}`) is the exact derivative of that sample average.

**Discretisation here.** :math:`l, s, b` live on a uniform :math:`\lambda` grid and are linear between
nodes; :math:`L, S` are their exact integrals (trapezoid cumulative sums, quadratic within a cell), so
the integrating factor and :math:`f_\theta` use the same :math:`l` at any step time (a traced NFE
places steps anywhere). :math:`B` is the trapezoid cumulative sum of :math:`e^{-S}b`, the exact integral of its linear
interpolant. The step integrals :math:`E_1, E_2, E_3` and the bias integral are 16-point
Gauss-Legendre sums on :math:`[\lambda_s, \lambda_t]` of these interpolants (the paper's code
instead rounds step times to grid nodes and takes trapezoid sums between them).

**The solver** (section 3.3-3.4): a multistep predictor of order up to 3 that estimates
:math:`g', g''` from earlier :math:`g` values (all re-expressed relative to :math:`\lambda_s`), by the
Taylor fit or, "pseudo-order", by divided differences alone; and a corrector that, once the model has
been evaluated at the predicted :math:`x_t`, redoes the step with that value as one more point
(UniPC-style; the model output is reused, so the corrector is free). The final main-loop step has no
corrector (its evaluation is :func:`~solverlab.diffusion.sample`'s final data prediction).

**Where the Taylor model of g fails.** Under strong guidance the fitted :math:`s` reaches
:math:`|s| \approx 10` where the mixture's modes separate, so :math:`e^{-\int s}` changes by
:math:`e^{20}` across one coarse step; a polynomial in :math:`\lambda` then describes :math:`g` badly.
Extrapolating from earlier points (the predictor) stays tame, but the corrector, which interpolates
towards the new point, overshoots by orders of magnitude (measured: ring, guidance 7.5, NFE 5:
error 3.7e7 with the corrector everywhere, 0.57 with the guard, 19.6 for DPM-Solver++(2M)).
``corrector_guard`` (our safeguard, not the paper's) skips the correction, per dimension, on steps
where :math:`|S_t - S_s|` exceeds it (default 2); the paper's own remedy, ``half_corrector`` (correct only while :math:`t` is in the noisier half), is
available too. As the steps shrink the guard stops acting, so the convergence order is unchanged.

**Defaults**: predictor order 3 (Taylor fit), corrector of order one above the previous predictor
(at most 3, Taylor fit), lower order in the final steps, ``corrector_guard = 2``; global order 3
(measured slope 3.9 on the ring). **Precision**: fit the statistics in float64
(``jax.enable_x64``); in float32 the high-noise end loses the statistics (:math:`f^{(1)}` there is a
difference of terms :math:`\sim 1/\alpha` times larger than itself), and v3 at NFE 5 is then only on
a par with DPM-Solver++(2M) on the ring.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import check_range, concrete_value
from . import samplers

__all__ = ["V3Statistics", "fit_v3_statistics", "from_arrays", "step_coefficients"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_X, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W  # on [0, 1]


class V3Statistics(eqx.Module):
    r"""Empirical model statistics of DPM-Solver-v3 on a uniform :math:`\lambda` grid, plus the
    solver's options (an equinox module: arrays are leaves, so ``grad`` flows into them).

    Arrays: ``lams`` (N+1,) increasing :math:`\lambda` from :math:`\lambda(t_{\max})` to
    :math:`\lambda(t_{\min})`; ``l``, ``s``, ``b`` (N+1, d); ``L``, ``S``, ``B`` (N+1, d) the cumulative
    integrals :math:`\int l`, :math:`\int s`, :math:`\int e^{-S}b` from ``lams[0]``.
    Static: ``schedule`` (the one fitted on; sampling checks it), ``order`` (predictor order 1-3),
    ``corrector``, ``predictor_pseudo``, ``corrector_pseudo`` (divided differences instead of the
    Taylor fit), ``lower_order_final`` (order at most ``n - i`` at step ``i`` of ``n``, the paper's
    choice for few steps), ``half_corrector`` (correct only in the noisier half of the time
    interval, the paper's remedy for large guidance), ``corrector_guard`` (skip the correction where
    :math:`|\Delta S|` over the step exceeds it; ``None``: never skip). Build with
    :func:`fit_v3_statistics` or :func:`from_arrays`; change the
    options with :meth:`with_options`.
    """

    lams: jax.Array
    l: jax.Array
    s: jax.Array
    b: jax.Array
    L: jax.Array
    S: jax.Array
    B: jax.Array
    schedule: object = eqx.field(static=True)
    order: int = eqx.field(static=True, default=3)
    corrector: bool = eqx.field(static=True, default=True)
    predictor_pseudo: bool = eqx.field(static=True, default=False)
    corrector_pseudo: bool = eqx.field(static=True, default=False)
    lower_order_final: bool = eqx.field(static=True, default=True)
    half_corrector: bool = eqx.field(static=True, default=False)
    corrector_guard: float | None = eqx.field(static=True, default=2.0)

    @property
    def dim(self) -> int:
        return self.l.shape[-1]

    def with_options(self, **options) -> V3Statistics:
        """A copy with other solver options (``order``, ``corrector``, ``predictor_pseudo``,
        ``corrector_pseudo``, ``lower_order_final``); the statistics are shared."""
        _check_options(**options)
        fields = {name: getattr(self, name) for name in _OPTION_NAMES}
        fields.update(options)
        return V3Statistics(self.lams, self.l, self.s, self.b, self.L, self.S, self.B, self.schedule, **fields)

    # -- evaluation at any lambda (scalar): linear l, s, b; their exact integrals L, S -------------------
    def _cell(self, lam):
        n = self.lams.shape[0] - 1
        i = jnp.clip(jnp.searchsorted(self.lams, lam, side="right") - 1, 0, n - 1)
        width = self.lams[i + 1] - self.lams[i]
        return i, lam - self.lams[i], width

    def _linear(self, values, lam):
        i, u, width = self._cell(lam)
        return values[i] + (u / width) * (values[i + 1] - values[i])

    def _integral(self, cumulative, values, lam):
        i, u, width = self._cell(lam)
        return cumulative[i] + u * values[i] + 0.5 * u**2 / width * (values[i + 1] - values[i])

    def l_at(self, lam):
        r""":math:`l_\lambda` (d,), linear between grid nodes."""
        return self._linear(self.l, lam)

    def L_at(self, lam):
        r""":math:`L(\lambda) = \int_{\lambda_0}^{\lambda} l`, exact for the piecewise-linear :math:`l`."""
        return self._integral(self.L, self.l, lam)

    def S_at(self, lam):
        r""":math:`S(\lambda) = \int_{\lambda_0}^{\lambda} s`, exact for the piecewise-linear :math:`s`."""
        return self._integral(self.S, self.s, lam)

    def B_at(self, lam):
        r""":math:`B(\lambda) = \int_{\lambda_0}^{\lambda} e^{-S}b` for :math:`e^{-S}b` linear between
        nodes (the trapezoid sums at the nodes, quadratic within a cell)."""
        i, u, width = self._cell(lam)
        w0, w1 = jnp.exp(-self.S[i]) * self.b[i], jnp.exp(-self.S[i + 1]) * self.b[i + 1]
        return self.B[i] + u * w0 + 0.5 * u**2 / width * (w1 - w0)


_OPTION_NAMES = ("order", "corrector", "predictor_pseudo", "corrector_pseudo", "lower_order_final", "half_corrector",
                 "corrector_guard")


def _check_options(order=3, corrector=True, predictor_pseudo=False, corrector_pseudo=False, lower_order_final=True,
                   half_corrector=False, corrector_guard=2.0):
    if corrector_guard is not None:
        check_range("corrector_guard", corrector_guard, low=0.0, low_open=True)
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"order must be one of 1, 2, 3, got {order!r}")
    for name, value in (("corrector", corrector), ("predictor_pseudo", predictor_pseudo),
                        ("corrector_pseudo", corrector_pseudo), ("lower_order_final", lower_order_final),
                        ("half_corrector", half_corrector)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")  # noqa: TRY004


def _cumulative_trapezoid(values, lams):
    steps = 0.5 * (lams[1:] - lams[:-1])[:, None] * (values[1:] + values[:-1])
    return jnp.concatenate([jnp.zeros_like(values[:1]), jnp.cumsum(steps, axis=0)], axis=0)


def _lambda_grid(schedule, n_grid, dtype):
    lam_lo = schedule.lambda_(jnp.asarray(schedule.t_max, dtype))
    lam_hi = schedule.lambda_(jnp.asarray(schedule.t_min, dtype))
    return jnp.linspace(lam_lo, lam_hi, n_grid + 1)


def from_arrays(schedule, l, s, b, lams=None, **options) -> V3Statistics:
    r"""Statistics from given arrays (e.g. a closed form, or :math:`l = 1, s = b = 0` for DPM-Solver++).

    ``l``, ``s``, ``b``: (N+1, d) on ``lams`` (N+1,), increasing and uniform, by default the grid
    :func:`fit_v3_statistics` uses: :math:`\lambda(t_{\max})` to :math:`\lambda(t_{\min})` of ``schedule``.
    ``options``: the solver options of :class:`V3Statistics`.
    """
    _check_options(**options)
    l, s, b = (jnp.asarray(a) for a in (l, s, b))
    if l.ndim != 2 or s.shape != l.shape or b.shape != l.shape or l.shape[0] < 3:
        raise ValueError(f"l, s, b must have one shape (N+1, d) with N >= 2, got {l.shape}, {s.shape}, {b.shape}")
    lams = _lambda_grid(schedule, l.shape[0] - 1, l.dtype) if lams is None else jnp.asarray(lams, l.dtype)
    if lams.shape != (l.shape[0],):
        raise ValueError(f"lams must have shape ({l.shape[0]},), got {lams.shape}")
    grid = concrete_value(lams)
    if grid is not None:
        widths = np.diff(grid)
        if not np.all(widths > 0) or np.ptp(widths) > 1e-3 * np.mean(widths):
            raise ValueError("lams must be increasing and uniform")
    for name, a in (("l", l), ("s", s), ("b", b)):
        check_range(name, a)  # finite
    L, S = _cumulative_trapezoid(l, lams), _cumulative_trapezoid(s, lams)
    B = _cumulative_trapezoid(jnp.exp(-S) * b, lams)
    return V3Statistics(lams, l, s, b, L, S, B, schedule, **options)


# -- fitting the statistics --------------------------------------------------------------------------------


def fit_v3_statistics(model_fn, schedule, x_data, key, *, n_grid: int = 400, jacobian: str = "auto",
                      ridge: float = 1e-8, **options) -> V3Statistics:
    r"""Compute DPM-Solver-v3's empirical model statistics of ``model_fn`` (Zheng et al. 2023, eqs. 9-10).

    On ``n_grid + 1`` uniform :math:`\lambda` nodes from :math:`\lambda(t_{\max})` to
    :math:`\lambda(t_{\min})`, with :math:`x_\lambda = \alpha_\lambda x_0 + \sigma_\lambda\varepsilon`
    (the rows of ``x_data`` as :math:`x_0`, one fixed :math:`\varepsilon` per row from ``key``):

    * :math:`l_\lambda = \mathbb E\,\operatorname{diag}(\sigma_\lambda\nabla_x\epsilon_\theta)`, exactly
      (one JVP per dimension) or by Hutchinson's estimator
      :math:`\mathbb E[v \odot (\sigma\nabla_x\epsilon_\theta) v]`, :math:`v` Rademacher;
    * :math:`f = (\sigma\epsilon_\theta - l x)/\alpha` and its derivative along the ODE
      :math:`f^{(1)} = \frac{d}{d\lambda}\big(e^{-\lambda}\epsilon_\theta\big) - \frac{dl}{d\lambda}\frac{x}{\alpha}
      + l e^{-\lambda}\epsilon_\theta` (a JVP with tangent :math:`(dx/d\lambda, 1)`;
      :math:`dl/d\lambda` by forward-mode differentiation of the sample average for :math:`l`);
    * per dimension :math:`s = \mathrm{Cov}(f^{(1)}, f)/(\mathrm{Var} f + \gamma)`,
      :math:`b = \mathbb E f^{(1)} - s\,\mathbb E f`, with the ridge
      :math:`\gamma = \text{ridge}\cdot\mathbb E f^2` (a model whose :math:`f` does not vary, such as a
      single Gaussian's, gets :math:`s = 0`, :math:`b = \mathbb E f^{(1)}`).

    Args:
        model_fn: noise prediction ``model_fn(x, t)`` on a batch ``x`` (n, d), rows independent,
            differentiable in ``x`` and ``t`` (e.g. :func:`~solverlab.diffusion.gmm.model_fn`).
        schedule: the noise schedule (sampling with these statistics needs the same one).
        x_data: (n, d), n >= 2: data points (exact draws, or samples from a many-step sampler, as the
            paper does), a few hundred suffice.
        key: ``jax.random`` key for the noise and the probes.
        n_grid: number of :math:`\lambda` cells, >= 8 (the statistics' resolution).
        jacobian: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact for d <= 16).
        ridge: the relative ridge :math:`\gamma` of the :math:`s` fit, >= 0.
        options: solver options of :class:`V3Statistics` (``order=3``, ``corrector=True``, ...).

    Returns:
        :class:`V3Statistics` for ``samplers.sample(..., method="dpm_solver_v3", fitted=...)``.
    """
    _check_options(**options)
    x_data = jnp.asarray(x_data)
    if x_data.ndim != 2 or x_data.shape[0] < 2:
        raise ValueError(f"x_data must be a (n, d) array with n >= 2, got shape {x_data.shape}")
    check_range("x_data", x_data)
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 8:
        raise ValueError(f"n_grid must be an int in [8, inf), got {n_grid!r}")
    if jacobian not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"jacobian must be one of auto, exact, hutchinson, got {jacobian!r}")
    check_range("ridge", ridge, low=0.0)
    if not jnp.issubdtype(x_data.dtype, jnp.floating):
        x_data = x_data.astype(jnp.result_type(float))
    out = jax.eval_shape(model_fn, x_data, jnp.zeros((), x_data.dtype))
    if out.shape != x_data.shape:
        raise ValueError(f"model_fn must return the shape of x {x_data.shape}, got {out.shape}")
    exact = jacobian == "exact" or (jacobian == "auto" and x_data.shape[1] <= 16)
    lams = _lambda_grid(schedule, int(n_grid), x_data.dtype)
    l, s, b = _fit(model_fn, schedule, x_data, key, lams, jnp.asarray(ridge, x_data.dtype), exact=exact)
    if not bool(jnp.all(jnp.isfinite(l)) & jnp.all(jnp.isfinite(s)) & jnp.all(jnp.isfinite(b))):
        from ..errors import SolverError
        raise SolverError("the DPM-Solver-v3 statistics are not finite; check that model_fn is finite and "
                          "differentiable on the schedule's whole time range")
    return from_arrays(schedule, l, s, b, lams, **options)


@eqx.filter_jit
def _fit(model_fn, schedule, x0, key, lams, ridge, *, exact):
    k_noise, k_probe = jax.random.split(key)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    probes = jax.random.rademacher(k_probe, x0.shape, x0.dtype)

    def point(lam):
        t = schedule.t_of_lambda(lam)
        return t, schedule.alpha(t) * x0 + schedule.sigma(t) * noise

    def l_stat(lam):
        t, x = point(lam)

        def jvp(v):
            return jax.jvp(lambda y: model_fn(y, t), (x,), (v,))[1]

        if exact:
            eye = jnp.eye(x0.shape[1], dtype=x0.dtype)
            diag = jax.lax.map(lambda e: jnp.sum(jvp(jnp.broadcast_to(e, x.shape)) * e, axis=-1), eye).T
        else:
            diag = probes * jvp(probes)
        return schedule.sigma(t) * jnp.mean(diag, axis=0)

    # dl/dlambda of the same sample average, by forward-mode differentiation through x_lambda and t:
    # a finite difference on the grid would be multiplied by x/alpha (~1/alpha at high noise) in f^(1).
    l, dl = jax.lax.map(lambda lam: jax.jvp(l_stat, (lam,), (jnp.ones_like(lam),)), lams)

    def sb_stat(args):
        lam, l_lam, dl_lam = args
        t, x = point(lam)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        eps = model_fn(x, t)
        dlog_alpha = jax.grad(lambda u: schedule.log_alpha(schedule.t_of_lambda(u)))(lam)
        velocity = dlog_alpha * x - sigma * eps  # dx/dlambda of the probability-flow ODE
        scaled = lambda y, u: jnp.exp(-u) * model_fn(y, schedule.t_of_lambda(u))
        d_scaled = jax.jvp(scaled, (x, lam), (velocity, jnp.ones_like(lam)))[1]
        f = (sigma * eps - l_lam * x) / alpha
        f1 = d_scaled - dl_lam * x / alpha + l_lam * jnp.exp(-lam) * eps
        fc, f1c = f - f.mean(0), f1 - f1.mean(0)
        var = jnp.mean(fc**2, axis=0)
        gamma = ridge * jnp.mean(f**2, axis=0) + jnp.finfo(f.dtype).tiny
        s = jnp.mean(fc * f1c, axis=0) / (var + gamma)
        return s, f1.mean(0) - s * f.mean(0)

    s, b = jax.lax.map(sb_stat, (lams, l, dl))
    return l, s, b


# -- the solver --------------------------------------------------------------------------------------------


def step_coefficients(stats: V3Statistics, lam_s, lam_t):
    r"""The integrals of one step from :math:`\lambda_s` to :math:`\lambda_t` (each (d,)):
    ``decay`` :math:`= e^{L_s - L_t}`, ``E`` :math:`= (E_1, E_2, E_3)` with
    :math:`E_k = \int_{\lambda_s}^{\lambda_t} e^{\Phi}(\lambda - \lambda_s)^{k-1}/(k-1)!\,d\lambda`, and
    ``bias`` :math:`= e^{S_s}\int_{\lambda_s}^{\lambda_t} e^{\Phi}(B - B_s)\,d\lambda`, by 16-point
    Gauss-Legendre quadrature of the interpolated statistics."""
    h = lam_t - lam_s
    nodes = lam_s + h * jnp.asarray(_GL_X, stats.lams.dtype)
    L_s, S_s, B_s = stats.L_at(lam_s), stats.S_at(lam_s), stats.B_at(lam_s)
    phi = jax.vmap(lambda u: stats.L_at(u) + stats.S_at(u))(nodes) - (L_s + S_s)  # (Q, d)
    w = (h * jnp.asarray(_GL_W, stats.lams.dtype))[:, None] * jnp.exp(phi)
    du = (nodes - lam_s)[:, None]
    E = (jnp.sum(w, 0), jnp.sum(w * du, 0), jnp.sum(w * du**2, 0) / 2)
    bias = jnp.exp(S_s) * jnp.sum(w * (jax.vmap(stats.B_at)(nodes) - B_s), 0)
    return jnp.exp(L_s - stats.L_at(lam_t)), E, bias


def _g(stats, f, lam_s, lam):
    r""":math:`g` at :math:`\lambda` relative to the expansion point :math:`\lambda_s` (eq. 7)."""
    S_s = stats.S_at(lam_s)
    return jnp.exp(S_s - stats.S_at(lam)) * f - jnp.exp(S_s) * (stats.B_at(lam) - stats.B_at(lam_s))


def _derivatives(g0, g1, g2, lam0, lam1, lam2, k, pseudo):
    r""":math:`g'(\lambda_0), g''(\lambda_0)` from values at up to three points (``k`` used, maybe
    traced): the Taylor fit through them, or (``pseudo``) the divided differences alone."""
    d01 = (g0 - g1) / (lam0 - lam1)
    d12 = (g1 - g2) / (lam1 - lam2)
    d012 = (d01 - d12) / (lam0 - lam2)
    first3 = d01 if pseudo else d01 + (lam0 - lam1) * d012
    d1 = jnp.where(k >= 3, first3, jnp.where(k >= 2, d01, 0.0))
    d2 = jnp.where(k >= 3, 2.0 * d012, 0.0)
    return d1, d2


def _update(stats, schedule, x_s, t_s, lam_s, t_t, f_s, f_1, lam_1, f_2, lam_2, k, pseudo):
    """One step of order ``k`` from (x_s, f_s) at lam_s, using f at lam_1 and lam_2 for g', g''."""
    lam_t = schedule.lambda_(t_t)
    g1, g2 = _g(stats, f_1, lam_s, lam_1), _g(stats, f_2, lam_s, lam_2)
    d1, d2 = _derivatives(f_s, g1, g2, lam_s, lam_1, lam_2, k, pseudo)
    decay, (E1, E2, E3), bias = step_coefficients(stats, lam_s, lam_t)
    alpha_t = schedule.alpha(t_t)
    return alpha_t / schedule.alpha(t_s) * decay * x_s - alpha_t * decay * (E1 * f_s + E2 * d1 + E3 * d2 + bias)


def _check_compatible(stats, schedule, x):
    if stats.schedule != schedule:
        raise ValueError(f"fitted statistics were computed for schedule {stats.schedule!r}, got {schedule!r}")
    if x.shape[-1] != stats.dim:
        raise ValueError(f"x must have shape (..., {stats.dim}) like the fitted statistics, got {x.shape}")


def _dpm_solver_v3(model_fn, schedule, x, grid, evaluations, stats):
    r"""The stepper: predictor of order :math:`\min(\text{order}, i + 1)` (and :math:`\le n - i` with
    ``lower_order_final``); corrector of order one above the previous predictor (at most 3)."""
    _check_compatible(stats, schedule, x)
    dtype = stats.lams.dtype

    def f_of(x, t, lam):
        return (schedule.sigma(t) * model_fn(x, t) - stats.l_at(lam) * x) / schedule.alpha(t)

    def body(i, carry):
        x, x_prev, t_prev, lam_prev, f_prev, lam_prev2, f_prev2, p_prev = carry
        t_s, t_t = grid.t(i), grid.t(i + 1)
        lam_s = schedule.lambda_(t_s)
        f_s = f_of(x, t_s, lam_s)  # the step's one model evaluation
        if stats.corrector:  # redo the last step with f_s as an extra point; f_s itself is kept
            k = jnp.minimum(p_prev + 1, 3)
            x_c = _update(stats, schedule, x_prev, t_prev, lam_prev, t_s, f_prev, f_s, lam_s, f_prev2, lam_prev2,
                          k, stats.corrector_pseudo)
            use = i >= 1
            if stats.corrector_guard is not None:  # skip where exp(-int s) swings too far over the step
                use = use & (jnp.abs(stats.S_at(lam_s) - stats.S_at(lam_prev)) <= stats.corrector_guard)
            if stats.half_corrector:  # the paper's trick for large guidance: correct only the noisy half
                use = use & (t_s > 0.5 * (grid.t(0) + grid.t(grid.n)))
            x = jnp.where(use, x_c, x)
        p = jnp.minimum(stats.order, i + 1)
        if stats.lower_order_final:
            p = jnp.minimum(p, grid.n - i)
        p = jnp.asarray(p, jnp.int32)
        x_new = _update(stats, schedule, x, t_s, lam_s, t_t, f_s, f_prev, lam_prev, f_prev2, lam_prev2, p,
                        stats.predictor_pseudo)
        return x_new, x, t_s, lam_s, f_s, lam_prev, f_prev, p

    t0, lam0 = grid.t(0), grid.lam(0)
    zeros = jnp.zeros(jnp.broadcast_shapes(x.shape, stats.l.shape[-1:]), jnp.result_type(x, dtype))
    # Placeholders the warm-up masks out, chosen finite and distinct so no 0/0 appears.
    carry = (x.astype(zeros.dtype), x.astype(zeros.dtype), t0, lam0 - 1.0, zeros, lam0 - 2.0, zeros,
             jnp.asarray(0, jnp.int32))
    return jax.lax.fori_loop(0, grid.n, body, carry)[0]


samplers.register("dpm_solver_v3", _dpm_solver_v3, 1, fitted=V3Statistics)
