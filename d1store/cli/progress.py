"""Progress bars on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["Bar", "progress_bar"]


class Bar:
    """One task of a progress display; does nothing when the display is off."""

    def __init__(self, progress: Progress | None, description: str, total: float | None) -> None:
        self._progress = progress
        self._task = progress.add_task(description, total=total) if progress is not None else None

    def update(self, completed: float, *, total: float | None = None, description: str | None = None) -> None:
        """Set the completed amount (and optionally the total and the text)."""
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, completed=completed, total=total, description=description)


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator[Bar]:
    """Show a progress bar on stderr while the block runs, if stderr is a terminal."""
    if not sys.stderr.isatty():
        yield Bar(None, description, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Bar(progress, description, total)
