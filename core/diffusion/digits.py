r"""A small class-conditional diffusion model of real data: scikit-learn's 8x8 handwritten digits.

The data are the 1797 digit images bundled with scikit-learn (``load_digits``: 8x8 pixels of 17
grey levels, 10 classes), flattened to :math:`x_0 \in [-1, 1]^{64}`. A small network
(:class:`Denoiser`) gives the noise prediction :math:`\hat\varepsilon_\theta(x_t, t, c)` the samplers
need through the *velocity* parameterisation of Salimans & Ho ("Progressive distillation for fast
sampling of diffusion models", 2022): on the variance-preserving :data:`SCHEDULE`
(:math:`\alpha_t^2 + \sigma_t^2 = 1`) the network outputs :math:`\hat v_\theta` and

.. math::
    v = \alpha_t\varepsilon - \sigma_t x_0, \qquad
    \hat\varepsilon_\theta = \sigma_t x_t + \alpha_t \hat v_\theta, \qquad
    \hat x_{0,\theta} = \alpha_t x_t - \sigma_t \hat v_\theta .

It is trained with the denoising loss (Ho et al., "Denoising diffusion probabilistic models", 2020)
written in :math:`v`,

.. math::
    \mathcal L(\theta) = \mathbb E_{x_0, c,\, t \sim U(t_{\min}, t_{\max}),\, \varepsilon \sim N(0, I)}
        \big\|\hat v_\theta(\alpha_t x_0 + \sigma_t\varepsilon,\ t,\ \tilde c) - v\big\|^2
        = \mathbb E\,\alpha_t^{-2}\big\|\hat\varepsilon_\theta - \varepsilon\big\|^2,

the noise-prediction loss weighted up where the signal is weak. (Measured here: with a plain
:math:`\hat\varepsilon`-network of the same size the data prediction
:math:`(x - \sigma\hat\varepsilon)/\alpha` amplifies the network's error by :math:`\sigma/\alpha \approx 120`
at :math:`t_{\max}`; samples reached pixel values of 13 and the singlestep solvers blew up at NFE 10
even without guidance. With :math:`v` the conditional samples' feature Fréchet distance dropped from
about 22 to 10, the real-versus-real floor.)

where the label :math:`\tilde c` is replaced by the null label :data:`NULL_LABEL` with probability
``label_dropout`` so that one network is both the conditional and the unconditional model, as
classifier-free guidance needs (Ho & Salimans, "Classifier-free diffusion guidance", 2022):

.. math::
    \hat\varepsilon_w(x, t \mid c) = (1 - w)\,\hat\varepsilon_\theta(x, t, \varnothing)
        + w\,\hat\varepsilon_\theta(x, t, c)
        = \hat\varepsilon_u + w(\hat\varepsilon_c - \hat\varepsilon_u).

(The first form is the one computed: it is exactly the conditional model at :math:`w = 1` and
exactly the unconditional one at :math:`w = 0`.) :func:`model_fn` wraps it for
:func:`solverlab.diffusion.sample`.

A small :class:`Classifier` trained on the clean images gives the measures of sample quality:
:func:`class_accuracy` (is a guided sample recognised as the class asked for?) and
:func:`feature_frechet`, the Fréchet distance between Gaussians fitted to the classifier's
penultimate-layer features (the FID recipe of Heusel et al. 2017, with a digit classifier in place
of Inception).

Both networks ship pre-trained in ``solverlab/diffusion/data/`` (:func:`load_pretrained`);
``python -m solverlab.diffusion.digits --write`` retrains them from the same keys on the
training split (every image whose index is not a multiple of 5; the rest is held out) and prints
the metrics. Training is one compiled ``lax.scan`` of optax Adam steps (with an exponential moving
average of the denoiser's weights), deterministic given the key.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import check_range, concrete_value
from .metrics import frechet_distance
from .schedules import VPCosine

__all__ = [
    "CLASSIFIER_CONFIG",
    "CLASSIFIER_TRAINING",
    "DATA_DIR",
    "DENOISER_CONFIG",
    "DENOISER_TRAINING",
    "DIM",
    "NULL_LABEL",
    "N_CLASSES",
    "SCHEDULE",
    "Classifier",
    "Denoiser",
    "DigitsModel",
    "class_accuracy",
    "classifier_accuracy",
    "evaluate",
    "feature_frechet",
    "load_data",
    "load_pretrained",
    "model_fn",
    "split_indices",
    "to_images",
    "train_classifier",
    "train_denoiser",
    "write_pretrained",
]

#: The noise schedule the denoiser is trained with: the cosine VP schedule (Nichol & Dhariwal,
#: "Improved denoising diffusion probabilistic models", 2021). Their argument applies with more force
#: to 8x8 images: under the linear-beta schedule the last part of the time interval is almost pure
#: noise (an 8x8 image is unrecognisable long before :math:`t = 1`), so much of the training and of
#: the sampler's steps would be spent where nothing is learned; the cosine schedule spreads the
#: log-SNR :math:`\lambda(t)` nearly linearly over the interval.
SCHEDULE = VPCosine()

N_CLASSES = 10
#: The label of the unconditional model (classifier-free guidance's "no label").
NULL_LABEL = 10
DIM = 64
DATA_DIR = Path(__file__).resolve().parent / "data"

_DENOISER_FILE = "digits_denoiser.eqx"
_CLASSIFIER_FILE = "digits_classifier.eqx"
_STORE_DTYPE = jnp.float16  # the shipped weights are stored in half precision (half the size)

#: Architecture and training settings of the shipped networks (``--write`` uses them).
DENOISER_CONFIG = {"width": 128, "depth": 2, "n_frequencies": 8}
CLASSIFIER_CONFIG = {"width": 128, "features": 64}
DENOISER_TRAINING = {"steps": 4000, "batch_size": 256, "learning_rate": 4e-3, "label_dropout": 0.1, "ema": 0.995}
CLASSIFIER_TRAINING = {"steps": 1500, "batch_size": 128, "learning_rate": 2e-3, "weight_decay": 1e-4}
PRETRAINED_KEYS = {"denoiser": 0, "classifier": 1}  # jax.random.PRNGKey seeds of the shipped networks


# ---------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data.astype(np.float32) / 8.0 - 1.0), d.target.astype(np.int32)


def split_indices(split: str = "all") -> np.ndarray:
    """Indices of a split of the 1797 images: ``"test"`` every index that is a multiple of 5 (360
    images, held out from training), ``"train"`` the other 1437, ``"all"`` every one."""
    n = _digits()[0].shape[0]
    idx = np.arange(n)
    if split == "all":
        return idx
    if split == "train":
        return idx[idx % 5 != 0]
    if split == "test":
        return idx[idx % 5 == 0]
    raise ValueError(f"split must be one of 'all', 'train', 'test', got {split!r}")


def load_data(split: str = "all"):
    r"""The scikit-learn 8x8 digits: ``x`` float32 ``(n, 64)`` scaled to :math:`[-1, 1]`
    (:math:`x = \text{pixel}/8 - 1`, pixels 0..16) and ``labels`` int32 ``(n,)``; ``n = 1797`` for
    ``split="all"``, see :func:`split_indices` for ``"train"``/``"test"``."""
    x, y = _digits()
    idx = split_indices(split)
    return jnp.asarray(x[idx]), jnp.asarray(y[idx])


def to_images(x) -> jax.Array:
    r"""Flat samples ``(n, 64)`` (or ``(64,)``) to images ``(n, 8, 8)`` in :math:`[0, 1]` for plotting:
    :math:`(x + 1)/2`, clipped."""
    x = jnp.asarray(x)
    if x.shape[-1] != DIM:
        raise ValueError(f"x must have shape (n, {DIM}) or ({DIM},), got shape {x.shape}")
    return jnp.clip((x.reshape(-1, 8, 8) + 1.0) / 2.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------------ networks
def _fourier(t, n_frequencies: int):
    r"""Time features :math:`(t, \sin(2^k\pi t), \cos(2^k\pi t))_{k < K}` of a scalar ``t`` in [0, 1]."""
    f = jnp.pi * 2.0 ** jnp.arange(n_frequencies, dtype=jnp.float32)
    tf = jnp.asarray(t, jnp.float32) * f
    return jnp.concatenate([jnp.reshape(jnp.asarray(t, jnp.float32), (1,)), jnp.sin(tf), jnp.cos(tf)])


class Denoiser(eqx.Module):
    r"""Class-conditional noise prediction :math:`\hat\varepsilon_\theta(x, t, c) = \sigma_t x + \alpha_t\hat v_\theta(x, t, c)`
    for one image under :data:`SCHEDULE` (module docstring: the network predicts the velocity
    :math:`v`, :meth:`velocity`).

    A residual MLP: :math:`h_0 = W_{\text{in}}x`, then ``depth`` blocks
    :math:`h_{k+1} = h_k + W_2\,\mathrm{silu}\big(W_1\,\mathrm{silu}(h_k) + e(t) + E_c\big)` and
    :math:`\hat v = W_{\text{out}}\,\mathrm{silu}(h)`, where :math:`e(t)` is a two-layer MLP of
    Fourier features of :math:`t` and :math:`E_c` a learned embedding of the label
    :math:`c \in \{0, \dots, 9\}` or the null label 10 (the unconditional model).

    Call: ``denoiser(x, t, label)`` with ``x`` (64,), ``t`` () and ``label`` () int; ``jax.vmap`` it
    over a batch (or use :func:`model_fn`).
    """

    inp: eqx.nn.Linear
    time: eqx.nn.MLP
    labels: eqx.nn.Embedding
    blocks: list
    out: eqx.nn.Linear
    n_frequencies: int = eqx.field(static=True)

    def __init__(self, key, width: int = 128, depth: int = 2, n_frequencies: int = 8):
        k_in, k_time, k_lab, k_out, k_blocks = jax.random.split(key, 5)
        self.n_frequencies = n_frequencies
        self.inp = eqx.nn.Linear(DIM, width, key=k_in)
        self.time = eqx.nn.MLP(1 + 2 * n_frequencies, width, width, 1, activation=jax.nn.silu, key=k_time)
        self.labels = eqx.nn.Embedding(N_CLASSES + 1, width, key=k_lab)
        keys = jax.random.split(k_blocks, 2 * depth)
        self.blocks = [(eqx.nn.Linear(width, width, key=keys[2 * i]), eqx.nn.Linear(width, width, key=keys[2 * i + 1]))
                       for i in range(depth)]
        self.out = eqx.nn.Linear(width, DIM, key=k_out)

    def velocity(self, x, t, label):
        r"""The network's own output: the velocity :math:`\hat v_\theta = \alpha_t\hat\varepsilon - \sigma_t\hat x_0`."""
        cond = self.time(_fourier(t, self.n_frequencies)) + self.labels(jnp.asarray(label, jnp.int32))
        h = self.inp(x.astype(jnp.float32))
        for lin1, lin2 in self.blocks:
            h = h + lin2(jax.nn.silu(lin1(jax.nn.silu(h)) + cond))
        return self.out(jax.nn.silu(h))

    def __call__(self, x, t, label):
        t = jnp.asarray(t, jnp.float32)
        return SCHEDULE.sigma(t) * x.astype(jnp.float32) + SCHEDULE.alpha(t) * self.velocity(x, t, label)


