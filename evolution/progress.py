"""Progress of a run's long steps (pre-training, training, tuning, scoring, the final report).

On a terminal: a rich progress bar with elapsed time and ETA, removed when the step ends. When
the output is not a terminal (a log file, CI): one line every `INTERVAL` seconds while a step
runs (from a timer thread, so a step that reports nothing for minutes is still announced).

    with progress(console, "pre-training", total=2500) as advance:
        for _ in range(2500):
            ...
            advance()
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

INTERVAL = 20.0  # seconds between progress lines when the output is not a terminal


@contextmanager
def progress(console, label: str, total: int | None = None, interval: float = INTERVAL):
    """A context yielding `advance(n=1)`; `console` None shows nothing; `total` None: a step
    whose size is unknown (elapsed time only)."""
    if console is None:
        yield lambda n=1: None
    elif console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)
    else:
        done = [0]
        start = time.monotonic()
        stop = threading.Event()

        def announce():
            while not stop.wait(interval):
                console.print(status_line(label, done[0], total, time.monotonic() - start),
                              soft_wrap=True, highlight=False)

        thread = threading.Thread(target=announce, daemon=True)
        thread.start()
        try:
            yield lambda n=1: done.__setitem__(0, done[0] + n)
        finally:
            stop.set()
            thread.join()


def status_line(label: str, done: int, total: int | None, elapsed: float) -> str:
    """'pre-training: 120/2500 after 0:30, about 9:55 left' (the ETA from the rate so far)."""
    if total is None:
        return f"{label}: still running after {_clock(elapsed)}"
    line = f"{label}: {done}/{total} after {_clock(elapsed)}"
    if 0 < done < total:
        line += f", about {_clock(elapsed / done * (total - done))} left"
    return line


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
