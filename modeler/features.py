"""Pair features: what the activity of two objects (and of the others) says about a dependency.

Every feature is scale-free (computed on standardised series, ranks, ratios or
probabilities) so that a network trained on simulated CPU seconds can judge request
counts in 5-minute bins.  Features come in three kinds:

* *association*, tolerant to small clock shifts: the largest cross-correlation over a
  few lags, on the level and on the high-passed (burst) series;
* *conditioning on third objects*: global partial correlation (shrunk precision
  matrix), the smallest first-order partial correlation over all third objects (a
  sibling pair or the ends of a chain lose their association given the common caller
  or the middle object), and collider evidence (two callers independent of each other
  become dependent given their common callee, which orients both edges);
* *asymmetry*, for direction: co-activity in both directions, lead/lag, pairwise
  non-Gaussian (LiNGAM-style) likelihood ratios, volume and duty-cycle ratios.

Heavy N x N parts are matrix products; the per-pair parts that cost O(N) each run
only on the pairs that survive screening.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf

from modeler.grid import Grid, active, highpass, standardize

FEATURE_NAMES: tuple[str, ...] = (
    "corr_level_lag0",
    "corr_level_maxlag",
    "corr_burst_lag0",
    "corr_burst_maxlag",
    "corr_relevant",
    "partial_burst",
    "partial_level",
    "min_partial1",
    "min_partial2",
    "min_partial1_level",
    "min_partial1_nocopy",
    "min_partial1_lag0",
    "copies_src",
    "copies_dst",
    "rel_strength_src",
    "rel_strength_dst",
    "coactive_dst_given_src",
    "coactive_src_given_dst",
    "lead_src",
    "lingam_tanh",
    "lingam_skew",
    "collider_at_dst",
    "collider_at_src",
    "log_mean_ratio",
    "log_duty_ratio",
    "explained_src",
    "explained_dst",
    "skew_src",
    "skew_dst",
    "burst_share_src",
    "burst_share_dst",
    "log_bins",
    "log_objects",
)


#: Ranges of the size features seen in training (150-1,500 bins, 3-58 objects).
LOG_BINS_RANGE = (1.87, 3.17)
LOG_OBJECTS_RANGE = (0.47, 1.76)


def max_lag_bins(step: float) -> int:
    """Lags worth tolerating: unsynchronised clocks are off by up to about 2 s."""
    return int(min(3, max(1, round(2.0 / step))))


@dataclass
class Prepared:
    """Per-object transforms and N x N association matrices shared by all pairs."""

    grid: Grid
    level: np.ndarray  # standardised values
    burst: np.ndarray  # standardised high-passed values
    act: np.ndarray  # relevant (active) bins
    lag_level: list[np.ndarray]  # lag_level[l][i, j] = corr(level_i(t), level_j(t + l))
    lag_burst: list[np.ndarray]
    r_level: np.ndarray  # signed correlation at the best lag, symmetric
    r_burst: np.ndarray
    partial_burst: np.ndarray
    partial_level: np.ndarray
    explained: np.ndarray  # R^2 of each object from all others (burst series)
    coactive: np.ndarray  # coactive[i, j] = P(j active | i active)

    @property
    def n(self) -> int:
        return self.level.shape[0]

    def screen_score(self) -> np.ndarray:
        """Cheap symmetric bound: no burst association at any lag, no dependency to look for.

        The high-passed series, because slow trends (daily cycles) correlate everything
        with everything and would let most pairs through."""
        return np.abs(self.r_burst)


def _lagged(x: np.ndarray, lags: int) -> list[np.ndarray]:
    x32 = x.astype(np.float32)
    t = x.shape[1]
    return [(x32[:, : t - lag] @ x32[:, lag:].T).astype(np.float64) / (t - lag) for lag in range(lags + 1)]


def _best_lag(lagged: list[np.ndarray]) -> np.ndarray:
    """Signed correlation of largest magnitude over lags -L..L (symmetric matrix)."""
    stack = np.stack([m for m in lagged] + [m.T for m in lagged[1:]])
    pick = np.abs(stack).argmax(axis=0)
    best = np.take_along_axis(stack, pick[None], axis=0)[0]
    return np.clip(best, -0.999, 0.999)


def _partial(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Partial correlations given all other objects, and each object's R^2 from the rest.

    Ledoit-Wolf shrinkage keeps this defined when objects outnumber bins or when a chain
    of always-called services makes the covariance nearly singular."""
    lw = LedoitWolf(assume_centered=True).fit(x.T)
    prec = lw.precision_
    d = np.sqrt(np.clip(np.diag(prec), 1e-12, None))
    pc = -prec / d[:, None] / d[None, :]
    np.fill_diagonal(pc, 1.0)
    cov_diag = np.diag(lw.covariance_)
    r2 = np.clip(1.0 - 1.0 / np.clip(cov_diag * np.diag(prec), 1e-12, None), 0.0, 1.0)
    return np.clip(pc, -1.0, 1.0), r2


