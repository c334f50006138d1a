r"""Kinetic (underdamped) Langevin dynamics: splittings and high-order solvers on one Brownian path.

The SDE (unit mass and temperature, friction :math:`\gamma > 0`), whose invariant law is
:math:`\pi(x)\,N(v; 0, I)`:

.. math::
    dX_t = V_t\,dt, \qquad dV_t = -\gamma V_t\,dt + \nabla\log\pi(X_t)\,dt + \sqrt{2\gamma}\,dW_t .

Notation for one step of length :math:`h`: :math:`\alpha = \gamma h`, :math:`\beta = e^{-\alpha}`,
:math:`\rho = \sqrt{2\gamma}`, :math:`g = \nabla\log\pi`, and :math:`(W, H, K)` the Brownian increment
and its space-time(-time) Levy areas over the step (conventions of :mod:`solverlab.brownian`). With
:math:`m_k(\alpha) = \int_0^1 y^k e^{-\alpha y}\,dy` the deterministic kernels are
:math:`a_1 = \int_0^h e^{-\gamma s}ds = h\,m_0` and :math:`b_1 = \frac1h\int_0^h\!\int_0^s e^{-\gamma r}dr\,ds = h(m_0 - m_1)`.
The free (:math:`g = 0`) Ornstein-Uhlenbeck step is Gaussian in the path,
:math:`V_h = \beta V_0 + \rho\int_0^h e^{-\gamma(h-r)}dW_r`; the solvers use its projection on
:math:`(W, H, K)` (the conditional expectation given what the tree knows), with the
shifted-Legendre coefficients

.. math::
    \int_0^h e^{-\gamma(h-r)}dW_r \approx m_0 W - 6(m_0 - 2m_1) H + 60(6m_2 - 6m_1 + m_0) K, \\
    \int_0^h \tfrac{1 - e^{-\gamma(h-r)}}{\gamma}dW_r \approx b_1 W + \tfrac6\gamma(m_0 - 2m_1) H
      - \tfrac{60}\gamma(6m_2 - 6m_1 + m_0) K .

In *sampling* mode (:func:`kinetic_langevin`) the increments are fresh Gaussians with the exact law,
and the O steps of BAOAB/OBABO add an independent normal for the part of the OU integral orthogonal
to :math:`(W, H, K)`, so the O step is exact in law at any :math:`\alpha`. On a *given path*
(:func:`kinetic_solve`, a :class:`~solverlab.brownian.BrownianTree`) that remainder is set to its
conditional mean, zero. The kernels are evaluated by their Taylor series for :math:`\alpha < 2`
(no cancellation as :math:`\gamma h \to 0`) and in closed form above.

Solvers (``grad_evals`` per step, the gradient at the current point being cached):

* :class:`KineticEuler` -- Euler-Maruyama, strong order 1 (additive noise), 1 gradient.
* :class:`BAOAB` -- Leimkuhler & Matthews (2013), 1 gradient; exact configurational law on Gaussians.
* :class:`OBABO` -- the symmetric splitting with the O step at both ends (Bussi & Parrinello 2007), 1 gradient.
* :class:`ALIGN` -- Foster's second-order method with an embedded error estimate (uses W, H), 1 gradient;
  Foster, Lyons & Oberhauser (2021), Definition 4.2 (modified); adaptive steps with
  :class:`solverlab.sde.PIController` on the tree (Jelincic, Foster & Kidger 2024).
* :class:`ShOULD` -- the shifted ODE method, third order (uses W, H, K), 2 gradients;
  Foster, Lyons & Oberhauser (2021), "The shifted ODE method for underdamped Langevin MCMC",
  Definition 7.1, as used with the Brownian tree by Jelincic, Foster & Kidger (2024).

``step`` and ``friction`` are traced (a new value does not recompile); ``n_steps``, ``warmup``,
``thin``, the solver and ``log_density`` are static.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..brownian import BrownianTree
from ..brownian._args import component_scale
from ..errors import SolverError, check_range, concrete_value
from ..sde import RESULTS, AbstractController
from . import _checks
from ._checks import Samples
from .overdamped import _sample_loop

__all__ = [
    "KineticSolver",
    "KineticEuler",
    "BAOAB",
    "OBABO",
    "ALIGN",
    "ShOULD",
    "SOLVERS",
    "KineticPath",
    "kinetic_langevin",
    "kinetic_solve",
]


# ---------------------------------------------------------------- kernels m_k(alpha) and friends

_N_TERMS = 32
_SERIES_BELOW = 2.0


def _coeffs(term):
    """Power-series coefficients (highest power first, for ``polyval``) from ``term(n)``."""
    return np.array([term(n) for n in range(_N_TERMS)][::-1], dtype=np.float64)


_FACT = [math.factorial(n) for n in range(_N_TERMS + 3)]
# m_k = sum_n (-a)^n / (n! (n + k + 1))
_M = [_coeffs(lambda n, k=k: (-1) ** n / (_FACT[n] * (n + k + 1))) for k in range(3)]
# q1 = (m0 - 2 m1) / a = sum_{n>=1} (-1)^(n+1) n a^(n-1) / (n! (n+1)(n+2))
_Q1 = _coeffs(lambda n: (-1) ** n * (n + 1) / (_FACT[n + 1] * (n + 2) * (n + 3)))
# q2 = (6 m2 - 6 m1 + m0) / a^2 = sum_{n>=2} (-1)^n n (n-1) a^(n-2) / (n! (n+1)(n+2)(n+3))
_Q2 = _coeffs(lambda n: (-1) ** n * (n + 2) * (n + 1) / (_FACT[n + 2] * (n + 3) * (n + 4) * (n + 5)))


class _Kernels(NamedTuple):
    beta: jax.Array
    m0: jax.Array
    m1: jax.Array
    q1: jax.Array
    q2: jax.Array


def _kernels(alpha) -> _Kernels:
    """:math:`e^{-\alpha}, m_0, m_1, (m_0 - 2m_1)/\alpha, (6m_2 - 6m_1 + m_0)/\alpha^2`, accurate for all alpha >= 0."""
    small = alpha < _SERIES_BELOW
    a_s = jnp.where(small, alpha, 0.0)

    def poly(c):
        return jnp.polyval(jnp.asarray(c, alpha.dtype), a_s)

    series = (poly(_M[0]), poly(_M[1]), poly(_Q1), poly(_Q2))
    a = jnp.where(small, _SERIES_BELOW, alpha)  # the closed form only where it is accurate
    e = jnp.exp(-a)
    m0 = -jnp.expm1(-a) / a
    m1 = (m0 - e) / a
    m2 = (2.0 * m1 - e) / a
    closed = (m0, m1, (m0 - 2.0 * m1) / a, (6.0 * m2 - 6.0 * m1 + m0) / (a * a))
    m0, m1, q1, q2 = (jnp.where(small, s, c) for s, c in zip(series, closed))
    return _Kernels(jnp.exp(-alpha), m0, m1, q1, q2)


class StepNoise(NamedTuple):
    """Noise of one step: ``W`` (and ``H``, ``K``) over each sub-interval, axis 0 the sub-interval;
    ``z``: standard normals for the O steps' remainder (zero on a given path)."""

    W: jax.Array
    H: jax.Array | None
    K: jax.Array | None
    z: jax.Array


