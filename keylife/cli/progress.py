"""Progress bars for long CLI commands, on a terminal only: piped or logged output stays clean."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Update = Callable[..., None]  # update(completed, note="...", total=None): total=N changes the goal


@contextmanager
def terminal_progress(label: str, total: float | None, *, unit: str = "items") -> Iterator[Update]:
    """Yield ``update(completed, note="")``; draws a bar on stderr when it is a terminal, else nothing.

    ``unit="bytes"`` shows sizes (an input file read so far); anything else shows a count.
    """
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda completed, note="", total=None: None
        return
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        TextColumn(label),
        BarColumn(),
        amount,
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=total, note="")

        def update(completed: float, note: str = "", total: float | None = None) -> None:
            bar.update(task, completed=completed, note=note, **({} if total is None else {"total": total}))

        yield update
