"""Progress on stderr for long loops, the same everywhere: a rich bar on a terminal, plain periodic
lines when stderr is a file or a pipe (logs stay short, stdout stays clean for --json)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

#: seconds between two plain progress lines when stderr is not a terminal
PROGRESS_EVERY_S = 10.0


def progress(items: Iterable, total: int, what: str, enabled: bool = True) -> Iterator:
    """Yield from `items` while showing progress on stderr: a rich bar on a terminal, else a plain
    line at most every PROGRESS_EVERY_S seconds (a quick loop stays silent; logs stay short)."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            job = bar.add_task(what, total=total)
            for item in items:
                yield item
                bar.advance(job)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S and done < total:
            print(f"{what}: {done}/{total} ({100 * done / total:.0f}%), {now - start:.0f} s",
                  file=sys.stderr, flush=True)
            last = now
