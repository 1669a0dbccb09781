"""Activity series: the one representation of metered activity used by every layer.

An activity series belongs to one object (``hostA/proc/nginx``, ``hostA/cpu``,
``router1/if/eth0/in``) and holds samples as half-open time intervals ``[start, end)``
with a *rate* value (fraction of one core, bytes/s, requests/s).  Intervals rather than
points because the upper layers join and sum streams whose samples have different
lengths and phases; a rate over an interval makes that arithmetic exact: the amount of
activity in ``[a, b)`` is the integral of the piecewise-constant rate.

Wire form: a plain dict whose arrays are little-endian float64 bytes, so a series of
10,000 samples costs 240 kB on the wire and no per-sample objects on either side.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Units used across the project.  Values are always rates over their interval.
CPU = "cpu"  # CPU seconds per second, as a fraction of one core
BYTES_PER_S = "B/s"
REQUESTS_PER_S = "req/s"

#: Most names or globs in one ``objects`` list of the collection query interface (report,
#: subscribe, connections): a source matches every object against every glob and sends
#: exact names to its store as one SQL variable each (SQLite: at most 32766 a statement).
MAX_OBJECTS = 10_000

#: Largest number of samples accepted from the wire in one series.
MAX_WIRE_SAMPLES = 2_000_000

_F8 = np.dtype("<f8")


class ActivityError(ValueError):
    """Malformed activity data (bad CSV, inconsistent arrays, garbage from the wire)."""


def check_label(label: object) -> str:
    """A label is the first segment of object names (``LABEL/cpu``, ``LABEL/app/web``,
    a domain's ``LABEL/cpu``): a slash in it would read as a deeper name (``a/b/cpu`` as
    host ``a``'s object ``b/cpu``), a glob character would make a request for its objects
    match others too.  Returns the label; raises ActivityError."""
    if not isinstance(label, str) or not label or any(c in label for c in "/*?[] \t\n"):
        raise ActivityError(f"a label must be one non-empty name without '/', spaces or glob "
                            f"characters (objects are named LABEL/...), not {label!r}")
    return label


#: A step this many times the median step is a hole in the data (see Series.from_points).
GAP_FACTOR = 3.0


@dataclass(frozen=True, eq=False)
class Series:
    """Samples of one object; intervals sorted by start and non-overlapping."""

    object: str
    unit: str
    start: np.ndarray
    end: np.ndarray
    value: np.ndarray

    def __post_init__(self) -> None:
        start = np.ascontiguousarray(self.start, dtype=np.float64)
        end = np.ascontiguousarray(self.end, dtype=np.float64)
        value = np.ascontiguousarray(self.value, dtype=np.float64)
        if not (start.ndim == end.ndim == value.ndim == 1):
            raise ActivityError(f"{self.object}: start, end and value must be 1-d arrays")
        if not (len(start) == len(end) == len(value)):
            raise ActivityError(
                f"{self.object}: start, end and value differ in length "
                f"({len(start)}, {len(end)}, {len(value)})"
            )
        if len(start):
            if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end))):
                raise ActivityError(f"{self.object}: interval bounds must be finite")
            if np.any(end <= start):
                raise ActivityError(f"{self.object}: every interval needs end > start")
            if np.any(start[1:] < end[:-1] - 1e-9):
                raise ActivityError(f"{self.object}: intervals must be sorted and not overlap")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "value", value)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls, obj: str, unit: str = "") -> Series:
        z = np.empty(0)
        return cls(obj, unit, z, z, z)

    @classmethod
    def from_points(
        cls, obj: str, unit: str, times: Iterable[float], values: Iterable[float],
        first_interval: float | None = None, gap: float | None = GAP_FACTOR,
    ) -> Series:
        """Build from ``(time, value)`` points, each the rate over the interval ending at
        ``time`` that began at the previous point.  The first point's interval has length
        ``first_interval`` (default: the median step), because a point alone has no start.

        A step longer than ``gap`` times the median step is missing data, not one long
        interval: a meter that was down, a row lost from a CSV.  The point after it covers
        one median step, so the hole stays a hole (the modeler fills and flags it) instead
        of smearing the next value over minutes.  ``gap=None`` keeps every step."""
        t = np.asarray(list(times) if not isinstance(times, np.ndarray) else times, float)
        v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, float)
        if len(t) != len(v):
            raise ActivityError(f"{obj}: {len(t)} times but {len(v)} values")
        if len(t) == 0:
            return cls.empty(obj, unit)
        if np.any(np.diff(t) <= 0):
            raise ActivityError(f"{obj}: times must be strictly increasing (duplicate or unsorted time)")
        steps = np.diff(t)
        typical = float(np.median(steps)) if len(steps) else 1.0
        if first_interval is None:
            first_interval = typical
        start = np.empty_like(t)
        start[0] = t[0] - first_interval
        start[1:] = t[:-1]
        if gap is not None and len(steps):
            if gap <= 1:
                raise ValueError("gap is a multiple of the median step and must exceed 1")
            holes = np.flatnonzero(steps > gap * typical) + 1
            start[holes] = t[holes] - typical
        lost = np.flatnonzero(start >= t)
        if len(lost):  # a time so large that one step vanishes in float64 (1.8e18: ns)
            raise ActivityError(f"{obj}: at time {t[lost[0]]:.6g} a step of {typical:g} s is lost in "
                                "the number's precision: a stray timestamp or times in other "
                                "units than seconds (ns)?")
        return cls(obj, unit, start, t, v)

    # -- views --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.start)

    def __repr__(self) -> str:
        span = f"{self.start[0]:.3f}..{self.end[-1]:.3f}" if len(self) else "empty"
        return f"Series({self.object!r}, {self.unit!r}, n={len(self)}, {span})"

    def since(self, t: float) -> Series:
        """Samples whose interval ends after ``t`` (what a report request 'since t' wants)."""
        i = int(np.searchsorted(self.end, t, side="right"))
        return Series(self.object, self.unit, self.start[i:], self.end[i:], self.value[i:])

    def window(self, t0: float, t1: float) -> Series:
        """Samples that overlap ``[t0, t1)``."""
        i = int(np.searchsorted(self.end, t0, side="right"))
        j = int(np.searchsorted(self.start, t1, side="left"))
        return Series(self.object, self.unit, self.start[i:j], self.end[i:j], self.value[i:j])

    def append(self, other: Series) -> Series:
        """Concatenate a later stretch of the same object (samples already held are skipped)."""
        if other.object != self.object:
            raise ActivityError(f"cannot append {other.object} to {self.object}")
        if len(self) and len(other):
            other = other.since(self.end[-1] - 1e-9) if other.start[0] < self.end[-1] - 1e-9 else other
            keep = other.start >= self.end[-1] - 1e-9
            other = Series(other.object, other.unit, other.start[keep], other.end[keep], other.value[keep])
        return Series(
            self.object, self.unit or other.unit,
            np.concatenate([self.start, other.start]),
            np.concatenate([self.end, other.end]),
            np.concatenate([self.value, other.value]),
        )

    # -- interval arithmetic ------------------------------------------------------------

    def integral(self, t: np.ndarray | float) -> np.ndarray:
        """Amount of activity from the first sample up to each time in ``t``.

        The one primitive behind resampling and domain sums: the activity in ``[a, b)``
        is ``integral(b) - integral(a)``, exact for any sample lengths and phases."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if not len(self):
            return np.zeros_like(t)
        amount = self.value * (self.end - self.start)
        before = np.concatenate([[0.0], np.cumsum(amount)])
        i = np.searchsorted(self.start, t, side="right") - 1  # interval starting at or before t
        inside = np.clip(i, 0, len(self) - 1)
        partial = self.value[inside] * np.clip(t - self.start[inside], 0.0, (self.end - self.start)[inside])
        return np.where(i < 0, 0.0, before[inside] + partial)

    def coverage(self, t: np.ndarray | float) -> np.ndarray:
        """Seconds covered by samples up to each time in ``t`` (to tell a gap from idleness)."""
        ones = Series(self.object, self.unit, self.start, self.end, np.ones(len(self)))
        return ones.integral(t)

    def resample(self, t0: float, step: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Average rate on the grid ``t0 + k*step`` (k < n) and the covered share of each bin.

        Bins without any sample have rate 0 and coverage 0: the caller decides whether a
        gap means idle or unknown."""
        if step <= 0 or n < 0:
            raise ActivityError("resample needs step > 0 and n >= 0")
        edges = t0 + step * np.arange(n + 1)
        rate = np.diff(self.integral(edges)) / step
        covered = np.diff(self.coverage(edges)) / step
        return rate, covered

    # -- wire -----------------------------------------------------------------------------

    def to_wire(self) -> dict:
        return {
            "object": self.object,
            "unit": self.unit,
            "start": self.start.astype(_F8, copy=False).tobytes(),
            "end": self.end.astype(_F8, copy=False).tobytes(),
            "value": self.value.astype(_F8, copy=False).tobytes(),
        }

    @classmethod
    def from_wire(cls, data: Mapping) -> Series:
        """Rebuild from :meth:`to_wire` output, refusing anything malformed."""
        if not isinstance(data, Mapping):
            raise ActivityError(f"a series must be a mapping, got {type(data).__name__}")
        try:
            obj, unit = data["object"], data.get("unit", "")
            raw = [data[k] for k in ("start", "end", "value")]
        except KeyError as missing:
            raise ActivityError(f"series is missing field {missing}") from None
        if not isinstance(obj, str) or not obj or not isinstance(unit, str):
            raise ActivityError("series object must be a non-empty string and unit a string")
        arrays = []
        for name, blob in zip(("start", "end", "value"), raw, strict=True):
            if not isinstance(blob, (bytes, bytearray, memoryview)):
                raise ActivityError(f"{obj}: field {name} must be bytes of float64")
            if len(blob) % 8:
                raise ActivityError(f"{obj}: field {name} is not a whole number of float64")
            if len(blob) // 8 > MAX_WIRE_SAMPLES:
                raise ActivityError(f"{obj}: more than {MAX_WIRE_SAMPLES} samples in one series")
            arrays.append(np.frombuffer(bytes(blob), dtype=_F8))
        return cls(obj, unit, *arrays)


def span(series: Iterable[Series]) -> tuple[float, float]:
    """Earliest start and latest end over the series that hold samples: the stretch a set
    of recorded series covers, which grids and windows are cut from."""
    nonempty = [s for s in series if len(s)]
    if not nonempty:
        raise ActivityError("no samples in any series")
    return min(float(s.start[0]) for s in nonempty), max(float(s.end[-1]) for s in nonempty)


# -- CSV, the format researchers record and the modeler reads ------------------------------

POINT_COLUMNS = ("time", "object", "value")
INTERVAL_COLUMNS = ("start", "end", "object", "value")


def read_csv(path: str | Path, unit: str = "") -> dict[str, Series]:
    """Read a long activity CSV into one series per object.

    Two layouts are accepted: ``time,object,value`` (value = rate over the interval
    ending at ``time``, which began at the object's previous time) and
    ``start,end,object,value``.  Errors name the file and line."""
    path = Path(path)
    rows: dict[str, list[tuple[float, ...]]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # a spreadsheet's BOM is no header
    except OSError as exc:
        raise ActivityError(f"cannot read {path}: {exc.strerror}") from None
    with handle, utf8_errors(path):
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ActivityError(f"{path}: empty file")
        header = tuple(h.strip().lower() for h in header)
        if set(INTERVAL_COLUMNS) <= set(header):
            columns, layout = INTERVAL_COLUMNS, "interval"
        elif set(POINT_COLUMNS) <= set(header):
            columns, layout = POINT_COLUMNS, "point"
        else:
            raise ActivityError(
                f"{path}: header must contain time,object,value or start,end,object,value "
                f"(found {','.join(header)})"
            )
        idx = [header.index(c) for c in columns]
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                fields = [row[i].strip() for i in idx]
            except IndexError:
                raise ActivityError(f"{path}:{lineno}: expected {len(header)} columns") from None
            obj = fields[columns.index("object")]
            if not obj:
                raise ActivityError(f"{path}:{lineno}: empty object name")
            nums = []
            for col, text in zip(columns, fields, strict=True):
                if col == "object":
                    continue
                try:
                    x = float(text)
                except ValueError:
                    raise ActivityError(f"{path}:{lineno}: {col} is not a number: {text!r}") from None
                if not math.isfinite(x):
                    raise ActivityError(f"{path}:{lineno}: {col} is not finite: {text!r}")
                nums.append(x)
            if layout == "interval" and nums[1] <= nums[0]:
                raise ActivityError(f"{path}:{lineno}: end must be after start")
            rows.setdefault(obj, []).append((*nums, lineno))
    if not rows:
        raise ActivityError(f"{path}: no samples")
    out = {}
    for obj, samples in rows.items():
        arr = np.array(samples, dtype=np.float64)
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        lines = arr[:, -1].astype(int)
        if layout == "point":
            t = arr[:, 0]
            dup = np.flatnonzero(np.diff(t) == 0)
            if len(dup):
                k = dup[0]
                raise ActivityError(f"{path}: object {obj} has two samples at time {float(t[k])!r} "
                                    f"(lines {lines[k]} and {lines[k + 1]})")
            out[obj] = Series.from_points(obj, unit, t, arr[:, 1])
        else:
            overlap = np.flatnonzero(arr[1:, 0] < arr[:-1, 1] - 1e-9)
            if len(overlap):
                k = overlap[0]
                raise ActivityError(f"{path}: object {obj}: the intervals of lines {lines[k]} and "
                                    f"{lines[k + 1]} overlap")
            out[obj] = Series(obj, unit, arr[:, 0], arr[:, 1], arr[:, 2])
    return out


@contextlib.contextmanager
def utf8_errors(path: str | Path, error: type[ValueError] = ActivityError) -> Iterator[None]:
    """A text file in another encoding gets ``error`` naming the file and the byte, not a
    codec's trace (activity, connection, model, truth and topology files alike)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                    f"{exc.start}); save it as UTF-8") from None


def write_csv(path: str | Path, series: Iterable[Series], layout: str = "point") -> int:
    """Write series as a long CSV sorted by time; returns the number of rows written."""
    if layout not in ("point", "interval"):
        raise ValueError("layout must be 'point' or 'interval'")
    columns = POINT_COLUMNS if layout == "point" else INTERVAL_COLUMNS
    rows = list(_rows(series, layout))
    rows.sort(key=lambda r: (float(r[0]), r[1]) if layout == "point" else (float(r[1]), r[2]))
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return len(rows)


def _rows(series: Iterable[Series], layout: str) -> Iterator[tuple]:
    for s in series:
        for a, b, v in zip(s.start.tolist(), s.end.tolist(), s.value.tolist(), strict=True):
            if layout == "point":
                yield (repr(b), s.object, repr(v))
            else:
                yield (repr(a), repr(b), s.object, repr(v))
