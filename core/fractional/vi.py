r"""Variational inference for an SDE driven by Markov-approximate fractional noise.

Daems, Opper, Crevecoeur & Birdal, "Variational Inference for SDEs Driven by Fractional Noise"
(ICLR 2024), sections 3-4, at teaching scale: one scalar path observed with noise, ``K = 5``
Ornstein-Uhlenbeck processes, a small control network, a few hundred Adam steps.

**Prior.** The fractional noise is replaced by its Markov approximation (MA-fBM, type II),
:math:`\hat B^H_t = \sum_{k=1}^K \omega_k(H)\, Y^k_t` with :math:`dY^k = -\gamma_k Y^k\,dt + dW`,
all driven by *one* Brownian motion :math:`W`, and :math:`\omega(H)` the optimal weights of
:func:`solverlab.fractional.markov.optimal_weights`. The SDE
:math:`dX = -\theta X\,dt + \sigma\,d\hat B^H` is then a Markov system in
:math:`Z = (X, Y^1, \dots, Y^K)`:

.. math::
    dY^k_t = -\gamma_k Y^k_t\,dt + dW_t, \qquad
    dX_t = -\theta X_t\,dt + \sigma \sum_k \omega_k\, dY^k_t, \qquad Z_0 = (x_0, 0).

**Posterior.** A control :math:`u_t = u(t, Z_t, \text{data})` shifts the drift of the driving
Brownian motion, :math:`dW_t \to u_t\,dt + dW_t`, in every :math:`Y^k` at once. Prior and posterior
differ only through that one Brownian motion, so by Girsanov's theorem

.. math::
    \mathrm{KL}(Q \,\|\, P) = \mathbb{E}_Q \Big[ \tfrac12 \int_0^T u_t^2\,dt \Big], \qquad
    \mathrm{ELBO} = \mathbb{E}_Q\Big[\sum_{i=0}^n \log \mathcal N(y_i \mid X_{t_i}, \eta^2)\Big]
    - \mathrm{KL}(Q \,\|\, P) \;\le\; \log p(y_{0:n} \mid H, \sigma, \eta).

The ELBO is estimated by Monte Carlo over a few posterior paths and maximised with Adam over the
control, the Hurst index :math:`H = \mathrm{sigmoid}(h)`, the observation noise :math:`\eta` and
(optionally) :math:`\sigma`. The gradient reaches :math:`H` through :math:`\omega(H)`: the
Brownian increments are fixed, so each path is a smooth function of :math:`H` (reparametrisation).

**The control** is a guiding term plus a network, :math:`u = u_{\text{guide}} + u_\phi`:

* :math:`u_{\text{guide}}` is the exact posterior mean of the next Brownian increment given only
  the *next* observation :math:`y_+`, for the discretised linear prior (a guided proposal,
  Schauer, van der Meulen & van Zanten, Bernoulli 2017; see :func:`guide_tables`). It makes the
  posterior sensible from the first Adam step; it depends on :math:`H`, and the ELBO stays a
  valid bound because KL is :math:`\tfrac12\int u^2` for *any* adapted control;
* :math:`u_\phi`, an equinox MLP (last layer zero at the start), reads
  :math:`(t/T,\ X_t,\ (y_+ - X_t)/\sqrt\Delta,\ \tau,\ Y_t)` with :math:`\tau` the fraction of the
  observation interval :math:`\Delta` still to go, and learns what the guide misses (the
  observations after the next one, the memory in :math:`Y`). The paper conditions its control on
  the data through an encoder; at this scale the next observation is enough context.

**Solver.** Euler-Maruyama on the uniform observation grid refined ``substeps`` times, as one
``lax.scan`` over steps with all paths in a batch; the increments come from
:class:`solverlab.brownian.BrownianGrid`. We do not call :func:`solverlab.sde.solve`: the control
reads the observations, and reverse-mode gradients through a plain fixed-step scan are the cheapest
we can get on a CPU (``solve`` walks a Brownian tree, :math:`O(\log 1/\Delta t)` work per query).
The step must be fine: a control that is constant over a step shifts that step's increment but
cannot shrink its variance, so a posterior path always carries the prior's last-step variance
:math:`\sigma^2(\sum_k\omega_k)^2\Delta t` into each observation. When that is not small next to
:math:`\eta^2` the ELBO pays for it, more for rough :math:`H` (large :math:`\sum_k \omega_k`),
and the fitted :math:`\eta` grows and :math:`H` is pulled upwards. Hence ``substeps = 16`` by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..brownian import BrownianGrid
from ..errors import check_range, concrete_value
from .markov import check_K, optimal_weights, speeds

__all__ = [
    "ELBO",
    "Context",
    "FitResult",
    "FractionalVI",
    "Paths",
    "elbo",
    "fit",
    "guide_tables",
    "make_model",
    "posterior_paths",
    "sample_paths",
    "simulate",
]

_N_FEATURES = 4  # t/T, x, (y_next - x)/sqrt(interval), tau; then the K OU states


class Context(NamedTuple):
    """What a control sees besides ``(t, x, y)``: the next observation ``target``, the number of
    Euler steps ``steps_left`` (1 to ``substeps``) until it, and ``substeps`` and ``interval``
    (the observation spacing :math:`\\Delta`)."""

    target: jax.Array
    steps_left: jax.Array
    substeps: int
    interval: jax.Array


class Paths(NamedTuple):
    r"""Paths of the augmented system on the solver grid of ``m = n * substeps`` steps.

    ``x``: ``(n_paths, m + 1)``; ``y``: ``(n_paths, m + 1, K)``; ``u``: ``(n_paths, m)`` the control
    on each step; ``kl``: ``(n_paths,)`` the Girsanov term :math:`\tfrac12 \sum_j u_j^2 \Delta t`.
    """

    x: jax.Array
    y: jax.Array
    u: jax.Array
    kl: jax.Array


class ELBO(NamedTuple):
    """Monte Carlo ELBO (mean over paths) and its two terms: ``value = log_likelihood - kl``."""

    value: jax.Array
    log_likelihood: jax.Array
    kl: jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` learned: the final model and one entry per Adam step in each history
    (the ELBO entries are single-batch Monte Carlo estimates, so they are noisy)."""

    model: FractionalVI
    hurst_history: jax.Array
    elbo_history: jax.Array
    noise_history: jax.Array
    sigma_history: jax.Array