def _ou_noise(h, gamma, noise: StepNoise, i: int):
    r""":math:`\sqrt{2\gamma}\int e^{-\gamma(h-r)}dW_r` over sub-interval ``i`` (of length ``h``):
    its projection on (W, H, K) plus the orthogonal remainder times ``z`` (exact in law)."""
    alpha = gamma * h
    k = _kernels(alpha)
    mean = k.m0 * noise.W[i]
    explained = k.m0 * k.m0
    if noise.H is not None:
        mean = mean - 6.0 * alpha * k.q1 * noise.H[i]
        explained = explained + 3.0 * (alpha * k.q1) ** 2
    if noise.K is not None:
        mean = mean + 60.0 * alpha * alpha * k.q2 * noise.K[i]
        explained = explained + 5.0 * (alpha * alpha * k.q2) ** 2
    total = _kernels(2.0 * alpha).m0  # variance of the integral / h
    remainder = jnp.sqrt(h * jnp.maximum(total - explained, 0.0))
    return jnp.sqrt(2.0 * gamma) * (mean + remainder * noise.z[i])


# ---------------------------------------------------------------- solvers


@dataclasses.dataclass(frozen=True)
class KineticSolver:
    """One step of kinetic Langevin from ``(x, v)`` with ``g = grad log pi(x)`` cached.

    Class attributes: ``nodes`` (fractions of the step bounding the sub-intervals whose noise the
    step uses), ``levy_area`` (what it needs of the path: ``None``, ``"space-time"``,
    ``"space-time-time"``), ``grad_evals`` (gradient evaluations per step), ``strong_order``,
    ``error_estimate``.

    ``step(grad, x, v, g, h, gamma, noise)`` returns ``(x1, v1, g1, v_error)``; ``g1`` is the gradient
    at ``x1``; ``v_error`` is the embedded estimate of the error in ``v`` (or ``None``).
    """

    name: ClassVar[str] = "kinetic"
    nodes: ClassVar[tuple[float, ...]] = (0.0, 1.0)
    levy_area: ClassVar[str | None] = None
    grad_evals: ClassVar[int] = 1
    strong_order: ClassVar[float] = 1.0
    error_estimate: ClassVar[bool] = False

    def step(self, grad, x, v, g, h, gamma, noise: StepNoise):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class KineticEuler(KineticSolver):
    r"""Euler-Maruyama: :math:`X_1 = X_0 + hV_0`, :math:`V_1 = V_0 + h(g(X_0) - \gamma V_0) + \sqrt{2\gamma}\,W`.

    Strong order 1 (additive noise; Kloeden & Platen 1992, section 10.2).
    """

    name = "euler"

    def step(self, grad, x, v, g, h, gamma, noise):
        x1 = x + h * v
        v1 = v + h * (g - gamma * v) + jnp.sqrt(2.0 * gamma) * noise.W[0]
        return x1, v1, grad(x1), None


