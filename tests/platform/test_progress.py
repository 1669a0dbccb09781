"""Progress of long commands: readable lines in a log, a bar on a terminal."""

import io

from masa.progress import Progress


def test_a_log_gets_a_line_per_stage_and_per_tenth_of_its_work():
    out = io.StringIO()
    with Progress(stream=out, live=False) as p:
        p.stage("simulating scenarios", 1600)
        for _ in range(1600):
            p.advance()
        p.stage("fitting networks", 3)
        for _ in range(3):
            p.advance()
    lines = out.getvalue().splitlines()
    sim = [ln for ln in lines if ln.startswith("simulating scenarios: ")]
    fit = [ln for ln in lines if ln.startswith("fitting networks: ")]
    assert len(sim) == 11 and sim[0].startswith("simulating scenarios: 0/1600 (")
    assert sim[-1].startswith("simulating scenarios: 1600/1600 (")
    assert [ln.split(" (")[0] for ln in fit] == [f"fitting networks: {k}/3" for k in range(4)]
    assert len(lines) == len(sim) + len(fit) and "\x1b" not in out.getvalue()


def test_a_fraction_reads_as_percent_and_never_passes_the_total():
    out = io.StringIO()
    with Progress("recording chain", stream=out, live=False) as p:
        for f in (0.05, 0.5, 0.99, 1.0, 1.3):
            p.update(f)
    assert [ln.split(" (")[0] for ln in out.getvalue().splitlines()] == [
        "recording chain: 0%", "recording chain: 50%", "recording chain: 99%", "recording chain: 100%"]


def test_on_a_terminal_the_bar_is_drawn_and_cleared():
    out = io.StringIO()
    with Progress("simulating scenarios", total=10, stream=out, live=True) as p:
        p.advance(5)
        p.stage("fitting networks", 2)
        p.advance()
    text = out.getvalue()
    assert "fitting networks" in text and " 50%" in text  # the bar, at the stage it reached
    assert "simulating scenarios:" not in text  # and no log lines
    assert text.endswith("\x1b[2K")  # cleared when the command is done
