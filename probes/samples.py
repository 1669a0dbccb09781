"""The probes' output record and its conversion to the shared activity model.

Probes return flat :class:`Sample` records rather than :class:`masa.activity.Series`
because one sample touches hundreds of objects; building a Series per object per
sample would cost more than reading ``/proc``.  Callers batch them with
:func:`to_series` when they need series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from masa.activity import Series


class Sample(NamedTuple):
    """Activity of one object as a rate over the half-open interval ``[start, end)``."""

    object: str
    unit: str
    start: float
    end: float
    value: float


def to_series(samples: Iterable[Sample]) -> dict[str, Series]:
    """Group samples by object into series (sorted by start; overlapping ones dropped)."""
    rows: dict[str, list[Sample]] = {}
    for s in samples:
        rows.setdefault(s.object, []).append(s)
    out: dict[str, Series] = {}
    for obj, items in rows.items():
        items.sort(key=lambda s: s.start)
        kept: list[Sample] = []
        for s in items:
            if s.end <= s.start or (kept and s.start < kept[-1].end - 1e-9):
                continue
            kept.append(s)
        arr = np.array([(s.start, s.end, s.value) for s in kept], dtype=np.float64).reshape(-1, 3)
        out[obj] = Series(obj, kept[0].unit if kept else "", arr[:, 0], arr[:, 1], arr[:, 2])
    return out


#: characters a process or interface name may hold (``prctl``, ``exec -a``, an agent's
#: ifDescr) that an object id must not: ``/`` splits the id, white space and ``,`` split
#: lists, and glob characters make the id a pattern, so asking for ``h/proc/w[1]/7`` by
#: name would match ``h/proc/w1/7`` and never itself
_UNSAFE = frozenset("/,*?[]")


def safe_name(text: str) -> str:
    """Make a process or interface name usable as one path segment of an object id."""
    cleaned = "".join("_" if (c in _UNSAFE or c.isspace() or not c.isprintable()) else c for c in text)
    return cleaned or "_"