class Classifier(eqx.Module):
    r"""A digit classifier: an MLP :math:`64 \to` ``width`` :math:`\to` ``features`` :math:`\to 10`
    with SiLU activations. ``features(x)`` is the penultimate layer (after its activation), the
    embedding :func:`feature_frechet` compares; ``logits(x) = W\,\mathrm{features}(x) + b``.
    Both take ``x`` of shape (64,) or (n, 64)."""

    hidden: eqx.nn.Linear
    penultimate: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key, width: int = 128, features: int = 64):
        k1, k2, k3 = jax.random.split(key, 3)
        self.hidden = eqx.nn.Linear(DIM, width, key=k1)
        self.penultimate = eqx.nn.Linear(width, features, key=k2)
        self.head = eqx.nn.Linear(features, N_CLASSES, key=k3)

    def _features(self, x):
        return jax.nn.silu(self.penultimate(jax.nn.silu(self.hidden(x.astype(jnp.float32)))))

    def features(self, x):
        """Penultimate-layer features, shape ``(..., features)``."""
        x = jnp.asarray(x)
        return jax.vmap(self._features)(x) if x.ndim == 2 else self._features(x)

    def logits(self, x):
        """Class logits, shape ``(..., 10)``."""
        x = jnp.asarray(x)
        f = self.features(x)
        return jax.vmap(self.head)(f) if x.ndim == 2 else self.head(f)

    def __call__(self, x):
        return self.logits(x)