def prepare(grid: Grid) -> Prepared:
    """Transform every object once and compute the N x N matrices."""
    lags = max_lag_bins(grid.step)
    level = standardize(grid.values)
    burst = standardize(highpass(grid.values))
    lag_level = _lagged(level, lags)
    lag_burst = _lagged(burst, lags)
    partial_burst, explained = _partial(burst)
    partial_level, _ = _partial(level)
    act = active(grid.values)
    a = act.astype(np.float32)
    both = a @ a.T
    count = np.maximum(a.sum(axis=1), 1.0)
    coactive = both / count[:, None]
    return Prepared(
        grid, level, burst, act, lag_level, lag_burst, _best_lag(lag_level),
        _best_lag(lag_burst), partial_burst, partial_level, explained, coactive,
    )


def all_pairs(n: int) -> np.ndarray:
    """Every ordered pair (i, j), i != j, as an array of shape (n*(n-1), 2)."""
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    return np.column_stack([i, j])


def screen(prep: Prepared, threshold: float, keep_top: int = 3) -> np.ndarray:
    """Ordered pairs worth the network: associated above ``threshold`` at some lag, or
    among each object's ``keep_top`` strongest partners (so nobody is left unexamined)."""
    score = prep.screen_score().copy()
    np.fill_diagonal(score, -1.0)
    # never below what four standard errors of a correlation allow at this length
    keep = score >= max(threshold, 4.0 / np.sqrt(prep.grid.n_bins))
    if keep_top and prep.n > 1:
        k = min(keep_top, prep.n - 1)
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(prep.n), k)
        keep[rows, top.ravel()] = True
    keep |= keep.T
    np.fill_diagonal(keep, False)
    i, j = np.nonzero(keep)
    return np.column_stack([i, j])


def _skew(x: np.ndarray) -> np.ndarray:
    return np.mean(x**3, axis=1)


#: Above this correlation two series are copies of each other (a caller that forwards
#: every request, the members of a fan-out group that one request touches together).
COPY = 0.97


def _third_party(r: np.ndarray, pairs: np.ndarray, floor: float = 0.0,
                 batch: int = 4096, copy_limit: float = np.inf) -> tuple[np.ndarray, ...]:
    """Smallest first-order partial correlation of (i, j) over all k, and collider evidence.

    Collider at j with parent i: some k unrelated to i (|r_ik| small) becomes related
    given j (|r_ik.j| large): the signature of two independent callers of one service.
    Scored ``|r_ik.j| - 3 |r_ik|`` so that a partial correlation merely sharpened by
    conditioning (k already related to i) does not count."""
    n = r.shape[0]
    out_min = np.empty(len(pairs))
    out_col_j = np.empty(len(pairs))
    out_col_i = np.empty(len(pairs))
    idx = np.arange(n)
    for s in range(0, len(pairs), batch):
        p = pairs[s : s + batch]
        i, j = p[:, 0], p[:, 1]
        rij = r[i, j][:, None]
        rik, rjk = r[i], r[j]  # (P, n)
        mask = (idx[None, :] == i[:, None]) | (idx[None, :] == j[:, None])
        denom = np.sqrt((1 - rik**2) * (1 - rjk**2))
        pij_k = np.abs((rij - rik * rjk) / denom)
        pij_k[mask] = np.inf
        # only objects associated with i or j can explain their association; among
        # thousands of unrelated ones some would by chance (multiple comparisons)
        pij_k[np.maximum(np.abs(rik), np.abs(rjk)) < floor] = np.inf
        # a copy of i or j explains everything j or i explains: no evidence either way
        pij_k[np.maximum(np.abs(rik), np.abs(rjk)) > copy_limit] = np.inf
        mins = pij_k.min(axis=1)
        out_min[s : s + len(p)] = np.where(np.isfinite(mins), mins, np.abs(rij[:, 0]))
        dj = np.sqrt((1 - rij**2) * (1 - rjk**2))
        col_j = np.abs((rik - rij * rjk) / dj) - 3 * np.abs(rik)
        di = np.sqrt((1 - rij**2) * (1 - rik**2))
        col_i = np.abs((rjk - rij * rik) / di) - 3 * np.abs(rjk)
        col_j[mask] = -np.inf
        col_i[mask] = -np.inf
        cj, ci = col_j.max(axis=1), col_i.max(axis=1)
        out_col_j[s : s + len(p)] = np.where(np.isfinite(cj), cj, 0.0)
        out_col_i[s : s + len(p)] = np.where(np.isfinite(ci), ci, 0.0)
    return out_min, out_col_j, out_col_i


