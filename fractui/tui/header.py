"""The header, in k9s's manner: where you are and what you can press, always in sight.

Left: fleet totals (hosts by state, GPUs, allocated share, jobs), the current view, and a line
of its own for who carries decisions out and what is wrong (the store, the scheduler's passes);
right: key hints built from the screen's active bindings, so a remapped key shows as remapped.

Nothing of fractui's own words is cut (docs/decisions.md, "The header's lines are whole"): the
hints keep as many whole columns as leave the totals and the view their width, at least one; a
line that does not fit even so goes on, from its next part, on a line of its own. Only the
scheduler's line, which ends in others' words (a holder's name, a path, an error), is cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich.cells import cell_len
from rich.console import RenderableType
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from fractui import __version__
from fractui.tui.model import Totals
from fractui.tui.parts import SEP, wrap_parts
from fractui.tui.themes import RichVariables
from fractui.words import count

HINT_ROWS = 4
MOST_ROWS = HINT_ROWS + 2  # beyond, the lines are cut instead: a narrow terminal keeps its map
INDENT = "  "  # a line's parts that go on below it


@dataclass(frozen=True)
class HeaderInfo:
    totals: Totals
    view: tuple[str, ...]
    """Its parts, e.g. ("fleet", "filter /a100/", "colour by team")."""
    hints: tuple[tuple[str, str], ...]
    """(key as displayed, what it does), in the order they are listed (columns of four)."""
    note: Optional[str] = None
    """What is wrong or special (the store cannot be read, the passes fail, a demo), after
    ``scheduler`` on its line."""
    scheduler: str = ""
    """Who carries out decisions, e.g. "scheduler: child process 4242, holds the lease"."""


class Header(Widget):
    DEFAULT_CSS = """
    Header {
        height: auto;
        min-height: 4;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.info: Optional[HeaderInfo] = None

    def show(self, info: HeaderInfo) -> None:
        if info != self.info:
            width = self.size.width
            before = len(self.rows(width))
            self.info = info
            self.refresh(layout=len(self.rows(width)) != before)  # a line more or less

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.rows(width))

    def render(self) -> RenderableType:
        return Text("\n").join(self.rows(self.size.width))

    def rows(self, width: int) -> list[Text]:
        """The header's lines at ``width`` cells: the words left, the hints' columns right."""
        info = self.info
        if info is None:
            return [Text("fractui %s" % __version__)]
        vars_ = RichVariables(self.app)
        columns = _columns(info.hints, vars_)
        seps = ("", "", "bold " + vars_["accent"])
        last = Text()  # (a style of its own would be the hints' beside it too)
        last.append(info.scheduler, style="dim")
        if info.note:
            last.append(SEP if info.scheduler else "", style="dim")
            last.append(info.note, style=vars_["warning"])
        # what is out of service said in full, else briefly where that leaves the header
        # its most rows, else in full and cut below
        for brief in (False, True, False):
            lines = self._lines(info, vars_, brief)
            whole = [_joined(parts, sep) for parts, sep in zip(lines, seps)]
            # the most columns that leave the words their width; one at the least
            longest = max(cell_len(line.plain) for line in whole)
            n = len(columns)
            while n > 1 and longest + 1 + _width(columns[:n]) > width:
                n -= 1
            hints = columns[:n]
            room = width - 1 - _width(hints) if hints else width
            left = [row for parts, sep in zip(lines, seps) for row in _wrapped(parts, room, sep)]
            if len(left) + bool(last) <= MOST_ROWS:
                break
        else:
            left = whole  # (cut below)
        if last:
            left.append(last)
        out: list[Text] = []
        for r in range(max(len(left), HINT_ROWS if hints else 0)):
            line = left[r].copy() if r < len(left) else Text()
            if r >= HINT_ROWS or not hints:
                line.truncate(width, overflow="ellipsis")
                out.append(line)
                continue
            line.truncate(room, overflow="ellipsis", pad=True)
            line.append(" ")
            for c, column in enumerate(hints):
                key_w = max(cell_len(k.plain) for k, _ in column)
                what_w = max(cell_len(w.plain) for _, w in column)
                key, what = column[r] if r < len(column) else (Text(), Text())
                line.append(" " if c else "")
                line.append_text(key)
                line.pad_right(key_w - cell_len(key.plain) + 1)
                line.append_text(what)
                line.pad_right(what_w - cell_len(what.plain))
            out.append(line)
        return out

    @staticmethod
    def _lines(info: HeaderInfo, vars_: RichVariables, brief: bool) -> list[list[Text]]:
        """The totals' and the view's lines, each as its parts (" · " between them); what is
        out of service ``brief`` (Totals.out_of_service_brief) or in full."""
        t = info.totals
        first = Text()
        first.append("fractui ", style="bold " + vars_["primary"])
        first.append("%s  fleet: %s" % (__version__, count(t.hosts, "host")))
        states = ["%d %s" % (n, s) for s, n in t.states] or ["no hosts"]
        first.append(", " + states[0])
        fleet = [first] + [Text(s) for s in states[1:]]
        totals = [_figure("GPUs ", str(t.gpus)), _figure("allocated ", "%.1f %%" % (
            100 * t.allocated)), _figure("jobs ", str(t.running), " running"),
            _figure("", str(t.pending), " pending")]
        totals += [Text(words, style="bold " + vars_["warning"])
                   for words in (t.out_of_service_brief if brief else t.out_of_service)]
        view = [Text(p, style="bold " + vars_["accent"]) for p in info.view]
        view[0] = Text.assemble(("view ", "dim"), view[0])
        return [fleet, totals, view]


def _figure(before: str, number: str, after: str = "") -> Text:
    return Text.assemble(before, (number, "bold"), after)


def _columns(hints: tuple[tuple[str, str], ...],
             vars_: RichVariables) -> list[list[tuple[Text, Text]]]:
    cells = [(Text("<%s>" % key, style="bold " + vars_["secondary"]), Text(what, style="dim"))
             for key, what in hints]
    return [cells[i:i + HINT_ROWS] for i in range(0, len(cells), HINT_ROWS)]


def _width(columns: list[list[tuple[Text, Text]]]) -> int:
    """The cells that ``columns`` of hints take, one between each key, its words and the
    next column."""
    return sum(max(cell_len(k.plain) for k, _ in c) + 1 + max(cell_len(w.plain) for _, w in c)
               for c in columns) + len(columns) - 1


def _joined(parts: list[Text], sep: str) -> Text:
    """``parts`` on one line, " · " apart (in style ``sep``)."""
    return Text(SEP, style=sep).join(parts)


def _wrapped(parts: list[Text], room: int, sep: str) -> list[Text]:
    """``parts`` " · " apart (in style ``sep``), a part that would be cut going on, whole, on
    a line of its own; only a part wider than a line by itself (a long filter) is cut, at its
    end."""
    lines = wrap_parts(parts, room, sep, INDENT)
    for line in lines:
        line.truncate(room, overflow="ellipsis")
    return lines
