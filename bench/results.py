"""Keep bench/RESULTS.md current: each benchmark owns one ``## Title`` section."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def update_section(title: str, body: str, path: Path = RESULTS, notes: Path | None = None) -> None:
    """Replace the section headed ``## title`` (or append it), leaving the others alone.

    ``notes``: a hand-kept file of what the figures say, written under them, so a re-run
    of the benchmark keeps the reading of its results."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if notes is not None:
        body = f"{body.strip()}\n\n{notes.read_text().strip()}"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