@dataclasses.dataclass(frozen=True)
class BAOAB(KineticSolver):
    r"""BAOAB (Leimkuhler & Matthews 2013, "Rational construction of stochastic numerical methods for
    molecular sampling", AMRX):

    .. math::
        V' = V_0 + \tfrac h2 g(X_0),\quad X' = X_0 + \tfrac h2 V',\quad
        V'' = \beta V' + \sqrt{2\gamma}\!\int_0^h\! e^{-\gamma(h-r)}dW_r, \\
        X_1 = X' + \tfrac h2 V'',\quad V_1 = V'' + \tfrac h2 g(X_1).

    On a Gaussian target its invariant law has exactly the right position marginal at every stable
    step (the velocity marginal is biased at :math:`O(h^2)`). Strong order 1; 1 gradient per step.
    """

    name = "baoab"

    def step(self, grad, x, v, g, h, gamma, noise):
        v = v + 0.5 * h * g
        x = x + 0.5 * h * v
        v = jnp.exp(-gamma * h) * v + _ou_noise(h, gamma, noise, 0)
        x = x + 0.5 * h * v
        g1 = grad(x)
        return x, v + 0.5 * h * g1, g1, None


@dataclasses.dataclass(frozen=True)
class OBABO(KineticSolver):
    r"""OBABO (Bussi & Parrinello 2007; Leimkuhler & Matthews 2013): exact OU half steps around velocity Verlet,

    .. math::
        V' = e^{-\gamma h/2}V_0 + \sqrt{2\gamma}\!\int_0^{h/2}\! e^{-\gamma(h/2-r)}dW_r,\quad
        V'' = V' + \tfrac h2 g(X_0),\quad X_1 = X_0 + hV'', \\
        V''' = V'' + \tfrac h2 g(X_1),\quad
        V_1 = e^{-\gamma h/2}V''' + \sqrt{2\gamma}\!\int_{h/2}^{h}\! e^{-\gamma(h-r)}dW_r .

    Velocity marginal exact on Gaussians; position variance :math:`\sigma^2/(1 - h^2/(4\sigma^2))`
    per eigen-direction. Strong order 1; 1 gradient per step.
    """

    name = "obabo"
    nodes = (0.0, 0.5, 1.0)

    def step(self, grad, x, v, g, h, gamma, noise):
        half = 0.5 * h
        v = jnp.exp(-gamma * half) * v + _ou_noise(half, gamma, noise, 0)
        v = v + half * g
        x = x + h * v
        g1 = grad(x)
        v = v + half * g1
        v = jnp.exp(-gamma * half) * v + _ou_noise(half, gamma, noise, 1)
        return x, v, g1, None


