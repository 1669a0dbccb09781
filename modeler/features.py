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
  non-Gaussian (LiNGAM-style) likelihood ratios, volume and duty-cycle ratios;
* *information-theoretic*: transfer entropy both ways (Gaussian copula on the burst
  series, plug-in on the activity indicators) and the copula conditional mutual
  information given the strongest third object, which see non-Gaussian dependence.

Heavy N x N parts are matrix products; the per-pair parts that cost O(N) each run
only on the pairs that survive screening.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata
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
    "te_src_to_dst",
    "te_dst_to_src",
    "cmi_third",
    "te_active_src_to_dst",
    "te_active_dst_to_src",
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
    partial_burst: np.ndarray | LowRankPartial  # indexed [i, j] only
    partial_level: np.ndarray | LowRankPartial
    explained: np.ndarray  # R^2 of each object from all others (burst series)
    coactive: np.ndarray  # coactive[i, j] = P(j active | i active)

    @property
    def n(self) -> int:
        return self.level.shape[0]

    @property
    def floor(self) -> float:
        """Smallest association worth a look: about four standard errors of a correlation
        over this many bins, below which a third object's association is chance."""
        return 4.0 / float(np.sqrt(self.level.shape[1]))

    @cached_property
    def matrix_stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray]:
        """See :func:`_matrix_stats` (once per recording, shared by all batches of pairs)."""
        return _matrix_stats(self)

    @cached_property
    def node_stats(self) -> tuple[np.ndarray, ...]:
        """See :func:`_node_stats` (once per recording)."""
        return _node_stats(self)

    @cached_property
    def copula(self) -> np.ndarray:
        """See :func:`_copula` (once per recording)."""
        return _copula(self.burst)

    @cached_property
    def active_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The activity indicators as floats, and each bin's product with the one before
        (the binary transfer entropy's counts); once per recording, not per batch."""
        act = self.act.astype(np.float64)
        return act, act[:, 1:] * act[:, :-1]

    @cached_property
    def copula_corr(self) -> CopulaCorr:
        """See :class:`CopulaCorr` (once per recording)."""
        return CopulaCorr(self.copula, len(self.lag_burst) - 1)

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
    """Signed correlation of largest magnitude over lags -L..L (symmetric matrix).

    A running maximum over the lags (first of equal magnitudes wins, as argmax would):
    no (2L+1) x N x N stack in memory."""
    best = lagged[0].copy()
    best_abs = np.abs(best)
    for m in list(lagged[1:]) + [m.T for m in lagged[1:]]:
        a = np.abs(m)
        better = a > best_abs
        np.copyto(best, m, where=better)
        np.copyto(best_abs, a, where=better)
    return np.clip(best, -0.999, 0.999, out=best)


#: Above this many objects the partial correlations go through :func:`_partial_fast`
#: (same values to rounding); at training sizes the dense sklearn path stays bit-identical.
FAST_PARTIAL_ABOVE = 500


def _partial(x: np.ndarray) -> tuple[np.ndarray | LowRankPartial, np.ndarray]:
    """Partial correlations given all other objects, and each object's R^2 from the rest.

    Ledoit-Wolf shrinkage keeps this defined when objects outnumber bins or when a chain
    of always-called services makes the covariance nearly singular."""
    if x.shape[0] > FAST_PARTIAL_ABOVE:
        fast = _partial_fast(x)
        if fast is not None:
            return fast
    lw = LedoitWolf(assume_centered=True).fit(x.T)
    prec = lw.precision_
    return _partial_from_precision(prec), _explained(np.diag(lw.covariance_), np.diag(prec))


def _partial_from_precision(prec: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(prec), 1e-12, None))
    pc = -prec / d[:, None] / d[None, :]
    np.fill_diagonal(pc, 1.0)
    return np.clip(pc, -1.0, 1.0, out=pc)


def _explained(cov_diag: np.ndarray, prec_diag: np.ndarray) -> np.ndarray:
    """Each object's R^2 from all the others: 1 - 1 / (C_ii P_ii)."""
    return np.clip(1.0 - 1.0 / np.clip(cov_diag * prec_diag, 1e-12, None), 0.0, 1.0)


