import pytest

from tests.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Name server + three hosts (h1, h2 in domain A; h3 accepts only relays)."""
    home = tmp_path_factory.mktemp("masa")
    hosts = {"h1": {}, "h2": {}, "h3": {"domain": "B", "allow": ["relay"]}}
    with Cluster(home, hosts) as c:
        yield c
