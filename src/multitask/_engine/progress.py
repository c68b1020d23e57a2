"""Progress bars for ``map``/``imap``/``imap_unordered``/``starmap(..., progress=True)``.

``progress=True`` draws a rich bar (items done, rate, ETA) on stderr when stderr is a terminal and
stays quiet otherwise (logs and CI output are not filled with bar redraws); ``progress="always"``
forces it; a ``str`` other than that is not accepted.  Updates come from the pool's result thread;
rich redraws from its own refresh thread, at most 10 times a second.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

_ALWAYS = "always"


def check_progress(progress: Any) -> bool | str:
    if progress is None or progress is False:
        return False
    if progress is True:
        return True
    if progress == _ALWAYS:
        return _ALWAYS
    raise ValueError(f"progress must be True, False or {_ALWAYS!r}, not {progress!r}")


def _rate_column_class() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second, as measured by rich over its recent samples."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("? items/s" if speed is None else f"{speed:,.0f} items/s",
                        style="progress.data.speed")

    return RateColumn


def _RateColumn() -> Any:
    return _rate_column_class()()


class ProgressBar:
    """One rich progress bar for one call; ``advance`` is thread-safe and cheap."""

    def __init__(self, description: str, total: int | None, mode: bool | str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True, force_terminal=True if mode == _ALWAYS else None)
        self.enabled = console.is_terminal or mode == _ALWAYS
        self._lock = threading.Lock()
        self._done = 0
        self._total = total
        self._closed = False
        if not self.enabled:
            self._progress: Any = None
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), _RateColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=10)
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def set_total(self, total: int) -> None:
        self._total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def advance(self, n: int) -> None:
        with self._lock:
            self._done += n
            finished = self._total is not None and self._done >= self._total
        if self._progress is not None and not self._closed:
            self._progress.update(self._task, advance=n)
        if finished:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._progress is not None:
            try:
                self._progress.stop()
            except Exception:  # never let drawing break a computation
                print("multitask: could not close the progress bar", file=sys.stderr)
