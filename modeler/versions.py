"""Model versions with their provenance, kept in the platform's store.

Every model a modeler finishes is kept, never overwritten, because the questions
operators ask are historical ("what changed since yesterday?", "which data was this
edge based on?"): a version records the sources it was computed from, the time window
of the activity, the network that scored the pairs and how the work went.  The table
joins the platform's schema through :class:`masa.store.Base`, so one ``Store(url)``
creates it next to the node list, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from sqlalchemy import JSON, Float, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from masa.errors import BadRequest
from masa.store import Base, Store
from modeler import interface


class ModelVersion(Base):
    """One finished model of one modeler (``number`` counts per modeler from 1)."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    modeler: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float)
    since: Mapped[float] = mapped_column(Float)
    until: Mapped[float] = mapped_column(Float)
    network: Mapped[str] = mapped_column(String(128), default="")
    sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ux_model_versions_modeler_number", "modeler", "number", unique=True),)


@dataclass
class Provenance:
    """Where a model came from: enough to recompute it or to distrust it."""

    sources: list[str]
    since: float
    until: float
    network: str
    info: dict[str, Any] = field(default_factory=dict)


def _header(row: ModelVersion) -> dict[str, Any]:
    return {"version": row.number, "modeler": row.modeler, "created": row.created,
            "since": row.since, "until": row.until, "network": row.network,
            "sources": list(row.sources or []), "info": dict(row.info or {})}


class Versions:
    """The versions of every modeler in one store; each method is one transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # the store may have been opened before this module was imported
        ModelVersion.__table__.create(store.engine, checkfirst=True)

    def add(self, modeler: str, g: nx.DiGraph, provenance: Provenance) -> int:
        """Keep ``g`` as the modeler's next version; returns its number."""
        with self.store.session() as s:
            last = s.execute(select(func.max(ModelVersion.number))
                             .where(ModelVersion.modeler == modeler)).scalar()
            number = int(last or 0) + 1
            s.add(ModelVersion(
                modeler=modeler, number=number, created=time.time(),
                since=float(provenance.since), until=float(provenance.until),
                network=provenance.network, sources=list(provenance.sources),
                info=dict(provenance.info), model=interface.whole(g)))
        return number

    def list(self, modeler: str) -> list[dict[str, Any]]:
        """Headers (provenance, no graph) of every version, oldest first."""
        q = select(ModelVersion).where(ModelVersion.modeler == modeler).order_by(ModelVersion.number)
        with self.store.session() as s:
            return [_header(r) for r in s.execute(q).scalars()]

    def latest(self, modeler: str) -> int | None:
        with self.store.session() as s:
            return s.execute(select(func.max(ModelVersion.number))
                             .where(ModelVersion.modeler == modeler)).scalar()

    def get(self, modeler: str, number: int | None = None) -> tuple[nx.DiGraph, dict[str, Any]]:
        """A version's graph and header (``number`` None: the latest)."""
        if number is None:
            number = self.latest(modeler)
            if number is None:
                raise BadRequest(f"modeler {modeler!r} has no model yet")
        if not -(2**63) <= int(number) < 2**63:  # numbers are stored as 64-bit: beyond, the database overflows
            raise BadRequest(f"modeler {modeler!r} has no version {number}")
        q = select(ModelVersion).where(ModelVersion.modeler == modeler,
                                       ModelVersion.number == int(number))
        with self.store.session() as s:
            row = s.execute(q).scalar_one_or_none()
            if row is None:
                raise BadRequest(f"modeler {modeler!r} has no version {number}")
            return interface.from_json(row.model), _header(row)

    def diff(self, modeler: str, old: int, new: int | None = None) -> dict[str, Any]:
        """What changed from version ``old`` to ``new`` (default: the latest)."""
        g0, h0 = self.get(modeler, old)
        g1, h1 = self.get(modeler, new)
        return {"from": h0["version"], "to": h1["version"], **interface.diff(g0, g1)}
