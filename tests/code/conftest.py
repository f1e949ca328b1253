import pytest


@pytest.fixture(scope="module", autouse=True)
def _close_grading_pools():
    """The code environment keeps process-wide pools of grading sandboxes (closed at exit);
    close them when this module is done so no container outlives the tests that made it."""
    yield
    from turngym.envs.code.env import _close_pools

    _close_pools()
