"""Terminal tables that fit the terminal: key columns whole, numbers never wrapped, other columns dropped.

rich shrinks every column of a table wider than the terminal, the run names included (`plain-d2…`), and
wraps numbers mid-digit. fit() decides instead: the key columns (what names a row) keep their full width,
a column of numbers keeps its widest number (its header may wrap at spaces), text may wrap at spaces, and
where that is still too wide whole columns go, least useful first, named in the caption. No torch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _plain(console: Console, cell) -> str:
    return console.render_str(cell).plain if isinstance(cell, str) else cell.plain if isinstance(cell, Text) else ""


def _is_number(text: str) -> bool:
    """A number cell: 12.34, +0.50, 6/300, 12 s; never wrapped."""
    stripped = text.strip()
    return bool(stripped) and stripped[0] in "+-.0123456789" and " " not in stripped.rstrip(" s%")


def _needs(console: Console, column) -> tuple[int, int]:
    """(narrowest, natural) width of a column's content: a text column may wrap at spaces onto two lines, a number
    cannot wrap."""
    from rich.cells import cell_len

    cells = [_plain(console, c) for c in column._cells]
    header = _plain(console, column.header)
    natural = max([cell_len(header)] + [cell_len(c) for c in cells])
    if column.no_wrap:  # asked to stay on one line (a duration: "3.4 min")
        return natural, natural
    words = [w for c in cells for w in (c.split() if not _is_number(c) else [c])]
    narrowest = max([cell_len(w) for w in header.split() + words] or [1])
    return max(narrowest, -(-natural // 2) if words else 0), natural  # text: two lines at most, else drop a column


class Fitted:
    """A table that fits the width it is printed at (fit()); the table itself is left as it is."""

    def __init__(self, table: Table, keys: Sequence[str] = (), drop: Sequence[str] = (), more: str = ""):
        self.table, self.keys, self.drop, self.more = table, keys, drop, more

    def __rich_console__(self, console: Console, options):
        table = copy.copy(self.table)
        table.columns = [copy.copy(c) for c in self.table.columns]
        yield fit(table, console, options.max_width, self.keys, self.drop, self.more)


def fit(table: Table, console: Console, available: int, keys: Sequence[str] = (), drop: Sequence[str] = (),
        more: str = "") -> Table:
    """The table cut to `available` columns (in place, and returned). keys: the headers of the columns kept whole
    (default: the first); drop: the headers of the columns that may go, in the order they go; more: where the
    dropped columns can be read ("--json has them"), said in the caption."""
    keys = list(keys) or [_plain(console, table.columns[0].header)]
    for column in table.columns:  # never cut a key column (rich shortens the widest column first)
        if _plain(console, column.header) in keys:
            column.no_wrap = True
    dropped = []

    def overhead() -> int:
        return table._extra_width + sum(table._get_padding_width(i) for i in range(len(table.columns)))

    def narrowest() -> list[int]:
        return [_needs(console, c)[1] if _plain(console, c.header) in keys else _needs(console, c)[0]
                for c in table.columns]

    if sum(_needs(console, c)[1] for c in table.columns) + overhead() <= available:
        return table  # it fits as it is
    for header in drop:
        if sum(narrowest()) + overhead() <= available:
            break
        column = next((c for c in table.columns if _plain(console, c.header) == header), None)
        if column is not None:
            table.columns.remove(column)
            dropped.append(header)
    for i, column in enumerate(table.columns):
        column._index = i
    # Every column starts at its narrowest; what room is left goes to the columns in order, up to their natural width.
    room = available - overhead() - sum(narrowest())
    for column, least in zip(table.columns, narrowest()):
        natural = _needs(console, column)[1]
        column.width = least + max(0, min(room, natural - least))
        room -= column.width - least
    if room < 0:  # names longer than the terminal: the widest key column folds onto more lines, every character shown
        widest = max((c for c in table.columns if _plain(console, c.header) in keys), key=lambda c: c.width)
        widest.width, widest.no_wrap, widest.overflow = max(8, widest.width + room), False, "fold"
    if dropped:
        note = f"not shown at {available} columns: {', '.join(dropped)}" + (f"; {more}" if more else "")
        table.caption = f"{table.caption}\n{note}" if table.caption else note
    return table


def count(n: int, noun: str) -> str:
    """1 run, 2 runs."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fields(parts: list[str], available: int, indent: int = 2) -> str:
    """parts joined by two spaces, broken between parts (never inside one: a number stays whole) where a line would
    pass `available` columns; continuation lines indented."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) <= available:
            lines[-1] += "  " + part
        else:
            lines.append(" " * indent + part)
    return "\n".join(lines)