@dataclasses.dataclass(frozen=True)
class ALIGN(KineticSolver):
    r"""ALIGN, "Adaptive Langevin via Interpolated Gradients and Noise" (Foster; a modified Strang
    splitting, Foster, Lyons & Oberhauser 2021, Definition 4.2), with :math:`c_H = \tfrac6\gamma(m_0 - 2m_1)`:

    .. math::
        X_1 = X_0 + a_1 V_0 + h b_1\, g(X_0) + \rho\,(b_1 W + c_H H), \\
        V_1 = \beta V_0 + (a_1 - b_1)\, g(X_0) + b_1\, g(X_1) + \rho\,(m_0 W - \gamma c_H H),

    and the embedded error estimate :math:`b_1\,(g(X_1) - g(X_0))` in :math:`V`. Strong order 2 on
    a path with space-time Levy area; 1 gradient per step (FSAL).
    """

    name = "align"
    levy_area = "space-time"
    strong_order = 2.0
    error_estimate = True

    def step(self, grad, x, v, g, h, gamma, noise):
        k = _kernels(gamma * h)
        rho = jnp.sqrt(2.0 * gamma)
        a1, b1 = h * k.m0, h * (k.m0 - k.m1)
        c_h = 6.0 * h * k.q1
        x1 = x + a1 * v + h * b1 * g + rho * (b1 * noise.W[0] + c_h * noise.H[0])
        g1 = grad(x1)
        v1 = (k.beta * v + (a1 - b1) * g + b1 * g1
              + rho * (k.m0 * noise.W[0] - gamma * c_h * noise.H[0]))
        return x1, v1, g1, b1 * (g1 - g)


@dataclasses.dataclass(frozen=True)
class ShOULD(KineticSolver):
    r"""ShOULD, the shifted ODE method (Foster, Lyons & Oberhauser 2021, Definition 7.1), with
    :math:`c_H = \tfrac6\gamma(m_0 - 2m_1)`, :math:`c_K = -\tfrac{60}\gamma(6m_2 - 6m_1 + m_0)` and the
    half-step kernels :math:`a_{1/2} = \int_0^{h/2}e^{-\gamma s}ds`,
    :math:`b_{1/2} = \frac1h\int_0^{h/2}(\tfrac h2 - r)e^{-\gamma r}dr`, :math:`\beta_{1/2} = e^{-\alpha/2}`:

    .. math::
        V' = V_0 + \rho(H + 6K), \quad
        X' = X_0 + a_{1/2} V' + b_{1/2}\big(h\,g(X_0) + \rho(W - 12K)\big), \\
        X_1 = X_0 + a_1 V_0 + h b_1\big(\tfrac13 g(X_0) + \tfrac23 g(X')\big) + \rho(b_1 W + c_H H + c_K K), \\
        V_1 = \beta V_0 + h\big(\tfrac\beta6 g(X_0) + \tfrac23\beta_{1/2}\, g(X') + \tfrac16 g(X_1)\big)
              + \rho\,\big(m_0 W - \gamma(c_H H + c_K K)\big).

    Strong order 3 on a path with space-time-time Levy area (for smooth gradients); 2 gradients per
    step (FSAL).
    """

    name = "should"
    levy_area = "space-time-time"
    grad_evals = 2
    strong_order = 3.0

    def step(self, grad, x, v, g, h, gamma, noise):
        alpha = gamma * h
        k, kh = _kernels(alpha), _kernels(0.5 * alpha)
        rho = jnp.sqrt(2.0 * gamma)
        w, hh, kk = noise.W[0], noise.H[0], noise.K[0]
        a1, b1 = h * k.m0, h * (k.m0 - k.m1)
        a_half, b_half = 0.5 * h * kh.m0, 0.25 * h * (kh.m0 - kh.m1)
        c_h, c_k = 6.0 * h * k.q1, -60.0 * h * alpha * k.q2
        v_mid = v + rho * (hh + 6.0 * kk)
        x_mid = x + a_half * v_mid + b_half * (h * g + rho * (w - 12.0 * kk))
        g_mid = grad(x_mid)
        x1 = x + a1 * v + h * b1 * (g / 3.0 + 2.0 * g_mid / 3.0) + rho * (b1 * w + c_h * hh + c_k * kk)
        g1 = grad(x1)
        v1 = (k.beta * v + h * (k.beta * g / 6.0 + 2.0 / 3.0 * kh.beta * g_mid + g1 / 6.0)
              + rho * (k.m0 * w - gamma * (c_h * hh + c_k * kk)))
        return x1, v1, g1, None