class FractionalVI(eqx.Module):
    r"""Prior parameters and posterior control of the variational model (an equinox module).

    Trainable: ``hurst_logit`` (:math:`H = \mathrm{sigmoid}`), ``log_noise`` (:math:`\eta`),
    ``log_sigma`` (:math:`\sigma`, only with ``learn_sigma``) and the control MLP ``net``.
    Static: the OU speeds ``gammas`` (length K), the mean reversion ``theta``, the start ``x0``,
    whether to ``guide``. Build it with :func:`make_model`.
    """

    hurst_logit: jax.Array
    log_noise: jax.Array
    log_sigma: jax.Array
    net: eqx.nn.MLP
    gammas: tuple = eqx.field(static=True)
    theta: float = eqx.field(static=True)
    x0: float = eqx.field(static=True)
    learn_sigma: bool = eqx.field(static=True)
    guide: bool = eqx.field(static=True)

    @property
    def hurst(self) -> jax.Array:
        return jax.nn.sigmoid(self.hurst_logit)

    @property
    def noise(self) -> jax.Array:
        return jnp.exp(self.log_noise)

    @property
    def sigma(self) -> jax.Array:
        # A fixed sigma gets a zero gradient, so Adam leaves it where it is.
        log_sigma = self.log_sigma if self.learn_sigma else jax.lax.stop_gradient(self.log_sigma)
        return jnp.exp(log_sigma)

    @property
    def K(self) -> int:
        return len(self.gammas)

    def weights(self, T) -> jax.Array:
        r""":math:`\omega^*(H)` for the horizon ``T``, shape (K,)."""
        return optimal_weights(self.hurst, jnp.asarray(self.gammas, self.log_noise.dtype), T)

    def net_control(self, t, x, y, context: Context, T) -> jax.Array:
        r"""The network's part :math:`u_\phi` for one path (``t``, ``x`` scalars, ``y`` (K,))."""
        root = jnp.sqrt(context.interval)
        tau = context.steps_left / context.substeps
        head = jnp.stack([t / T, x, (context.target - x) / root, tau]).astype(y.dtype)
        # Divided by sqrt(interval): a Brownian step between observations has that size, so the
        # network's outputs stay O(1) whatever the grid.
        return self.net(jnp.concatenate([head, y])) / root


