"""A real local Ray (2 CPUs) shared by the Ray tests and shut down when they end."""

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need Ray: pip install 'turngym[ray]'")


@pytest.fixture(scope="session")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()  # stops the raylet, GCS and workers this session started
