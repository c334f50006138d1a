import jax
import pytest

import solverlab


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    """The dashboards' persistent compilation cache, as the apps use it; float precision untouched."""
    solverlab.setup(x64=bool(jax.config.jax_enable_x64))
