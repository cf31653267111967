"""How the command prints tables and progress: with ``rich`` for a person at a terminal, as
plain lines for a pipe, a file or a script.

A table (``peers``, ``shards``, ``models list``) is one list of :class:`Column` and rows of
cells (strings, made by the command from the API's JSON). At a terminal, ``rich`` draws it;
otherwise every row is one line in fixed-width columns, the lines ``calinode`` always printed
(scripts that cut them keep working). The ingest progress bar is ``rich``'s on a terminal's
stderr, and one plain line a batch otherwise (no carriage returns in a log file). ``--json``
never comes here: its output is the API's JSON, unchanged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Literal

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["Column", "IngestProgress", "is_terminal", "plain_lines", "print_table",
           "progress_line"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its heading, its width and alignment in plain lines (0: as wide as the
    cell), and the spaces before it in plain lines."""

    name: str
    width: int = 0
    align: Literal["<", ">"] = "<"
    gap: str = " "


def is_terminal(stream: IO[str]) -> bool:
    """True when a person reads ``stream`` (a terminal), not a pipe or a file."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def plain_lines(columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
                header: bool = True) -> list[str]:
    """Rows as fixed-width lines (the heading first with ``header``); the first column's gap
    is not written, and the last column's width only pads when it is set."""

    def line(cells: Sequence[str]) -> str:
        parts = [(column.gap if i else "") + f"{cell:{column.align}{column.width}}"
                 for i, (column, cell) in enumerate(zip(columns, cells, strict=True))]
        return "".join(parts)

    lines = [line([c.name for c in columns])] if header else []
    return lines + [line(cells) for cells in rows]


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
                header: bool = True, empty: str = "", file: IO[str] | None = None) -> None:
    """Print rows with ``rich`` at a terminal (always with headings), else as
    :func:`plain_lines` (headings with ``header``); ``empty`` (when given) is the line printed
    for no rows."""
    out = sys.stdout if file is None else file
    if not rows and empty:
        if header and not is_terminal(out):
            print(plain_lines(columns, [])[0], file=out)
        print(empty, file=out)
        return
    if not is_terminal(out):
        for text in plain_lines(columns, rows, header=header):
            print(text, file=out)
        return
    table = Table(box=box.SIMPLE_HEAD, show_header=True, pad_edge=False)
    for column in columns:
        table.add_column(column.name, justify="right" if column.align == ">" else "left",
                         overflow="fold")
    for cells in rows:
        table.add_row(*(cell.strip() for cell in cells))
    Console(file=out, highlight=False).print(table)


def progress_line(done: int, total: int, chunks: int, seconds: float) -> str:
    """One plain progress line of an ingest (the terminal gets ``rich``'s bar instead)."""
    return f"ingest: {done}/{total} docs, {chunks} chunks, {seconds:.1f} s"


class IngestProgress:
    """The progress of ``calinode ingest`` on stderr: ``rich``'s bar at a terminal, else a
    plain line per batch; nothing at all when ``quiet`` (``--json``)."""

    def __init__(self, total: int, *, quiet: bool, file: IO[str] | None = None) -> None:
        self.total = total
        self.quiet = quiet
        self.file = sys.stderr if file is None else file
        self.started = time.monotonic()
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def __enter__(self) -> IngestProgress:
        if not self.quiet and is_terminal(self.file):
            self._bar = Progress(
                TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("docs,"),
                TextColumn("{task.fields[chunks]} chunks,"), TimeElapsedColumn(),
                console=Console(file=self.file), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("ingest", total=self.total, chunks=0)
        return self

    def update(self, done: int, chunks: int) -> None:
        """``done`` documents of the total sent, ``chunks`` stored so far."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, chunks=chunks)
            return
        print(progress_line(done, self.total, chunks, time.monotonic() - self.started),
              file=self.file, flush=True)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