#: Solvers by name, for ``solver="baoab"`` and friends.
SOLVERS = {cls.name: cls for cls in (KineticEuler, BAOAB, OBABO, ALIGN, ShOULD)}

_LEVY_DIM = {None: 1, "space-time": 2, "space-time-time": 3}


def _solver_of(solver) -> KineticSolver:
    if isinstance(solver, KineticSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in SOLVERS:
        return SOLVERS[solver.lower()]()
    raise ValueError(f"solver must be one of {', '.join(repr(s) for s in SOLVERS)} or a KineticSolver, got {solver!r}")


def _fresh_noise(key, solver: KineticSolver, h, shape, dtype) -> StepNoise:
    """Exact-law noise for one step: independent (W, H, K) per sub-interval, plus the remainder normals."""
    d = _LEVY_DIM[solver.levy_area]
    lengths = jnp.diff(jnp.asarray(solver.nodes, dtype)) * h
    n_sub = len(solver.nodes) - 1
    xi = jax.random.normal(key, (n_sub, d + 1) + shape, dtype)
    scale = jnp.sqrt(lengths)[:, None] * component_scale(d, dtype)[None, :]
    levy = xi[:, :d] * scale.reshape(scale.shape + (1,) * len(shape))
    return StepNoise(levy[:, 0], levy[:, 1] if d > 1 else None, levy[:, 2] if d > 2 else None, xi[:, d])


def _path_noise(tree: BrownianTree, solver: KineticSolver, t, h, shape, dtype) -> StepNoise:
    nodes = t + jnp.asarray(solver.nodes, dtype) * h
    inc = tree.evaluate(nodes[:-1], nodes[1:])
    d = _LEVY_DIM[solver.levy_area]
    n_sub = len(solver.nodes) - 1
    return StepNoise(inc.W, inc.H if d > 1 else None, inc.K if d > 2 else None,
                     jnp.zeros((n_sub,) + shape, dtype))


def _gradient(log_density):
    grad = jax.grad(log_density)
    return grad


# ---------------------------------------------------------------- sampling


def kinetic_langevin(key, log_density, x0, v0=None, *, solver="baoab", step, friction=1.0,
                     n_steps: int, warmup: int = 0, thin: int = 1, check: bool = True) -> Samples:
    r"""Sample :math:`\pi` with kinetic Langevin dynamics, many chains in parallel.

    See the module docstring for the SDE and the solvers. Each step draws fresh Gaussian noise with
    the exact law of the Brownian increment (and Levy areas) the solver uses.

    Args:
        key: a ``jax.random`` key.
        log_density: ``x (d,) -> scalar`` (only its gradient is used).
        x0: positions, ``(d,)`` or ``(n_chains, d)``.
        v0: velocities of the same shape, or None to draw them from :math:`N(0, I)`.
        solver: ``"euler"``, ``"baoab"``, ``"obabo"``, ``"align"``, ``"should"`` or a
            :class:`KineticSolver`.
        step: :math:`h > 0`; friction: :math:`\gamma > 0` (both traced).
        n_steps, warmup, thin: as in :func:`solverlab.langevin.ula`.
        check: raise :class:`~solverlab.SolverError` when a chain went bad.

    Returns:
        :class:`~solverlab.langevin.Samples` with ``v`` the last velocities;
        ``grad_evals = 1 + (warmup + n_steps) * solver.grad_evals`` per chain.
    """
    solver = _solver_of(solver)
    key = _checks.key_of(key)
    x, batched = _checks.positions("x0", x0)
    _checks.log_density_fn(log_density, x[0])
    _checks.positive("step", step)
    _checks.positive("friction", friction)
    n_steps, warmup, thin = _checks.schedule(n_steps, warmup, thin)
    k_chains, k_v = jax.random.split(key)
    if v0 is None:
        v = jax.random.normal(k_v, x.shape, x.dtype)
    else:
        v, _ = _checks.positions("v0", v0)
        if v.shape != x.shape:
            raise ValueError(f"v0 must have the shape of x0, {tuple(jnp.shape(x0))}, got {tuple(jnp.shape(v0))}")
    keys = jax.random.split(k_chains, x.shape[0])
    h, gamma = jnp.asarray(step, x.dtype), jnp.asarray(friction, x.dtype)
    out = _kinetic(log_density, solver, keys, x, v, h, gamma, n_steps // thin, warmup, thin)
    return _checks.finish(out, batched, check, "reduce step (or raise friction)")


@functools.partial(jax.jit, static_argnames=("log_density", "solver", "n_kept", "warmup", "thin"))
def _kinetic(log_density, solver, keys, x0, v0, h, gamma, n_kept, warmup, thin):
    grad = _gradient(log_density)

    def chain(key, x, v):
        g = grad(x)

        def step_fn(s, k):
            x, v, g, n_grad, bad = s
            noise = _fresh_noise(jax.random.fold_in(key, k), solver, h, x.shape, x.dtype)
            x, v, g, _ = solver.step(grad, x, v, g, h, gamma, noise)
            ok = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(v))
            return x, v, g, n_grad + solver.grad_evals, _checks.first_bad(bad, k, ok)

        bad0 = jnp.where(jnp.all(jnp.isfinite(g)), -1, 0).astype(jnp.int32)
        s0 = (x, v, g, jnp.asarray(1, jnp.int32), bad0)
        _, (x, v, _, n_grad, bad), kept = _sample_loop(step_fn, s0, warmup, n_kept, thin, lambda s: s[0])
        return Samples(kept, x, v, jnp.ones((), x.dtype), n_grad, bad)

    return jax.vmap(chain)(keys, x0, v0)


# ---------------------------------------------------------------- solving on one Brownian path


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KineticPath:
    """A solve on one Brownian path.

    ``ts``, ``xs``, ``vs``: accepted times and states (rows past ``n_steps`` are NaN for adaptive
    solves); ``x1``, ``v1``: the state at the last accepted time; ``grad_evals`` (exact, rejected steps
    included), ``rejected``; ``result``: a code of :data:`solverlab.sde.RESULTS` (0 is success).
    """

    ts: jax.Array
    xs: jax.Array
    vs: jax.Array
    x1: jax.Array
    v1: jax.Array
    n_steps: jax.Array
    grad_evals: jax.Array
    rejected: jax.Array
    result: jax.Array

    def raise_for_result(self) -> "KineticPath":
        code = concrete_value(self.result)
        if code is not None and int(code) != 0:
            hint = {1: "raise max_steps, or loosen rtol/atol", 2: "loosen rtol/atol or lower dt_min",
                    3: "reduce step (or the tolerances); check that log_density's gradient is finite"}[int(code)]
            raise SolverError(f"kinetic_solve stopped: {RESULTS[int(code)]}; {hint}")
        return self


def kinetic_solve(log_density, x0, v0, t0, t1, *, solver="baoab", step, friction=1.0, key=None,
                  brownian: BrownianTree | None = None, controller: AbstractController | None = None,
                  max_steps: int = 4096, save_path: bool = True, check: bool = True) -> KineticPath:
    r"""Solve kinetic Langevin from :math:`(x_0, v_0)` at ``t0`` to ``t1`` on one Brownian path.

    Coarse and fine solves on the same ``brownian`` tree see the same path, so their difference is
    the strong error; rejected adaptive steps re-query the same path (no bias).

    Args:
        log_density: ``x (d,) -> scalar``.
        x0, v0: one chain's position and velocity, ``(d,)`` (``vmap`` over keys for many paths).
        t0, t1: the interval (concrete).
        solver: a name or :class:`KineticSolver`.
        step: the constant step, or the first step when ``controller`` is given, ``0 < step <= t1 - t0``.
        friction: :math:`\gamma > 0`.
        key: for a new tree with ``tol`` = the shortest sub-step (constant) or
            ``controller.dt_min`` times the shortest node fraction (adaptive), or
        brownian: a :class:`~solverlab.brownian.BrownianTree` of shape ``(d,)`` with at least the
            Levy area the solver needs and ``tol`` at most the shortest sub-step.
        controller: a :class:`solverlab.sde.PIController` for adaptive steps (needs a solver with an
            error estimate, e.g. ALIGN), or None.
        max_steps: buffer size of an adaptive solve (static).
        save_path: keep every state (constant steps: the number of steps ``round((t1 - t0) / step)``
            is then static, so a new ``step`` recompiles). With ``False`` only the last state is kept,
            the number of steps is traced and ``step`` may be traced too (one compile serves every
            step size, e.g. a ``vmap`` over step sizes); ``ts``, ``xs``, ``vs`` then hold one row, ``t1``.
        check: raise :class:`~solverlab.SolverError` unless the result is success (when concrete).
    """
    solver = _solver_of(solver)
    x0, batched = _checks.positions("x0", x0)
    v0, _ = _checks.positions("v0", v0)
    if batched or x0.shape != v0.shape:
        raise ValueError(f"x0 and v0 must both have shape (d,) (one path), got {jnp.shape(x0)} and {jnp.shape(v0)}")
    x0, v0 = x0[0], v0[0]
    _checks.log_density_fn(log_density, x0)
    check_range("t0", t0)
    check_range("t1", t1)
    c0, c1 = concrete_value(t0), concrete_value(t1)
    if c0 is None or c1 is None:
        raise ValueError("t0 and t1 must be concrete numbers")
    span = float(c1 - c0)
    if span <= 0:
        raise ValueError(f"t1 must be greater than t0 = {float(c0):g}, got t1 = {float(c1):g}")
    _checks.positive("step", step)
    check_range("step", step, high=span)
    _checks.positive("friction", friction)
    max_steps = _checks.count("max_steps", max_steps, 1)
    frac = float(np.min(np.diff(solver.nodes)))
    if controller is not None:
        if not isinstance(controller, AbstractController):
            raise ValueError(f"controller must be a solverlab.sde.PIController, got {controller!r}")
        if not solver.error_estimate:
            raise ValueError(f"{solver.name} has no embedded error estimate: use controller=None or solver='align'")
        finest = float(controller.dt_min) * frac
    else:
        cs = concrete_value(step)
        finest = None if cs is None else float(cs) * frac
    need = _LEVY_DIM[solver.levy_area]
    if brownian is None:
        if key is None:
            raise ValueError("give key (a jax.random key) or brownian (a BrownianTree)")
        if finest is None:
            raise ValueError("a traced step needs an explicit brownian tree")
        brownian = BrownianTree(t0, t1, finest, x0.shape, key, levy_area=solver.levy_area)
    else:
        if tuple(brownian.shape) != tuple(x0.shape):
            raise ValueError(f"brownian must have shape {x0.shape}, got {brownian.shape}")
        if brownian.dim < need:
            raise ValueError(f"{solver.name} needs a tree with levy_area={solver.levy_area!r}, got {brownian.levy_area!r}")
        tol = concrete_value(brownian.tol)
        if tol is not None and finest is not None and float(tol) > finest * (1 + 1e-6):
            raise ValueError(f"brownian.tol must be <= the shortest sub-step {finest:g} (finer queries see "
                             f"interpolated noise), got tol = {float(tol):g}")
    dtype = x0.dtype
    h, gamma = jnp.asarray(step, dtype), jnp.asarray(friction, dtype)
    if controller is None and not save_path:
        out = _solve_last(log_density, solver, x0, v0, float(c0), float(c1), h, gamma, brownian)
    elif controller is None:
        if concrete_value(step) is None:
            raise ValueError("a traced step needs save_path=False (the number of saved states is static)")
        n = max(1, int(round(span / float(concrete_value(step)))))
        out = _solve_constant(log_density, solver, x0, v0, float(c0), float(c1), n, gamma, brownian)
    else:
        out = _solve_adaptive(log_density, solver, x0, v0, float(c0), float(c1), h, gamma, brownian,
                              controller, max_steps)
    return out.raise_for_result() if check else out


def _finite(*xs):
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in xs])


