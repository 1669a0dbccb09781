import os
import shutil

import pytest

from tests.cluster import Cluster
from tests.probes.snmp_agents import Snmpd


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Name server + two hosts of domain B, as separate processes."""
    with Cluster(tmp_path_factory.mktemp("masa"), {"b1": {"domain": "B"}, "b2": {"domain": "B"}}) as c:
        yield c


@pytest.fixture(scope="module")
def snmpd():
    """Debian's snmpd on a loopback port, for the collectors that read it."""
    if not (shutil.which("snmpd") or os.path.exists("/usr/sbin/snmpd")):
        pytest.skip("Debian's snmpd is not installed (./run setup installs it)")
    agent = Snmpd()
    yield agent
    agent.stop()