# ----------------------------------------------------------------------------------- guided model
class DigitsModel(eqx.Module):
    r"""The classifier-free guided noise prediction
    :math:`\hat\varepsilon_w(x, t \mid c) = (1 - w)\hat\varepsilon_\theta(x, t, \varnothing) + w\,\hat\varepsilon_\theta(x, t, c)`
    (Ho & Salimans 2022); built by :func:`model_fn`.

    ``label`` (int32, shape () or (n,): one class per sample) and ``guidance`` (float32 ()) are array
    leaves: a new value reuses the compiled sampler (:func:`solverlab.diffusion.sample` is an
    ``eqx.filter_jit``). Call ``model(x, t)`` with ``x`` (n, 64) or (64,), ``t`` scalar or (n,).
    """

    denoiser: Denoiser
    label: jax.Array
    guidance: jax.Array

    def __call__(self, x, t):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != DIM:
            raise ValueError(f"x must have shape (n, {DIM}) or ({DIM},), got shape {x.shape}")
        X = x.reshape(-1, DIM)
        n = X.shape[0]
        ts = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))
        labels = jnp.broadcast_to(self.label, (n,))
        both = jax.vmap(self.denoiser)(jnp.concatenate([X, X]), jnp.concatenate([ts, ts]),
                                       jnp.concatenate([jnp.full((n,), NULL_LABEL, jnp.int32), labels]))
        w = self.guidance.astype(both.dtype)
        eps = (1.0 - w) * both[:n] + w * both[n:]
        return eps.astype(x.dtype).reshape(x.shape)


