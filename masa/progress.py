"""Progress of long commands: a live bar on a terminal, plain lines anywhere else.

A bar drawn only on a terminal leaves ``masa train > train.log`` silent for minutes, and a
bar's redraws would fill a log with escape codes; so where stderr is no terminal, progress is
one line per stage and per tenth of its work, with the time spent.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import rich.console


class Progress:
    """``with Progress("simulating", total=n) as p: p.advance()``; ``p.stage(name, total)``
    starts the next stage of the same command (``Progress()`` waits for the first one)."""

    def __init__(self, description: str | None = None, total: float = 1.0, *,
                 stream: TextIO | None = None, live: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty() if live is None else live
        self._first = (description, total)
        self._description, self._total, self._done = "", 1.0, 0.0
        self._t0 = time.monotonic()
        self._printed = -1  # the last tenth of the stage written as a line
        self._bar = self._task = None

    def __enter__(self) -> Progress:
        if self._live:
            from rich.console import Console
            from rich.progress import Progress as Bar

            self._bar = Bar(console=Console(file=self._stream, force_terminal=True), transient=True)
            self._bar.__enter__()
        if self._first[0] is not None:
            self.stage(*self._first)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def stage(self, description: str, total: float) -> None:
        self._description, self._total, self._done, self._printed = description, float(total), 0.0, -1
        if self._bar is None:
            self._line()
        elif self._task is None:
            self._task = self._bar.add_task(description, total=self._total)
        else:
            self._bar.update(self._task, description=description, total=self._total, completed=0)

    def advance(self, amount: float = 1.0) -> None:
        self.update(self._done + amount)

    def update(self, completed: float) -> None:
        self._done = min(float(completed), self._total)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self._done)
        elif self._bar is None and self._tenth() > self._printed:
            self._line()

    def _tenth(self) -> int:
        return int(10 * self._done / self._total) if self._total > 0 else 10

    def _line(self) -> None:
        self._printed = self._tenth()
        done = f"{self._done:g}/{self._total:g}" if self._total != 1 else f"{100 * self._done:.0f}%"
        print(f"{self._description}: {done} ({time.monotonic() - self._t0:.0f} s)",
              file=self._stream, flush=True)


#: Width of tables written to a file or a pipe: rich would cut names at 80 columns there.
PIPE_WIDTH = 240


def console(stderr: bool = False) -> rich.console.Console:
    """The console for the CLI's tables and results: a terminal's own width, and wide enough
    for whole object names and addresses when the output goes to a file or a pipe."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)
