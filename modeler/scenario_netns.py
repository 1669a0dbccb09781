"""Network namespaces for ``masa scenario --netns``: each host its own stack and address.

A bridge in the root namespace (the "LAN", also where the name server, the router's
``snmpd`` and the scenario itself live) and one namespace per host joined to it by a veth
pair, on a private /24 of 10.213.0.0/16 that no interface uses yet.  Only what this object
created is removed again, processes left inside its namespaces first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess


class NetnsUnavailable(RuntimeError):
    """This machine (or this user) cannot create network namespaces."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=15)


class Netns:
    """``up()`` builds it, ``down()`` removes it; ``prefix(host)`` runs a command inside."""

    def __init__(self, hosts: list[str]) -> None:
        self.id = secrets.token_hex(2)
        self.bridge = f"mscbr{self.id}"
        used = _ip("-4", "-o", "addr", "show", check=False).stdout
        free = [k for k in range(1, 255) if f"10.213.{k}." not in used]
        if not free:
            raise NetnsUnavailable("no free /24 in 10.213.0.0/16")
        net = free[secrets.randbelow(len(free))]
        self.gateway = f"10.213.{net}.1"
        self.address = {h: f"10.213.{net}.{10 + i}" for i, h in enumerate(hosts)}
        self.names = {h: f"msc{self.id}-{h}" for h in hosts}
        self._veths: list[str] = []
        self._made: list[str] = []
        self._bridge_made = False

    def port(self, host: str) -> str:
        """The bridge-side interface of a host (what the router reports traffic of)."""
        return f"msc{self.id}v{list(self.names).index(host)}"

    def prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[host]]

    def up(self) -> None:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._bridge_made = True
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, (host, ns) in enumerate(self.names.items()):
                _ip("netns", "add", ns)
                self._made.append(ns)
                outside, inside = self.port(host), f"msc{self.id}p{i}"
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                self._veths.append(outside)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", inside)
                _ip("-n", ns, "link", "set", inside, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "route", "add", "default", "via", self.gateway)
        except FileNotFoundError:
            self.down()
            raise NetnsUnavailable("the 'ip' command (iproute2) is not installed") from None
        except subprocess.CalledProcessError as exc:
            self.down()
            raise NetnsUnavailable(f"{' '.join(exc.cmd)}: {exc.stderr.strip() or exc.returncode}") from None

    def down(self) -> None:
        """Remove what ``up`` made; processes still inside our namespaces are ended first."""
        for ns in self._made:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        self._made.clear()
        for veth in self._veths:  # normally gone with their namespace's peer
            _ip("link", "del", veth, check=False)
        self._veths.clear()
        if self._bridge_made:
            _ip("link", "del", self.bridge, check=False)
            self._bridge_made = False
