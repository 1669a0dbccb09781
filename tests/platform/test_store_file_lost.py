"""A SQLite store whose file is deleted or replaced while it is open: the content its
connections still read is put back at the path, in place, with writers and readers at
work; no connection of the store ever opens another file.  Real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from masa.store import Store
from tests.cluster import wait


def _rows(n0: int, n1: int) -> list[tuple]:
    return [("o", "cpu", float(i), i + 1.0, 0.5) for i in range(n0, n1)]


def _reopened(path: Path) -> int:
    """Samples a fresh process would find at ``path`` (a new store on it)."""
    with Store(f"sqlite:///{path}") as again:
        return len(again.samples())


def test_nothing_lost_is_nothing_done(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        assert store.keep_file_in_place() is None


def test_a_replaced_file_gives_way_to_the_stores_content(tmp_path):
    path = tmp_path / "a.db"
    with Store(f"sqlite:///{path}") as store:
        store.add_samples(_rows(0, 10))
        other = tmp_path / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, path)
        lost = store.keep_file_in_place()
        assert lost.why == "was replaced by another file" and lost.copy_error is None
        store.add_samples(_rows(10, 12))
        assert len(store.samples()) == 12
    assert _reopened(path) == 12


def test_a_connection_opened_after_the_deletion_is_refused_not_a_new_empty_file(tmp_path):
    path = tmp_path / "a.db"
    with Store(f"sqlite:///{path}") as store:
        store.add_samples(_rows(0, 3))
        held = store.engine.raw_connection()  # the pool's only connection, taken
        path.unlink()
        with pytest.raises(OperationalError, match="no longer the file this store opened"):
            store.samples()  # needs a second connection: none on another file
        assert not path.exists()
        held.close()
        assert store.keep_file_in_place().why == "was deleted"
    assert _reopened(path) == 3


def test_writers_and_readers_at_work_lose_nothing_when_the_folder_goes(tmp_path):
    path = tmp_path / "state" / "a.db"
    store = Store(f"sqlite:///{path}")
    written, errors, stop = [0], [], threading.Event()

    def write() -> None:
        while not stop.is_set() and written[0] < 5000:
            try:
                store.add_samples(_rows(written[0], written[0] + 1))
                written[0] += 1
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

    def read() -> None:
        while not stop.is_set():
            try:
                store.samples()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=f) for f in (write, read, read)]
    for t in threads:
        t.start()
    try:
        wait(lambda: written[0] >= 50 or errors, timeout=30)
        for f in path.parent.iterdir():  # as shutil.rmtree would
            f.unlink()
        path.parent.rmdir()
        lost = store.keep_file_in_place()
        at_swap = written[0]
        wait(lambda: written[0] >= min(at_swap + 50, 5000) or errors, timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        store.close()
    assert lost.why == "was removed with its folder" and lost.copy_error is None
    assert errors == []
    assert _reopened(path) == written[0]
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("a.db")) == []
