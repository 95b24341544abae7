"""Progress of one training run: a rich bar on a terminal, plain periodic lines elsewhere. Output is best effort:
a reader that went away (`depthstudy train | head -1`, a closed terminal) never changes how a run ends."""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path


def say(text: str, err: bool = False) -> None:
    """Print a line to stdout (err: stderr), now; where nobody reads it any more, drop it and the rest."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # started with the stream closed
        return
    try:
        print(text, file=stream, flush=True)
    except OSError as e:  # BrokenPipeError; EIO from a terminal that was closed
        if not gone(e):
            raise
        silence(stream)


def silence(stream) -> None:
    """Send what is still to be written to the stream, now or at exit, to /dev/null, as the Python docs advise for a
    closed pipe (SIGPIPE): writing it again, or flushing it at exit, would fail once more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (a test's captured stream)
        pass


def gone(error: BaseException) -> bool:
    """Whether an error says that nobody reads the output any more: a closed pipe, a terminal that went away."""
    return isinstance(error, OSError) and error.errno in (errno.EPIPE, errno.EIO)


class BestEffort:
    """A text stream (a rich Console's file) whose writes never fail for want of a reader (say's rule)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self._try(self.stream.write, text) or len(text)

    def flush(self) -> None:
        self._try(self.stream.flush)

    def _try(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            if not gone(e):
                raise
            silence(self.stream)

    def __getattr__(self, name):  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)

from rich.console import Console
from rich.table import Column
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RunProgress:
    """A run's output: a bar or lines (or nothing) on the console, and always its lines in `log` (the run
    directory's train.log, appended by each process: what Hydra users find in <job>.log)."""

    def __init__(self, mode: str, name: str, total: int, start: int, console: Console | None = None,
                 log: Path | None = None):
        self.console = console or Console(stderr=False)
        self.log = log
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
        if done >= self._next_line or done == self.total:  # about every 10%: on the console in lines mode, and logged
            self._next_line = done + max(1, self.total // 10)
            line = f"{self.name} it {done}/{self.total} {metrics}"
            self.print(line) if self.mode == "lines" else self._log(line)

    def _log(self, text: str) -> None:
        if self.log is None:
            return
        try:
            with open(self.log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        except OSError:  # a full disk ends the run where it writes its checkpoint, with its reason: not here
            self.log = None

    def print(self, text: str) -> None:
        self._log(text)
        if self.mode == "none":
            return
        if self.mode == "bar":  # a terminal, the bar running or closed: rich breaks a long line between words (the
            try:                # terminal itself would break it anywhere, inside a number: "train 0" / ".83")
                self.console.print(text, highlight=False, markup=False)
            except OSError:  # the terminal went away
                pass
        else:
            say(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
