"""The report cache and an answer from below that says part of it is missing (a mediator
below with a dead source): it serves the request it was fetched for, and is never held as
complete, so the stretch is asked for again once the source is back."""

from agents.cache import ReportCache
from tests.agents.test_cache import Below, same, source


class Partial(Below):
    """A mediator below whose source of ``lost`` objects is dead: their samples are not
    in its answers, which say so."""

    def __init__(self, series, now, lost):
        super().__init__(series, now)
        self.lost = set(lost)

    def __call__(self, objects, since, until):
        got, top = super().__call__(objects, since, until)
        if not self.lost:
            return got, top
        return [s for s in got if s.object not in self.lost], top, {"col-b": "report: no answer within 2 s"}


def test_a_stretch_answered_with_something_missing_is_served_once_and_asked_again():
    a, b = source("a"), source("b", step=0.7, phase=0.3)
    below = Partial([a, b], now=250, lost=["b"])
    cache = ReportCache()
    got, until = cache.report(["a", "b"], 0, 50, Below([a, b], now=250))  # held: (0, 50]
    got, until = cache.report(["a", "b"], 10, 100, below)
    assert until == 100 and below.log == [(("a", "b"), 50, 100)]
    same(got, a, 10, 100)  # what was held and what passed through, together
    same(got, b, 10, 50)  # b: only what was held before
    assert cache.read(["a", "b"], 10, 100)[1] == 50  # nothing of (50, 100] is held
    below.lost.clear()  # the source below is back
    got, until = cache.report(["a", "b"], 10, 100, below)
    assert below.log[-1] == (("a", "b"), 50, 100) and until == 100  # the stretch asked for again
    for s in (a, b):
        same(got, s, 10, 100)
    got, _ = cache.report(["a", "b"], 10, 100, below)  # now held: a hit
    assert len(below.log) == 2 and cache.stats["hits"] == 1
    for s in (a, b):
        same(got, s, 10, 100)


def test_a_latest_report_with_something_missing_ends_where_the_answer_below_did():
    a, b = source("a"), source("b")
    below = Partial([a, b], now=120, lost=["b"])
    cache = ReportCache()
    got, until = cache.report(["a", "b"], 0, None, below)
    assert until == 120 and [s.object for s in got] == ["a"]
    same(got, a, 0, 120)
    assert cache.held == {} and cache.series == {}  # nothing of it held
