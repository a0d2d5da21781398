"""The header, in k9s's manner: where you are and what you can press, always in sight.

Left: fleet totals (hosts by state, GPUs, allocated share, jobs), the current view, and a line
of its own for who carries decisions out and what is wrong (the store, the scheduler's passes);
right: key hints built from the screen's active bindings, so a remapped key shows as remapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from fractui import __version__
from fractui.tui.model import Totals
from fractui.tui.themes import RichVariables
from fractui.words import count

HINT_ROWS = 4
HINT_WIDTH = 16  # "<esc> back" and its gap
LEFT_WIDTH = 50  # what the totals need before the hints take the rest


@dataclass(frozen=True)
class HeaderInfo:
    totals: Totals
    view: str
    """e.g. "fleet · filter /a100/ · colour by team"."""
    hints: tuple[tuple[str, str], ...]
    """(key as displayed, what it does), in binding order."""
    note: Optional[str] = None
    """What is wrong or special (the store cannot be read, the passes fail, a demo), after
    ``scheduler`` on its line."""
    scheduler: str = ""
    """Who carries out decisions, e.g. "scheduler: child process 4242, holds the lease"."""


class Header(Widget):
    DEFAULT_CSS = """
    Header {
        height: 4;
        background: $panel;
        padding: 0 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.info: Optional[HeaderInfo] = None

    def show(self, info: HeaderInfo) -> None:
        if info != self.info:
            self.info = info
            self.refresh()

    def render(self) -> RenderableType:
        info = self.info
        if info is None:
            return Text("fractui %s" % __version__)
        t = info.totals
        vars_ = RichVariables(self.app)
        states = " · ".join("%d %s" % (n, s) for s, n in t.states) or "no hosts"
        left = Text()
        left.append("fractui ", style="bold " + vars_["primary"])
        left.append("%s  fleet: %s, %s\n" % (__version__, count(t.hosts, "host"), states))
        left.append("GPUs ")
        left.append(str(t.gpus), style="bold")
        left.append(" · allocated ")
        left.append("%.1f %%" % (100 * t.allocated), style="bold")
        left.append(" · jobs ")
        left.append(str(t.running), style="bold")
        left.append(" running · ")
        left.append(str(t.pending), style="bold")
        left.append(" pending")
        for state, n in t.out_of_service:  # hosts and GPUs taken out of service
            left.append(" · ")
            left.append("%d %s" % (n, state), style="bold " + vars_["warning"])
        left.append("\n")
        left.append("view ", style="dim")
        left.append(info.view, style="bold " + vars_["accent"])
        if info.scheduler or info.note:  # a line of its own: the view's words grow
            left.append("\n" + info.scheduler, style="dim")
        if info.note:
            left.append(" · " if info.scheduler else "", style="dim")
            left.append(info.note, style=vars_["warning"])
        hints = Table.grid(padding=(0, 1))
        room = max(1, (self.size.width - LEFT_WIDTH) // HINT_WIDTH)  # narrow: the first keys
        columns = min(room, max(1, -(-len(info.hints) // HINT_ROWS)))
        for _ in range(columns * 2):
            hints.add_column(no_wrap=True)
        for row in range(HINT_ROWS):
            cells: list[RenderableType] = []
            for col in range(columns):
                i = col * HINT_ROWS + row
                if i < len(info.hints):
                    key, what = info.hints[i]
                    cells += [Text("<%s>" % key, style="bold " + vars_["secondary"]),
                              Text(what, style="dim")]
                else:
                    cells += [Text(""), Text("")]
            hints.add_row(*cells)
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right")
        grid.add_row(left, hints)
        return grid
