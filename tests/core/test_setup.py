"""The package boundary: setup() is the one JAX switchboard, and the core never imports a UI library."""

import subprocess
import sys

import jax
import pytest

import solverlab
from solverlab.errors import check_range


def test_core_imports_no_ui_library():
    code = (
        "import sys, solverlab, solverlab.brownian;"
        "bad = [m for m in ('panel', 'holoviews', 'bokeh', 'ipywidgets', 'param') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_setup_turns_on_x64_and_the_cache(tmp_path):
    before = bool(jax.config.jax_enable_x64)
    before_dir = jax.config.jax_compilation_cache_dir
    try:
        info = solverlab.setup(x64=True, cache_dir=tmp_path / "cache")
        assert info["x64"] is True and jax.numpy.asarray(1.0).dtype == jax.numpy.float64
        assert info["cache_dir"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
        assert info["backend"] == jax.default_backend() and info["devices"]
        info = solverlab.setup(x64=False, cache=False)
        assert info["x64"] is False and info["cache_dir"] is None
    finally:
        jax.config.update("jax_enable_x64", before)
        jax.config.update("jax_compilation_cache_dir", before_dir)


def test_second_process_reuses_the_persistent_cache(tmp_path):
    code = (
        "import jax, solverlab; solverlab.setup(cache_dir=%r);"
        "from solverlab.brownian import BrownianTree;"
        "BrownianTree(0., 1., 1e-3, (), jax.random.key(0), 'space-time').evaluate(0.1, 0.2).W.block_until_ready()"
    ) % str(tmp_path)
    subprocess.run([sys.executable, "-c", code], check=True)
    entries = {p.name for p in tmp_path.iterdir()}
    assert entries, "nothing was written to the compilation cache"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {p.name for p in tmp_path.iterdir()} == entries  # the second run compiled nothing new


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0.0, dict(low=0.0, low_open=True), r"x must lie in \(0, inf\), got 0"),
        (2.0, dict(low=0.0, high=1.0), r"x must lie in \[0, 1\], got 2"),
        (float("inf"), dict(), r"x must be finite"),
        ("a", dict(), r"x must be a real number"),
    ],
)
def test_check_range_messages(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_range("x", value, **kwargs)


def test_check_range_lets_traced_values_through():
    jax.jit(lambda x: check_range("x", x, low=0.0) or x)(-1.0)
