"""The modeler's side of connection evidence: endpoints resolved to objects across
sources, and evidence used only for pairs it speaks about."""

from __future__ import annotations

import pytest

from modeler.agents import scoring
from modeler.agents.modeler import decide
from modeler.agents.sources import resolve
from modeler.estimator import DependencyModeler
from tests.e2e.scenario import recording

HERE, THERE = "aaaaaaaaaaaa", "bbbbbbbbbbbb"  # two network namespaces (scopes)


def test_endpoints_resolve_through_every_sources_listening_table() -> None:
    objects = {"h1/proc/web", "h2/proc/db", "h1/proc/cache", "D/cpu"}
    collector = {"edges": [["h1/proc/web", "10.0.0.2:5432", 4], ["h1/proc/web", f"127.0.0.1:6379@{HERE}", 2],
                           ["h1/proc/web", f"127.0.0.1:9000@{HERE}", 1], ["h1/proc/web", "192.0.2.9:443", 7],
                           ["h1/proc/cache", f"127.0.0.1:6379@{HERE}", 1]],
                 "listening": [[f"127.0.0.1:6379@{HERE}", "h1/proc/cache"]], "watched": ["h1/proc/web", "h1/proc/cache"]}
    other = {"edges": [["h1/proc/web", "10.0.0.2:5432", 3]],  # the same observation through a mediator
             "listening": [["10.0.0.2:5432", "h2/proc/db"], [f"127.0.0.1:9000@{THERE}", "D/cpu"],
                           ["10.0.0.2:22", "h2/proc/sshd"]],  # not modeled: ignored
             "watched": ["h2/proc/db", "h2/proc/sshd"]}
    conn, watched, unresolved = resolve([collector, other], objects)
    assert conn == {("h1/proc/web", "h2/proc/db"): 4.0, ("h1/proc/web", "h1/proc/cache"): 2.0}
    # (cache's connection to its own listener is no edge; a count seen through two sources
    # is one observation; 127.0.0.1:9000 in another namespace is another socket, and
    # 192.0.2.9:443 is outside everything the sources know)
    assert unresolved == 2
    assert watched == {"h1/proc/web", "h1/proc/cache", "h2/proc/db"}


def test_evidence_decides_only_the_pairs_it_speaks_about() -> None:
    sc = recording(n_services=5, seed=5)
    model = DependencyModeler.default()
    job = scoring.make_job(model, sc.series)
    scores = scoring.combine(job, model.network_.predict_proba(job.features))
    alone = scoring.decide(model, scores)
    # nothing watched, nothing connected: the model from activity alone, unchanged
    g, changed = decide(model, scores, {}, set())
    assert set(g.edges) == set(alone.edges) and changed == {"added": [], "removed": []}
    # a connection between two objects no probe watched otherwise: that pair is decided
    # with it (direction included), every other pair exactly as from activity alone
    a, b = sorted(sc.truth)[0]
    g, changed = decide(model, scores, {(a, b): 3.0}, set())
    assert g.has_edge(a, b) and "connection" in g.edges[a, b]["evidence"] and not g.has_edge(b, a)
    others = {e for e in alone.edges if set(e) != {a, b}}
    assert {e for e in g.edges if set(e) != {a, b}} == others
    assert [a, b] in changed["added"] or (a, b) in alone.edges
    # every object watched and no connection seen: the absence weighs on every pair, and
    # the version's record of what evidence changed is exact
    g, changed = decide(model, scores, {}, set(sc.series))
    assert set(map(tuple, changed["removed"])) == set(alone.edges) - set(g.edges)
    assert set(map(tuple, changed["added"])) == set(g.edges) - set(alone.edges)
    assert g.number_of_edges() < alone.number_of_edges()


def test_a_source_is_asked_for_no_more_objects_than_a_source_takes():
    """A modeler configured with more names for one source than a source accepts in one
    request would fail every run at the source; refused when configured instead."""
    from masa.activity import MAX_OBJECTS
    from masa.errors import BadRequest
    from modeler.agents.sources import parse_sources

    fine = parse_sources([{"agent": "col", "objects": [f"o{i}" for i in range(MAX_OBJECTS)]}, "dom"])
    assert [s["agent"] for s in fine] == ["col", "dom"]
    with pytest.raises(BadRequest, match=f"at most {MAX_OBJECTS} names or globs"):
        parse_sources([{"agent": "col", "objects": [f"o{i}" for i in range(MAX_OBJECTS + 1)]}])