def model_fn(denoiser: Denoiser, label=None, guidance=1.0) -> DigitsModel:
    r"""The guided noise prediction ``model(x, t)`` of ``denoiser`` for :func:`solverlab.diffusion.sample`
    with :data:`SCHEDULE`.

    Args:
        denoiser: a trained :class:`Denoiser`.
        label: the class, an int in [0, 9] or an int array (n,) with one class per sample; ``None`` (or
            10) for the unconditional model.
        guidance: the guidance scale :math:`w \ge 0` (1: the conditional model, 0: the unconditional one).

    Example: ``sample(model_fn(den, 3, 3.0), jax.random.normal(key, (16, 64)), SCHEDULE,
    "dpm_solver++_2m", 20)``.
    """
    check_range("guidance", guidance, low=0.0)
    if label is None:
        label = NULL_LABEL
    check_range("label", label, low=0, high=NULL_LABEL)
    lab = concrete_value(label)
    if lab is not None and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"label must be an int in [0, {NULL_LABEL}] (or an int array), got {label!r}")
    if jnp.ndim(label) > 1:
        raise ValueError(f"label must be a scalar or a 1-D array, got shape {jnp.shape(label)}")
    return DigitsModel(denoiser, jnp.asarray(label, jnp.int32), jnp.asarray(guidance, jnp.float32))


