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


@dataclass(frozen=True)
class Grid:
    """Activity of ``names[k]`` in bin ``[t0 + b*step, t0 + (b+1)*step)`` is ``values[k, b]``."""

    names: list[str]
    t0: float
    step: float
    values: np.ndarray  # rates, gaps filled with the object's median
    covered: np.ndarray  # bool, bin covered by samples

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
    t0, t1 = span(series.values())
    n = int(np.floor((t1 - t0) / step + 1e-9))
    if n < 8:
        raise ActivityError(
            f"the data spans {t1 - t0:g} s, only {n} bins of {step:g} s: too short to model"
        )
    names = sorted(series)
    values = np.empty((len(names), n))
    covered = np.empty((len(names), n), dtype=bool)
    for k, name in enumerate(names):
        s = series[name]
        if len(s) and not np.all(np.isfinite(s.value)):
            raise ActivityError(f"{name}: activity values must be finite numbers (found NaN or inf)")
        rate, cov = s.resample(t0, step, n)
        ok = cov >= MIN_COVERED
        rate = np.where(ok, rate / np.maximum(cov, 1e-12), 0.0)
        fill = float(np.median(rate[ok])) if ok.any() else 0.0
        values[k] = np.where(ok, rate, fill)
        covered[k] = ok
    return Grid(names, t0, float(step), values, covered)


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
