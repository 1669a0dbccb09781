"""procfs probe against real child processes with known CPU patterns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from masa.activity import CPU
from probes import procread
from probes.procfs import ProcfsProbe, to_series
from probes.rules import RuleError, parse_rules
from tests.probes.traffic import through_loopback

STEP = 0.25


def _run(probe: ProcfsProbe, until, limit: float = 20.0) -> list:
    """Sample every STEP seconds until ``until()`` is true (bounded by ``limit``)."""
    samples = []
    probe.sample()
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(STEP)
        samples += probe.sample()
        if until():
            break
    time.sleep(STEP)
    samples += probe.sample()
    return samples


def test_busy_idle_pattern_is_seen_and_total_cpu_matches_child(spawn):
    """A child busy 1.5 s, idle 1.5 s, busy 1.5 s: idle intervals read ~0, busy ones
    clearly above, and the integral equals the CPU time the child measured itself."""
    probe = ProcfsProbe(f"pat=cmdline:{'masa-probe-test-pattern'}", per_process="pid",
                        match="masa-probe-test-pattern", host="h")
    probe.sample()
    child = spawn(["busy:1.5", "idle:1.5", "busy:1.5"], marker="masa-probe-test-pattern")
    done = []
    samples = []
    deadline = time.time() + 30
    while len(done) < 4 and time.time() < deadline:
        time.sleep(STEP)
        samples += probe.sample()
        while len(done) < 4 and (ev := child.poll_event()):
            done.append(ev)
    time.sleep(STEP)
    samples += probe.sample()
    assert [e[0] for e in done] == ["start", "busy-end", "idle-end", "busy-end"]
    series = to_series(samples)
    proc_obj = f"h/proc/{psutil.Process(child.pid).name()}/{child.pid}"
    assert set(series) >= {proc_obj, "h/app/pat", "h/cpu"}
    s = series[proc_obj]
    assert s.unit == CPU
    (_, t_start, _), (_, t_b1, c_b1), (_, t_i1, c_i1), (_, t_b2, c_b2) = done
    total = float(s.integral(s.end[-1])[0])
    # The child measured its own CPU; /proc counts in ticks (and includes interpreter start-up
    # before "start" was printed, which the child's process_time also includes).
    assert abs(total - c_b2) < 0.1, (total, c_b2, sorted(k for k in series if "pattern" in k or str(child.pid) in k), [(round(a - done[0][1], 3), round(b - a, 3), round(v, 3)) for a, b, v in zip(s.start, s.end, s.value, strict=True)][:4], done)
    app = series["h/app/pat"]
    assert abs(float(app.integral(app.end[-1])[0]) - total) < 1e-9
    inside_idle = [v for a, b, v in zip(s.start, s.end, s.value, strict=True) if a >= t_b1 + 0.05 and b <= t_i1 - 0.05]
    inside_busy = [v for a, b, v in zip(s.start, s.end, s.value, strict=True)
                   if (a >= t_start + 0.05 and b <= t_b1 - 0.05) or (a >= t_i1 + 0.05 and b <= t_b2 - 0.05)]
    assert len(inside_idle) >= 3 and len(inside_busy) >= 4
    assert max(inside_idle) < 0.05, inside_idle
    # the machine is shared, so the child gets what the scheduler gives it: compare with
    # the mean rate it measured itself over its busy phases
    own_rate = (c_b1 + c_b2 - c_i1) / ((t_b1 - t_start) + (t_b2 - t_i1))
    seen_rate = sum(inside_busy) / len(inside_busy)
    assert own_rate > 0.05 and 0.6 * own_rate < seen_rate < 1.4 * own_rate, (own_rate, inside_busy)
    # idle CPU between the busy phases is only what the idle phase used
    assert float(s.integral(t_i1)[0] - s.integral(t_b1)[0]) < 0.1 + (c_i1 - c_b1)
    assert all(v >= 0 for v in s.value)


def test_exiting_process_drops_out_without_spike(spawn):
    probe = ProcfsProbe(per_process="pid", match="masa-probe-test-exit", host="h")
    child = spawn(["cpu:0.5"], marker="masa-probe-test-exit")
    samples = _run(probe, lambda: child.proc.poll() is not None)
    assert child.proc.poll() == 0
    exit_t = time.time()
    samples += _run(probe, lambda: True)
    ours = [s for s in samples if s.object.endswith(f"/{child.pid}")]
    assert ours, "the busy child was never seen"
    assert all(0 <= s.value <= os.cpu_count() for s in samples if s.unit == CPU)
    assert all(s.end <= exit_t for s in ours), "samples after the process exited"


COMM = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(bytes.fromhex(sys.argv[1])), 0, 0, 0)  # PR_SET_NAME
print("named", flush=True)
time.sleep(60)
"""


