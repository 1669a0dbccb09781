"""The test suite's deployment: masa's LocalCluster plus the deliberately faulty kinds."""

from __future__ import annotations

import os
from pathlib import Path

from masa.local import LocalCluster, wait

ROOT = Path(__file__).resolve().parent.parent
TEST_KINDS = "flaky=tests.kinds:FlakyAgent"

__all__ = ["ROOT", "Cluster", "attempt", "wait"]


class Cluster(LocalCluster):
    def __init__(self, home: Path, hosts: dict[str, dict] | None = None, kinds: tuple[str, ...] = (),
                 **kw) -> None:
        """``kinds``: more ``name=module:Class`` kinds for the hosts besides the suite's."""
        os.environ["MASA_KINDS"] = ",".join((TEST_KINDS, *kinds))  # children inherit it
        os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        kw.setdefault("secret", "test-secret")
        super().__init__(home, hosts, **kw)


def attempt(fn):
    """``fn()``, or None while the peer is not there yet."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None
