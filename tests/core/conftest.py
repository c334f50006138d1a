import jax
import pytest


@pytest.fixture
def x64():
    """Run a test in float64 (laws to float precision); restores the previous setting."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    with jax.enable_x64(request.param == "float64"):
        yield request.param