def make_model(
    key,
    *,
    K: int = 5,
    gamma_max: float = 20.0,
    hurst: float = 0.5,
    noise: float = 0.1,
    sigma: float = 1.0,
    theta: float = 0.0,
    x0: float = 0.0,
    learn_sigma: bool = False,
    guide: bool = True,
    width: int = 32,
    depth: int = 2,
) -> FractionalVI:
    r"""A :class:`FractionalVI` with initial :math:`H`, :math:`\eta`, :math:`\sigma` and a fresh network.

    The OU speeds are :math:`\gamma_k = r^{k - (K+1)/2}`, :math:`\max_k \gamma_k =` ``gamma_max``
    (:func:`solverlab.fractional.markov.speeds`). The network's last layer starts at zero, so
    training starts from the guided proposal (or from :math:`u = 0`, the prior, with ``guide=False``).

    Args:
        key: ``jax.random`` key for the network's weights.
        K: number of OU processes, ``K >= 1``; gamma_max: fastest speed, ``> 0``.
        hurst: initial Hurst index in (0, 1); noise, sigma: initial :math:`\eta > 0`, :math:`\sigma > 0`.
        theta: mean reversion :math:`\theta \ge 0` of the prior (0: MA-fBM scaled by :math:`\sigma`).
        x0: the known start :math:`X_0`.
        learn_sigma: also learn :math:`\sigma`; guide: add the guiding term to the control.
        width, depth: hidden width (``>= 1``) and number of hidden layers (``>= 0``) of the network.
    """
    K = check_K(K)
    _check_int("width", width, 1)
    _check_int("depth", depth, 0)
    check_range("gamma_max", gamma_max, low=0.0, low_open=True)
    check_range("hurst", hurst, low=0.0, high=1.0, low_open=True, high_open=True)
    check_range("noise", noise, low=0.0, low_open=True)
    check_range("sigma", sigma, low=0.0, low_open=True)
    check_range("theta", theta, low=0.0)
    check_range("x0", x0)
    dtype = jnp.result_type(float)
    gammas = tuple(float(g) for g in np.asarray(speeds(K, gamma_max)))
    net = eqx.nn.MLP(_N_FEATURES + K, "scalar", width, depth, activation=jnp.tanh, key=key)
    last = net.layers[-1]
    net = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), net,
                      (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
    return FractionalVI(
        hurst_logit=jnp.asarray(np.log(hurst) - np.log1p(-hurst), dtype),
        log_noise=jnp.log(jnp.asarray(noise, dtype)),
        log_sigma=jnp.log(jnp.asarray(sigma, dtype)),
        net=net,
        gammas=gammas,
        theta=float(theta),
        x0=float(x0),
        learn_sigma=bool(learn_sigma),
        guide=bool(guide),
    )


def guide_tables(weights, gammas, sigma, theta, dt, substeps: int):
    r"""What the guiding control needs, for each number :math:`j` of Euler steps left to the next
    observation.

    One Euler step is :math:`Z' = F Z + g\,(u\,\Delta t + \Delta W)` with
    :math:`F = I + M\Delta t`, :math:`M = \begin{pmatrix} -\theta & -\sigma (\omega\gamma)^\top \\
    0 & -\operatorname{diag}\gamma \end{pmatrix}`, :math:`g = (\sigma \sum_k \omega_k, 1, \dots, 1)`.
    With :math:`r_j = e_0^\top F^j` (the prior mean of :math:`X` :math:`j` steps ahead is
    :math:`r_j Z`), :math:`c_j = r_{j-1} g` and :math:`V_j = \sum_{i=1}^j c_i^2 \Delta t` (its
    variance), the posterior mean of :math:`\Delta W` given the next observation :math:`y_+`
    alone is :math:`u\,\Delta t` with

    .. math::
        u_{\text{guide}} = \frac{c_j\,(y_+ - r_j Z)}{V_j + \eta^2}

    (Schauer, van der Meulen & van Zanten 2017, in discrete time).

    Args:
        weights, gammas: shape (K,); sigma, theta: prior scale and mean reversion; dt: Euler step.
        substeps: Euler steps per observation interval (static).

    Returns:
        ``(r, c, V)`` of shapes ``(substeps + 1, K + 1)``, ``(substeps + 1,)``, ``(substeps + 1,)``,
        indexed by :math:`j = 0, \dots,` ``substeps`` (entry 0 of ``c`` is unused, 0).
    """
    K = gammas.shape[0]
    dtype = weights.dtype
    F = jnp.zeros((K + 1, K + 1), dtype)
    F = F.at[0, 0].set(1.0 - theta * dt)
    F = F.at[0, 1:].set(-sigma * weights * gammas * dt)
    F = F.at[1:, 1:].set(jnp.diag(1.0 - gammas * dt))
    g = jnp.concatenate([jnp.reshape(sigma * jnp.sum(weights), (1,)), jnp.ones(K, dtype)])

    def ahead(r, _):
        return r @ F, (r @ F, r @ g)

    r0 = jnp.zeros(K + 1, dtype).at[0].set(1.0)
    _, (rs, cs) = jax.lax.scan(ahead, r0, None, length=substeps)
    r = jnp.concatenate([r0[None], rs])
    c = jnp.concatenate([jnp.zeros(1, dtype), cs])
    V = jnp.cumsum(c**2) * dt
    return r, c, V


def sample_paths(
    key,
    T,
    n: int,
    *,
    hurst,
    gammas,
    sigma=1.0,
    theta=0.0,
    x0=0.0,
    control: Callable | None = None,
    observations=None,
    n_paths: int = 1,
    substeps: int = 1,
) -> Paths:
    r"""Euler-Maruyama paths of the augmented system, prior (``control=None``) or controlled.

    On :math:`t_j = j\,\Delta t`, :math:`\Delta t = T / (n \cdot \text{substeps})`, with
    :math:`\Delta W_j \sim N(0, \Delta t)` from :class:`~solverlab.brownian.BrownianGrid`:

    .. math::
        \Delta Y^k_j = (-\gamma_k Y^k_j + u_j)\,\Delta t + \Delta W_j, \qquad
        X_{j+1} = X_j - \theta X_j \Delta t + \sigma \sum_k \omega_k(H)\, \Delta Y^k_j,

    from :math:`Y_0 = 0` (type II), and :math:`\mathrm{KL} = \tfrac12 \sum_j u_j^2 \Delta t`, the
    left-point rule for :math:`\tfrac12\int_0^T u_t^2\,dt` (Daems et al. 2024, section 4).

    Args:
        key: ``jax.random`` key; the same key gives the same :math:`\Delta W` whatever the control.
        T: horizon, ``T > 0``; n: number of observation intervals, ``>= 1`` (static).
        hurst: in (0, 1), may be traced; gammas: OU speeds, shape (K,).
        sigma, theta, x0: prior scale, mean reversion and start.
        control: ``control(t, x, y, context) -> u`` for one path (``t``, ``x`` scalars, ``y`` of
            shape (K,), ``context`` a :class:`Context`), or None for :math:`u = 0` (the prior).
        observations: shape (n + 1,), the ``target`` of the context; zeros when None.
        n_paths, substeps: paths in the batch and Euler steps per observation interval (static).

    Returns:
        :class:`Paths` on the ``n * substeps + 1`` solver times.
    """
    n = _check_int("n", n, 1)
    n_paths = _check_int("n_paths", n_paths, 1)
    substeps = _check_int("substeps", substeps, 1)
    check_range("T", T, low=0.0, low_open=True)
    check_range("hurst", hurst, low=0.0, high=1.0, low_open=True, high_open=True)
    check_range("sigma", sigma, low=0.0, low_open=True)
    check_range("theta", theta, low=0.0)
    dtype = jnp.result_type(float)
    gammas = jnp.asarray(gammas, dtype)
    if observations is None:
        observations = jnp.zeros(n + 1, dtype)
    observations = jnp.asarray(observations, dtype)
    if observations.shape != (n + 1,):
        raise ValueError(f"observations must have shape ({n + 1},) (n + 1), got {observations.shape}")
    speeds_now, horizon = concrete_value(gammas), concrete_value(T)
    if speeds_now is not None and horizon is not None:  # the fastest OU term sets Euler's stability
        _check_stable(float(np.max(speeds_now)), float(horizon) / (n * substeps))
    weights = optimal_weights(hurst, gammas, T)  # compiled once in markov, outside our trace
    # Traced numbers (a new hurst or sigma never recompiles); shapes and the control are static.
    numbers = [jnp.asarray(v, dtype) for v in (sigma, theta, x0, T)]
    return _sample(key, control, observations, weights, gammas, *numbers, n_paths, substeps)


@eqx.filter_jit
def _sample(key, control, observations, weights, gammas, sigma, theta, x0, T, n_paths, substeps):
    m = (observations.shape[0] - 1) * substeps
    dw = BrownianGrid(0.0, T, m, (n_paths,), key).increments().W
    return _euler(control, observations, weights, gammas, sigma, theta, x0, T, substeps, dw)


def _euler(control, observations, weights, gammas, sigma, theta, x0, T, substeps, dw) -> Paths:
    """The Euler-Maruyama scan behind :func:`sample_paths`; ``dw`` has shape ``(m, n_paths)``."""
    m, n_paths = dw.shape
    dtype = dw.dtype
    dt = T / m
    interval = jnp.asarray(T * substeps / m, dtype)
    if control is None:
        batch_u = None
    else:
        batch_u = jax.vmap(control, in_axes=(None, 0, 0, None))

    def step(carry, inputs):
        x, y = carry
        j, dw_j = inputs
        t = j * dt
        steps_left = substeps - j % substeps
        context = Context(observations[j // substeps + 1], steps_left, substeps, interval)
        u = jnp.zeros_like(x) if batch_u is None else batch_u(t, x, y, context)
        dy = (-gammas * y + u[:, None]) * dt + dw_j[:, None]
        x = x - theta * x * dt + sigma * (dy @ weights)
        y = y + dy
        return (x, y), (x, y, u)

    x_init = jnp.full((n_paths,), x0, dtype)
    y_init = jnp.zeros((n_paths, gammas.shape[0]), dtype)
    _, (xs, ys, us) = jax.lax.scan(step, (x_init, y_init), (jnp.arange(m), dw))
    x = jnp.concatenate([x_init[None], xs]).T
    y = jnp.concatenate([y_init[None], ys]).transpose(1, 0, 2)
    u = us.T
    return Paths(x=x, y=y, u=u, kl=0.5 * jnp.sum(u**2, axis=1) * dt)


def elbo(model: FractionalVI, key, ts, observations, *, n_paths: int = 8, substeps: int = 16) -> ELBO:
    r"""Monte Carlo ELBO of ``model`` for ``observations`` at the uniform times ``ts``.

    .. math::
        \widehat{\mathrm{ELBO}} = \frac1P \sum_{p=1}^P \Big[\sum_{i=0}^n
        \log \mathcal N\big(y_i \mid X^{(p)}_{t_i}, \eta^2\big)
        - \tfrac12 \sum_j \big(u^{(p)}_j\big)^2 \Delta t \Big]

    over ``P = n_paths`` posterior paths (Daems et al. 2024, section 4).

    Args:
        model: a :class:`FractionalVI`; key: ``jax.random`` key.
        ts: shape (n + 1,), uniform from 0; observations: shape (n + 1,).
        n_paths, substeps: Monte Carlo paths and Euler steps per observation interval.
    """
    if not isinstance(model, FractionalVI):
        raise ValueError(f"model must be a FractionalVI (see make_model), got {type(model).__name__}")
    T, n = _check_data(ts, observations)
    n_paths = _check_int("n_paths", n_paths, 1)
    substeps = _check_int("substeps", substeps, 1)
    observations = jnp.asarray(observations, jnp.result_type(float))
    return _elbo(model, key, observations, T, n, n_paths, substeps)


def posterior_paths(model: FractionalVI, key, ts, observations, *, n_paths: int = 8,
                    substeps: int = 16) -> Paths:
    r"""Paths of the posterior :math:`Q` (the controlled system) behind :func:`elbo`, e.g. to plot.

    Same arguments as :func:`elbo`; returns :class:`Paths` on the ``n * substeps + 1`` solver times
    (the observation times are every ``substeps``-th).
    """
    if not isinstance(model, FractionalVI):
        raise ValueError(f"model must be a FractionalVI (see make_model), got {type(model).__name__}")
    T, n = _check_data(ts, observations)
    n_paths = _check_int("n_paths", n_paths, 1)
    substeps = _check_int("substeps", substeps, 1)
    observations = jnp.asarray(observations, jnp.result_type(float))
    return _posterior(model, key, observations, T, n, n_paths, substeps)


@eqx.filter_jit
def _posterior(model: FractionalVI, key, observations, T, n, n_paths, substeps) -> Paths:
    dtype = observations.dtype
    m = n * substeps
    dt = T / m
    gammas = jnp.asarray(model.gammas, dtype)
    weights, sigma, eta = model.weights(T), model.sigma, model.noise
    r, c, V = guide_tables(weights, gammas, sigma, model.theta, dt, substeps)

    def control(t, x, y, context):
        u = model.net_control(t, x, y, context, T)
        if model.guide:
            j = context.steps_left
            predicted = r[j, 0] * x + r[j, 1:] @ y
            u = u + c[j] * (context.target - predicted) / (V[j] + eta**2)
        return u

    dw = BrownianGrid(0.0, T, m, (n_paths,), key).increments().W
    return _euler(control, observations, weights, gammas, sigma, model.theta, model.x0, T,
                  substeps, dw)


@eqx.filter_jit
def _elbo(model: FractionalVI, key, observations, T, n, n_paths, substeps) -> ELBO:
    paths = _posterior(model, key, observations, T, n, n_paths, substeps)
    eta = model.noise
    resid = (observations - paths.x[:, ::substeps]) / eta
    log_lik = jnp.sum(-0.5 * resid**2 - jnp.log(eta) - 0.5 * jnp.log(2 * jnp.pi), axis=1)
    ll, kl = jnp.mean(log_lik), jnp.mean(paths.kl)
    return ELBO(value=ll - kl, log_likelihood=ll, kl=kl)


def fit(
    key,
    ts,
    observations,
    *,
    K: int = 5,
    gamma_max: float = 20.0,
    hurst0: float = 0.5,
    noise0: float = 0.1,
    sigma: float = 1.0,
    theta: float = 0.0,
    learn_sigma: bool = False,
    guide: bool = True,
    steps: int = 300,
    learning_rate: float = 0.1,
    n_paths: int = 8,
    substeps: int = 16,
    width: int = 32,
    depth: int = 2,
) -> FitResult:
    r"""Learn :math:`H` (and :math:`\eta`, optionally :math:`\sigma`) by maximising the ELBO with Adam.

    Each step draws fresh Brownian increments (``fold_in(key, step)``) and takes one Adam step on
    :math:`-\widehat{\mathrm{ELBO}}`, the step size decaying from ``learning_rate`` to a tenth of
    it along a cosine; all steps run in one jitted ``lax.scan`` (one compilation).

    Args:
        key: ``jax.random`` key (network init and every step's paths).
        ts: shape (n + 1,), uniform from 0 to T; observations: shape (n + 1,), :math:`y_i` at ``ts``.
        K, gamma_max: the MA-fBM (see :func:`make_model`); hurst0, noise0, sigma: starting values.
        theta: prior mean reversion; learn_sigma: also learn :math:`\sigma`; guide: see the module.
        steps: Adam steps, ``>= 1``; learning_rate: the first (largest) step size, ``> 0``.
        n_paths, substeps: Monte Carlo paths per step, Euler steps per observation interval
            (``gamma_max * T / (n * substeps) < 1``, else the Euler step is unstable).
        width, depth: network size.

    Returns:
        :class:`FitResult` with the trained model and per-step histories.
    """
    T, n = _check_data(ts, observations)
    steps = _check_int("steps", steps, 1)
    n_paths = _check_int("n_paths", n_paths, 1)
    substeps = _check_int("substeps", substeps, 1)
    check_range("learning_rate", learning_rate, low=0.0, low_open=True)
    check_range("hurst0", hurst0, low=0.0, high=1.0, low_open=True, high_open=True)
    check_range("noise0", noise0, low=0.0, low_open=True)
    check_range("gamma_max", gamma_max, low=0.0, low_open=True)
    _check_stable(gamma_max, T / (n * substeps))
    k_model, k_train = jax.random.split(key)
    model = make_model(
        k_model, K=K, gamma_max=gamma_max, hurst=hurst0, noise=noise0, sigma=sigma, theta=theta,
        learn_sigma=learn_sigma, guide=guide, width=width, depth=depth,
    )
    dtype = jnp.result_type(float)
    observations = jnp.asarray(observations, dtype)
    return _train(model, k_train, observations, T, n, steps, jnp.asarray(learning_rate, dtype),
                  n_paths, substeps)


@eqx.filter_jit
def _train(model, key, observations, T, n, steps, learning_rate, n_paths, substeps) -> FitResult:
    # Compiled once per shape (n, steps, n_paths, substeps, K, network size): a new data set,
    # start or learning rate reuses it.
    # A cosine decay to a tenth: big early steps carry H across (0, 1) quickly, small late ones
    # let the noisy Monte Carlo gradients settle.
    optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.1))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, k):
        return -_elbo(eqx.combine(p, static), k, observations, T, n, n_paths, substeps).value

    def step(carry, i):
        p, opt_state = carry
        value, grads = jax.value_and_grad(loss)(p, jax.random.fold_in(key, i))
        updates, opt_state = optimiser.update(grads, opt_state, p)
        p = optax.apply_updates(p, updates)
        new = eqx.combine(p, static)
        return (p, opt_state), (-value, new.hurst, new.noise, new.sigma)

    carry = (params, optimiser.init(params))
    (params, _), (elbos, hursts, noises, sigmas) = jax.lax.scan(step, carry, jnp.arange(steps))
    return FitResult(eqx.combine(params, static), hursts, elbos, noises, sigmas)


