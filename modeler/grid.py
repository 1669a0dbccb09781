"""Put many activity series on one time grid, the common ground of every pair feature.

Series arrive with their own sampling phases and lengths (agents on different hosts,
probes with jitter).  Pair statistics need one matrix ``objects x bins``; the exact
overlap-weighted :meth:`masa.activity.Series.resample` gives it without inventing
activity, and its coverage tells a gap (unknown) from idleness (zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from masa.activity import ActivityError, Series, span

#: Below one second, CPU tick quantisation and sampling jitter dominate the signal;
#: coarser data (PetShop's 5-minute bins) is used at its own step.
MIN_STEP = 1.0
#: A bin counts as covered when samples cover at least this share of it.
MIN_COVERED = 0.5
#: A grid more than this many times longer than the best-sampled object's recorded time is
#: a stray timestamp or a unit slip (ms read as s), not data: refused before allocating it.
MAX_SPAN_PER_RECORDED = 100.0
#: Objects x bins of one grid: beyond, refuse.  Memory is linear in them (the per-pair
#: work is batched to a fixed budget, features.SERIES_ELEMENTS): the model's working
#: copies took about 65 bytes per cell (5 x 2e6 and 60 x 1e5), so about 7 GB at the limit.
MAX_CELLS = 100_000_000
#: Beyond this magnitude squares overflow float64 in the statistics; no activity unit needs it.
MAX_VALUE = 1e100


@dataclass(frozen=True)
class Grid:
    """Activity of ``names[k]`` in bin ``[t0 + b*step, t0 + (b+1)*step)`` is ``values[k, b]``."""

    names: list[str]
    t0: float
    step: float
    values: np.ndarray  # rates, gaps filled with the object's median
    covered: np.ndarray  # bool, bin covered by samples
    observed: int = 0  # median over objects of the bins resting on own samples

    @property
    def n_bins(self) -> int:
        return self.values.shape[1]


def native_step(series: Mapping[str, Series]) -> float:
    """Median sampling interval over all series: the finest step the data supports."""
    lengths = [np.median(s.end - s.start) for s in series.values() if len(s)]
    if not lengths:
        raise ActivityError("no samples in any series")
    return float(np.median(lengths))


def align(series: Mapping[str, Series], step: float | None = None) -> Grid:
    """Resample every series onto one grid spanning the data.

    The default step is the data's own, but not finer than :data:`MIN_STEP` because
    sub-second CPU rates are mostly tick quantisation noise."""
    if len(series) < 2:
        raise ActivityError(
            f"dependency inference needs at least two objects, got {len(series)}"
        )
    if step is None:
        step = max(native_step(series), MIN_STEP)
    if not (np.isfinite(step) and step > 0):
        raise ActivityError(f"grid step must be a positive number of seconds, got {step}")
    names = sorted(series)
    for name in names:
        value = series[name].value
        if len(value) and not np.all(np.isfinite(value)):
            raise ActivityError(f"{name}: activity values must be finite numbers (found NaN or inf)")
        if len(value) and np.max(np.abs(value)) > MAX_VALUE:
            raise ActivityError(f"{name}: activity value {np.max(np.abs(value)):.3g} is beyond "
                                f"{MAX_VALUE:g}; rescale the data (e.g. to kB/s)")
    t0, t1 = _checked_span(series)
    n = int(np.floor((t1 - t0) / step + 1e-9))
    if n < 8:
        raise ActivityError(
            f"the data spans {t1 - t0:g} s, only {n} bins of {step:g} s: too short to model"
        )
    if n * len(names) > MAX_CELLS:
        raise ActivityError(f"{len(names)} objects x {n} bins of {step:g} s is more than one model "
                            f"holds ({MAX_CELLS:.0e} cells): use a coarser step or a shorter window")
    values = np.empty((len(names), n))
    covered = np.empty((len(names), n), dtype=bool)
    observed = []
    for k, name in enumerate(names):
        s = series[name]
        rate, cov = s.resample(t0, step, n)
        ok = cov >= MIN_COVERED
        rate = np.where(ok, rate / np.maximum(cov, 1e-12), 0.0)
        fill = float(np.median(rate[ok])) if ok.any() else 0.0
        values[k] = np.where(ok, rate, fill)
        covered[k] = ok
        observed.append(min(int(ok.sum()), len(s)))  # a finer grid than the samples adds no evidence
    return Grid(names, t0, float(step), values, covered, int(np.median(observed)))


def _checked_span(series: Mapping[str, Series]) -> tuple[float, float]:
    """The stretch the grid spans, refused when samples cover almost none of it."""
    t0, t1 = span(series.values())
    recorded = max(float(np.sum(s.end - s.start)) for s in series.values() if len(s))
    if t1 - t0 > MAX_SPAN_PER_RECORDED * recorded:
        first = min((s for s in series.values() if len(s)), key=lambda s: s.start[0])
        last = max((s for s in series.values() if len(s)), key=lambda s: s.end[-1])
        raise ActivityError(
            f"the samples span {t1 - t0:.6g} s (from {t0!r} in {first.object} to {t1!r} in "
            f"{last.object}) but no object has more than {recorded:.6g} s recorded: a stray "
            "timestamp or times in other units than seconds?")
    return t0, t1


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per row; a constant row stays all zeros.

    Scale-free inputs are what let a network trained on CPU seconds judge request counts."""
    x = x - x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 1e-12)


def highpass(x: np.ndarray, window: int = 9) -> np.ndarray:
    """Remove slow trends (daily cycles, ramps) that make every pair look related.

    Subtracts a centred moving average; what is left are the bursts that travel along
    call edges within a few bins."""
    window = max(3, min(window, x.shape[1] // 2 * 2 - 1))
    pad = window // 2
    padded = np.pad(x, ((0, 0), (pad, pad)), mode="edge")
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
    smooth = (c[:, window:] - c[:, :-window]) / window
    return x - smooth


def active(x: np.ndarray) -> np.ndarray:
    """Bins where an object does more than its idle baseline: the relevant intervals.

    Baseline and scale are robust per-object quantiles, so a process with constant
    background work and one that idles at zero are treated alike."""
    lo = np.quantile(x, 0.1, axis=1, keepdims=True)
    hi = np.quantile(x, 0.9, axis=1, keepdims=True)
    span = np.maximum(hi - lo, 1e-12)
    return (x - lo) / span > 0.35