@functools.partial(jax.jit, static_argnames=("log_density", "solver", "t0", "t1", "n"))
def _solve_constant(log_density, solver, x0, v0, t0, t1, n, gamma, tree):
    grad = _gradient(log_density)
    dtype = x0.dtype
    ts = jnp.linspace(t0, t1, n + 1, dtype=dtype)

    def body(s, i):
        x, v, g = s
        t, h = ts[i], ts[i + 1] - ts[i]
        x, v, g, _ = solver.step(grad, x, v, g, h, gamma, _path_noise(tree, solver, t, h, x.shape, dtype))
        return (x, v, g), (x, v)

    (x1, v1, _), (xs, vs) = jax.lax.scan(body, (x0, v0, grad(x0)), jnp.arange(n))
    xs, vs = jnp.concatenate([x0[None], xs]), jnp.concatenate([v0[None], vs])
    result = jnp.where(_finite(xs, vs), 0, 3)
    zero = jnp.asarray(0, jnp.int32)
    return KineticPath(ts, xs, vs, x1, v1, jnp.asarray(n), jnp.asarray(1 + n * solver.grad_evals), zero, result)


@functools.partial(jax.jit, static_argnames=("log_density", "solver", "t0", "t1"))
def _solve_last(log_density, solver, x0, v0, t0, t1, h, gamma, tree):
    grad = _gradient(log_density)
    dtype = x0.dtype
    n = jnp.maximum(jnp.round((t1 - t0) / h), 1.0)
    h = (t1 - t0) / n  # whole steps: the same rounding as with save_path=True
    n = n.astype(jnp.int32)

    def body(i, s):
        x, v, g, ok = s
        t = t0 + i.astype(dtype) * h
        x, v, g, _ = solver.step(grad, x, v, g, h, gamma, _path_noise(tree, solver, t, h, x.shape, dtype))
        return x, v, g, ok & _finite(x, v)

    x1, v1, _, ok = jax.lax.fori_loop(0, n, body, (x0, v0, grad(x0), jnp.asarray(True)))
    result = jnp.where(ok, 0, 3)
    t1a = jnp.full((1,), t1, dtype)
    return KineticPath(t1a, x1[None], v1[None], x1, v1, n, 1 + n * solver.grad_evals,
                       jnp.asarray(0, jnp.int32), result)