def simulate(
    key,
    n: int,
    hurst,
    *,
    T=1.0,
    sigma=1.0,
    theta=0.0,
    x0=0.0,
    noise=0.1,
    K: int = 5,
    gamma_max: float = 20.0,
    substeps: int = 32,
):
    r"""One path of the prior SDE and its noisy observations, for a VI experiment.

    Simulates :math:`dX = -\theta X\,dt + \sigma\,d\hat B^H` (the MA-fBM of ``K`` OU processes,
    speeds up to ``gamma_max``) by Euler-Maruyama with ``substeps`` steps per interval, and
    returns :math:`y_i = X_{t_i} + \eta\,\varepsilon_i`, :math:`\varepsilon_i \sim N(0, 1)` on
    :math:`t_i = i T / n`. With the same ``K`` and ``gamma_max`` as the fit, the model is well
    specified (up to the Euler step).

    Returns:
        ``(ts, x, y)``, each of shape (n + 1,).
    """
    n = _check_int("n", n, 1)
    substeps = _check_int("substeps", substeps, 1)
    check_range("noise", noise, low=0.0, low_open=True)
    k_path, k_noise = jax.random.split(key)
    gammas = speeds(K, gamma_max)
    paths = sample_paths(k_path, T, n, hurst=hurst, gammas=gammas, sigma=sigma, theta=theta,
                         x0=x0, substeps=substeps)
    x = paths.x[0, ::substeps]
    y = x + noise * jax.random.normal(k_noise, x.shape, x.dtype)
    ts = jnp.linspace(0.0, T, n + 1, dtype=x.dtype)
    return ts, x, y


