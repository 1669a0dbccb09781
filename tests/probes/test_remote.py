"""The external probe (``masa probe NAME``) called with bad arguments and served by
meters that fail, through real Pyro5: a broker, the probe as a child process, a proxy.

Every case must give the caller a clear error and leave the probe serving the next call
on the same proxy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import Pyro5
import Pyro5.errors
import pytest

from masa.errors import BadRequest, PayloadTooLarge
from probes.errors import ProbeError, ProbeTimeout
from probes.remote import connect
from tests.cluster import ROOT, Cluster

MASA = [str(Path(sys.executable).with_name("masa"))]

# a meter whose behaviour the test picks through a file, served with probes.remote.serve
METER = r"""
import sys
from masa.config import Settings
from probes.errors import ProbeTimeout
from probes.remote import serve

class Thing:
    pass

class Meter:
    def sample(self):
        mode = open(sys.argv[2]).read().strip()
        if mode == "timeout":
            raise ProbeTimeout("no answer after 2 tries of 1 s", "udp:10.9.9.9:161")
        if mode == "bug":
            raise ValueError(Thing())  # an object inside the exception
        if mode == "huge":
            raise RuntimeError("y" * (20 << 20))  # an error text beyond the message limit
        if mode == "object":
            return [("r/cpu", "cpu", 1.0, 2.0, Thing())]
        if mode == "none":
            return None
        if mode == "many":  # ~20 MB of rows
            return [("r/" + "x" * 4000, "B/s", 1.0, 2.0, 3.0)] * 5000
        return [("r/cpu", "cpu", 1.0, 2.0, 0.5)]

serve(sys.argv[1], Meter(), Settings.from_env())
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("masa"), {}) as c:
        yield c


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def masa_probe(broker):
    """The real `masa probe` command (procfs meter)."""
    proc = subprocess.Popen(MASA + ["probe", "pbad", "--label", "edge"], env=broker.settings.child_env(),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    _stop(proc)


@pytest.fixture(scope="module")
def scripted(broker, tmp_path_factory):
    """A probe serving the scripted meter; returns (process, mode file)."""
    mode = tmp_path_factory.mktemp("mode") / "mode"
    mode.write_text("ok")
    log = mode.with_name("log")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", METER, "pmeter", str(mode)], env=broker.settings.child_env(),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out)
    yield proc, mode
    _stop(proc)


def _serving(proc, px) -> None:
    assert proc.poll() is None, "the probe process ended"
    assert px.describe()["calls"] >= 0


def test_bad_arguments_are_refused_clearly_and_the_probe_serves_on(broker, masa_probe):
    px = connect("pbad", broker.settings, wait=20)
    try:
        px.sample()  # baseline
        cases = [
            (lambda: px.sample(1), BadRequest, "sample() takes no arguments (got 1 positional)"),
            (lambda: px.sample(x=1), BadRequest, "sample() takes no arguments (got keyword str 'x')"),
            (lambda: px.describe([1] * 1000), BadRequest, "describe() takes no arguments"),
            # an unknown keyword of 15 MB (under the 16 MB limit): Python's TypeError quoted
            # it whole, the answer outgrew the limit and the caller saw a dropped connection
            (lambda: px.sample(**{"k" * (15 << 20): 1}), BadRequest, "(got keyword str 'kkkk"),
            (lambda: px.nosuch(), AttributeError, "no exposed attribute or method 'nosuch'"),
            (lambda: px._meter, AttributeError, "no exposed attribute or method '_meter'"),
            (lambda: px.sample({"__class__": "Pyro5.client.Proxy", "state": []}), BadRequest, "plain data only"),
            (lambda: px.sample(1 << 70), BadRequest, "beyond 64 bits"),
        ]
        for call, kind, words in cases:
            with pytest.raises(kind) as info:
                call()
            assert words in str(info.value) and len(str(info.value)) < 3000, str(info.value)[:300]
            _serving(masa_probe, px)
        assert isinstance(px.sample(), list)
    finally:
        px._pyroRelease()


def test_an_argument_over_the_message_limit_drops_only_that_call(broker, masa_probe):
    """A caller that raised its own limit sends 20 MB: the probe refuses the message on
    its header (it cannot answer what it did not read) and closes that connection only."""
    px = connect("pbad", broker.settings, wait=20)
    limit = Pyro5.config.MAX_MESSAGE_SIZE
    Pyro5.config.MAX_MESSAGE_SIZE = 64 << 20
    try:
        with pytest.raises(Pyro5.errors.CommunicationError):
            px.sample("x" * (20 << 20))
    finally:
        Pyro5.config.MAX_MESSAGE_SIZE = limit
    try:
        _serving(masa_probe, px)  # the proxy reconnects
        assert isinstance(px.sample(), list)
    finally:
        px._pyroRelease()


def test_a_failing_meter_gives_a_clear_probe_error_and_the_probe_serves_on(broker, scripted):
    """Before: a ProbeTimeout arrived as 'unsupported serialized class', an exception
    holding an object or a row with one as 'refused to deserialize types with double
    underscores', and a 20 MB error text or 20 MB of rows as a dropped connection."""
    proc, mode = scripted
    px = connect("pmeter", broker.settings, wait=20)
    try:
        assert px.sample() == [["r/cpu", "cpu", 1.0, 2.0, 0.5]]
        cases = [
            ("timeout", ProbeTimeout, "udp:10.9.9.9:161: no answer after 2 tries"),
            ("bug", ProbeError, "probe pmeter: meter failed: ValueError: <__main__.Thing object"),
            ("huge", ProbeError, "meter failed: RuntimeError: yyy"),
            ("object", ProbeError, "the meter returned an unusable row"),
            ("none", ProbeError, "unusable row: NoneType None"),
            ("many", PayloadTooLarge, "5000 rows"),
        ]
        for name, kind, words in cases:
            mode.write_text(name)
            with pytest.raises(kind) as info:
                px.sample()
            text = str(info.value)
            assert words in text and len(text) < 3000, (name, text[:300])
            mode.write_text("ok")
            assert px.sample() == [["r/cpu", "cpu", 1.0, 2.0, 0.5]], name  # the same proxy
            assert proc.poll() is None
        assert info.type is PayloadTooLarge
        # one log line (and a traceback for a bug) per failure, the 20 MB text cut there too
        log = mode.with_name("log").read_text()
        assert "ValueError" in log and log.count("meter failed: RuntimeError") == 1 and len(log) < 100_000
    finally:
        px._pyroRelease()
