"""Lines made of parts " · " apart (the header's totals, a GPU's health) that go on to the next
line between two parts, never inside one: "ECC 0 corrected, 0" over "uncorrected" read as
another figure."""

from __future__ import annotations

from typing import Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

SEP = " · "


def wrap_parts(parts: Sequence[Text], width: int, sep_style: str = "", indent: str = "",
               sep: str = SEP) -> list[Text]:
    """``parts`` ``sep`` apart (in ``sep_style``), a part that would go past ``width`` going on,
    whole, on a line of its own after ``indent``. A part wider than a line is left whole (the
    caller cuts or wraps it)."""
    lines = [parts[0].copy()] if parts else []
    for part in parts[1:]:
        if fits(cell_len(lines[-1].plain), cell_len(part.plain), width, sep):
            lines[-1].append(sep, style=sep_style)
            lines[-1].append_text(part)
        else:
            lines.append(Text(indent) + part)
    return lines


def fits(used: int, cells: int, width: int, sep: str = SEP) -> bool:
    """Whether a part of ``cells`` goes on, ``sep`` before it, on a line of ``width`` that has
    ``used`` cells: ``wrap_parts``' rule, for a caller that lays parts out by their widths."""
    return used + cell_len(sep) + cells <= width


class BetweenParts:
    """``text`` drawn with each of its lines wrapped between its parts (``sep`` apart) to the
    width it is drawn at; a part wider than that wraps as Rich wraps words."""

    def __init__(self, text: Text, sep: str = SEP) -> None:
        self.text = text
        self.sep = sep

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """At least its widest part (in a table's cell), at most its longest line."""
        lines = self.text.plain.split("\n")
        return Measurement(max(cell_len(p) for line in lines for p in line.split(self.sep)),
                           max(cell_len(line) for line in lines)).clamp(
            max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.text.split("\n"):
            for row in wrap_parts(list(line.split(self.sep)), options.max_width, sep=self.sep):
                yield row


class Folded:
    """``text`` wrapped to the width it is drawn at (a word too long for a line folded), on
    ``most`` lines at most, the last ending in "…" where more was cut: a job's argv read
    whole at 80 columns, and one of pages still leaving its output in sight."""

    def __init__(self, text: Text, most: int) -> None:
        self.text = text
        self.most = most

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, cell_len(self.text.plain)).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(1, options.max_width)
        lines = self.text.wrap(console, width, overflow="fold")
        if len(lines) > self.most:
            lines = lines[:self.most]
            last = lines[-1]
            last.truncate(width - 1)
            last.append("…")
        yield from lines
