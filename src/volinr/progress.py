"""Progress of a long training loop: a tqdm bar on a terminal, and a log line now and then.

A bar shows nothing in a Snakemake job's log file or a cluster job's output, where a neural
codec's training on a real CT volume runs for hours: there, an INFO line at most every
``LOG_EVERY_SECONDS`` says how far the loop is, its latest loss and about how long is left.
The loop reports only at its own sync points (where it already reads values from the
device), so the progress adds no host sync.
"""

from __future__ import annotations

import logging
import os
import time

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 60.0


def duration_words(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h': a duration for a reader, not a parser."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``advance()`` every iteration, ``report(**values)`` at the loop's sync points,
    ``close()`` at the end (or use it as a context manager)."""

    def __init__(
        self,
        label: str,
        total: int,
        initial: int = 0,
        bar: bool | None = None,
        log_every_seconds: float | None = None,
    ):
        """``bar``: show the bar (default: when stderr is a terminal); ``log_every_seconds``:
        the least time between two log lines (default ``LOG_EVERY_SECONDS``)."""
        self.label, self.total, self.done, self.initial = label, total, initial, initial
        every = LOG_EVERY_SECONDS if log_every_seconds is None else log_every_seconds
        self.log_every_seconds = every
        self.started = self.last_logged = time.perf_counter()
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=label,
            disable=not (os.isatty(2) if bar is None else bar),
        )

    def advance(self, count: int = 1) -> None:
        self.done += count
        self.bar.update(count)

    def seconds_left(self) -> float | None:
        run = self.done - self.initial
        if run <= 0:
            return None
        return (time.perf_counter() - self.started) / run * (self.total - self.done)

    def report(self, **values: float | str) -> None:
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()}
        self.bar.set_postfix(shown, refresh=False)
        now = time.perf_counter()
        if now - self.last_logged < self.log_every_seconds:
            return
        self.last_logged = now
        left = self.seconds_left()
        log.info(
            "%s: iteration %d of %d (%s)%s",
            self.label,
            self.done,
            self.total,
            ", ".join(f"{k} {v}" for k, v in shown.items()),
            ""
            if left is None or self.done >= self.total
            else f", about {duration_words(left)} left",
        )

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
