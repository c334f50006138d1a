"""The small class-conditional digits diffusion model: data, shipped weights, guidance, quality.

Thresholds were measured on the shipped weights (``python -m solverlab.diffusion.digits``) and are
set with margin; the statistical ones follow from the sample size (``stats.Z`` standard errors).
Measured (20 samples per class, dpm_solver++_2m, NFE 20, seeds 0-2): class accuracy 1.0 at w = 3,
0.965-0.99 at w = 1, 0.09-0.115 at w = 0; mean probability of the asked class 0.998-1.0 (w = 3),
0.958-0.982 (w = 1); feature Frechet to the held-out digits 44-53 (w = 3), 10.6-15.9 (w = 1), 849-856
for the starting noise, 10.9 for the training digits; classifier test accuracy 0.978.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from solverlab.diffusion import digits as D
from solverlab.diffusion.samplers import _sample, sample

from .stats import Z

PER_CLASS = 20
LABELS = jnp.repeat(jnp.arange(10, dtype=jnp.int32), PER_CLASS)


@pytest.fixture(scope="module")
def pretrained():
    return D.load_pretrained()


@pytest.fixture(scope="module")
def samples(pretrained):
    """Samples of the shipped denoiser from the same noise at w = 0, 1, 3 (one compiled sampler)."""
    den, _ = pretrained
    x_T = jax.random.normal(jax.random.PRNGKey(0), (LABELS.shape[0], D.DIM))
    out = {"noise": x_T}
    compiled = None
    for w in (0.0, 1.0, 3.0):
        out[w] = sample(D.model_fn(den, LABELS, w), x_T, D.SCHEDULE, "dpm_solver++_2m", 20)
        compiled = _sample._cached._cache_size() if compiled is None else compiled
    out["recompiled"] = _sample._cached._cache_size() != compiled
    return out


# ------------------------------------------------------------------------------------------ data
def test_data_shapes_range_and_split():
    x, y = D.load_data()
    assert x.shape == (1797, 64) and x.dtype == jnp.float32
    assert y.shape == (1797,) and y.dtype == jnp.int32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # pixels 0..16 -> [-1, 1]
    assert set(np.unique(np.asarray(y)).tolist()) == set(range(10))
    train, test = D.split_indices("train"), D.split_indices("test")
    assert len(train) == 1437 and len(test) == 360
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    xt, yt = D.load_data("test")
    np.testing.assert_array_equal(np.asarray(xt), np.asarray(x)[test])
    np.testing.assert_array_equal(np.asarray(yt), np.asarray(y)[test])
    images = D.to_images(x[:5] * 2.0)  # out of range values are clipped
    assert images.shape == (5, 8, 8) and float(images.min()) == 0.0 and float(images.max()) == 1.0
    np.testing.assert_allclose(np.asarray(D.to_images(x[:3])), (np.asarray(x[:3]).reshape(3, 8, 8) + 1) / 2)


def test_schedule_is_a_vp_schedule():
    t = jnp.linspace(D.SCHEDULE.t_min, D.SCHEDULE.t_max, 7)
    np.testing.assert_allclose(np.asarray(D.SCHEDULE.alpha(t) ** 2 + D.SCHEDULE.sigma(t) ** 2), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------------- shipped weights
def test_shipped_weights_load_and_match_the_architecture(pretrained):
    den, clf = pretrained
    key = jax.random.PRNGKey(1)
    for model, fresh, name in ((den, eqx.filter_eval_shape(D.Denoiser, key, **D.DENOISER_CONFIG), "denoiser"),
                               (clf, eqx.filter_eval_shape(D.Classifier, key, **D.CLASSIFIER_CONFIG), "classifier")):
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
        fresh_leaves = jax.tree_util.tree_leaves(eqx.filter(fresh, lambda a: isinstance(a, jax.ShapeDtypeStruct)))
        assert jax.tree_util.tree_structure(model) == jax.tree_util.tree_structure(fresh)
        assert [a.shape for a in leaves] == [a.shape for a in fresh_leaves] and len(leaves) > 5
        assert all(a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a))) for a in leaves)
        size = (D.DATA_DIR / f"digits_{name}.eqx").stat().st_size
        assert size < 300_000, f"{name}: {size} bytes"


def test_classifier_test_accuracy(pretrained):
    """Measured 0.978 on the 360 held-out digits; 0.95 is about 4 standard errors below."""
    _, clf = pretrained
    accuracy = D.classifier_accuracy(clf, "test")
    assert accuracy > 0.95, accuracy
    assert clf.features(jnp.zeros((3, 64))).shape == (3, D.CLASSIFIER_CONFIG["features"])
    assert clf.logits(jnp.zeros(64)).shape == (10,)


# -------------------------------------------------------------------------------------- guidance
@eqx.filter_jit
def _denoise(den, x, t, labels):
    return jax.vmap(den)(x, jnp.full(x.shape[:1], t), jnp.broadcast_to(labels, x.shape[:1]))


@eqx.filter_jit
def _guided(model, x, t):
    return model(x, t)


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional(pretrained):
    den, _ = pretrained
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 64))
    t = jnp.asarray(0.4)
    conditional = _denoise(den, x, t, jnp.asarray(3))
    unconditional = _denoise(den, x, t, jnp.asarray(D.NULL_LABEL))
    np.testing.assert_array_equal(np.asarray(_guided(D.model_fn(den, 3, 1.0), x, t)), np.asarray(conditional))
    np.testing.assert_array_equal(np.asarray(_guided(D.model_fn(den, 3, 0.0), x, t)), np.asarray(unconditional))
    np.testing.assert_array_equal(np.asarray(_guided(D.model_fn(den, None), x, t)), np.asarray(unconditional))
    w = 2.5
    np.testing.assert_allclose(np.asarray(_guided(D.model_fn(den, 3, w), x, t)),
                               np.asarray(unconditional + w * (conditional - unconditional)), rtol=1e-5, atol=1e-5)
    # a label per sample
    per_sample = _guided(D.model_fn(den, jnp.arange(6), 1.0), x, t)
    np.testing.assert_array_equal(np.asarray(per_sample), np.asarray(_denoise(den, x, t, jnp.arange(6))))
    single = _guided(D.model_fn(den, 3, 1.0), x[0], t)  # a single image
    np.testing.assert_allclose(np.asarray(single), np.asarray(conditional[0]), rtol=1e-5, atol=1e-6)


def test_guided_samples_are_the_asked_class(pretrained, samples):
    """w = 3 (NFE 20, dpm_solver++_2m): far above chance (0.1 + Z standard errors of a binomial), at
    least as often right as the conditional model (w = 1) and more confident (mean probability of the
    asked class); at w = 0 the label is ignored, so accuracy is chance. New labels and guidance scales
    reuse the compiled sampler."""
    _, clf = pretrained
    n = LABELS.shape[0]
    se_chance = np.sqrt(0.1 * 0.9 / n)
    acc = {w: float(D.class_accuracy(samples[w], LABELS, clf)) for w in (0.0, 1.0, 3.0)}
    assert acc[3.0] > 0.1 + Z * se_chance and acc[3.0] > 0.95, acc
    assert acc[3.0] >= acc[1.0] > 0.9, acc
    assert abs(acc[0.0] - 0.1) < Z * se_chance, acc
    prob = {w: float(jnp.mean(jax.nn.softmax(clf.logits(samples[w]))[jnp.arange(n), LABELS])) for w in (1.0, 3.0)}
    assert prob[3.0] > prob[1.0], prob
    assert not samples["recompiled"]


def test_feature_frechet_of_samples_is_far_below_that_of_noise(pretrained, samples):
    _, clf = pretrained
    x_test, _ = D.load_data("test")
    fd = {k: float(D.feature_frechet(samples[k], x_test, clf)) for k in ("noise", 1.0, 3.0)}
    assert fd["noise"] > 500, fd
    assert fd[1.0] < 0.05 * fd["noise"] and fd[3.0] < 0.15 * fd["noise"], fd
    assert fd[3.0] > fd[1.0], fd  # guidance trades diversity for class fidelity (Ho & Salimans 2022)
    floor = float(D.feature_frechet(D.load_data("train")[0], x_test, clf))  # real vs real: 10.9
    assert floor < 20, floor


# -------------------------------------------------------------------------------------- training
def test_training_is_deterministic_given_the_key():
    key, other = jax.random.PRNGKey(3), jax.random.PRNGKey(4)
    tiny = {"steps": 3, "batch_size": 8, "width": 16, "depth": 1, "n_frequencies": 2}
    a, losses_a = D.train_denoiser(key, **tiny)
    b, losses_b = D.train_denoiser(key, **tiny)
    c, _ = D.train_denoiser(other, **tiny)
    assert losses_a.shape == (3,) and bool(jnp.all(jnp.isfinite(losses_a)))
    np.testing.assert_array_equal(np.asarray(losses_a), np.asarray(losses_b))
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert not all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c)))


def test_a_short_classifier_run_learns_and_is_deterministic():
    key = jax.random.PRNGKey(5)
    clf, losses = D.train_classifier(key, 100, width=32, features=16)
    again, _ = D.train_classifier(key, 100, width=32, features=16)
    assert eqx.tree_equal(clf, again)
    assert float(losses[-10:].mean()) < 0.5 * float(losses[:10].mean())
    assert D.classifier_accuracy(clf, "test") > 0.5  # chance is 0.1


# ------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda den: D.model_fn(den, 3, -1.0), "guidance"),
    (lambda den: D.model_fn(den, 11), "label"),
    (lambda den: D.model_fn(den, 2.5), "label"),
    (lambda den: D.to_images(jnp.zeros((2, 63))), "x must"),
    (lambda den: D.load_data("validation"), "split"),
    (lambda den: D.train_denoiser(jax.random.PRNGKey(0), 0), "steps"),
    (lambda den: D.train_denoiser(jax.random.PRNGKey(0), 2, label_dropout=1.5), "label_dropout"),
    (lambda den: D.class_accuracy(jnp.zeros((4, 64)), 10, None), "label"),
    (lambda den: D.feature_frechet(jnp.zeros((4, 8)), jnp.zeros((4, 64)), None), "samples"),
])
def test_bad_input_names_the_parameter(pretrained, call, match):
    with pytest.raises(ValueError, match=match):
        call(pretrained[0])
