r"""Noise schedules of the forward diffusion process and the step schedules of its samplers.

The forward (noising) process at time :math:`t` is

.. math::
    x_t = \alpha(t)\, x_0 + \sigma(t)\, \varepsilon, \qquad \varepsilon \sim \mathcal N(0, I),

and the samplers work in the half log-SNR

.. math::
    \lambda(t) = \log \frac{\alpha(t)}{\sigma(t)},

which every schedule here makes strictly decreasing in :math:`t`, so it has an inverse
:math:`t(\lambda)` (``t_of_lambda``). Variance-preserving (VP) schedules have
:math:`\alpha^2 + \sigma^2 = 1`, so :math:`\log\sigma = \tfrac12 \log(1 - e^{2\log\alpha})` and
:math:`\log\alpha = -\tfrac12\log(1 + e^{-2\lambda})`; variance-exploding (VE) ones have
:math:`\alpha = 1` and :math:`\lambda = -\log\sigma`.

Sources: Ho et al., "Denoising diffusion probabilistic models" (2020); Song et al., "Score-based
generative modeling through SDEs" (2021); Nichol & Dhariwal, "Improved DDPM" (2021); Karras et al.,
"Elucidating the design space of diffusion-based generative models" (EDM, 2022); Lu et al.,
"DPM-Solver" (2022), whose continuous interpolation of the discrete DDPM schedule is followed here.

Every schedule is a frozen (hashable) dataclass of Python floats, so it can be a static argument of
``jax.jit``; every method is written in ``jax.numpy`` and takes a traced ``t`` of any shape.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax.numpy as jnp
import numpy as np

from ..errors import check_range, concrete_value

__all__ = [
    "EDM",
    "TIMESTEP_KINDS",
    "VE",
    "DDPMLinear",
    "Schedule",
    "VPCosine",
    "VPLinear",
    "time_at_fraction",
    "timesteps",
]

TIMESTEP_KINDS = ("logSNR", "time", "karras")


def _as_float(x):
    """``x`` as an inexact jnp array (float32 or float64 per the current JAX setting)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _vp_log_sigma(log_alpha):
    r""":math:`\log\sigma = \tfrac12\log(1-\alpha^2)`, stable for :math:`\alpha \to 1` (``expm1``)."""
    return 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))


def _vp_log_alpha_of_lambda(lam):
    r""":math:`\log\alpha = -\tfrac12 \log(1 + e^{-2\lambda})` (VP: :math:`\alpha^2 = \mathrm{sigmoid}(2\lambda)`)."""
    return -0.5 * jnp.logaddexp(0.0, -2.0 * lam)