def _second_order(r: np.ndarray, pairs: np.ndarray, m: int = 6, floor: float = 0.0,
                  batch: int = 2048) -> np.ndarray:
    """Smallest second-order partial correlation |r_ij.kl| over pairs {k, l} of the ``m``
    objects most associated with i or j (the second level of PC).

    First order is not enough where two paths connect a pair (a diamond, a caller and a
    shared back-end) or where a sibling pair shares a caller *and* a common load: both
    thirds must be held fixed at once."""
    n = r.shape[0]
    out = np.abs(r[pairs[:, 0], pairs[:, 1]]).astype(float)
    if n < 4 or len(pairs) == 0:
        return out
    m = min(m, n - 2)
    a = np.abs(r).copy()
    np.fill_diagonal(a, 0.0)
    tri = np.triu_indices(m, 1)
    for s in range(0, len(pairs), batch):
        p = pairs[s : s + batch]
        i, j = p[:, 0], p[:, 1]
        assoc = np.maximum(a[i], a[j])  # (P, n)
        assoc[np.arange(len(p)), i] = -1.0
        assoc[np.arange(len(p)), j] = -1.0
        ks = np.argpartition(-assoc, m - 1, axis=1)[:, :m]  # (P, m)
        rij = r[i, j][:, None, None]
        rik = r[i[:, None], ks]  # (P, m)
        rjk = r[j[:, None], ks]
        rkl = r[ks[:, :, None], ks[:, None, :]]  # (P, m, m)

        def part(x, y, z):  # first-order partial of x, y given z, broadcast
            return (x - y * z) / np.sqrt(np.clip((1 - y**2) * (1 - z**2), 1e-9, None))

        # given k (axis 1): r_ij.k, r_il.k, r_jl.k for every l (axis 2)
        rij_k = part(rij, rik[:, :, None], rjk[:, :, None])
        ril_k = part(rik[:, None, :], rik[:, :, None], rkl)
        rjl_k = part(rjk[:, None, :], rjk[:, :, None], rkl)
        rij_kl = np.abs(part(rij_k, ril_k, rjl_k))[:, tri[0], tri[1]]
        weak = np.minimum(assoc[np.arange(len(p))[:, None], ks][:, tri[0]],
                          assoc[np.arange(len(p))[:, None], ks][:, tri[1]]) < floor
        rij_kl[weak] = np.inf
        best = rij_kl.min(axis=1)
        out[s : s + len(p)] = np.where(np.isfinite(best), np.minimum(best, out[s : s + len(p)]),
                                       out[s : s + len(p)])
    return np.clip(out, 0.0, 1.0)