def test_a_process_named_like_a_pattern_gets_an_object_that_names_only_itself():
    """A comm set by prctl (or ``exec -a``) may hold glob characters, a control
    character, ``)`` and spaces: its object must still be one plain name (a request
    for ``h/proc/w[1]*/PID`` was a pattern that did not even match itself)."""
    import fnmatch

    name = b"w[1]*?\x01 a) b"
    child = subprocess.Popen([sys.executable, "-c", COMM, name.hex()], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "named"
        assert procread.read_stat(child.pid).comm == name.decode()
        probe = ProcfsProbe(per_process="pid", host="h", host_cpu=False, interfaces=False)
        obj = probe.label(procread.read_stat(child.pid))[1]
        segment = obj.split("/")[2]
        assert obj == f"h/proc/{segment}/{child.pid}" and segment == "w_1_____a)_b"
        assert fnmatch.fnmatchcase(obj, obj)
    finally:
        child.kill()
        child.wait()


def test_process_born_between_samples_is_counted_from_zero(spawn):
    """A worker that starts and burns CPU between two samples is not lost."""
    probe = ProcfsProbe("w=cmdline:masa-probe-test-born", per_process="none", host="h",
                        host_cpu=False, interfaces=False)
    probe.sample()
    child = spawn(["cpu:0.5"], marker="masa-probe-test-born")
    child.wait_event()
    _, _, cpu = child.wait_event()
    samples = probe.sample()
    (app,) = [s for s in samples if s.object == "h/app/w"]
    assert abs(app.value * (app.end - app.start) - cpu) < 0.05


def _fork_with_pid(pid: int, marker: str) -> subprocess.Popen | None:
    """Start an idle child with exactly this PID via ns_last_pid (root only)."""
    for _ in range(20):
        try:
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        except OSError:
            return None
        p = subprocess.Popen([sys.executable, "-c", "import time,sys; time.sleep(60)", marker])
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


def test_reused_pid_never_produces_a_spike(spawn):
    """A busy process exits and a new idle process gets the same PID (so the same
    per-process object id): the new one must read ~0, not the old one's CPU time."""
    marker = "masa-probe-test-reuse"
    probe = ProcfsProbe(per_process="pid", match=marker, host="h", host_cpu=False, interfaces=False)
    old = spawn(["cpu:0.5"], marker=marker + "-exit")
    old.wait_event()
    old.wait_event()
    probe.sample()
    pid = old.pid
    old_cpu = procread.read_stat(pid)
    assert old_cpu is not None and old_cpu.utime + old_cpu.stime >= 40
    old.proc.wait(timeout=10)
    new = _fork_with_pid(pid, marker)
    if new is None:
        pytest.skip("cannot force PID reuse (needs root to write /proc/sys/kernel/ns_last_pid)")
    try:
        time.sleep(0.5)
        samples = probe.sample()
        assert procread.read_stat(pid).starttime != old_cpu.starttime
        mine = [s for s in samples if s.object.endswith(f"/{pid}")]
        # born inside the interval: counted from zero, and it only slept
        assert mine and all(s.value < 0.2 for s in mine), mine
    finally:
        new.send_signal(signal.SIGKILL)
        new.wait()


def test_fake_proc_reused_pid_and_vanished(tmp_path):
    """Beside the real test: a synthetic /proc where the same PID reappears with a new
    start time and large CPU time, and another process vanishes."""
    proc = tmp_path / "proc"

    def write(entries, boot_ticks):
        import shutil
        if proc.exists():
            shutil.rmtree(proc)
        (proc / "net").mkdir(parents=True)
        (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\n")
        (proc / "net" / "dev").write_text("h\nh\n")
        for pid, comm, ticks, start in entries:
            d = proc / str(pid)
            d.mkdir()
            fields = ["S", "1"] + ["0"] * 9 + [str(ticks), "0"] + ["0"] * 6 + [str(start)] + ["0"] * 20
            (d / "stat").write_bytes(f"{pid} ({comm}) ".encode() + " ".join(fields).encode())
            (d / "cmdline").write_bytes(comm.encode() + b"\0")

    probe = ProcfsProbe(per_process="pid", host="h", proc=str(proc))
    write([(10, "a b) c", 100, 5), (11, "gone", 50, 5)], 0)
    probe.sample()
    time.sleep(0.05)
    # PID 10 reused: start time far in the future of boot ("born" before our previous
    # sample according to the boot clock? no: after) with 10,000 ticks
    write([(10, "a b) c", 10_000, 1)], 0)
    out = probe.sample()
    assert not [s for s in out if "/proc/" in s.object], out
    # and the synthetic /proc is really read: the new process, now with a baseline, is
    # metered from it on (100 ticks more: one CPU second over the interval)
    time.sleep(0.05)
    write([(10, "a b) c", 10_100, 1)], 0)
    (again,) = [s for s in probe.sample() if "/proc/" in s.object]
    assert again.object.endswith("/10")
    assert again.value * (again.end - again.start) == pytest.approx(100 / procread.CLK_TCK, rel=0.05)


def test_parse_rules_and_errors():
    rules = parse_rules("web=name:nginx,cmdline:gunicorn.*app:web; db=user:postgres\n# c\nssh=unit:ssh\\.service")
    assert [r.app for r in rules] == ["web", "db", "ssh"]
    assert rules[0].criteria == (("name", "nginx"), ("cmdline", "gunicorn.*app:web"))
    for bad in ("web", "web=", "web=foo:x", "web=name", "a=name:x;a=name:y", "x/y=name:a", "w=name:("):
        with pytest.raises(RuleError):
            parse_rules(bad)


def test_rules_group_by_user_and_name(spawn):
    me = psutil.Process().username()
    probe = ProcfsProbe(f"mine=cmdline:masa-probe-test-user;other=user:{me}", per_process="none",
                        host="h", host_cpu=False, interfaces=False)
    child = spawn(["cpu:0.3"], marker="masa-probe-test-user")
    child.wait_event()
    probe.sample()
    child.wait_event()
    out = {s.object: s.value for s in probe.sample()}
    assert out["h/app/mine"] > 0
    assert "h/app/other" in out
    # first match wins: the child (also the user's) is metered in "mine" only, and this
    # process (the user's, not marked) in "other"
    assert probe.label(procread.read_stat(child.pid))[0] == "mine"
    assert probe.label(procread.read_stat(os.getpid()))[0] == "other"


def test_interface_bytes_and_host_cpu(spawn):
    """Bytes sent over loopback between two samples show up on lo; a spinning child
    shows up in host CPU."""
    probe = ProcfsProbe(per_process="none", host="h")
    child = spawn(["cpu:0.4"], marker="masa-probe-test-host")
    child.wait_event()
    probe.sample()
    st = procread.read_stat(child.pid)
    base = (st.utime + st.stime) / procread.CLK_TCK
    through_loopback(40, 50_000)  # 2 MB through lo
    _, _, cpu_used = child.wait_event()
    out = {s.object: s for s in probe.sample()}
    lo = out["h/if/lo/in"]
    # the rate is over the boot clock's interval, the sample's bounds are wall-clock times
    # read just before it: a preemption between the two reads skews their product by its
    # share of the interval (0.07 % seen on a loaded machine), so allow a few per cent
    assert lo.unit == "B/s" and lo.value * (lo.end - lo.start) >= 0.95 * 2_000_000
    host = out["h/cpu"]
    assert host.value * (host.end - host.start) >= 0.9 * (cpu_used - base) - 0.03
    assert host.value <= os.cpu_count() + 0.01


def _cgroup_dir(name: str) -> Path | None:
    """A fresh cgroup (v1 'pids' or v2 unified) we may create, or None."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists():
            d = root / name
            try:
                d.mkdir(exist_ok=True)
                return d
            except OSError:
                continue
    return None


def test_rules_by_systemd_unit_and_cgroup(spawn):
    """A child moved into a cgroup named like a systemd unit is grouped by `unit` and
    `cgroup` rules (root only; skipped where cgroups cannot be created)."""
    d = _cgroup_dir("masa-probe-test.service")
    if d is None:
        pytest.skip("cannot create a cgroup here (needs root and a writable cgroup mount)")
    child = spawn(["cpu:0.3"], marker="masa-probe-test-cg")
    try:
        try:
            (d / "cgroup.procs").write_text(str(child.pid))
        except OSError as exc:
            pytest.skip(f"cannot move a process into a cgroup here: {exc}")
        probe = ProcfsProbe(r"svc=unit:masa-probe-test\.service;cg=cgroup:nothing-like-this", per_process="none",
                            host="h", host_cpu=False, interfaces=False)
        probe.sample()
        child.wait_event()
        child.wait_event()
        out = {s.object: s.value for s in probe.sample()}
        assert out["h/app/svc"] > 0 and out["h/app/cg"] == 0
    finally:
        child.stop()
        for _ in range(50):
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.1)
