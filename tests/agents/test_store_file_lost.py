"""An activity source's store file deleted while its host runs (an operator's ``rm``, a
tmp cleaner): the agent puts the file back with everything its open connection still
reads, so a restart of the host finds the history and connection evidence from before
the deletion and after it.  Real processes: name server, host, a collector metering a
real child process that holds TCP connections."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from masa.activity import Series
from tests.cluster import Cluster, attempt

MARKER = "masa-lost-store-marker"
# a process that listens on a loopback port and holds a connection to it: a listening
# row and an outgoing edge in its collector's connection evidence
TALKER = f"""
import socket, time
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
accepted, _ = server.accept()
time.sleep(3600)  # {MARKER}
"""


def _series(answer: dict) -> dict[str, Series]:
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def _evidence_of(answer: dict, obj: str) -> tuple[list, list]:
    return ([e for e in answer["edges"] if e[0] == obj], [row for row in answer["listening"] if row[1] == obj])


@pytest.mark.parametrize("remove", ["file", "folder"])
def test_a_deleted_store_file_is_made_again_and_a_restart_finds_all_history(tmp_path, remove):
    child = subprocess.Popen([sys.executable, "-c", TALKER])
    try:
        with Cluster(tmp_path, {"h1": {}}) as c:
            c.create("h1", "collector", "col", interval=0.2, match=MARKER, per_process="pid",
                     connections_every=0.5)
            col = c.ref("col", timeout=45)
            # the child's activity and its connection evidence are in the store
            got = c.wait(lambda: (s := _series(col.query("report")))
                         and any(o.endswith(f"/{child.pid}") and len(v) >= 3 for o, v in s.items()) and s,
                         timeout=30)
            proc = next(o for o in got if o.endswith(f"/{child.pid}"))
            edges, listening = c.wait(lambda: (e := _evidence_of(col.query("connections"), proc)) and all(e) and e,
                                      timeout=30)
            child.kill()  # nothing after this can bring its samples or evidence back
            child.wait(10)
            db = tmp_path / "hosts" / "h1" / "activity-col.db"
            assert db.exists()
            deleted = time.time()
            if remove == "file":
                db.unlink()  # its -wal and -shm stay, as after an operator's rm
            else:
                shutil.rmtree(db.parent)  # the host's whole state folder, host.db with it
            c.wait(db.exists, timeout=30)
            if remove == "folder":  # the host puts its checkpoints back on its own beat (5 s)
                c.wait((db.parent / "host.db").exists, timeout=30)
            back = time.time()
            # samples taken after the deletion, before and after the file came back
            c.wait(lambda: col.query("status")["complete_until"] > back + 1.0, timeout=30)
            before = _series(col.query("report"))
            assert before["h1/cpu"].end.min() < deleted < before["h1/cpu"].end.max()
            assert not list(db.parent.glob(".activity-col.db*"))  # no copy left behind

            c.kill("h1")
            killed = time.time()
            c.restart("h1")
            col = c.ref("col", timeout=45)
            # reported up to its checkpointed horizon until it meters again: wait for that
            c.wait(lambda: (attempt(lambda: col.query("status")["complete_until"]) or 0) > killed, timeout=45)
            after = _series(col.query("report"))
            for obj, held in before.items():  # every sample reported before the restart
                assert obj in after, obj
                assert np.isin(held.end, after[obj].end).all(), obj
            np.testing.assert_array_equal(after[proc].value, before[proc].value)
            again = _evidence_of(col.query("connections"), proc)
            assert again[1] == listening
            assert [e[1] for e in again[0]] == [e[1] for e in edges]
            assert again[0][0][2] >= edges[0][2]  # sightings held, not counted afresh
    finally:
        child.kill()
        child.wait(10)
    log = (tmp_path / "logs" / "h1.log").read_text()
    assert log.count("made it again with everything it held") == 1
