"""Progress of one training run: a rich bar on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunProgress:
    def __init__(self, mode: str, name: str, total: int, start: int, console: Console | None = None):
        self.console = console or Console(stderr=False)
        if mode == "auto":
            mode = "bar" if self.console.is_terminal else "lines"
        self.mode, self.name, self.total = mode, name, total
        self._next_line = start  # lines mode: print about every 10% of the run
        self._bar = None
        if mode == "bar":
            self._bar = Progress(
                # Progress first (bar, M/N, time left), then the metrics; on a narrow terminal the run name and
                # then the metrics give way, never the counts.
                TextColumn("[bold]{task.description}", table_column=Column(max_width=24, overflow="ellipsis", no_wrap=True)),
                BarColumn(bar_width=16),
                MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=2 * len(str(total)) + 1)),
                TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)),
                TextColumn("{task.fields[metrics]}", table_column=Column(overflow="ellipsis", no_wrap=True)),
                console=self.console,
            )
            self._task = self._bar.add_task(name, total=total, completed=start, metrics="")
            self._bar.start()

    def advance(self, done: int) -> None:
        """Every iteration: move the bar (a host-side counter: no device sync), so its ETA is live."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def update(self, done: int, loss: float, error: float, images_per_s: float | None, lr: float) -> None:
        """images_per_s None: none of the window's iterations counts (they compiled)."""
        speed = f"{images_per_s:,.0f} img/s" if images_per_s is not None else "compiling"
        metrics = f"loss {loss:.3f} err {error:4.1f}% lr {lr:g} {speed}"  # fits 80 columns
        if self._bar is not None:
            self._bar.update(self._task, completed=done, metrics=metrics)
        elif self.mode == "lines" and (done >= self._next_line or done == self.total):
            self._next_line = done + max(1, self.total // 10)
            self.print(f"{self.name} it {done}/{self.total} {metrics}")

    def print(self, text: str) -> None:
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