# ------------------------------------------------------------------------------------------ training
def _check_training(steps, batch_size, learning_rate):
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer in [1, inf), got {steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer in [1, inf), got {batch_size!r}")
    check_range("learning_rate", learning_rate, low=0.0, low_open=True)


def _optimiser(learning_rate, steps, weight_decay=0.0):
    warmup = min(200, max(steps // 10, 1))
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1),
                                            end_value=learning_rate * 1e-2)
    return optax.adamw(lr, weight_decay=weight_decay)


def _denoising_loss(model, x0, labels, key, label_dropout):
    r"""Monte Carlo estimate of :math:`\mathbb E\|\hat v_\theta(\alpha_t x_0 + \sigma_t\varepsilon, t, \tilde c) - (\alpha_t\varepsilon - \sigma_t x_0)\|^2`."""
    n = x0.shape[0]
    kt, ke, kd = jax.random.split(key, 3)
    t = jax.random.uniform(kt, (n,), minval=SCHEDULE.t_min, maxval=SCHEDULE.t_max)
    eps = jax.random.normal(ke, x0.shape)
    xt = SCHEDULE.alpha(t)[:, None] * x0 + SCHEDULE.sigma(t)[:, None] * eps
    drop = jax.random.bernoulli(kd, label_dropout, (n,))
    c = jnp.where(drop, NULL_LABEL, labels)
    v = SCHEDULE.alpha(t)[:, None] * eps - SCHEDULE.sigma(t)[:, None] * x0
    pred = jax.vmap(model.velocity)(xt, t, c)
    return jnp.mean(jnp.sum((pred - v) ** 2, axis=-1))


@eqx.filter_jit  # the Python numbers (steps, sizes, rates) are static
def _train_denoiser(key, x, labels, *, steps, batch_size, learning_rate, label_dropout, ema, width, depth,
                    n_frequencies):
    k_init, k_train = jax.random.split(key)
    model = Denoiser(k_init, width, depth, n_frequencies)
    params, static = eqx.partition(model, eqx.is_array)
    opt = _optimiser(learning_rate, steps)

    def loss_fn(p, xb, yb, k):
        return _denoising_loss(eqx.combine(p, static), xb, yb, k, label_dropout)

    def step(carry, i):
        p, p_ema, state = carry
        kb, kl = jax.random.split(jax.random.fold_in(k_train, i))
        idx = jax.random.randint(kb, (batch_size,), 0, x.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], labels[idx], kl)
        updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
        p_ema = jax.tree_util.tree_map(lambda e, q: ema * e + (1.0 - ema) * q, p_ema, p)
        return (p, p_ema, state), loss

    (_, p_ema, _), losses = jax.lax.scan(step, (params, params, opt.init(params)), jnp.arange(steps))
    return eqx.combine(p_ema, static), losses


def train_denoiser(key, steps: int = DENOISER_TRAINING["steps"], *, batch_size: int = DENOISER_TRAINING["batch_size"],
                   learning_rate: float = DENOISER_TRAINING["learning_rate"],
                   label_dropout: float = DENOISER_TRAINING["label_dropout"], ema: float = DENOISER_TRAINING["ema"],
                   split: str = "train", **config):
    r"""Train a :class:`Denoiser` on the digits of ``split`` with the denoising loss in :math:`v` (module docstring).

    One compiled ``lax.scan`` of ``steps`` AdamW steps (learning rate: linear warm-up, cosine decay
    to 1% of ``learning_rate``) on mini-batches drawn with replacement, :math:`t \sim U(t_{\min},
    t_{\max})` of :data:`SCHEDULE`, labels dropped to :data:`NULL_LABEL` with probability
    ``label_dropout``. Returns the exponential moving average (decay ``ema``) of the weights,
    :math:`\bar\theta_k = \text{ema}\,\bar\theta_{k-1} + (1 - \text{ema})\theta_k`, the usual choice for
    sampling diffusion models, and the per-step losses ``(steps,)``. Deterministic given ``key``.

    ``config``: architecture overrides of :data:`DENOISER_CONFIG` (``width``, ``depth``, ``n_frequencies``).
    """
    _check_training(steps, batch_size, learning_rate)
    check_range("label_dropout", label_dropout, low=0.0, high=1.0)
    check_range("ema", ema, low=0.0, high=1.0, high_open=True)
    cfg = {**DENOISER_CONFIG, **config}
    x, y = load_data(split)
    return _train_denoiser(key, x, y, steps=int(steps), batch_size=int(batch_size),
                           learning_rate=float(learning_rate), label_dropout=float(label_dropout), ema=float(ema),
                           **{k: int(v) for k, v in cfg.items()})


