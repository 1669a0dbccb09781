"""The shared activity model: exact interval arithmetic, strict wire and CSV parsing."""

import msgpack
import numpy as np
import pytest

from masa.activity import ActivityError, Series, read_csv, write_csv


def test_resample_is_exact_for_misaligned_intervals_and_gaps():
    # rate 1 on [0,3), gap [3,4), rate 4 on [4,4.5), rate 2 on [4.5,6)
    s = Series("a", "cpu", [0, 4, 4.5], [3, 4.5, 6], [1, 4, 2])
    rate, covered = s.resample(0.0, 2.0, 3)
    # [0,2): 2 units; [2,4): 1 unit + gap; [4,6): 0.5*4 + 1.5*2 = 5 units
    np.testing.assert_allclose(rate, [1.0, 0.5, 2.5])
    np.testing.assert_allclose(covered, [1.0, 0.5, 1.0])
    # the total amount of activity is conserved by any grid
    fine, _ = s.resample(-1.0, 0.1, 80)
    assert fine.sum() * 0.1 == pytest.approx(3 + 2 + 3)


def test_from_points_and_since_window_append():
    s = Series.from_points("b", "cpu", [10, 11, 12, 14], [0.5, 1, 0, 2])
    np.testing.assert_array_equal(s.start, [9, 10, 11, 12])
    assert len(s.since(11)) == 2 and s.since(11).end[0] == 12
    assert len(s.window(10.5, 12)) == 2
    more = Series.from_points("b", "cpu", [14, 15, 16], [2, 3, 4], first_interval=2)
    joined = s.append(more)
    assert list(joined.end) == [10, 11, 12, 14, 15, 16]  # the repeated sample at 14 is not doubled


def test_a_long_step_is_a_hole_not_one_long_interval(tmp_path):
    t = np.concatenate([np.arange(1.0, 11.0), np.arange(30.0, 41.0)])
    s = Series.from_points("a", "req/s", t, np.ones(len(t)))
    assert s.start[10] == 29.0 and s.end[10] == 30.0  # the sample after the hole covers one step
    assert (s.end - s.start).max() == 1.0
    # the hole holds no activity on a grid: covered nowhere inside it
    rate, covered = s.resample(0.0, 1.0, 41)
    assert not covered[11:29].any() and covered[30:40].all()
    spanning = Series.from_points("a", "req/s", t, np.ones(len(t)), gap=None)
    assert spanning.start[10] == 10.0  # the documented opt-out: every step is an interval
    # a CSV with missing rows reads back with the hole
    path = tmp_path / "holes.csv"
    write_csv(path, [s])
    back = read_csv(path)["a"]
    np.testing.assert_array_equal(back.start, s.start)
    # jitter around the step is not a hole
    jittery = Series.from_points("j", "cpu", np.cumsum(np.full(50, 1.0) + np.tile([0.4, -0.4], 25)), np.ones(50))
    assert np.all(jittery.start[1:] == jittery.end[:-1])
    with pytest.raises(ValueError, match="exceed 1"):
        Series.from_points("a", "cpu", t, np.ones(len(t)), gap=0.5)
    # one row in ns: its step is below float64's resolution there, named as such
    with pytest.raises(ActivityError, match=r"at time 1\.8e\+18 .* stray timestamp"):
        Series.from_points("a", "cpu", [1.0, 2.0, 3.0, 1.8e18], np.ones(4))


def test_wire_round_trip_and_garbage_rejected():
    s = Series.from_points("host/cpu", "cpu", np.arange(1, 1001, dtype=float), np.random.default_rng(1).random(1000))
    wire = msgpack.unpackb(msgpack.packb(s.to_wire()), raw=False)
    back = Series.from_wire(wire)
    np.testing.assert_array_equal(back.value, s.value)
    assert len(msgpack.packb(s.to_wire())) < 25_000  # 3 x 8 bytes per sample, no per-sample objects
    bad = dict(wire)
    bad["value"] = wire["value"][:-3]
    with pytest.raises(ActivityError, match="whole number of float64"):
        Series.from_wire(bad)
    bad = dict(wire, value=wire["value"][:-8])
    with pytest.raises(ActivityError, match="differ in length"):
        Series.from_wire(bad)
    with pytest.raises(ActivityError, match="missing field"):
        Series.from_wire({"object": "x", "start": b""})
    with pytest.raises(ActivityError, match="must be bytes"):
        Series.from_wire(dict(wire, start=[1.0, 2.0]))
    with pytest.raises(ActivityError, match="sorted"):
        Series("x", "", [0, 1], [2, 3], [1, 1])
    with pytest.raises(ActivityError, match="end > start"):
        Series("x", "", [0], [0], [1])


def test_csv_round_trip_both_layouts(tmp_path):
    a = Series.from_points("a", "cpu", [1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    b = Series("b", "cpu", [0.5, 2.0], [1.5, 3.5], [1.0, 2.0])
    write_csv(tmp_path / "p.csv", [a, b], layout="interval")
    back = read_csv(tmp_path / "p.csv")
    np.testing.assert_array_equal(back["b"].start, [0.5, 2.0])
    write_csv(tmp_path / "q.csv", [a])
    assert (tmp_path / "q.csv").read_text().splitlines()[0] == "time,object,value"
    np.testing.assert_allclose(read_csv(tmp_path / "q.csv")["a"].value, [0.1, 0.2, 0.3])


@pytest.mark.parametrize("text, message", [
    ("when,what\n1,2\n", "header must contain"),
    ("time,object,value\n1,a,x\n", r":2: value is not a number"),
    ("time,object,value\n1,a,nan\n", "not finite"),
    ("time,object,value\n1,a,1\n2,b,1\n1,a,2\n", r"two samples at time 1.0 \(lines 2 and 4\)"),
    ("time,object,value\n1,,1\n", "empty object"),
    ("time,object,value\n", "no samples"),
    ("", "empty file"),
    ("start,end,object,value\n0,1,a,1\n2,2,a,1\n", r":3: end must be after start"),
    ("start,end,object,value\n0,2,a,1\n5,6,b,1\n1,3,a,1\n", r"a: the intervals of lines 2 and 4 overlap"),
    ("time,object,value\n1,caf\xe9,1\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9"),
])
def test_csv_errors_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(ActivityError, match=message):
        read_csv(path)


def test_csv_from_a_spreadsheet_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftime,object,value\r\n1,a,0.5\r\n2,a,0.25\r\n")
    assert list(read_csv(path)["a"].value) == [0.5, 0.25]
