import jax
import pytest

import solverlab


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    """In-process dashboards compile afresh (the served apps of tests/browser use the persistent cache).

    Turning the persistent cache on here, late in a long pytest process that had already compiled
    hundreds of programs without it, segfaulted reading an entry (jax 0.10,
    ``compilation_cache.get_executable_and_time``) in the full suite, never alone (see the Makefile).
    """
    solverlab.setup(x64=bool(jax.config.jax_enable_x64), cache=False)
