r"""Overdamped Langevin samplers: the unadjusted Langevin algorithm (ULA) and MALA (chapter 04).

Both discretise the overdamped Langevin diffusion, whose invariant law is :math:`\pi`:

.. math::
    dX_t = \nabla \log \pi(X_t)\,dt + \sqrt 2\, dW_t .

Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and their discrete
approximations", Bernoulli 2(4). ULA is the Euler-Maruyama step (biased at any step size); MALA
adds a Metropolis-Hastings accept/reject that makes :math:`\pi` exactly invariant.

Conventions: a position is a vector of shape ``(d,)``; ``log_density(x)`` returns a real scalar for
one position (it need not be normalised). ``x0`` of shape ``(n_chains, d)`` runs that many
independent chains in parallel (``vmap``); shape ``(d,)`` runs one and drops the chain axis.
``step`` is a traced value (a new value does not recompile); ``n_steps``, ``warmup``, ``thin`` and
the function ``log_density`` are static. Randomness: chain ``c`` at step ``k`` uses
``fold_in(split(key, n_chains)[c], k)``, so results do not depend on how the run is split.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _checks
from ._checks import Samples

__all__ = ["ula", "mala"]


def _sample_loop(step_fn, state, warmup: int, n_kept: int, thin: int, observe):
    """Run ``warmup`` steps, then ``n_kept * thin`` steps keeping ``observe(state)`` every ``thin``-th.

    ``step_fn(state, k)`` advances one step; ``k`` is the global step number (1, 2, ...).
    Returns ``(state_after_warmup, final_state, kept)``.
    """

    def advance(s, k):
        return step_fn(s, k), None

    state, _ = jax.lax.scan(advance, state, jnp.arange(1, warmup + 1))
    warm = state

    def block(s, j):
        start = warmup + 1 + j * thin
        s, _ = jax.lax.scan(advance, s, start + jnp.arange(thin))
        return s, observe(s)

    state, kept = jax.lax.scan(block, state, jnp.arange(n_kept))
    return warm, state, kept


def _prepare(key, log_density, x0, step, n_steps, warmup, thin):
    key = _checks.key_of(key)
    x, batched = _checks.positions("x0", x0)
    _checks.log_density_fn(log_density, x[0])
    _checks.positive("step", step)
    n_steps, warmup, thin = _checks.schedule(n_steps, warmup, thin)
    keys = jax.random.split(key, x.shape[0])
    return keys, x, batched, jnp.asarray(step, x.dtype), n_steps, warmup, thin


def ula(key, log_density, x0, *, step, n_steps: int, warmup: int = 0, thin: int = 1,
        check: bool = True) -> Samples:
    r"""The unadjusted Langevin algorithm (Roberts & Tweedie 1996): Euler-Maruyama on overdamped Langevin.

    .. math::
        X_{k+1} = X_k + h\,\nabla\log\pi(X_k) + \sqrt{2h}\,\xi_k, \qquad \xi_k \sim N(0, I_d).

    Biased: on a Gaussian :math:`\pi = N(0, \Sigma)` its invariant law is
    :math:`N\big(0,\ \Sigma\,(I - \tfrac h2 \Sigma^{-1})^{-1}\big)` (stable for :math:`h < 2\lambda_{\min}(\Sigma)`).

    Args:
        key: a ``jax.random`` key.
        log_density: ``x (d,) -> scalar`` log density up to a constant (only its gradient is used).
        x0: start, ``(d,)`` or ``(n_chains, d)``.
        step: :math:`h > 0` (traced).
        n_steps: steps kept after warm-up (static); ``n_steps // thin`` positions are returned.
        warmup: steps run first and discarded; thin: keep every ``thin``-th step (must divide n_steps).
        check: raise :class:`~solverlab.SolverError` when a chain went bad (a NaN gradient).

    Returns:
        :class:`~solverlab.langevin.Samples`; ``grad_evals = warmup + n_steps`` per chain
        (the gradient at the last state is never needed).
    """
    keys, x, batched, h, n_steps, warmup, thin = _prepare(key, log_density, x0, step, n_steps, warmup, thin)
    out = _ula(log_density, keys, x, h, n_steps // thin, warmup, thin)
    return _checks.finish(out, batched, check, "reduce step")


@functools.partial(jax.jit, static_argnames=("log_density", "n_kept", "warmup", "thin"))
def _ula(log_density, keys, x0, h, n_kept, warmup, thin):
    grad = jax.grad(log_density)

    def chain(key, x):
        def step_fn(s, k):
            x, n_grad, bad = s
            g = grad(x)
            xi = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
            x_new = x + h * g + jnp.sqrt(2.0 * h) * xi
            ok = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(x_new))
            return x_new, n_grad + 1, _checks.first_bad(bad, k - 1, ok)

        s0 = (x, jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32))
        _, (x, n_grad, bad), kept = _sample_loop(step_fn, s0, warmup, n_kept, thin, lambda s: s[0])
        return Samples(kept, x, None, jnp.ones((), x.dtype), n_grad, bad)

    return jax.vmap(chain)(keys, x0)


def mala(key, log_density, x0, *, step, n_steps: int, warmup: int = 0, thin: int = 1,
         check: bool = True) -> Samples:
    r"""The Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996): ULA's move as a proposal.

    .. math::
        Y = X_k + h\,\nabla\log\pi(X_k) + \sqrt{2h}\,\xi_k, \qquad
        q(y \mid x) \propto \exp\!\Big(-\frac{\lVert y - x - h\nabla\log\pi(x)\rVert^2}{4h}\Big), \\
        X_{k+1} = Y \ \text{ with probability } \
        \min\Big(1,\ \frac{\pi(Y)\,q(X_k \mid Y)}{\pi(X_k)\,q(Y \mid X_k)}\Big), \ \text{ else } X_k .

    :math:`\pi` is exactly invariant at every step size. A proposal where ``log_density`` is
    :math:`-\infty` is rejected (outside the support); NaN is an error.

    Args: as :func:`ula`.

    Returns:
        :class:`~solverlab.langevin.Samples` with the acceptance rate after warm-up;
        ``grad_evals = 1 + warmup + n_steps`` per chain (one ``value_and_grad`` at the start and one
        per proposal; a rejected proposal's gradient is discarded, the current one kept).
    """
    keys, x, batched, h, n_steps, warmup, thin = _prepare(key, log_density, x0, step, n_steps, warmup, thin)
    out = _mala(log_density, keys, x, h, n_steps // thin, warmup, thin)
    return _checks.finish(out, batched, check, "reduce step, or start where log_density is finite")


@functools.partial(jax.jit, static_argnames=("log_density", "n_kept", "warmup", "thin"))
def _mala(log_density, keys, x0, h, n_kept, warmup, thin):
    value_and_grad = jax.value_and_grad(log_density)

    def log_q(y, x, gx):  # log q(y | x) up to a constant
        r = y - x - h * gx
        return -jnp.sum(r * r) / (4.0 * h)

    def chain(key, x):
        lp, g = value_and_grad(x)
        ok0 = jnp.isfinite(lp) & jnp.all(jnp.isfinite(g))

        def step_fn(s, k):
            x, lp, g, n_acc, n_grad, bad = s
            k_prop, k_acc = jax.random.split(jax.random.fold_in(key, k))
            y = x + h * g + jnp.sqrt(2.0 * h) * jax.random.normal(k_prop, x.shape, x.dtype)
            lp_y, g_y = value_and_grad(y)
            log_alpha = lp_y - lp + log_q(x, y, g_y) - log_q(y, x, g)
            accept = jnp.log(jax.random.uniform(k_acc, (), x.dtype)) < log_alpha  # NaN -> reject
            # -inf at the proposal is a legitimate rejection; NaN, or a bad gradient at a finite
            # log density, is a broken log_density.
            ok = ~jnp.isnan(lp_y) & (~jnp.isfinite(lp_y) | jnp.all(jnp.isfinite(g_y)))
            ok &= jnp.all(jnp.isfinite(y)) | ~accept
            x = jnp.where(accept, y, x)
            lp = jnp.where(accept, lp_y, lp)
            g = jnp.where(accept, g_y, g)
            return x, lp, g, n_acc + accept.astype(jnp.int32), n_grad + 1, _checks.first_bad(bad, k, ok)

        zero = jnp.asarray(0, jnp.int32)
        bad0 = jnp.where(ok0, -1, 0).astype(jnp.int32)
        s0 = (x, lp, g, zero, jnp.asarray(1, jnp.int32), bad0)
        warm, (x, _, _, n_acc, n_grad, bad), kept = _sample_loop(
            step_fn, s0, warmup, n_kept, thin, lambda s: s[0])
        rate = (n_acc - warm[3]).astype(x.dtype) / (n_kept * thin)
        return Samples(kept, x, None, rate, n_grad, bad)

    return jax.vmap(chain)(keys, x0)