@eqx.filter_jit
def _train_classifier(key, x, labels, *, steps, batch_size, learning_rate, weight_decay, width, features):
    k_init, k_train = jax.random.split(key)
    model = Classifier(k_init, width, features)
    params, static = eqx.partition(model, eqx.is_array)
    opt = _optimiser(learning_rate, steps, weight_decay)

    def loss_fn(p, xb, yb):
        logits = eqx.combine(p, static).logits(xb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def step(carry, i):
        p, state = carry
        idx = jax.random.randint(jax.random.fold_in(k_train, i), (batch_size,), 0, x.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], labels[idx])
        updates, state = opt.update(g, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return eqx.combine(params, static), losses


def train_classifier(key, steps: int = CLASSIFIER_TRAINING["steps"], *,
                     batch_size: int = CLASSIFIER_TRAINING["batch_size"],
                     learning_rate: float = CLASSIFIER_TRAINING["learning_rate"],
                     weight_decay: float = CLASSIFIER_TRAINING["weight_decay"], split: str = "train", **config):
    r"""Train a :class:`Classifier` on the clean digits of ``split`` by cross-entropy
    :math:`-\mathbb E\log\mathrm{softmax}(\text{logits}(x))_y`: one compiled ``lax.scan`` of AdamW steps
    (decoupled weight decay, Loshchilov & Hutter 2019). Returns the classifier and the per-step losses.
    Deterministic given ``key``. ``config``: overrides of :data:`CLASSIFIER_CONFIG`."""
    _check_training(steps, batch_size, learning_rate)
    check_range("weight_decay", weight_decay, low=0.0)
    cfg = {**CLASSIFIER_CONFIG, **config}
    x, y = load_data(split)
    return _train_classifier(key, x, y, steps=int(steps), batch_size=int(batch_size),
                             learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                             **{k: int(v) for k, v in cfg.items()})


# ----------------------------------------------------------------------------------------- metrics
def _samples(name, x):
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != DIM:
        raise ValueError(f"{name} must have shape (n, {DIM}), got shape {x.shape}")
    return x


def classifier_accuracy(classifier: Classifier, split: str = "test") -> float:
    """Fraction of the real digits of ``split`` that ``classifier`` labels correctly."""
    x, y = load_data(split)
    return float(_accuracy(classifier, x, y))


def class_accuracy(samples, label, classifier: Classifier) -> jax.Array:
    r"""Fraction of ``samples`` (n, 64) that ``classifier`` labels ``label`` (an int, or (n,) ints):
    :math:`\frac1n\sum_i [\arg\max_k \text{logits}(x_i)_k = c_i]`. Chance is 0.1."""
    samples = _samples("samples", samples)
    check_range("label", label, low=0, high=N_CLASSES - 1)
    return _accuracy(classifier, samples, jnp.asarray(label, jnp.int32))


def feature_frechet(samples, reference, classifier: Classifier) -> jax.Array:
    r"""Fréchet distance (squared) between Gaussians fitted to the classifier features of ``samples``
    and ``reference`` (each (n, 64), n >= 2; use n well above the 64 feature dimensions):
    :math:`\|\mu_1 - \mu_2\|^2 + \operatorname{tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2})`
    (FID, Heusel et al. 2017, with :meth:`Classifier.features` in place of Inception features)."""
    samples, reference = _samples("samples", samples), _samples("reference", reference)
    return _feature_frechet(classifier, samples, reference)


@eqx.filter_jit
def _accuracy(classifier, x, labels):
    return jnp.mean(jnp.argmax(classifier.logits(x), axis=-1) == labels)


@eqx.filter_jit
def _feature_frechet(classifier, x, y):
    return frechet_distance(classifier.features(x), classifier.features(y))


# ----------------------------------------------------------------------------- shipped weights
def _to_store(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(_STORE_DTYPE) if eqx.is_inexact_array(a) else a, tree)


def _load_leaf(f, like):
    """Read one stored (half-precision) leaf as float32 with NumPy (no per-shape compilation)."""
    if not isinstance(like, jax.ShapeDtypeStruct):
        return eqx.default_deserialise_filter_spec(f, like)
    stored = np.load(f)
    if stored.shape != like.shape or stored.dtype != np.dtype(_STORE_DTYPE):
        raise ValueError(f"stored weights have shape {stored.shape} and dtype {stored.dtype}, expected "
                         f"{like.shape} and {np.dtype(_STORE_DTYPE)}: regenerate them with --write")
    return jnp.asarray(stored.astype(like.dtype))


def load_pretrained(directory=None):
    """The shipped ``(denoiser, classifier)`` (float32), read with ``eqx.tree_deserialise_leaves`` from
    ``solverlab/diffusion/data/`` (or ``directory``); architectures as :data:`DENOISER_CONFIG` and
    :data:`CLASSIFIER_CONFIG`. Raises ``FileNotFoundError`` (naming ``--write``) when they are missing."""
    directory = DATA_DIR if directory is None else Path(directory)
    key = jax.random.PRNGKey(0)
    templates = (eqx.filter_eval_shape(Denoiser, key, **DENOISER_CONFIG),
                 eqx.filter_eval_shape(Classifier, key, **CLASSIFIER_CONFIG))
    out = []
    for name, template in zip((_DENOISER_FILE, _CLASSIFIER_FILE), templates):
        path = directory / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `python -m solverlab.diffusion.digits --write`")
        out.append(eqx.tree_deserialise_leaves(path, template, filter_spec=_load_leaf))
    return tuple(out)


def write_pretrained(directory=None, verbose: bool = True):
    """Train both networks from :data:`PRETRAINED_KEYS` with the shipped settings, write them to
    ``directory`` (default the package's ``data/``), and return ``(denoiser, classifier, metrics)``
    with the metrics of the weights as stored (half precision)."""
    directory = DATA_DIR if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    den, den_losses = train_denoiser(jax.random.PRNGKey(PRETRAINED_KEYS["denoiser"]))
    den_losses.block_until_ready()
    timings["denoiser_train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    clf, _ = train_classifier(jax.random.PRNGKey(PRETRAINED_KEYS["classifier"]))
    jax.block_until_ready(clf)
    timings["classifier_train_s"] = time.perf_counter() - start
    eqx.tree_serialise_leaves(directory / _DENOISER_FILE, _to_store(den))
    eqx.tree_serialise_leaves(directory / _CLASSIFIER_FILE, _to_store(clf))
    den, clf = load_pretrained(directory)
    metrics = {**timings, "denoiser_final_loss": float(jnp.mean(den_losses[-200:])), **evaluate(den, clf)}
    metrics.update({f"{name}_bytes": (directory / name).stat().st_size for name in (_DENOISER_FILE, _CLASSIFIER_FILE)})
    if verbose:
        for k, v in metrics.items():
            print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
    return den, clf, metrics


def evaluate(denoiser, classifier, n_per_class: int = 50, guidance: float = 3.0, nfe: int = 20,
             method: str = "dpm_solver++_2m", seed: int = 0) -> dict:
    """Quality summary: classifier test accuracy; class accuracy and feature Fréchet distance (against
    the held-out images) of ``n_per_class`` samples per class, guided with scale ``guidance`` and
    unguided (conditional, w = 1), and of pure noise."""
    from .samplers import sample

    labels = jnp.repeat(jnp.arange(N_CLASSES, dtype=jnp.int32), n_per_class)
    x_T = jax.random.normal(jax.random.PRNGKey(seed), (labels.shape[0], DIM))
    x_test, _ = load_data("test")
    out = {"classifier_test_accuracy": classifier_accuracy(classifier, "test")}
    for name, w in (("guided", guidance), ("conditional", 1.0)):
        x = sample(model_fn(denoiser, labels, w), x_T, SCHEDULE, method, nfe)
        out[f"{name}_class_accuracy"] = float(class_accuracy(x, labels, classifier))
        out[f"{name}_frechet"] = float(feature_frechet(x, x_test, classifier))
    x = sample(model_fn(denoiser, None, 1.0), x_T, SCHEDULE, method, nfe)
    out["unconditional_frechet"] = float(feature_frechet(x, x_test, classifier))
    out["noise_frechet"] = float(feature_frechet(x_T, x_test, classifier))
    out["train_vs_test_frechet"] = float(feature_frechet(load_data("train")[0], x_test, classifier))
    return out


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m solverlab.diffusion.digits",
                                     description="Train (--write) or evaluate the shipped digits networks.")
    parser.add_argument("--write", action="store_true", help="retrain from the fixed keys and overwrite data/")
    parser.add_argument("--dir", default=None, help="directory of the weights (default: the package's data/)")
    args = parser.parse_args(argv)
    if args.write:
        write_pretrained(args.dir)
    else:
        for k, v in evaluate(*load_pretrained(args.dir)).items():
            print(f"{k}: {v:.4g}")


if __name__ == "__main__":
    _main()
