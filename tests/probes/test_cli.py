"""``masa collect procfs`` end to end: the real command, a real busy child, the CSV the
modeler reads."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

from masa.activity import read_csv

MASA = [str(Path(sys.executable).with_name("masa"))]


def test_collect_procfs_writes_the_modelers_csv(spawn, tmp_path):
    child = spawn(["cpu:30"], marker="masa-probe-test-cli")
    child.wait_event()
    out, conns = tmp_path / "a.csv", tmp_path / "c.csv"
    listener = socket.create_server(("127.0.0.1", 0))  # one socket for sure, whatever else runs
    port = listener.getsockname()[1]
    with listener:
        run = subprocess.run(
            MASA + ["collect", "procfs", "--group", "busy=cmdline:masa-probe-test-cli", "--per-process", "none",
                    "--label", "hostA", "--interval", "0.25", "--seconds", "1.5", "--out", str(out),
                    "--connections", str(conns), "--connections-every", "0.5"],
            capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "ticks" in run.stderr and "wrote" in run.stderr  # the progress line and summary
    series = read_csv(out)
    assert {"hostA/app/busy", "hostA/cpu"} <= set(series)
    busy = series["hostA/app/busy"]
    assert len(busy) >= 4 and min(busy.value) > 0  # the spinning child, every interval
    assert max(series["hostA/cpu"].value) <= os.cpu_count() + 0.01
    with conns.open() as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"time", "pid", "name", "local", "remote", "state", "direction", "uid"}
    assert any(r["pid"] == str(os.getpid()) and r["local"].startswith(f"127.0.0.1:{port}") for r in rows), rows[:5]


def test_collect_rejects_bad_rules(tmp_path):
    run = subprocess.run(MASA + ["collect", "procfs", "--group", "web=colour:blue", "--seconds", "1",
                                 "--out", str(tmp_path / "a.csv")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown kind 'colour'" in run.stderr


def test_collect_rejects_a_bad_match_pattern_naming_the_option(tmp_path):
    run = subprocess.run(MASA + ["collect", "procfs", "--match", "((", "--seconds", "1",
                                 "--out", str(tmp_path / "a.csv")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "--match" in run.stderr and "bad regular expression '(('" in run.stderr


def test_a_tick_reached_late_is_skipped_not_bunched(monkeypatch):
    """A sample taken late and the next one right after it would give a rate over a
    sliver of an interval: a tick more than half an interval late is skipped."""
    from probes import collect

    clock = [100.0]
    monkeypatch.setattr(collect.time, "time", lambda: clock[0])
    progress = collect.Progress()
    ticks = collect._grid(1.0, 10.0, progress)
    assert next(ticks) == 100.0
    clock[0] = 101.6  # tick 101 reached 0.6 s late: skipped, the next is 102
    assert next(ticks) == 102.0 and progress.late == 1
    clock[0] = 103.3  # 0.3 s late: still taken
    assert next(ticks) == 103.0 and progress.late == 1


def test_a_label_is_one_name_segment_in_every_command(tmp_path):
    """``a/b`` would read as host ``a``'s object ``b/...``; the modeler and the domain
    agents would then group it wrongly, so every command that takes a label refuses it."""
    out = str(tmp_path / "a.csv")
    for args in (["collect", "procfs", "--label", "a/b", "--seconds", "1", "--out", out],
                 ["collect", "snmp", "udp:127.0.0.1:1161", "--label", "r*", "--interval", "1",
                  "--seconds", "1", "--out", out],
                 ["probe", "p1", "--label", "a b"]):
        run = subprocess.run(MASA + args, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, (args, run.stderr)
        assert "a label must be one non-empty name without '/'" in run.stderr, run.stderr
    assert not Path(out).exists()


def test_durations_that_are_no_finite_number_are_usage_errors(tmp_path):
    """NaN passed ``seconds < interval`` (every comparison with NaN is false) and failed
    later as 'cannot convert float NaN to integer'; 0 s between connection samples would
    sample sockets on every tick."""
    out = str(tmp_path / "a.csv")
    for extra, hint in ((["--seconds", "nan"], "--seconds"), (["--seconds", "inf"], "--seconds"),
                        (["--seconds", "2", "--connections-every", "0"], "--connections-every"),
                        (["--seconds", "2", "--connections-every", "nan"], "--connections-every")):
        run = subprocess.run(MASA + ["collect", "procfs", "--out", out, *extra], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2, (extra, run.stderr)
        assert f"Invalid value for {hint}:" in run.stderr, run.stderr
    assert not Path(out).exists()