class Schedule:
    r"""Base of the noise schedules: :math:`\alpha(t)`, :math:`\sigma(t)`, :math:`\lambda(t)` and the
    inverse :math:`t(\lambda)`.

    Subclasses define ``log_alpha(t)``, ``log_sigma(t)``, ``t_of_lambda(lam)``, ``t_min``, ``t_max``
    and ``name``. All methods map an array ``t`` of any shape to an array of the same shape.
    """

    name: str = "schedule"

    def log_alpha(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def log_sigma(self, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def t_of_lambda(self, lam):  # pragma: no cover - abstract
        raise NotImplementedError

    def alpha(self, t):
        r"""Signal scale :math:`\alpha(t)` of :math:`x_t = \alpha x_0 + \sigma\varepsilon`."""
        return jnp.exp(self.log_alpha(_as_float(t)))

    def sigma(self, t):
        r"""Noise scale :math:`\sigma(t)` of :math:`x_t = \alpha x_0 + \sigma\varepsilon`."""
        return jnp.exp(self.log_sigma(_as_float(t)))

    def lambda_(self, t):
        r"""Half log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`, strictly decreasing."""
        t = _as_float(t)
        return self.log_alpha(t) - self.log_sigma(t)

    def karras_sigma(self, t):
        r"""EDM noise level :math:`\tilde\sigma(t) = \sigma(t)/\alpha(t) = e^{-\lambda(t)}`
        (Karras et al. 2022, the scale of :math:`x_t/\alpha(t)`)."""
        return jnp.exp(-self.lambda_(t))


def _check_t_range(t_min, t_max, upper, upper_open=False):
    check_range("t_min", t_min, low=0.0, high=upper, low_open=True, high_open=True)
    check_range("t_max", t_max, low=t_min, high=upper, low_open=True, high_open=upper_open)


@dataclasses.dataclass(frozen=True)
class VPLinear(Schedule):
    r"""Continuous variance-preserving schedule with linear :math:`\beta(t)` (Song et al. 2021, VP-SDE).

    The SDE :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW`,
    :math:`\beta(t) = \beta_{\min} + t(\beta_{\max}-\beta_{\min})`, has

    .. math::
        \log\alpha(t) = -\frac{t^2}{4}(\beta_{\max}-\beta_{\min}) - \frac{t}{2}\beta_{\min},
        \qquad \frac{d\log\alpha}{dt} = -\frac{\beta(t)}{2},
        \qquad \sigma = \sqrt{1-\alpha^2},

    and the inverse (stable root of the quadratic, :math:`c = -\log\alpha(\lambda)`)

    .. math::
        t(\lambda) = \frac{2c}{\beta_{\min}/2 + \sqrt{\beta_{\min}^2/4 + (\beta_{\max}-\beta_{\min})c}}.

    Args:
        beta_min: :math:`\beta(0) \ge 0`.
        beta_max: :math:`\beta(1) > \beta_{\min}`.
        t_min, t_max: the time interval :math:`0 < t_{\min} < t_{\max} \le 1` used by samplers.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0
    name = "vp_linear"

    def __post_init__(self):
        check_range("beta_min", self.beta_min, low=0.0)
        check_range("beta_max", self.beta_max, low=self.beta_min, low_open=True)
        _check_t_range(self.t_min, self.t_max, 1.0)

    def beta(self, t):
        r"""The SDE's :math:`\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})`."""
        return self.beta_min + _as_float(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        t = _as_float(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def log_sigma(self, t):
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam):
        c = -_vp_log_alpha_of_lambda(_as_float(lam))
        b0 = 0.5 * self.beta_min
        return 2.0 * c / (b0 + jnp.sqrt(b0**2 + (self.beta_max - self.beta_min) * c))


@dataclasses.dataclass(frozen=True)
class VPCosine(Schedule):
    r"""Cosine variance-preserving schedule (Nichol & Dhariwal 2021), continuous in :math:`t`:

    .. math::
        \alpha(t) = \frac{\cos\big(\tfrac{\pi}{2}\tfrac{t+s}{1+s}\big)}{\cos\big(\tfrac{\pi}{2}\tfrac{s}{1+s}\big)},
        \qquad \sigma = \sqrt{1-\alpha^2},

    inverse :math:`t(\lambda) = \tfrac{2(1+s)}{\pi}\arccos\!\big(\alpha(\lambda)\cos(\tfrac{\pi}{2}\tfrac{s}{1+s})\big) - s`.
    :math:`\alpha(1) = 0`, so :math:`t_{\max}` stays below 1; the default 0.9946 is DPM-Solver's
    (Lu et al. 2022), where the discrete :math:`\beta_t` would be clipped at 0.999.

    Args:
        s: offset :math:`s \in [0, 1]` (0.008 in the paper).
        t_min, t_max: the time interval :math:`0 < t_{\min} < t_{\max} < 1` used by samplers.
    """

    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.9946
    name = "vp_cosine"

    def __post_init__(self):
        check_range("s", self.s, low=0.0, high=1.0)
        _check_t_range(self.t_min, self.t_max, 1.0, upper_open=True)

    @property
    def _log_cos0(self):
        return math.log(math.cos(0.5 * math.pi * self.s / (1.0 + self.s)))

    def log_alpha(self, t):
        t = _as_float(t)
        return jnp.log(jnp.cos(0.5 * jnp.pi * (t + self.s) / (1.0 + self.s))) - self._log_cos0

    def log_sigma(self, t):
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam):
        log_alpha = _vp_log_alpha_of_lambda(_as_float(lam))
        return 2.0 * (1.0 + self.s) / jnp.pi * jnp.arccos(jnp.exp(log_alpha + self._log_cos0)) - self.s


@dataclasses.dataclass(frozen=True)
class VE(Schedule):
    r"""Variance-exploding schedule (Song et al. 2021, VE-SDE / NCSN):

    .. math::
        \alpha = 1, \qquad \sigma(t) = \sigma_{\min}\Big(\frac{\sigma_{\max}}{\sigma_{\min}}\Big)^{t},
        \qquad \lambda = -\log\sigma, \qquad t(\lambda) = \frac{-\lambda - \log\sigma_{\min}}{\log(\sigma_{\max}/\sigma_{\min})},

    on :math:`t \in [0, 1]` (``t_min = 0``: :math:`\sigma(0) = \sigma_{\min}` is already the noise floor).

    Args:
        sigma_min: :math:`0 < \sigma_{\min}`.
        sigma_max: :math:`\sigma_{\max} > \sigma_{\min}`.
    """

    sigma_min: float = 0.02
    sigma_max: float = 100.0
    name = "ve"
    t_min = 0.0
    t_max = 1.0

    def __post_init__(self):
        check_range("sigma_min", self.sigma_min, low=0.0, low_open=True)
        check_range("sigma_max", self.sigma_max, low=self.sigma_min, low_open=True)

    def log_alpha(self, t):
        return jnp.zeros_like(_as_float(t))

    def log_sigma(self, t):
        t = _as_float(t)
        return math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)

    def t_of_lambda(self, lam):
        lam = _as_float(lam)
        return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


@dataclasses.dataclass(frozen=True)
class EDM(Schedule):
    r"""The EDM schedule (Karras et al. 2022): time is the noise level,

    .. math::
        \alpha = 1, \qquad \sigma(t) = t, \qquad \lambda = -\log t, \qquad t(\lambda) = e^{-\lambda},

    on :math:`t \in [\sigma_{\min}, \sigma_{\max}]`.

    Args:
        sigma_min: :math:`0 < \sigma_{\min}` (0.002 in the paper).
        sigma_max: :math:`\sigma_{\max} > \sigma_{\min}` (80 in the paper).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    name = "edm"

    def __post_init__(self):
        check_range("sigma_min", self.sigma_min, low=0.0, low_open=True)
        check_range("sigma_max", self.sigma_max, low=self.sigma_min, low_open=True)

    @property
    def t_min(self):
        return float(self.sigma_min)

    @property
    def t_max(self):
        return float(self.sigma_max)

    def log_alpha(self, t):
        return jnp.zeros_like(_as_float(t))

    def log_sigma(self, t):
        return jnp.log(_as_float(t))

    def t_of_lambda(self, lam):
        return jnp.exp(-_as_float(lam))


@functools.lru_cache(maxsize=32)
def _ddpm_table(beta_start, beta_end, n):
    """Grid ``t_i = (i+1)/N`` and ``log alpha_i = 0.5 sum_{j<=i} log(1 - beta_j)`` in float64 NumPy."""
    betas = np.linspace(beta_start, beta_end, n, dtype=np.float64)
    log_alphas = 0.5 * np.cumsum(np.log1p(-betas))
    ts = np.arange(1, n + 1, dtype=np.float64) / n
    return ts, log_alphas


def _interp_linear(x, xp, fp):
    """Piecewise-linear interpolation through increasing ``xp``, extended linearly beyond the ends
    by the first and last segments (unlike ``jnp.interp``, which clamps)."""
    xp = jnp.asarray(xp, dtype=x.dtype)
    fp = jnp.asarray(fp, dtype=x.dtype)
    i = jnp.clip(jnp.searchsorted(xp, x, side="right") - 1, 0, xp.shape[0] - 2)
    x0, x1, f0, f1 = xp[i], xp[i + 1], fp[i], fp[i + 1]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


@dataclasses.dataclass(frozen=True)
class DDPMLinear(Schedule):
    r"""The discrete DDPM schedule (Ho et al. 2020) made continuous as in DPM-Solver (Lu et al. 2022).

    Linear betas :math:`\beta_i`, :math:`i = 0..N-1`, from ``beta_start`` to ``beta_end`` give

    .. math::
        \bar\alpha_i = \prod_{j\le i}(1-\beta_j), \qquad \log\alpha_i = \tfrac12\log\bar\alpha_i,
        \qquad t_i = \frac{i+1}{N},

    and :math:`\log\alpha(t)` is the piecewise-linear interpolation of the points
    :math:`(t_i, \log\alpha_i)` (extended linearly by the end segments outside :math:`[1/N, 1]`);
    :math:`\sigma = \sqrt{1-\alpha^2}`. Since :math:`\log\alpha_i` is strictly decreasing,
    ``t_of_lambda`` is the exact inverse: the piecewise-linear interpolation of :math:`(\log\alpha_i, t_i)`
    at :math:`\log\alpha(\lambda) = -\tfrac12\log(1+e^{-2\lambda})`. Discrete step :math:`n` of a
    DDPM model (0-based) sits at :math:`t = (n+1)/N`; ``t_min = 1/N``, ``t_max = 1``.

    Args:
        beta_start: :math:`0 < \beta_0 \le \beta_{N-1}`.
        beta_end: :math:`\beta_{N-1} < 1`.
        num_train_steps: :math:`N \ge 2` (integer).
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_steps: int = 1000
    name = "ddpm_linear"

    def __post_init__(self):
        n = self.num_train_steps
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise ValueError(f"num_train_steps must be an integer >= 2, got {n!r}")  # noqa: TRY004
        check_range("num_train_steps", n, low=2)
        check_range("beta_start", self.beta_start, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("beta_end", self.beta_end, low=self.beta_start, high=1.0, high_open=True)

    @property
    def t_min(self):
        return 1.0 / self.num_train_steps

    @property
    def t_max(self):
        return 1.0

    def grid(self):
        """``(t_i, log_alpha_i)``: the discrete schedule as float64 NumPy arrays of shape (N,)."""
        ts, la = _ddpm_table(float(self.beta_start), float(self.beta_end), int(self.num_train_steps))
        return ts.copy(), la.copy()

    def alphas_cumprod(self):
        r""":math:`\bar\alpha_i = \alpha_i^2`, shape (N,), float64 NumPy."""
        return np.exp(2.0 * self.grid()[1])

    def log_alpha(self, t):
        ts, la = _ddpm_table(float(self.beta_start), float(self.beta_end), int(self.num_train_steps))
        return _interp_linear(_as_float(t), ts, la)

    def log_sigma(self, t):
        return _vp_log_sigma(self.log_alpha(t))

    def t_of_lambda(self, lam):
        ts, la = _ddpm_table(float(self.beta_start), float(self.beta_end), int(self.num_train_steps))
        log_alpha = _vp_log_alpha_of_lambda(_as_float(lam))
        # log alpha_i decreases: interpolate on the increasing -log alpha_i.
        return _interp_linear(-log_alpha, -la, ts)


def timesteps(schedule, nfe, kind="logSNR", t_start=None, t_end=None, rho=7.0):
    r"""Decreasing sampler times :math:`t_0 = t_{\text{start}} > t_1 > \dots > t_{\text{nfe}} = t_{\text{end}}`.

    ``kind`` picks the variable in which the steps are evenly spread:

    - ``"logSNR"``: uniform in :math:`\lambda`, :math:`\lambda_i = \lambda_0 + \tfrac{i}{n}(\lambda_n-\lambda_0)`,
      :math:`t_i = t(\lambda_i)` (DPM-Solver, Lu et al. 2022);
    - ``"time"``: uniform in :math:`t`;
    - ``"karras"``: the EDM rule (Karras et al. 2022, eq. 5) in :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda}`,
      :math:`\tilde\sigma_i = \big(\tilde\sigma_0^{1/\rho} + \tfrac{i}{n}(\tilde\sigma_n^{1/\rho} - \tilde\sigma_0^{1/\rho})\big)^{\rho}`,
      mapped back by :math:`t_i = t(-\log\tilde\sigma_i)`.

    The end points are returned exactly (not through the round trip :math:`t(\lambda(t))`).

    Args:
        schedule: a noise schedule (``VPLinear``, ``DDPMLinear``, ``EDM``, ...).
        nfe: number of steps :math:`n \ge 1` (static: it sets the output shape).
        kind: ``"logSNR"``, ``"time"`` or ``"karras"``.
        t_start: first time, in :math:`(t_{\min}, t_{\max}]`; default ``schedule.t_max``. May be traced.
        t_end: last time, in :math:`[t_{\min}, t_{\text{start}})`; default ``schedule.t_min``. May be traced.
        rho: Karras exponent :math:`\rho > 0` (used by ``"karras"`` only).

    Returns:
        Array of shape ``(nfe + 1,)``.
    """
    if isinstance(nfe, bool) or not isinstance(nfe, numbers.Integral):
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")  # noqa: TRY004
    check_range("nfe", nfe, low=1)
    if kind not in TIMESTEP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TIMESTEP_KINDS)}, got {kind!r}")
    t_min, t_max = float(schedule.t_min), float(schedule.t_max)
    if t_start is None:
        t_start = t_max
    if t_end is None:
        t_end = t_min
    check_range("t_start", t_start, low=t_min, high=t_max, low_open=True)
    start = concrete_value(t_start)
    check_range("t_end", t_end, low=t_min, high=t_max if start is None else float(start), high_open=True)
    if kind == "karras":
        check_range("rho", rho, low=0.0, low_open=True)

    t_start = _as_float(t_start)
    t_end = _as_float(t_end).astype(t_start.dtype)
    frac = jnp.arange(nfe + 1, dtype=t_start.dtype) / nfe
    ts = time_at_fraction(schedule, frac, kind, t_start, t_end, rho)
    return ts.at[0].set(t_start).at[-1].set(t_end)


def time_at_fraction(schedule, frac, kind, t_start, t_end, rho=7.0):
    r"""The time a fraction ``frac`` in :math:`[0, 1]` of the way from ``t_start`` to ``t_end`` in the
    variable ``kind`` spreads evenly (see :func:`timesteps`; no checks). ``frac`` may be traced, so a
    sampler can place step :math:`i` of :math:`n` without knowing :math:`n` at compile time."""
    if kind == "time":
        return t_start + frac * (t_end - t_start)
    if kind == "logSNR":
        lam0, lam1 = schedule.lambda_(t_start), schedule.lambda_(t_end)
        return schedule.t_of_lambda(lam0 + frac * (lam1 - lam0))
    inv = 1.0 / rho
    s0 = jnp.exp(-inv * schedule.lambda_(t_start))  # sigma~_0^(1/rho)
    s1 = jnp.exp(-inv * schedule.lambda_(t_end))
    return schedule.t_of_lambda(-jnp.log((s0 + frac * (s1 - s0)) ** rho))
