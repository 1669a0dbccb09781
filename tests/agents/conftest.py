import pytest

from tests.cluster import Cluster


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Name server + two hosts of domain B, as separate processes."""
    with Cluster(tmp_path_factory.mktemp("masa"), {"b1": {"domain": "B"}, "b2": {"domain": "B"}}) as c:
        yield c