def _relevant_corr(level: np.ndarray, act: np.ndarray, pairs: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Correlation over the relevant intervals only (either object active), so that long
    common idleness does not pass for co-activity."""
    out = np.empty(len(pairs))
    for s in range(0, len(pairs), batch):
        p = pairs[s : s + batch]
        x, y = level[p[:, 0]], level[p[:, 1]]
        m = (act[p[:, 0]] | act[p[:, 1]]).astype(np.float64)
        cnt = np.maximum(m.sum(axis=1), 1.0)
        mx = (x * m).sum(axis=1) / cnt
        my = (y * m).sum(axis=1) / cnt
        xc, yc = (x - mx[:, None]) * m, (y - my[:, None]) * m
        num = (xc * yc).sum(axis=1)
        den = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
        out[s : s + len(p)] = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12)
    return out


def _node_stats(prep: Prepared) -> tuple[np.ndarray, ...]:
    """Per-object volume, duty cycle, burst skewness and burst share (computed once)."""
    cached = getattr(prep, "_node_cache", None)
    if cached is None:
        raw = prep.grid.values
        t = raw.shape[1]
        mean = np.maximum(np.abs(raw.mean(axis=1)), 1e-12)
        duty = np.clip(prep.act.mean(axis=1), 1.0 / t, 1.0)
        skew = np.clip(_skew(prep.burst), -10, 10)
        hp_var = highpass(raw).var(axis=1)
        tot_var = raw.var(axis=1)
        burst_share = np.divide(hp_var, tot_var, out=np.zeros_like(hp_var), where=tot_var > 1e-18)
        cached = prep._node_cache = (mean, duty, skew, burst_share)
    return cached


def pair_features(prep: Prepared, pairs: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Feature matrix, one row per ordered pair (i, j), columns as :data:`FEATURE_NAMES`.

    Pairs go through in batches: the per-pair series gathers cost ``batch x bins``."""
    pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    if len(pairs) > batch:
        return np.concatenate([_pair_features(prep, pairs[s : s + batch])
                               for s in range(0, len(pairs), batch)])
    return _pair_features(prep, pairs)


def _pair_features(prep: Prepared, pairs: np.ndarray) -> np.ndarray:
    i, j = pairs[:, 0], pairs[:, 1]
    n, t = prep.level.shape
    rl, rb = prep.r_level, prep.r_burst
    lag_b = prep.lag_burst
    lags = len(lag_b) - 1
    lead = np.zeros(len(pairs))
    for lag in range(1, lags + 1):
        lead += lag_b[lag][i, j] - lag_b[lag][j, i]
    lead /= max(lags, 1)

    # pairwise LiNGAM likelihood-ratio approximations (Hyvarinen & Smith 2013)
    b = prep.burst
    tb = np.tanh(b)
    rho = rb[i, j]
    x_tanh_y = np.einsum("pt,pt->p", b[i], tb[j]) / t
    tanh_x_y = np.einsum("pt,pt->p", tb[i], b[j]) / t
    lingam_tanh = rho * (x_tanh_y - tanh_x_y)
    lingam_skew = rho * (np.einsum("pt,pt->p", b[i] ** 2, b[j]) - np.einsum("pt,pt->p", b[i], b[j] ** 2)) / t

    floor = 4.0 / np.sqrt(t)
    min_p1, col_j, col_i = _third_party(rb, pairs, floor=floor)
    min_p2 = _second_order(rb, pairs, floor=floor)
    min_p1_level, _, _ = _third_party(rl, pairs, floor=floor)
    min_p1_nocopy, _, _ = _third_party(rb, pairs, floor=floor, copy_limit=COPY)
    # at lag 0 only: best lags chosen per pair make the three correlations of a
    # first-order partial inconsistent (same host, same instants: lag 0 is the truth)
    r0 = np.clip(0.5 * (prep.lag_burst[0] + prep.lag_burst[0].T), -0.999, 0.999)
    min_p1_lag0, _, _ = _third_party(r0, pairs, floor=floor)

    absb = np.abs(rb).copy()
    np.fill_diagonal(absb, 0.0)
    copies = np.log1p((absb > COPY).sum(axis=1))
    row_max = np.maximum(absb.max(axis=1), 1e-9)

    mean, duty, skew, burst_share = _node_stats(prep)

    cols = [
        prep.lag_level[0][i, j],
        rl[i, j],
        prep.lag_burst[0][i, j],
        rb[i, j],
        _relevant_corr(prep.level, prep.act, pairs),
        prep.partial_burst[i, j],
        prep.partial_level[i, j],
        min_p1,
        min_p2,
        min_p1_level,
        min_p1_nocopy,
        min_p1_lag0,
        copies[i],
        copies[j],
        absb[i, j] / row_max[i],
        absb[i, j] / row_max[j],
        prep.coactive[i, j],
        prep.coactive[j, i],
        lead,
        lingam_tanh,
        lingam_skew,
        col_j,
        col_i,
        np.clip(np.log(mean[i] / mean[j]), -8, 8),
        np.log(duty[i] / duty[j]),
        prep.explained[i],
        prep.explained[j],
        skew[i],
        skew[j],
        burst_share[i],
        burst_share[j],
        # clipped to the training range: an MLP extrapolates wildly beyond it
        np.full(len(pairs), np.clip(np.log10(t), *LOG_BINS_RANGE)),
        np.full(len(pairs), np.clip(np.log10(n), *LOG_OBJECTS_RANGE)),
    ]
    return np.column_stack(cols)