@functools.partial(jax.jit, static_argnames=("log_density", "solver", "t0", "t1", "controller", "max_steps"))
def _solve_adaptive(log_density, solver, x0, v0, t0, t1, h0, gamma, tree, controller, max_steps):
    grad = _gradient(log_density)
    dtype = x0.dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    nan = jnp.full((max_steps + 1,) + x0.shape, jnp.nan, dtype)
    ts = jnp.full((max_steps + 1,), jnp.nan, dtype).at[0].set(t0)
    xs, vs = nan.at[0].set(x0), nan.at[0].set(v0)

    def cond(s):
        t, n, result = s[0], s[6], s[9]
        return (t < t1) & (n < max_steps) & (result == 0)

    def body(s):
        t, x, v, g, h, c_state, n, rejected, n_grad, result, ts, xs, vs = s
        h = jnp.minimum(h, t1 - t)
        x1, v1, g1, v_err = solver.step(grad, x, v, g, h, gamma, _path_noise(tree, solver, t, h, x.shape, dtype))
        y, y1 = jnp.concatenate([x, v]), jnp.concatenate([x1, v1])
        y_err = jnp.concatenate([jnp.zeros_like(x1), v_err])
        accept, h_new, c_state = controller.decide(t, y, y1, y_err, h, c_state)
        ok = _finite(x1, v1, g1)
        t_new = jnp.where(accept, t + h, t)
        x, v, g = (jnp.where(accept, a, b) for a, b in ((x1, x), (v1, v), (g1, g)))
        n_new = n + accept.astype(n.dtype)
        ts = jnp.where(accept, ts.at[n_new].set(t_new), ts)
        xs = jnp.where(accept, xs.at[n_new].set(x), xs)
        vs = jnp.where(accept, vs.at[n_new].set(v), vs)
        result = jnp.where(accept & ~ok, 3, result)
        result = jnp.where((h_new < controller.dt_min * (1 - 1e-6)) & (t_new < t1), 2, result)
        return (t_new, x, v, g, h_new, c_state, n_new, rejected + (~accept).astype(n.dtype),
                n_grad + solver.grad_evals, result, ts, xs, vs)

    zero = jnp.asarray(0, jnp.int32)
    init = (t0, x0, v0, grad(x0), jnp.asarray(h0, dtype), controller.init_state(dtype), zero, zero,
            jnp.asarray(1, jnp.int32), zero, ts, xs, vs)
    t, x, v, _, _, _, n, rejected, n_grad, result, ts, xs, vs = jax.lax.while_loop(cond, body, init)
    result = jnp.where((result == 0) & (t < t1), 1, result)
    return KineticPath(ts, xs, vs, x, v, n, n_grad, rejected, result)
