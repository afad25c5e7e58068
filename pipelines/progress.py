"""Progress for long work: a live bar on a terminal, plain periodic lines in logs and CI.

Producers, replay and the demo all report through this one reporter, so every long
command shows count, rate and ETA the same way, and none floods a log file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Advance with `advance(n)`; add a short status with `status(text)`."""

    def __init__(self, label: str, total: int | None, stream: TextIO, interval: float) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream
        self._interval = interval
        self._started = time.monotonic()
        self._last_line = self._started
        self._status = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def attach(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task(self.label, total=self.total, status="", rate="")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task, completed=self.done, status=self._status, rate=f"{self.rate():,.0f}/s"
            )
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def status(self, text: str) -> None:
        self._status = text

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """A plain progress line: count, rate and ETA."""
        rate = self.rate()
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(0.0, (self.total - self.done) / rate):.0f}s"
        extra = f", {self._status}" if self._status else ""
        return f"{self.label}: {self.done}{of} ({rate:,.0f}/s{eta}{extra})"


@contextmanager
def progress(
    label: str,
    total: int | None = None,
    *,
    stream: TextIO | None = None,
    interval: float = 5.0,
    live: bool | None = None,
) -> Iterator[Reporter]:
    """Report progress on `stream` (stderr): live on a terminal, a line every `interval` s else."""
    stream = stream or sys.stderr
    reporter = Reporter(label, total, stream, interval)
    if live is None:
        live = stream.isatty()
    if not live:
        yield reporter
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        reporter.attach(bar)
        yield reporter