def _lw_shrinkage(x: np.ndarray, gram: np.ndarray) -> float:
    """sklearn's ``ledoit_wolf_shrinkage(x.T, assume_centered=True)`` (same formula, same
    value to rounding) from ``gram``, ``x x^T`` or ``x^T x``: both have the same squared
    sum, so with more objects than bins no N x N product is formed."""
    n, t = x.shape
    x2_rows = np.einsum("it,it->t", x, x)  # per bin: sum over objects of x^2
    trace = x2_rows / t  # summed, the trace of the empirical covariance
    mu = float(np.sum(trace)) / n
    beta_ = float(np.sum(x2_rows**2))  # sum of the coefficients of <X2.T, X2>
    delta_ = float(np.sum(gram**2)) / t**2  # sum of the squared coefficients of <X.T, X>
    beta = 1.0 / (n * t) * (beta_ / t - delta_)
    delta = (delta_ - 2.0 * mu * float(np.sum(trace)) + n * mu**2) / n
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


class LowRankPartial:
    """Partial correlations ``pc[i, j]`` from a precision ``(I - Z Z^T) / a`` (Z: N x T),
    evaluated only at the pairs asked for: O(T) per pair instead of an N x N matrix."""

    def __init__(self, z: np.ndarray, a: float) -> None:
        self.z, self.a = z, a
        self.prec_diag = (1.0 - np.einsum("it,it->i", z, z)) / a
        self.d = np.sqrt(np.clip(self.prec_diag, 1e-12, None))

    def __getitem__(self, key: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        i, j = (np.asarray(k, dtype=np.intp) for k in key)
        prec = -np.einsum("pt,pt->p", self.z[i], self.z[j]) / self.a
        pc = -prec / self.d[i] / self.d[j]
        return np.clip(np.where(i == j, 1.0, pc), -1.0, 1.0)


def _partial_fast(x: np.ndarray) -> tuple[np.ndarray | LowRankPartial, np.ndarray] | None:
    """:func:`_partial` without the O(N^3) eigendecomposition of an N x N matrix.

    The Ledoit-Wolf estimate is ``C = a I + b X X^T`` (X: N objects x T bins, ``a = s mu``,
    ``b = (1 - s) / T``, shrinkage ``s`` by sklearn's formula, :func:`_lw_shrinkage`).  With more objects than
    bins its inverse is, by Woodbury, ``(I - b X G^-1 X^T) / a`` with the T x T matrix
    ``G = a I + b X^T X``: O(N T^2), and the precision is then needed only on the
    diagonal and at the pairs asked for (:class:`LowRankPartial`).  With fewer objects
    than bins C (N x N, positive definite) is inverted through its Cholesky factor,
    O(N^3) <= O(N T^2).  None when C is singular (no shrinkage or all rows constant) or
    the factorisation fails: then the dense path (a pseudo-inverse) is the definition."""
    n, t = x.shape
    gram = x.T @ x if n > t else x @ x.T  # the smaller of the two
    shrink = _lw_shrinkage(x, gram)
    sq = np.einsum("it,it->i", x, x) / t  # diagonal of the empirical covariance
    mu = float(np.sum(sq)) / n
    a, b = shrink * mu, (1.0 - shrink) / t
    if not a > 0.0:
        return None
    cov_diag = (1.0 - shrink) * sq + a
    try:
        pc, prec_diag = _precision_at(x, gram, shrink, a, b)
    except np.linalg.LinAlgError:
        return None
    return pc, _explained(cov_diag, prec_diag)


def _precision_at(x: np.ndarray, gram: np.ndarray, shrink: float, a: float,
                  b: float) -> tuple[np.ndarray | LowRankPartial, np.ndarray]:
    """Partial correlations and the precision's diagonal (see :func:`_partial_fast`)."""
    import scipy.linalg

    n, t = x.shape
    if n > t:
        g = gram
        g *= b
        g.flat[:: t + 1] += a
        chol = scipy.linalg.cholesky(g, lower=True, check_finite=False)
        z = np.sqrt(b) * scipy.linalg.solve_triangular(chol, x.T, lower=True, check_finite=False).T
        pc = LowRankPartial(z, a)
        prec_diag = pc.prec_diag
    else:
        c = (1.0 - shrink) * (gram / t)
        c.flat[:: n + 1] += a
        prec = scipy.linalg.cho_solve(scipy.linalg.cho_factor(c, lower=True, check_finite=False),
                                      np.eye(n), check_finite=False)
        prec_diag = np.diag(prec).copy()
        pc = _partial_from_precision(prec)
    return pc, prec_diag


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
    keep = score >= max(threshold, prep.floor)
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


def _rows_per_batch(n: int, elements: int = 1 << 20) -> int:
    """Pairs per batch so that a (pairs x n) temporary stays about 8 MB (cache-friendly)."""
    return max(16, elements // max(n, 1))


def _batches(r: np.ndarray, pairs: np.ndarray):
    """Cache-sized batches of pairs for the (pairs x N) scans over third objects: the
    batch's start, its i and j, row numbers, r_ij as a column, and the rows r_i. and r_j."""
    batch = _rows_per_batch(r.shape[0])
    for s in range(0, len(pairs), batch):
        i, j = pairs[s : s + batch, 0], pairs[s : s + batch, 1]
        yield s, i, j, np.arange(len(i)), r[i, j][:, None], r[i], r[j]


def _neighbours(r: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Objects associated at least ``floor`` with each object, as CSR (row pointers,
    columns); None when that is not sparse (an eighth of all pairs or more)."""
    n = r.shape[0]
    if not floor > 0.0:
        return None
    near = np.abs(r) >= floor
    np.fill_diagonal(near, False)
    if near.sum() >= n * n / 8:
        return None
    rows, cols = np.nonzero(near)
    indptr = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols


def first_order_partial(rij: np.ndarray, rik: np.ndarray, rjk: np.ndarray) -> np.ndarray:
    """|r_ij.k|: what is left of i and j's association once k is held fixed. A third
    object that drives both (or passes one's activity on to the other) leaves little;
    correlations must be clipped inside (-1, 1), as every matrix of :class:`Prepared` is."""
    return np.abs((rij - rik * rjk) / np.sqrt((1 - rik**2) * (1 - rjk**2)))


def _min_partial1(r: np.ndarray, pairs: np.ndarray, floor: float,
                  copy_limits: tuple[float, ...] = (np.inf,),
                  neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
    """Smallest |r_ij.k| over the thirds k associated with i or j (|r_ik| or |r_jk| at
    least ``floor``) and not copies of them (both at most the copy limit); |r_ij| when
    no k qualifies.  One result per copy limit.

    With ``neighbours`` (:func:`_neighbours`, where few objects pass the floor) only they
    are visited: per pair the union of the two lists instead of all N objects."""
    pairs = pairs.reshape(-1, 2)
    if neighbours is not None:
        return _min_partial1_sparse(r, pairs, neighbours, copy_limits)
    outs = [np.empty(len(pairs)) for _ in copy_limits]
    for s, i, j, rows, rij, rik, rjk in _batches(r, pairs):
        pij_k = first_order_partial(rij, rik, rjk)
        pij_k[rows, i] = np.inf
        pij_k[rows, j] = np.inf
        strongest = np.maximum(np.abs(rik), np.abs(rjk))
        # only objects associated with i or j can explain their association; among
        # thousands of unrelated ones some would by chance (multiple comparisons)
        pij_k[strongest < floor] = np.inf
        for out, limit in zip(outs, copy_limits, strict=True):
            # a copy of i or j explains everything j or i explains: no evidence either way
            mins = (np.where(strongest > limit, np.inf, pij_k) if np.isfinite(limit) else pij_k).min(axis=1)
            out[s : s + len(i)] = np.where(np.isfinite(mins), mins, np.abs(rij[:, 0]))
    return outs


def _min_partial1_sparse(r: np.ndarray, pairs: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray],
                         copy_limits: tuple[float, ...]) -> list[np.ndarray]:
    """:func:`_min_partial1` over neighbour lists."""
    indptr, cols = neighbours
    deg = np.diff(indptr)

    def gather(who: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = deg[who]
        pid = np.repeat(np.arange(len(who)), cnt)
        start = np.repeat(indptr[who] - (np.cumsum(cnt) - cnt), cnt)
        return pid, cols[start + np.arange(len(pid))]

    outs = [np.full(len(pairs), np.inf) for _ in copy_limits]
    budget, s = 1 << 20, 0
    while s < len(pairs):
        # as many pairs as keep the (pair, k) entries within budget, at least one
        load = np.cumsum(deg[pairs[s:, 0]] + deg[pairs[s:, 1]])
        e = s + max(1, int(np.searchsorted(load, budget, side="right")))
        p = pairs[s:e]
        i, j = p[:, 0], p[:, 1]
        pi, ki = gather(i)
        pj, kj = gather(j)
        pid, k = np.concatenate([pi, pj]), np.concatenate([ki, kj])
        ii, jj = i[pid], j[pid]
        rij, rik, rjk = r[ii, jj], r[ii, k], r[jj, k]
        val = first_order_partial(rij, rik, rjk)
        val[(k == ii) | (k == jj)] = np.inf
        strongest = np.maximum(np.abs(rik), np.abs(rjk))
        for out, limit in zip(outs, copy_limits, strict=True):
            v = np.where(strongest > limit, np.inf, val) if np.isfinite(limit) else val
            np.minimum.at(out[s:e], pid, v)
        s = e
    direct = np.abs(r[pairs[:, 0], pairs[:, 1]])
    return [np.where(np.isfinite(out), out, direct) for out in outs]


def _collider(r: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collider evidence at j and at i, over all k.

    Collider at j with parent i: some k unrelated to i (|r_ik| small) becomes related
    given j (|r_ik.j| large): the signature of two independent callers of one service.
    Scored ``|r_ik.j| - 3 |r_ik|`` so that a partial correlation merely sharpened by
    conditioning (k already related to i) does not count."""
    pairs = pairs.reshape(-1, 2)
    out_col_j = np.empty(len(pairs))
    out_col_i = np.empty(len(pairs))
    for s, i, j, rows, rij, rik, rjk in _batches(r, pairs):
        one_rij2 = 1 - rij**2
        col_j = np.abs((rik - rij * rjk) / np.sqrt(one_rij2 * (1 - rjk**2))) - 3 * np.abs(rik)
        col_j[rows, i] = -np.inf
        col_j[rows, j] = -np.inf
        cj = col_j.max(axis=1)
        del col_j
        col_i = np.abs((rjk - rij * rik) / np.sqrt(one_rij2 * (1 - rik**2))) - 3 * np.abs(rjk)
        col_i[rows, i] = -np.inf
        col_i[rows, j] = -np.inf
        ci = col_i.max(axis=1)
        out_col_j[s : s + len(i)] = np.where(np.isfinite(cj), cj, 0.0)
        out_col_i[s : s + len(i)] = np.where(np.isfinite(ci), ci, 0.0)
    return out_col_j, out_col_i


def _second_order(r: np.ndarray, pairs: np.ndarray, m: int = 6, floor: float = 0.0,
                  batch: int | None = None, a: np.ndarray | None = None) -> np.ndarray:
    """Smallest second-order partial correlation |r_ij.kl| over pairs {k, l} of the ``m``
    objects most associated with i or j (the second level of PC).

    First order is not enough where two paths connect a pair (a diamond, a caller and a
    shared back-end) or where a sibling pair shares a caller *and* a common load: both
    thirds must be held fixed at once.  ``a``: |r| with a zero diagonal, if at hand."""
    n = r.shape[0]
    out = np.abs(r[pairs[:, 0], pairs[:, 1]]).astype(float)
    if n < 4 or len(pairs) == 0:
        return out
    m = min(m, n - 2)
    if a is None:
        a = np.abs(r)
        np.fill_diagonal(a, 0.0)
    tri = np.triu_indices(m, 1)
    batch = batch or _rows_per_batch(n)
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


def _matrix_stats(prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray]:
    """Lag-0 burst correlations (symmetrised), per-object copy counts and strongest burst
    association, and the neighbour lists of :func:`_min_partial1`: N x N work done once
    per recording (:attr:`Prepared.matrix_stats`), not once per batch of pairs."""
    floor = prep.floor
    # at lag 0 only: best lags chosen per pair make the three correlations of a
    # first-order partial inconsistent (same host, same instants: lag 0 is the truth)
    r0 = np.clip(0.5 * (prep.lag_burst[0] + prep.lag_burst[0].T), -0.999, 0.999)
    absb = np.abs(prep.r_burst)
    np.fill_diagonal(absb, 0.0)
    copies = np.log1p((absb > COPY).sum(axis=1))
    row_max = np.maximum(absb.max(axis=1), 1e-9)
    near = {"burst": _neighbours(prep.r_burst, floor), "level": _neighbours(prep.r_level, floor),
            "lag0": _neighbours(r0, floor)}
    return r0, copies, row_max, near, absb


def _node_stats(prep: Prepared) -> tuple[np.ndarray, ...]:
    """Per-object volume, duty cycle, burst skewness and burst share (computed once)."""
    raw = prep.grid.values
    t = raw.shape[1]
    mean = np.maximum(np.abs(raw.mean(axis=1)), 1e-12)
    duty = np.clip(prep.act.mean(axis=1), 1.0 / t, 1.0)
    skew = np.clip(_skew(prep.burst), -10, 10)
    hp_var = highpass(raw).var(axis=1)
    tot_var = raw.var(axis=1)
    burst_share = np.divide(hp_var, tot_var, out=np.zeros_like(hp_var), where=tot_var > 1e-18)
    return mean, duty, skew, burst_share


#: Elements of one (pairs x bins) gather of per-pair series (32 MB of float64): a batch
#: holds a few such gathers at once (the LiNGAM terms, the relevant correlation), so the
#: pairs of a batch are as many as keep them within this, and memory does not grow with
#: pairs x bins (60 objects at 20,000 bins took 2.3 GB in one batch).
SERIES_ELEMENTS = 1 << 22


def _copula(x: np.ndarray) -> np.ndarray:
    """Normal scores of each row's ranks (ties share their average rank), standardised.

    Information measures of Gaussian variables are closed forms of correlations; on the
    normal scores they hold for any monotone transform of the activity (a Gaussian copula),
    so heavy-tailed bursts do not dominate them."""
    z = ndtri(rankdata(x, axis=1) / (x.shape[1] + 1))
    return standardize(z)


class CopulaCorr:
    """``at(lag, a, b)[p] = corr(copula_a[p](t), copula_b[p](t + lag))`` for pairs of
    objects, and ``auto`` (objects x lags 0..L), each object's own.

    Up to :data:`FAST_PARTIAL_ABOVE` objects from one N x N matrix per lag (how the
    training data was made); above, per pair from the normal scores, as the global
    partials are: a matrix per lag is 0.2 GB at 5,000 objects, and only the screened pairs
    (and their strongest thirds) are ever read.  Both agree to rounding
    (tests/modeler/test_features_scale.py)."""

    def __init__(self, z: np.ndarray, lags: int) -> None:
        self.z = z
        t = z.shape[1]
        if z.shape[0] <= FAST_PARTIAL_ABOVE:
            self.dense: list[np.ndarray] | None = [(z[:, : t - lag] @ z[:, lag:].T) / (t - lag)
                                                   for lag in range(lags + 1)]
            self.auto = np.stack([np.diag(m) for m in self.dense], axis=1)
        else:
            self.dense = None
            self.auto = np.stack([np.einsum("nt,nt->n", z[:, : t - lag], z[:, lag:]) / (t - lag)
                                  for lag in range(lags + 1)], axis=1)

    def at(self, lag: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return self.dense[lag][a, b]
        t = self.z.shape[1]
        return np.einsum("pt,pt->p", self.z[a, : t - lag], self.z[b, lag:]) / (t - lag)


#: Ridge on the lagged correlation matrix of the transfer entropy's solve: keeps it
#: defined when the source's lags are collinear (a constant or perfectly periodic series).
TE_RIDGE = 1e-6


def _gc_te(c: dict[int, np.ndarray], ac_src: np.ndarray, ac_dst: np.ndarray, lags: int) -> np.ndarray:
    """Gaussian-copula transfer entropy src -> dst, in nats, clipped to [0, 5]:
    ``1/2 log(var(dst_t | dst_t-1) / var(dst_t | dst_t-1, src_t-1..t-L))``.

    ``c[l]``: corr(src_t, dst_t+l) per pair, l = -L..L; ``ac_*``: each pair's source and
    destination autocorrelations at lags 0..L (pairs x L+1).

    Why: a caller's bursts precede its callee's; how much the source's past adds to
    predicting the destination beyond its own past is an asymmetry of information flow,
    read both ways, for the direction of an edge."""
    p = len(ac_src)
    cov = np.empty((p, lags + 1, lags + 1))
    cov[:, 0, 0] = 1.0
    for a in range(1, lags + 1):
        cov[:, 0, a] = cov[:, a, 0] = c[a - 1]
        for b in range(1, lags + 1):
            cov[:, a, b] = ac_src[:, abs(a - b)]
    idx = np.arange(lags + 1)
    cov[:, idx, idx] += TE_RIDGE
    rhs = np.empty((p, lags + 1))
    rhs[:, 0] = ac_dst[:, 1]
    for lag in range(1, lags + 1):
        rhs[:, lag] = c[lag]
    sol = np.linalg.solve(cov, rhs[:, :, None])[:, :, 0]
    full = 1.0 - np.einsum("pk,pk->p", rhs, sol)
    reduced = 1.0 - ac_dst[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        te = 0.5 * np.log(np.clip(reduced, 1e-12, None) / np.clip(full, 1e-12, None))
    return np.clip(np.nan_to_num(te, nan=0.0), 0.0, 5.0)


def _binary_te(x: np.ndarray, y: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Plug-in transfer entropy at lag 1 of 0/1 activity x -> y (pairs x bins), in nats,
    from the 8 joint counts of (x_t-1, y_t-1, y_t); ``yy`` is ``y[:, 1:] * y[:, :-1]``.

    Why: correlations see only linear, Gaussian-like dependence; whether the source was
    active one bin before says whether the destination turns active, whatever the shape
    of the activity (on/off work, saturation), and read both ways it orients the edge."""
    m = x.shape[1] - 1
    xp, yp, yn = x[:, :-1], y[:, :-1], y[:, 1:]
    sx, sb, sc = xp.sum(axis=1), yp.sum(axis=1), yn.sum(axis=1)
    sxb = np.einsum("pt,pt->p", xp, yp)
    sxc = np.einsum("pt,pt->p", xp, yn)
    sbc = yy.sum(axis=1)
    sxbc = np.einsum("pt,pt->p", xp, yy)
    # counts n[a][b][c] of (x_t-1 = a, y_t-1 = b, y_t = c) by inclusion-exclusion
    n111 = sxbc
    n110 = sxb - sxbc
    n101 = sxc - sxbc
    n100 = sx - sxb - sxc + sxbc
    n011 = sbc - sxbc
    n010 = sb - sbc - sxb + sxbc
    n001 = sc - sbc - sxc + sxbc
    n000 = m - sx - sb - sc + sxb + sxc + sbc - sxbc
    nb = {1: sb, 0: m - sb}
    nab = {(1, 1): sxb, (1, 0): sx - sxb, (0, 1): sb - sxb, (0, 0): m - sx - sb + sxb}
    nbc = {(1, 1): sbc, (1, 0): sb - sbc, (0, 1): sc - sbc, (0, 0): m - sb - sc + sbc}
    cells = {(1, 1, 1): n111, (1, 1, 0): n110, (1, 0, 1): n101, (1, 0, 0): n100,
             (0, 1, 1): n011, (0, 1, 0): n010, (0, 0, 1): n001, (0, 0, 0): n000}
    te = np.zeros(len(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        for (a, b, c), n in cells.items():
            term = n / m * np.log(n * nb[b] / (nab[(a, b)] * nbc[(b, c)]))
            te += np.where(n > 0, term, 0.0)
    return np.clip(te, 0.0, None)


def _cmi_third(prep: Prepared, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Copula conditional mutual information of i and j at lag 0 given the pair's
    strongest third object (largest |burst correlation| with i or j), in nats, clipped to
    [0, 5]; the copula mutual information of i and j when there is no third.

    Why: the partial correlations above are linear; on the copula's normal scores the
    same conditioning sees monotone non-Gaussian dependence (bursty, heavy-tailed work)
    that a shared caller or a middle object explains away, or not."""
    cc = prep.copula_corr
    pc = cc.at(0, i, j)
    if prep.n > 2:
        absb = prep.matrix_stats[4]
        k = np.empty(len(i), dtype=np.intp)
        batch = _rows_per_batch(prep.n)
        for s in range(0, len(i), batch):  # (pairs x N) scans in cache-sized batches
            bi, bj = i[s : s + batch], j[s : s + batch]
            rows = np.arange(len(bi))
            assoc = np.maximum(absb[bi], absb[bj])
            assoc[rows, bi] = -1.0
            assoc[rows, bj] = -1.0
            k[s : s + len(bi)] = assoc.argmax(axis=1)
        cik, cjk = cc.at(0, i, k), cc.at(0, j, k)
        pc = (pc - cik * cjk) / np.sqrt(np.clip((1 - cik**2) * (1 - cjk**2), 1e-12, None))
    return np.clip(-0.5 * np.log(np.clip(1 - pc**2, 1e-12, None)), 0.0, 5.0)


def _it_features(prep: Prepared, pairs: np.ndarray) -> np.ndarray:
    """The information-theoretic columns (transfer entropies, conditional mutual
    information) of a batch of pairs."""
    i, j = pairs[:, 0], pairs[:, 1]
    cc = prep.copula_corr
    lags = cc.auto.shape[1] - 1
    c = {0: cc.at(0, i, j)}
    for lag in range(1, lags + 1):
        c[lag], c[-lag] = cc.at(lag, i, j), cc.at(lag, j, i)
    ac = cc.auto
    back = {-lag: v for lag, v in c.items()}
    act, yy = prep.active_steps
    return np.column_stack([
        _gc_te(c, ac[i], ac[j], lags),
        _gc_te(back, ac[j], ac[i], lags),
        _cmi_third(prep, i, j),
        _binary_te(act[i], act[j], yy[j]),
        _binary_te(act[j], act[i], yy[i]),
    ])


def pair_features(prep: Prepared, pairs: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Feature matrix, one row per ordered pair (i, j), columns as :data:`FEATURE_NAMES`.

    Pairs go through in batches of at most ``batch``, fewer on long grids: the per-pair
    series gathers cost ``batch x bins`` (:data:`SERIES_ELEMENTS`).  Every feature of a
    pair is computed from that pair's rows alone, so the batching does not change a bit."""
    pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    batch = max(1, min(batch, SERIES_ELEMENTS // prep.level.shape[1]))
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

    floor = prep.floor
    r0, copies, row_max, near, absb = prep.matrix_stats
    min_p1, min_p1_nocopy = _min_partial1(rb, pairs, floor, (np.inf, COPY), near["burst"])
    col_j, col_i = _collider(rb, pairs)
    min_p2 = _second_order(rb, pairs, floor=floor, a=absb)
    (min_p1_level,) = _min_partial1(rl, pairs, floor, neighbours=near["level"])
    (min_p1_lag0,) = _min_partial1(r0, pairs, floor, neighbours=near["lag0"])
    absb_ij = np.where(i == j, 0.0, np.abs(rb[i, j]))

    mean, duty, skew, burst_share = prep.node_stats

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
        absb_ij / row_max[i],
        absb_ij / row_max[j],
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
        _it_features(prep, pairs),
    ]
    return np.column_stack(cols)
