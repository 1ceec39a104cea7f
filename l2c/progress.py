"""Progress of a run: live bars on a terminal (rich), one plain line per table otherwise (cron, CI, pipes)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class RunProgress:
    def __init__(self, *, tty: bool | None = None) -> None:
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}
        self._pages: dict[str, int] = {}
        self._bars: Progress | None = None
        self._tasks: dict[str, Any] = {}
        if self.tty:
            self._bars = Progress(SpinnerColumn(), TextColumn("{task.description:<14}"), BarColumn(bar_width=None),
                                  TextColumn("{task.fields[rows]:>10,} rows  {task.fields[pages]:>5} pages"),
                                  TimeElapsedColumn(), console=Console(), transient=False)

    def __enter__(self) -> RunProgress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def start(self, name: str) -> None:
        with self._lock:
            self._rows[name], self._pages[name] = 0, 0
            if self._bars is not None:
                self._tasks[name] = self._bars.add_task(name, total=None, rows=0, pages=0)

    def page(self, name: str, rows: int) -> None:
        with self._lock:
            self._rows[name] = self._rows.get(name, 0) + rows
            self._pages[name] = self._pages.get(name, 0) + 1
            if self._bars is not None and name in self._tasks:
                self._bars.update(self._tasks[name], rows=self._rows[name], pages=self._pages[name])

    def done(self, name: str, outcome: Any) -> None:
        line = describe(name, outcome)
        with self._lock:
            if self._bars is not None and name in self._tasks:
                self._bars.update(self._tasks[name], total=1, completed=1, description=name)
                self._bars.console.log(line)
            else:
                print(line, flush=True)

    def fail(self, name: str, error: Exception) -> None:
        line = f"{name}: FAILED: {error}"
        with self._lock:
            if self._bars is not None:
                self._bars.console.log(line)
            else:
                print(line, flush=True)


def describe(name: str, outcome: Any) -> str:
    if name == "audit":
        if not outcome.available:
            return "audit: not read (see notes)"
        return (f"audit: {outcome.rows} rows in {outcome.pages} pages, {outcome.details} details"
                + (f", deletions {outcome.deletions}" if outcome.deletions else ""))
    parts = [f"{outcome.mode}", f"{outcome.rows} rows"]
    if outcome.deletions:
        parts.append(f"{outcome.deletions} deletions")
    if outcome.quarantined:
        parts.append(f"{outcome.quarantined} quarantined")
    parts.append(f"{outcome.pages} pages")
    return f"{name}: " + ", ".join(parts)