# Argument checks (at the Python boundary, before tracing) ---------------------------------------


def _check_int(name, value, low) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer in [{low}, inf), got {value!r}")
    return int(value)


def _check_stable(gamma_max, dt) -> None:
    g = concrete_value(gamma_max)
    if g is not None and float(g) * dt >= 1.0:
        raise ValueError(
            f"gamma_max * dt must lie in (0, 1) for a stable Euler step, got gamma_max = "
            f"{float(g):g}, dt = {dt:g} (product {float(g) * dt:g}): raise substeps or lower gamma_max"
        )


def _check_data(ts, observations):
    """Uniform ``ts`` from 0 and matching ``observations``; returns ``(T, n)`` as Python numbers."""
    ts_np = concrete_value(ts)
    if ts_np is None:
        raise ValueError("ts must be a concrete array (the grid sets shapes), got a traced value")
    if ts_np.ndim != 1 or ts_np.size < 2:
        raise ValueError(f"ts must have shape (n + 1,) with n >= 1, got shape {ts_np.shape}")
    if np.shape(observations) != ts_np.shape:
        raise ValueError(
            f"observations must have the shape of ts {ts_np.shape}, got {np.shape(observations)}"
        )
    check_range("ts", ts_np)
    check_range("observations", observations)
    n = ts_np.size - 1
    T = float(ts_np[-1])
    if ts_np[0] != 0.0 or T <= 0.0:
        raise ValueError(f"ts must run from 0 to T > 0, got ts[0] = {ts_np[0]:g}, ts[-1] = {T:g}")
    if not np.allclose(np.diff(ts_np), T / n, rtol=1e-4, atol=0.0):
        raise ValueError(f"ts must be uniform (t_i = i T / n), got steps from "
                         f"{np.diff(ts_np).min():g} to {np.diff(ts_np).max():g}")
    return T, n
