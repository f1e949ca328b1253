import pytest


@pytest.fixture(scope="module", autouse=True)
def _close_grading_pools():
    """The code environment keeps process-wide pools of grading sandboxes (closed at exit);
    close them when this module is done so no container outlives the tests that made it."""
    yield
    from turngym.sandboxes import close_shared_pools

    close_shared_pools()
